//! This process's resources, to check that faults and load leave nothing behind.

use std::time::Duration;

/// File descriptors open in this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, Iterator::count)
}

/// Tasks alive on the current Tokio runtime.
pub fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// Waits up to `within` for `now()` to come back to `baseline` (± `slack`); returns the last
/// value seen.
pub async fn settles(
    now: impl Fn() -> usize,
    baseline: usize,
    slack: usize,
    within: Duration,
) -> usize {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let v = now();
        if v <= baseline + slack || tokio::time::Instant::now() >= deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Resident memory of this process, in KiB.
pub fn rss_kib() -> u64 {
    status_kib("VmRSS:")
}

/// Resident anonymous memory of this process (its heap, stacks and other private memory, but
/// not the pages of its executable and libraries), in KiB.
pub fn rss_anon_kib() -> u64 {
    status_kib("RssAnon:")
}

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}
