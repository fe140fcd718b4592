//! A private Kafka-protocol broker for the Kafka driver's tests: `tansu` on its own port,
//! stopped on drop; in memory, or in an SQLite file that outlives a restart
//! ([`Tansu::durable`]), and optionally requiring SASL authentication.
//!
//! The binary is `OSLO_MESSAGING_TANSU`, else `~/.cache/tansu-0.6.0-dynostore-libsql/bin/tansu`
//! (what `scripts/test` installs with `cargo install tansu --features dynostore,libsql`).
//! Without one the tests are skipped with a message, unless `CI` is set: then they fail. tansu
//! creates no topic on first use: tests create theirs with [`Tansu::create_topic`].

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The tansu binary, if there is one.
pub fn tansu() -> Option<PathBuf> {
    let path = std::env::var_os("OSLO_MESSAGING_TANSU")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".cache/tansu-0.6.0-dynostore-libsql/bin/tansu"))
        })
        .filter(|p| p.exists());
    if path.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but there is no tansu broker (OSLO_MESSAGING_TANSU)"
        );
        eprintln!("SKIPPED: no tansu Kafka broker (set OSLO_MESSAGING_TANSU)");
    }
    path
}

/// Returns from the test without a tansu broker (unless `CI` is set).
#[macro_export]
macro_rules! require_kafka {
    () => {
        if $crate::kafka::tansu().is_none() {
            return;
        }
    };
}

/// A free port on 127.0.0.1 (free when this returns).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running tansu broker; killed on drop.
pub struct Tansu {
    bin: PathBuf,
    child: Option<Child>,
    /// The port it listens on.
    pub port: u16,
    /// The port it tells clients to use (a fault proxy's, or `port`).
    pub advertised: u16,
    /// The directory of its SQLite file, when it keeps its data there (removed on drop).
    dir: Option<PathBuf>,
    /// Whether clients must authenticate (SASL).
    authentication: bool,
}

