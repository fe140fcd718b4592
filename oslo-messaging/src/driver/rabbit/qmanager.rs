//! Stable queue names (`use_queue_manager`): `<hostname>:<processname>:<n>`, where `n` counts
//! up per process group in `/dev/shm/<hostname>_<processname>_qmanager`, exactly as Python's
//! `QManager` does (same file, same `pgid:counter:start_time` line), so a restarted service
//! reuses its queue names instead of creating new ones.
//!
//! Python serialises access with an oslo.concurrency file lock (`lock_path`); here the counter
//! file itself is locked, which needs no extra option.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

use crate::config::RabbitOptions;
use crate::error::{Error, ErrorKind, Result};

/// Fields of `/proc/<pid>/stat` after the command name (field 3 is index 0).
fn stat_fields(pid: &str) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &text[text.rfind(')')? + 1..];
    Some(after.split_whitespace().map(str::to_owned).collect())
}

/// The process group and its start time, as Python's `_get_pgid_and_start_time` reads them.
fn identity() -> (String, String) {
    let pgid = stat_fields("self")
        .and_then(|f| f.get(2).cloned())
        .unwrap_or_else(|| std::process::id().to_string());
    let start = stat_fields(&pgid)
        .and_then(|f| f.get(19).cloned())
        .unwrap_or_default();
    (pgid, start)
}

fn counter_path(opts: &RabbitOptions) -> PathBuf {
    let dir = PathBuf::from("/dev/shm");
    let dir = if dir.is_dir() {
        dir
    } else {
        std::env::temp_dir()
    };
    dir.join(format!("{}_{}_qmanager", opts.hostname, opts.processname))
}

/// The next stable id.
pub(crate) fn next_id(opts: &RabbitOptions) -> Result<String> {
    let path = counter_path(opts);
    let io = |e: std::io::Error| {
        Error::with_source(
            ErrorKind::Configuration,
            format!(
                "use_queue_manager: cannot use the counter file {}",
                path.display()
            ),
            e,
        )
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io)?;
    file.lock().map_err(io)?;
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(io)?;
    let (pgid, start) = identity();
    let parts: Vec<&str> = text.trim().split(':').collect();
    let counter = match parts.as_slice() {
        [p, n, s] if *p == pgid && *s == start => n
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_add(1))
            .unwrap_or(1),
        _ => 1,
    };
    file.set_len(0).map_err(io)?;
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    write!(file, "{pgid}:{counter}:{start}").map_err(io)?;
    file.unlock().map_err(io)?;
    Ok(format!("{}:{}:{counter}", opts.hostname, opts.processname))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_up_within_a_process_group() {
        let opts = RabbitOptions {
            hostname: format!("test-host-{}", crate::wire::new_id()),
            processname: "unit".into(),
            ..RabbitOptions::default()
        };
        let a = next_id(&opts).unwrap();
        let b = next_id(&opts).unwrap();
        assert!(a.starts_with(&format!("{}:unit:", opts.hostname)), "{a}");
        let n = |s: &str| s.rsplit(':').next().unwrap().parse::<u64>().unwrap();
        assert_eq!(n(&b), n(&a) + 1);
        let text = std::fs::read_to_string(counter_path(&opts)).unwrap();
        assert_eq!(text.split(':').count(), 3, "{text}");
        std::fs::remove_file(counter_path(&opts)).unwrap();
    }
}
