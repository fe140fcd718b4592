//! The `bench` modes, run as a user runs them, against RabbitMQ; and facing the Python
//! benchmark peer (`interop/bench_peer.py`, oslo.messaging 18.3.1) both ways. Skipped without a
//! broker (or Python) unless `CI` is set.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

fn broker_url() -> String {
    std::env::var("OSLO_MESSAGING_TEST_URL")
        .unwrap_or_else(|_| "rabbit://guest:guest@127.0.0.1:5672/".to_owned())
}

fn broker_available() -> bool {
    let ok = std::net::TcpStream::connect_timeout(
        &"127.0.0.1:5672".parse().unwrap(),
        Duration::from_secs(2),
    )
    .is_ok()
        || std::env::var_os("OSLO_MESSAGING_TEST_URL").is_some();
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but the test broker is unreachable"
        );
        eprintln!("SKIPPED: no RabbitMQ");
    }
    ok
}

fn python() -> Option<PathBuf> {
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

fn peer_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../interop/bench_peer.py")
}

/// A unique exchange, and a config file making its queues auto-delete.
struct Env {
    exchange: String,
    dir: tempfile::TempDir,
}

impl Env {
    fn new(name: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("bench.conf"),
            "[oslo_messaging_rabbit]\namqp_auto_delete = true\nrabbit_transient_queues_ttl = 60\n",
        )
        .unwrap();
        Self {
            exchange: format!("clibench_{name}_{}_{nanos:x}", std::process::id()),
            dir,
        }
    }

    /// A topic of this test's own (queue names are global on the broker).
    fn topic(&self, name: &str) -> String {
        format!("{}_{name}", self.exchange)
    }

    fn bench(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_oslo-messaging"));
        c.arg("--url")
            .arg(broker_url())
            .arg("--config-file")
            .arg(self.dir.path().join("bench.conf"))
            .args(["--exchange", &self.exchange, "--json", "bench"])
            .args(args);
        c
    }

    fn python(&self, py: &PathBuf, args: &[&str]) -> Command {
        let mut c = Command::new(py);
        c.arg(peer_script()).args(args).args([
            "--url",
            &broker_url(),
            "--exchange",
            &self.exchange,
            // The same options as our side's config file: queues that go with their consumers.
            "--rabbit",
            "amqp_auto_delete=true",
            "--rabbit",
            "rabbit_transient_queues_ttl=60",
        ]);
        c
    }
}

/// A server process; its JSON lines arrive on a channel. Killed on drop.
struct Server {
    child: Child,
    lines: mpsc::Receiver<Value>,
}

