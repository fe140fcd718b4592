//! Helpers shared by the CLI's integration tests: the test broker, a test's own names and
//! config file, and background processes read line by line.
#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Python oslo.messaging 18.3.1's interpreter (`OSLO_MESSAGING_PYTHON`, else the cached
/// virtualenv); `None` (after saying SKIPPED) when there is none, and a failure under `CI`.
pub fn python() -> Option<PathBuf> {
    let p = std::env::var_os("OSLO_MESSAGING_PYTHON")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".cache/oslo-venv-18.3.1/bin/python"))
        })
        .filter(|p| p.exists());
    if p.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but there is no Python oslo.messaging"
        );
        eprintln!("SKIPPED: no Python oslo.messaging");
    }
    p
}

/// The test broker: `OSLO_MESSAGING_TEST_URL`, else the local RabbitMQ.
pub fn broker_url() -> String {
    std::env::var("OSLO_MESSAGING_TEST_URL")
        .unwrap_or_else(|_| "rabbit://guest:guest@127.0.0.1:5672/".to_owned())
}

/// Whether the broker answers; fails instead when `CI` is set.
pub fn broker_available() -> bool {
    let url = broker_url();
    let authority = url
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .and_then(|hosts| hosts.split(',').next())
        .map(|h| h.rsplit('@').next().unwrap_or(h).to_owned())
        .unwrap_or_default();
    let addr = if authority.contains(':') {
        authority
    } else {
        format!("{authority}:5672")
    };
    let ok = addr
        .parse()
        .is_ok_and(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but the test broker {addr} is unreachable"
        );
        eprintln!("SKIPPED: no RabbitMQ at {addr}");
    }
    ok
}

/// Returns from the test when there is no broker (and fails under `CI`).
#[macro_export]
macro_rules! require_broker {
    () => {
        if !support::broker_available() {
            return;
        }
    };
}

/// The options every test's config file sets: queues and exchanges go away with their
/// consumers, so the tests leave nothing on the broker.
pub const RABBIT_OPTIONS: [(&str, &str); 2] = [
    ("amqp_auto_delete", "true"),
    ("rabbit_transient_queues_ttl", "60"),
];

/// Unique names, a config file and the command line prefix of one test.
pub struct Env {
    pub exchange: String,
    dir: tempfile::TempDir,
}

impl Env {
    /// Names start with `prefix` and `name`; the config file holds [`RABBIT_OPTIONS`].
    pub fn new(prefix: &str, name: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = tempfile::tempdir().unwrap();
        let mut conf = "[oslo_messaging_rabbit]\n".to_owned();
        for (k, v) in RABBIT_OPTIONS {
            conf.push_str(&format!("{k} = {v}\n"));
        }
        std::fs::write(dir.path().join("test.conf"), conf).unwrap();
        Self {
            exchange: format!("{prefix}_{name}_{}_{nanos:x}", std::process::id()),
            dir,
        }
    }

    /// A topic of this test's own (queue names are global on the broker).
    pub fn topic(&self, name: &str) -> String {
        format!("{}_{name}", self.exchange)
    }

    /// The binary with --url, --config-file and --exchange set.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_oslo-messaging"));
        c.arg("--url")
            .arg(broker_url())
            .arg("--config-file")
            .arg(self.dir.path().join("test.conf"))
            .arg("--exchange")
            .arg(&self.exchange);
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run the binary")
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A background process whose stdout lines arrive on a channel; killed on drop. Its stdin
/// is a pipe held open until then (the Python peer stops at end of input).
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
