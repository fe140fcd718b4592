//! Python's `str(datetime.utcnow())`, the timestamp of notifications.

use std::time::Duration;

/// Python's `str(datetime.utcnow())` for the current time: `YYYY-MM-DD HH:MM:SS.ffffff`, the
/// fraction left out when the microseconds are zero.
///
/// # Examples
///
/// ```
/// let ts = oslo_messaging::wire::utc_timestamp_now();
/// // Python's str(datetime.utcnow()): 2026-12-04 21:30:00.123456
/// assert_eq!(&ts[4..5], "-");
/// assert_eq!(&ts[10..11], " ");
/// ```
pub fn utc_timestamp_now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format_utc_timestamp(now)
}

/// Formats a time since the Unix epoch as Python's `str(datetime)` does.
pub(crate) fn format_utc_timestamp(since_epoch: Duration) -> String {
    let secs = since_epoch.as_secs();
    let micros = since_epoch.subsec_micros();
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    let (hh, mm, ss) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    if micros == 0 {
        format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02}:{ss:02}")
    } else {
        format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02}:{ss:02}.{micros:06}")
    }
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let m = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    (if m <= 2 { y + 1 } else { y }, m, d)
}
