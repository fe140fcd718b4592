//! Commands run to their end, and a background process whose stdout is read line by line.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Runs `command` to its end and returns its stdout; panics, showing its output, when it
/// cannot run or fails. `what` names it in the panic (the program and its arguments).
pub fn run_ok(command: &mut Command, what: &str) -> String {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A background process whose stdout lines arrive on a channel; killed on drop. Its stdin
/// is a pipe held open until then (the Python peers stop at the end of their input).
pub struct Background {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Background {
    pub fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the process");
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines }
    }

    /// The next stdout line as JSON, within `secs`.
    pub fn next_json(&self, secs: u64) -> Value {
        let line = self
            .lines
            .recv_timeout(Duration::from_secs(secs))
            .expect("a line from the background process");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?} is not JSON: {e}"))
    }

    /// The next JSON line whose `event` is `event`, skipping others (each within a minute).
    pub fn wait_for(&self, event: &str) -> Value {
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|_| panic!("no {event:?} line"));
            if let Ok(v) = serde_json::from_str::<Value>(&line)
                && v["event"] == event
            {
                return v;
            }
        }
    }

    /// Sends `signal` (as `kill -<signal>` names it).
    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// SIGTERM, then the `stopped` line; the process must exit cleanly.
    pub fn terminate(mut self) -> Value {
        self.signal("TERM");
        let stopped = self.wait_for("stopped");
        let status = self.child.wait().unwrap();
        assert!(status.success(), "the process exits cleanly: {status}");
        stopped
    }

    /// Sends SIGINT (Ctrl-C) and returns the exit code (within 15 s).
    pub fn interrupt(mut self) -> Option<i32> {
        self.signal("INT");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(Instant::now() < deadline, "the process did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
