//! The `bench` modes, run as a user runs them, against RabbitMQ; and facing the Python
//! benchmark peer (`interop/bench_peer.py`, oslo.messaging 18.3.1) both ways. Skipped without a
//! broker (or Python) unless `CI` is set.

mod support;

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;
use support::{Background, Env, RABBIT_OPTIONS, broker_url, python};

fn peer_script() -> PathBuf {
    testkit::python::interop_script("bench_peer.py")
}

/// `oslo-messaging --json bench ARGS` for this test.
fn bench(env: &Env, args: &[&str]) -> Command {
    let mut c = env.cmd();
    c.args(["--json", "bench"]).args(args);
    c
}

/// The Python peer with this test's broker, exchange and queue options.
fn peer(env: &Env, py: &PathBuf, args: &[&str]) -> Command {
    let mut c = Command::new(py);
    c.arg(peer_script())
        .args(args)
        .args(["--url", &broker_url(), "--exchange", &env.exchange]);
    // The same options as our side's config file: queues that go with their consumers.
    for (k, v) in RABBIT_OPTIONS {
        c.args(["--rabbit", &format!("{k}={v}")]);
    }
    c
}

/// A bench server, once it said it is ready.
fn start_server(cmd: Command) -> Background {
    let s = Background::spawn(cmd);
    let ready = s.wait_for("ready");
    // The bench crate's server line, as bench-compare reads it.
    let line: oslo_messaging_bench::ServerLine =
        serde_json::from_value(ready).expect("the bench protocol");
    assert_eq!(line.event, "ready");
    s
}

fn summary(mut cmd: Command) -> Value {
    let out = cmd.output().expect("run the client");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "client failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = text.lines().last().expect("a summary");
    // The line protocol is the bench crate's: bench-compare reads it with these types.
    let typed: oslo_messaging_bench::Summary = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("not the bench protocol: {e}: {line}"));
    assert!(typed.ok + typed.errors > 0 || typed.calls == 0, "{line}");
    serde_json::from_str(line).expect("JSON")
}

#[test]
fn rpc_client_and_server_count_every_call_and_cast() {
    testkit::require_broker!();
    let env = Env::new("clibench", "rpc");
    let server = start_server(bench(
        &env,
        &["rpc-server", "--topic", &env.topic("bt"), "--count", "300"],
    ));
    let calls = summary(bench(
        &env,
        &[
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
        ],
    ));
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
    let casts = summary(bench(
        &env,
        &[
            "rpc-client",
            "--topic",
            &env.topic("bt"),
            "--calls",
            "95",
            "-c",
            "4",
            "--cast",
        ],
    ));
    assert_eq!(casts["cast"], true);
    assert_eq!(casts["ok"], 95);
    // 5 warmup + 200 calls + 95 casts.
    let done = server.wait_for("done");
    assert_eq!(done["received"], 300);
    assert!(done["last_ts"].as_f64() >= done["first_ts"].as_f64());
    assert_eq!(server.terminate()["received"], 300);
}

#[test]
fn fanout_casts_reach_every_bench_server() {
    testkit::require_broker!();
    let env = Env::new("clibench", "fanout");
    let servers: Vec<Background> = ["a", "b", "c"]
        .iter()
        .map(|s| {
            start_server(bench(
                &env,
                &[
                    "rpc-server",
                    "--topic",
                    &env.topic("bf"),
                    "--server",
                    s,
                    "--count",
                    "50",
                ],
            ))
        })
        .collect();
    let out = summary(bench(
        &env,
        &[
            "rpc-client",
            "--topic",
            &env.topic("bf"),
            "--calls",
            "50",
            "-c",
            "8",
            "--fanout",
        ],
    ));
    assert_eq!(out["fanout"], true);
    for s in servers {
        assert_eq!(s.wait_for("done")["received"], 50);
        s.terminate();
    }
}

#[test]
fn notify_client_and_server() {
    testkit::require_broker!();
    let env = Env::new("clibench", "notify");
    let server = start_server(bench(
        &env,
        &[
            "notify-server",
            "--topic",
            &env.topic("bn"),
            "--count",
            "120",
        ],
    ));
    for driver in ["messaging", "messagingv2"] {
        let out = summary(bench(
            &env,
            &[
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
            ],
        ));
        assert_eq!(out["mode"], "notify-client");
        assert_eq!(out["ok"], 60, "{driver}");
    }
    assert_eq!(server.wait_for("done")["received"], 120);
    server.terminate();
}

#[test]
fn our_bench_client_loads_a_python_server_and_the_other_way_round() {
    testkit::require_broker!();
    let Some(py) = python() else { return };
    let env = Env::new("clibench", "mixed");
    let python_server = start_server(peer(
        &env,
        &py,
        &["rpc-server", "--topic", &env.topic("bpy"), "--count", "100"],
    ));
    let out = summary(bench(
        &env,
        &[
            "rpc-client",
            "--topic",
            &env.topic("bpy"),
            "--calls",
            "100",
            "-c",
            "4",
        ],
    ));
    assert_eq!(
        (out["ok"].as_u64(), out["errors"].as_u64()),
        (Some(100), Some(0))
    );
    assert_eq!(python_server.wait_for("done")["received"], 100);
    python_server.terminate();

    let our_server = start_server(bench(
        &env,
        &["rpc-server", "--topic", &env.topic("brs"), "--count", "100"],
    ));
    let out = summary(peer(
        &env,
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
    assert_eq!(our_server.wait_for("done")["received"], 100);
    our_server.terminate();
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
