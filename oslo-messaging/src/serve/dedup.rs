//! oslo's duplicate filter: the last 16 `_unique_id`s a listener saw.

use std::collections::VecDeque;

/// How many ids are remembered (oslo's `DUP_MSG_CHECK_SIZE`).
const SIZE: usize = 16;

/// Remembers recent message ids to drop quick redeliveries.
#[derive(Debug, Default)]
pub(crate) struct DedupCache {
    ids: VecDeque<String>,
}

impl DedupCache {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Records `id`; `false` when it was already among the last [`SIZE`].
    pub(crate) fn insert(&mut self, id: &str) -> bool {
        if self.contains(id) {
            return false;
        }
        if self.ids.len() == SIZE {
            self.ids.pop_front();
        }
        self.ids.push_back(id.to_owned());
        true
    }

    pub(crate) fn contains(&self, id: &str) -> bool {
        self.ids.iter().any(|s| s == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_the_last_sixteen() {
        let mut c = DedupCache::new();
        assert!(c.insert("a"));
        assert!(!c.insert("a"));
        for i in 0..SIZE {
            assert!(c.insert(&i.to_string()));
        }
        assert!(c.insert("a"), "pushed out by 16 newer ids");
        assert!(!c.insert("15"));
    }
}