impl Server {
    fn start(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the server");
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str(&line)
                    && tx.send(v).is_err()
                {
                    break;
                }
            }
        });
        let s = Self { child, lines };
        assert_eq!(s.wait("ready")["event"], "ready");
        s
    }

    fn wait(&self, event: &str) -> Value {
        loop {
            let v = self
                .lines
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|_| panic!("no {event:?} line"));
            if v["event"] == event {
                return v;
            }
        }
    }

    /// SIGTERM, then the `stopped` line.
    fn stop(mut self) -> Value {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        let stopped = self.wait("stopped");
        let status = self.child.wait().unwrap();
        assert!(status.success(), "the server exits cleanly: {status}");
        stopped
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn summary(mut cmd: Command) -> Value {
    let out = cmd.output().expect("run the client");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "client failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(text.lines().last().expect("a summary")).expect("JSON")
}

#[test]
fn rpc_client_and_server_count_every_call_and_cast() {
    if !broker_available() {
        return;
    }
    let env = Env::new("rpc");
    let server =
        Server::start(env.bench(&["rpc-server", "--topic", &env.topic("bt"), "--count", "300"]));
    let calls = summary(env.bench(&[
        "rpc-client",
        "--topic",
        &env.topic("bt"),
        "--calls",
        "200",
        "-c",
        "8",
        "--payload-size",
        "oslo",
        "--warmup",
        "5",
    ]));
    assert_eq!(calls["mode"], "rpc-client");
    assert_eq!(
        (calls["ok"].as_u64(), calls["errors"].as_u64()),
        (Some(200), Some(0))
    );
    let lat = &calls["latency_ms"];
    for k in ["p50", "p90", "p99", "max"] {
        assert!(lat[k].as_f64().unwrap() > 0.0, "{k}: {lat}");
    }
    assert!(lat["p50"].as_f64() <= lat["p99"].as_f64());
    assert!(calls["throughput"].as_f64().unwrap() > 0.0);
    let casts = summary(env.bench(&[
        "rpc-client",
        "--topic",
        &env.topic("bt"),
        "--calls",
        "95",
        "-c",
        "4",
        "--cast",
    ]));
    assert_eq!(casts["cast"], true);
    assert_eq!(casts["ok"], 95);
    // 5 warmup + 200 calls + 95 casts.
    let done = server.wait("done");
    assert_eq!(done["received"], 300);
    assert!(done["last_ts"].as_f64() >= done["first_ts"].as_f64());
    assert_eq!(server.stop()["received"], 300);
}

#[test]
fn fanout_casts_reach_every_bench_server() {
    if !broker_available() {
        return;
    }
    let env = Env::new("fanout");
    let servers: Vec<Server> = ["a", "b", "c"]
        .iter()
        .map(|s| {
            Server::start(env.bench(&[
                "rpc-server",
                "--topic",
                &env.topic("bf"),
                "--server",
                s,
                "--count",
                "50",
            ]))
        })
        .collect();
    let out = summary(env.bench(&[
        "rpc-client",
        "--topic",
        &env.topic("bf"),
        "--calls",
        "50",
        "-c",
        "8",
        "--fanout",
    ]));
    assert_eq!(out["fanout"], true);
    for s in servers {
        assert_eq!(s.wait("done")["received"], 50);
        s.stop();
    }
}

#[test]
fn notify_client_and_server() {
    if !broker_available() {
        return;
    }
    let env = Env::new("notify");
    let server = Server::start(env.bench(&[
        "notify-server",
        "--topic",
        &env.topic("bn"),
        "--count",
        "120",
    ]));
    for driver in ["messaging", "messagingv2"] {
        let out = summary(env.bench(&[
            "notify-client",
            "--topic",
            &env.topic("bn"),
            "--count",
            "60",
            "-c",
            "4",
            "--driver",
            driver,
            "--payload-size",
            "1000",
        ]));
        assert_eq!(out["mode"], "notify-client");
        assert_eq!(out["ok"], 60, "{driver}");
    }
    assert_eq!(server.wait("done")["received"], 120);
    server.stop();
}

#[test]
fn our_bench_client_loads_a_python_server_and_the_other_way_round() {
    if !broker_available() {
        return;
    }
    let Some(py) = python() else { return };
    let env = Env::new("mixed");
    let python_server = Server::start(env.python(
        &py,
        &["rpc-server", "--topic", &env.topic("bpy"), "--count", "100"],
    ));
    let out = summary(env.bench(&[
        "rpc-client",
        "--topic",
        &env.topic("bpy"),
        "--calls",
        "100",
        "-c",
        "4",
    ]));
    assert_eq!(
        (out["ok"].as_u64(), out["errors"].as_u64()),
        (Some(100), Some(0))
    );
    assert_eq!(python_server.wait("done")["received"], 100);
    python_server.stop();

    let our_server =
        Server::start(env.bench(&["rpc-server", "--topic", &env.topic("brs"), "--count", "100"]));
    let out = summary(env.python(
        &py,
        &[
            "rpc-client",
            "--topic",
            &env.topic("brs"),
            "--calls",
            "100",
            "--concurrency",
            "4",
            "--payload-size",
            "100",
        ],
    ));
    assert_eq!(out["impl"], "python");
    assert_eq!(
        (out["ok"].as_u64(), out["errors"].as_u64()),
        (Some(100), Some(0))
    );
    assert_eq!(our_server.wait("done")["received"], 100);
    our_server.stop();
}

#[test]
fn bench_usage_errors_exit_64() {
    for (args, needle) in [
        (
            &["bench", "rpc-client", "--payload-size", "big"][..],
            "oslo",
        ),
        (
            &["bench", "rpc-client", "--calls", "5", "--duration", "1"],
            "cannot be used",
        ),
        (&["bench", "rpc-client", "-c", "0"], "0"),
        (&["bench", "nosuch"], "unrecognized subcommand"),
    ] {
        let o = Command::new(env!("CARGO_BIN_EXE_oslo-messaging"))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(64), "{args:?}");
        assert!(
            String::from_utf8_lossy(&o.stderr).contains(needle),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}