impl Tansu {
    /// A broker on a free port, advertising that port.
    pub fn start() -> Self {
        // Another process may take the free port before tansu does: then try another.
        let mut tries = 0;
        loop {
            let port = free_port();
            let mut broker = Self::new(port, port, None);
            match broker.spawn() {
                Ok(()) => return broker,
                Err(e) if tries < 3 => {
                    tries += 1;
                    eprintln!("{e}; trying another port");
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// A broker listening on `port` that tells clients to connect to `advertised` (a proxy in
    /// front of it, say).
    pub fn start_on(port: u16, advertised: u16) -> Self {
        Self::launch(port, advertised, None)
    }

    /// Like [`Tansu::start_on`], but its topics, offsets and users are kept in an SQLite file,
    /// so they survive [`Tansu::restart`].
    pub fn durable(port: u16, advertised: u16) -> Self {
        let dir = std::env::temp_dir().join(crate::unique("tansu"));
        std::fs::create_dir_all(&dir).unwrap();
        Self::launch(port, advertised, Some(dir))
    }

    fn launch(port: u16, advertised: u16, dir: Option<PathBuf>) -> Self {
        let mut broker = Self::new(port, advertised, dir);
        broker.spawn().unwrap_or_else(|e| panic!("{e}"));
        broker
    }

    fn new(port: u16, advertised: u16, dir: Option<PathBuf>) -> Self {
        Self {
            bin: tansu().expect("tansu is installed"),
            child: None,
            port,
            advertised,
            dir,
            authentication: false,
        }
    }

    /// Starts the broker process and waits until it says it is ready. Fails if it exits
    /// first: its port was taken (a connection test would reach the other process).
    fn spawn(&mut self) -> Result<(), String> {
        let mut command = Command::new(&self.bin);
        command.args([
            "broker",
            "--listener-url",
            &format!("tcp://127.0.0.1:{}", self.port),
            "--advertised-listener-url",
            &format!("tcp://127.0.0.1:{}", self.advertised),
        ]);
        match &self.dir {
            // tansu opens `sqlite://<name>` relative to its working directory.
            Some(dir) => command
                .current_dir(dir)
                .args(["--storage-engine", "sqlite://tansu.db"]),
            None => command.args(["--storage-engine", "memory://tansu/"]),
        };
        if self.authentication {
            command.arg("--authentication");
        }
        let mut child = command
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start tansu");
        // tansu prints `ready in ...` once it listens; its stdout is read to the end.
        let stdout = child.stdout.take().expect("tansu's stdout");
        let (ready_tx, ready) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut stdout = BufReader::new(stdout);
            let mut line = Vec::new();
            while stdout.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
                if line.starts_with(b"ready in") {
                    let _ = ready_tx.send(());
                    break;
                }
                line.clear();
            }
            // Whatever else it prints is read, so a full pipe never stops it.
            let _ = std::io::copy(&mut stdout, &mut std::io::sink());
        });
        self.child = Some(child);
        match ready.recv_timeout(Duration::from_secs(30)) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.kill();
                Err(format!(
                    "tansu did not start on port {} ({e}: is the port taken?)",
                    self.port
                ))
            }
        }
    }

    /// Kills the broker (everything it held is gone: it keeps it in memory).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same ports: empty, unless it is [`Tansu::durable`].
    pub fn restart(&mut self) {
        self.kill();
        self.spawn().unwrap_or_else(|e| panic!("{e}"));
    }

    /// Restarts it requiring SASL authentication from every client (PLAIN or SCRAM; only
    /// SCRAM checks the password). Its own commands (topics, users) no longer work after.
    pub fn require_authentication(&mut self) {
        self.authentication = true;
        self.restart();
    }

    /// Creates a user with a SCRAM-SHA-512 password (before
    /// [`Tansu::require_authentication`], on a [`Tansu::durable`] broker).
    pub fn create_user(&self, name: &str, password: &str) {
        self.tansu(&[
            "user",
            "create",
            name,
            password,
            "--mechanism",
            "scram512",
            "--broker",
            &format!("tcp://127.0.0.1:{}", self.port),
        ]);
    }

    /// Runs a tansu command against it, which must succeed.
    fn tansu(&self, args: &[&str]) {
        crate::process::run_ok(
            Command::new(&self.bin).args(args).env("RUST_LOG", "warn"),
            &format!("tansu {args:?}"),
        );
    }

    /// `host:port` as clients reach it.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.advertised)
    }

    /// A `kafka://` URL for it, with `query` (`""` or `?name=value&...`).
    pub fn url(&self, query: &str) -> String {
        format!("kafka://127.0.0.1:{}/{query}", self.advertised)
    }

    /// Creates `topic` with `partitions` partitions (tansu does not create topics on use).
    pub fn create_topic(&self, topic: &str, partitions: u32) {
        self.tansu(&[
            "topic",
            "create",
            topic,
            "--partitions",
            &partitions.to_string(),
            "--broker",
            &format!("tcp://127.0.0.1:{}", self.port),
        ]);
    }
}

impl Tansu {
    /// Creates the topics a listener on notification topic `topic` subscribes to,
    /// `<topic>.<priority>` for every priority, `partitions` each.
    pub fn create_priority_topics(&self, topic: &str, partitions: u32) {
        for p in PRIORITIES {
            self.create_topic(&format!("{topic}.{p}"), partitions);
        }
    }
}

/// The notification priorities as they appear in topic names.
const PRIORITIES: [&str; 7] = [
    "audit", "debug", "info", "warn", "error", "critical", "sample",
];

impl Drop for Tansu {
    fn drop(&mut self) {
        self.kill();
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_port_is_a_clear_failure_not_another_broker() {
        if tansu().is_none() {
            return;
        }
        // Something else listens there: tansu cannot, and must not be taken for ready.
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let Err(failed) = std::panic::catch_unwind(|| Tansu::start_on(port, port)) else {
            panic!("tansu started on a taken port");
        };
        let message = failed.downcast_ref::<String>().unwrap();
        assert!(message.contains("is the port taken"), "{message}");
        // A free port still works.
        let broker = Tansu::start();
        broker.create_topic("t", 1);
    }
}
