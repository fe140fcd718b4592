//! The AMQP primitive types: writing them to a buffer, reading them from a slice.

use super::FrameError;

/// Appends AMQP types to a buffer.
pub(crate) struct Writer<'a> {
    buf: &'a mut Vec<u8>,
    /// Bits packed so far into the octet at `bits_at` (AMQP packs consecutive bit fields
    /// into octets, first bit lowest).
    bits: u8,
    bits_at: Option<usize>,
}

impl<'a> Writer<'a> {
    pub(crate) fn new(buf: &'a mut Vec<u8>) -> Self {
        Self {
            buf,
            bits: 0,
            bits_at: None,
        }
    }

    /// Ends a run of bits: the next bit starts a new octet.
    fn end_bits(&mut self) {
        self.bits_at = None;
    }

    /// One bit field; consecutive ones share octets, eight to an octet.
    pub(crate) fn bit(&mut self, v: bool) {
        let at = match self.bits_at {
            Some(at) if self.bits < 8 => at,
            _ => {
                self.buf.push(0);
                self.bits = 0;
                self.buf.len() - 1
            }
        };
        if v {
            self.buf[at] |= 1 << self.bits;
        }
        self.bits += 1;
        self.bits_at = Some(at);
    }

    pub(crate) fn bytes(&mut self, b: &[u8]) {
        self.end_bits();
        self.buf.extend_from_slice(b);
    }

    pub(crate) fn octet(&mut self, v: u8) {
        self.end_bits();
        self.buf.push(v);
    }

    pub(crate) fn short(&mut self, v: u16) {
        self.bytes(&v.to_be_bytes());
    }

    pub(crate) fn long(&mut self, v: u32) {
        self.bytes(&v.to_be_bytes());
    }

    pub(crate) fn longlong(&mut self, v: u64) {
        self.bytes(&v.to_be_bytes());
    }

    pub(crate) fn shortstr(&mut self, s: &str) -> Result<(), FrameError> {
        let len =
            u8::try_from(s.len()).map_err(|_| FrameError::TooLong("short string", s.len()))?;
        self.octet(len);
        self.bytes(s.as_bytes());
        Ok(())
    }

    pub(crate) fn longstr(&mut self, b: &[u8]) -> Result<(), FrameError> {
        let len =
            u32::try_from(b.len()).map_err(|_| FrameError::TooLong("long string", b.len()))?;
        self.long(len);
        self.bytes(b);
        Ok(())
    }

    /// A 32-bit length, then what `fill` writes (tables and arrays).
    pub(crate) fn table_with(
        &mut self,
        fill: impl FnOnce(&mut Self) -> Result<(), FrameError>,
    ) -> Result<(), FrameError> {
        self.long(0);
        let at = self.buf.len();
        fill(self)?;
        self.end_bits();
        let len = self.buf.len() - at;
        let len = u32::try_from(len).map_err(|_| FrameError::TooLong("field table", len))?;
        self.buf[at - 4..at].copy_from_slice(&len.to_be_bytes());
        Ok(())
    }
}

/// Reads AMQP types from a slice; every read checks the length.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// The octet bits are being read from, and how many of its bits were read.
    bits: Option<(u8, u8)>,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self {
            buf,
            pos: 0,
            bits: None,
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], FrameError> {
        self.bits = None;
        let end = self.pos.checked_add(n).ok_or(FrameError::Truncated)?;
        let s = self.buf.get(self.pos..end).ok_or(FrameError::Truncated)?;
        self.pos = end;
        Ok(s)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], FrameError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    /// One bit field; consecutive ones share octets, as [`Writer::bit`] packs them.
    pub(crate) fn bit(&mut self) -> Result<bool, FrameError> {
        let (octet, used) = match self.bits {
            Some((octet, used)) if used < 8 => (octet, used),
            _ => (self.octet()?, 0),
        };
        self.bits = Some((octet, used + 1));
        Ok(octet & (1 << used) != 0)
    }

    pub(crate) fn octet(&mut self) -> Result<u8, FrameError> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn short(&mut self) -> Result<u16, FrameError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub(crate) fn long(&mut self) -> Result<u32, FrameError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub(crate) fn longlong(&mut self) -> Result<u64, FrameError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    pub(crate) fn shortstr(&mut self) -> Result<String, FrameError> {
        let len = usize::from(self.octet()?);
        Ok(String::from_utf8_lossy(self.take(len)?).into_owned())
    }

    pub(crate) fn longstr(&mut self) -> Result<Vec<u8>, FrameError> {
        let len = self.long()? as usize;
        Ok(self.take(len)?.to_vec())
    }

    /// A reader over the next length-prefixed block (a table or an array).
    pub(crate) fn nested(&mut self) -> Result<Self, FrameError> {
        let len = self.long()? as usize;
        Ok(Self::new(self.take(len)?))
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_pack_eight_to_an_octet_and_end_at_other_fields() {
        let mut buf = Vec::new();
        let mut w = Writer::new(&mut buf);
        for i in 0..10 {
            w.bit(i % 3 == 0);
        }
        w.short(7);
        w.bit(true);
        assert_eq!(buf, [0b0100_1001, 0b10, 0, 7, 1]);
        let mut r = Reader::new(&buf);
        let read: Vec<bool> = (0..10).map(|_| r.bit().unwrap()).collect();
        assert_eq!(read, (0..10).map(|i| i % 3 == 0).collect::<Vec<_>>());
        assert_eq!(r.short().unwrap(), 7);
        assert!(r.bit().unwrap());
        assert!(r.is_empty());
    }
}
