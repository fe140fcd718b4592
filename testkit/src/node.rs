//! A private RabbitMQ node for tests that kill, pause, restart or alarm a broker: its own
//! node name, ports, data and log directories, never the system broker (the recipe of the
//! reliability reference, section 3.2). Needs the Debian `rabbitmq-server` package and root;
//! without them the tests are skipped with a message, unless `CI` is set.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const SBIN: &str = "/usr/lib/rabbitmq/bin";

/// A running private node; stopped and deleted on drop.
pub struct Node {
    name: String,
    /// The AMQP port (plain, or TLS when the config says so).
    pub port: u16,
    dist_port: u16,
    base: PathBuf,
}

/// Whether private nodes can run here; fails instead when `CI` is set.
pub fn nodes_available() -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let ok = root && Path::new(SBIN).join("rabbitmq-server").exists();
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but private RabbitMQ nodes cannot run (need root and rabbitmq-server)"
        );
        eprintln!("SKIPPED: private RabbitMQ nodes need root and the rabbitmq-server package");
    }
    ok
}

/// Returns from the test when private nodes cannot run (and CI is unset).
#[macro_export]
macro_rules! require_nodes {
    () => {
        if !$crate::node::nodes_available() {
            return;
        }
    };
}

impl Node {
    /// Starts node `tag` with AMQP on `port` (distribution on `port + 20000`). `conf` is
    /// appended to its rabbitmq.conf; `plugins` are enabled.
    pub fn start(tag: &str, port: u16, conf: &str, plugins: &[&str]) -> Self {
        let node = Self::prepare(tag, port, conf, plugins, None);
        node.boot();
        node
    }

    /// As [`start`](Self::start), but only writes the node's files: with `shared_cookie`, the
    /// Erlang cookie it shares with the other members of a cluster.
    pub fn prepare(
        tag: &str,
        port: u16,
        conf: &str,
        plugins: &[&str],
        shared_cookie: Option<&str>,
    ) -> Self {
        let base = PathBuf::from(format!(
            "/var/tmp/oslo-messaging-test-nodes/{tag}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(base.join("home")).unwrap();
        let cookie = base.join("home/.erlang.cookie");
        let cookie_text = shared_cookie.map_or_else(
            || format!("oslotest{}{tag}", std::process::id()),
            str::to_owned,
        );
        std::fs::write(&cookie, cookie_text).unwrap();
        set_mode(&cookie, 0o400);
        let listener = if conf.contains("listeners.tcp") {
            String::new()
        } else {
            format!("listeners.tcp.1 = 127.0.0.1:{port}\n")
        };
        std::fs::write(
            base.join("rabbitmq.conf"),
            format!("{listener}loopback_users = none\n{conf}\n"),
        )
        .unwrap();
        std::fs::write(
            base.join("enabled_plugins"),
            format!("[{}].\n", plugins.join(",")),
        )
        .unwrap();
        Self {
            name: format!("oslotest_{tag}_{}@localhost", std::process::id()),
            port,
            dist_port: port + 20000,
            base,
        }
    }

    /// The Erlang node name (`oslotest_<tag>_<pid>@localhost`).
    pub fn name(&self) -> &str {
        &self.name
    }

    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(Path::new(SBIN).join(program));
        c.env("HOME", self.base.join("home"))
            .env("RABBITMQ_NODENAME", &self.name)
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", self.base.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", self.base.join("log"))
            .env("RABBITMQ_PID_FILE", self.base.join("pid"))
            .env("RABBITMQ_CONFIG_FILE", self.base.join("rabbitmq.conf"))
            .env(
                "RABBITMQ_ENABLED_PLUGINS_FILE",
                self.base.join("enabled_plugins"),
            )
            .env("RABBITMQ_CONF_ENV_FILE", self.base.join("none-env.conf"));
        c
    }

    /// Starts the node process and waits until it serves.
    pub fn boot(&self) {
        self.spawn();
        self.wait_up(Instant::now());
    }

    /// Starts the node process without waiting (cluster members that were all stopped must
    /// start together: each waits for the others' data).
    pub fn spawn(&self) {
        let status = self
            .command("rabbitmq-server")
            .arg("-detached")
            .status()
            .expect("run rabbitmq-server");
        assert!(status.success(), "rabbitmq-server -detached: {status}");
    }

