//! The Python peer of the interop tests: `interop/peer.py` run by Python oslo.messaging
//! 18.3.1 from a virtualenv.
//!
//! The interpreter is `OSLO_MESSAGING_PYTHON`, else `~/.cache/oslo-venv-18.3.1/bin/python`
//! (what `scripts/test` builds from `interop/requirements.txt`). Without one the tests are
//! skipped with a message, unless `CI` is set: then they fail.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

/// The interpreter with oslo.messaging 18.3.1, if there is one.
pub fn python() -> Option<PathBuf> {
    let path = std::env::var_os("OSLO_MESSAGING_PYTHON")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".cache/oslo-venv-18.3.1/bin/python"))
        })
        .filter(|p| p.exists());
    if path.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but there is no Python with oslo.messaging 18.3.1 (OSLO_MESSAGING_PYTHON)"
        );
        eprintln!("SKIPPED: no Python oslo.messaging (set OSLO_MESSAGING_PYTHON)");
    }
    path
}

/// Returns from the test without a broker or a Python peer (unless `CI` is set).
#[macro_export]
macro_rules! require_python {
    () => {
        if !$crate::broker::available() || $crate::python::python().is_none() {
            return;
        }
    };
}

/// A script of the workspace's `interop/` folder, such as `peer.py`.
pub fn interop_script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../interop")
        .join(name)
}

/// `interop/peer.py`.
fn script() -> PathBuf {
    interop_script("peer.py")
}

/// A running peer: JSON lines in on stdin, out on stdout. Killed on drop.
pub struct Peer {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::UnboundedReceiver<String>,
    what: String,
}

/// Options every peer command takes.
pub struct PeerOpts<'a> {
    pub url: &'a str,
    pub exchange: &'a str,
    /// `[oslo_messaging_rabbit]` options.
    pub rabbit: &'a [(&'a str, &'a str)],
    /// Monkey-patched with eventlet (`--eventlet`): green threads on one OS thread, and the
    /// eventlet executor for servers and listeners, as eventlet services run.
    pub eventlet: bool,
    /// `[oslo_messaging_tracing]` options (`--tracing KEY=VALUE`).
    pub tracing: &'a [(&'a str, &'a str)],
    /// `[oslo_messaging_metrics]` options (`--metrics KEY=VALUE`).
    pub metrics: &'a [(&'a str, &'a str)],
}

impl<'a> PeerOpts<'a> {
    /// The broker and exchange, with the default `[oslo_messaging_rabbit]` options.
    pub fn new(url: &'a str, exchange: &'a str) -> Self {
        Self {
            url,
            exchange,
            rabbit: &[],
            eventlet: false,
            tracing: &[],
            metrics: &[],
        }
    }
}

impl Peer {
    /// Starts `peer.py command args...` with the common options.
    pub fn spawn(command: &str, args: &[&str], opts: &PeerOpts<'_>) -> Self {
        let mut cmd = Command::new(python().expect("a Python peer"));
        cmd.arg(script()).arg(command).args(args).args([
            "--url",
            opts.url,
            "--exchange",
            opts.exchange,
        ]);
        for (k, v) in opts.rabbit {
            cmd.arg("--rabbit").arg(format!("{k}={v}"));
        }
        for (k, v) in opts.tracing {
            cmd.arg("--tracing").arg(format!("{k}={v}"));
        }
        for (k, v) in opts.metrics {
            cmd.arg("--metrics").arg(format!("{k}={v}"));
        }
        if opts.eventlet {
            cmd.arg("--eventlet");
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start the Python peer");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            stdin: child.stdin.take(),
            child,
            lines,
            what: format!("peer.py {command} {}", args.join(" ")),
        }
    }

    /// Writes one JSON line to the peer.
    pub async fn send(&mut self, value: &Value) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        let mut line = value.to_string();
        line.push('\n');
        stdin.write_all(line.as_bytes()).await.unwrap();
        stdin.flush().await.unwrap();
    }

    /// The next line, parsed, within `secs`.
    pub async fn next(&mut self, secs: u64) -> Value {
        let line = tokio::time::timeout(Duration::from_secs(secs), self.lines.recv())
            .await
            .unwrap_or_else(|_| panic!("{}: nothing within {secs} s", self.what))
            .unwrap_or_else(|| panic!("{}: exited", self.what));
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"))
    }

    /// Skips lines until one has `"event": event`; fails on a `fatal` event.
    pub async fn wait_event(&mut self, event: &str, secs: u64) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let v = self.next(left.as_secs().max(1)).await;
            assert_ne!(v["event"], "fatal", "{}: {v}", self.what);
            if v["event"] == event {
                return v;
            }
        }
    }

    /// Closes stdin (the peer's signal to stop) and waits for it to exit; returns the lines it
    /// printed meanwhile.
    pub async fn finish(mut self) -> Vec<Value> {
        drop(self.stdin.take());
        let status = tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("{}: did not exit", self.what))
            .unwrap();
        let mut rest = Vec::new();
        while let Some(line) = self.lines.recv().await {
            rest.push(serde_json::from_str(&line).unwrap());
        }
        assert!(status.success(), "{}: {status}", self.what);
        rest
    }
}

/// Runs `ops` with a Python client on `topic`; one result per op.
pub async fn python_client(topic: &str, ops: &[Value], opts: &PeerOpts<'_>) -> Vec<Value> {
    let mut peer = Peer::spawn("client", &["--topic", topic], opts);
    for op in ops {
        peer.send(op).await;
    }
    let out = peer.finish().await;
    assert_eq!(out.len(), ops.len(), "one result per op: {out:?}");
    out
}

/// Starts a Python RPC server and waits until it serves.
pub async fn python_server(topic: &str, server: &str, opts: &PeerOpts<'_>) -> Peer {
    let mut peer = Peer::spawn("rpc-server", &["--topic", topic, "--server", server], opts);
    peer.wait_event("ready", 60).await;
    peer
}
