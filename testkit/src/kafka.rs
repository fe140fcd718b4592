//! A private Kafka-protocol broker for the Kafka driver's tests: `tansu` on its own port,
//! stopped on drop; in memory, or in an SQLite file that outlives a restart
//! ([`Tansu::durable`]), and optionally requiring SASL authentication.
//!
//! The binary is `OSLO_MESSAGING_TANSU`, else `~/.cache/tansu-0.6.0-dynostore-libsql/bin/tansu`
//! (what `scripts/test` installs with `cargo install tansu --features dynostore,libsql`).
//! Without one the tests are skipped with a message, unless `CI` is set: then they fail. tansu
//! creates no topic on first use: tests create theirs with [`Tansu::create_topic`].

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
        let port = free_port();
        Self::start_on(port, port)
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
        let bin = tansu().expect("tansu is installed");
        let mut broker = Self {
            bin,
            child: None,
            port,
            advertised,
            dir,
            authentication: false,
        };
        broker.spawn();
        broker
    }

    fn spawn(&mut self) {
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
        let child = command
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start tansu");
        self.child = Some(child);
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "tansu did not listen on port {} within 30 s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
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
        self.spawn();
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
        let out = Command::new(&self.bin)
            .args(args)
            .env("RUST_LOG", "warn")
            .output()
            .expect("run tansu");
        assert!(
            out.status.success(),
            "tansu {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
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