    /// Waits until the node serves; says how long since `started`.
    pub fn wait_up(&self, started: Instant) {
        let pid = self.base.join("pid");
        self.ctl(&["wait", pid.to_str().unwrap(), "--timeout", "120"])
            .unwrap_or_else(|e| panic!("node {} did not start: {e}", self.name));
        eprintln!(
            "node {} up on {} in {:.1} s",
            self.name,
            self.port,
            started.elapsed().as_secs_f64()
        );
    }

    /// Runs rabbitmqctl against this node.
    pub fn ctl(&self, args: &[&str]) -> Result<String, String> {
        let out = self
            .command("rabbitmqctl")
            .arg("-n")
            .arg(&self.name)
            .args(args)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "rabbitmqctl {args:?}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// The node's OS process id.
    pub fn pid(&self) -> String {
        std::fs::read_to_string(self.base.join("pid"))
            .unwrap()
            .trim()
            .to_owned()
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.pid()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal}");
    }

    /// Kills the node at once (power loss).
    pub fn kill(&self) {
        self.signal("-KILL");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            assert!(Instant::now() < deadline, "the node did not die");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Freezes the node (a VM pause: TCP still accepts, nothing answers).
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Thaws a paused node.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// A transport URL for this node.
    pub fn url(&self) -> String {
        format!("rabbit://guest:guest@127.0.0.1:{}/", self.port)
    }

    /// The node's log, for failure messages.
    pub fn log(&self) -> String {
        let mut all = String::new();
        if let Ok(dir) = std::fs::read_dir(self.base.join("log")) {
            for entry in dir.flatten() {
                all.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
            }
        }
        all
    }

    /// The node's directory (certificates go there).
    pub fn dir(&self) -> &Path {
        &self.base
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // A paused node cannot stop itself.
        let _ = Command::new("kill").args(["-CONT", &self.pid()]).status();
        if self.ctl(&["stop"]).is_err() {
            let _ = Command::new("kill").args(["-KILL", &self.pid()]).status();
        }
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Certificates for a TLS node: a CA, a server certificate for `localhost` only (so
/// 127.0.0.1 does not match) and a client certificate with common name `client_cn`.
pub struct Certs {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// A CA that signed nothing here.
    pub other_ca: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    crate::process::run_ok(
        Command::new("openssl").current_dir(dir).args(args),
        &format!("openssl {args:?}"),
    );
}

impl Certs {
    /// Makes the certificates in `dir`.
    pub fn make(dir: &Path, client_cn: &str) -> Self {
        Self::make_for(dir, client_cn, "DNS:localhost")
    }

    /// Makes the certificates in `dir`, the server's for `server_names` (a `subjectAltName`
    /// value, such as `DNS:localhost,IP:127.0.0.1`).
    pub fn make_for(dir: &Path, client_cn: &str, server_names: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        for ca in ["ca", "other_ca"] {
            openssl(
                dir,
                &[
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-days",
                    "2",
                    "-subj",
                    &format!("/CN=oslo-test-{ca}"),
                    "-keyout",
                    &format!("{ca}.key"),
                    "-out",
                    &format!("{ca}.pem"),
                ],
            );
        }
        std::fs::write(
            dir.join("server.ext"),
            format!("subjectAltName={server_names}\n"),
        )
        .unwrap();
        std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
        for (name, cn, ext) in [
            ("server", "localhost", "server.ext"),
            ("client", client_cn, "client.ext"),
        ] {
            openssl(
                dir,
                &[
                    "req",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-subj",
                    &format!("/CN={cn}"),
                    "-keyout",
                    &format!("{name}.key"),
                    "-out",
                    &format!("{name}.csr"),
                ],
            );
            openssl(
                dir,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &format!("{name}.csr"),
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-days",
                    "2",
                    "-extfile",
                    ext,
                    "-out",
                    &format!("{name}.pem"),
                ],
            );
        }
        for key in ["server.key", "client.key"] {
            set_mode(&dir.join(key), 0o644);
        }
        Self {
            ca: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client.key"),
            other_ca: dir.join("other_ca.pem"),
        }
    }

    /// The client key encrypted with `password` (AES-256, PKCS#8), beside the plain one.
    pub fn encrypted_client_key(&self, password: &str) -> PathBuf {
        let dir = self.client_key.parent().unwrap();
        openssl(
            dir,
            &[
                "pkcs8",
                "-topk8",
                "-v2",
                "aes-256-cbc",
                "-in",
                "client.key",
                "-passout",
                &format!("pass:{password}"),
                "-out",
                "client.enc.key",
            ],
        );
        dir.join("client.enc.key")
    }
}
