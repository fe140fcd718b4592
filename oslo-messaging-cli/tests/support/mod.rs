//! Helpers shared by the CLI's integration tests: a test's own names and config file; the
//! test broker, Python peers and background processes are `testkit`'s.
// Each test binary uses a part of this module; the re-exports are there for those that do.
#![allow(dead_code, unreachable_pub, unused_imports)]

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStderr, Command, Output};

pub use testkit::broker::url as broker_url;
pub use testkit::process::Background;
pub use testkit::python::python;

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

/// Reads a `listen -v` child's stderr until it logs that the listener is up; returns the
/// reader, to keep the pipe open while the child runs.
pub fn wait_until_listening(child: &mut Child) -> BufReader<ChildStderr> {
    let mut err = BufReader::new(child.stderr.take().expect("stderr piped"));
    let mut line = String::new();
    while !line.contains("listening for notifications") {
        line.clear();
        assert!(err.read_line(&mut line).unwrap() > 0, "listen exited early");
    }
    err
}
