//! Every subcommand, run as an operator runs it, against the real RabbitMQ of
//! `OSLO_MESSAGING_TEST_URL` (default `rabbit://guest:guest@127.0.0.1:5672/`). Skipped when
//! the broker is unreachable, unless `CI` is set.
//!
//! The tests pass a config file with `amqp_auto_delete = true`, so queues and exchanges go
//! away with their consumers and the tests leave nothing on the broker.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Background, Env, broker_url, stderr, stdout, wait_until_listening};

fn rpc_server(env: &Env, topic: &str, server: &str, extra: &[&str]) -> Background {
    let mut c = env.cmd();
    c.args(["--json", "rpc-server", "--topic", topic, "--server", server])
        .args(extra);
    let bg = Background::spawn(c);
    let ready = bg.next_json(30);
    assert_eq!(ready["event"], "ready", "{ready}");
    assert_eq!(ready["exchange"], json!(env.exchange));
    bg
}

#[test]
fn call_prints_results_and_exits_by_outcome() {
    testkit::require_broker!();
    let env = Env::new("cli", "call");
    let topic = env.topic("t");
    let server = rpc_server(&env, &topic, "s1", &["--ping"]);

    let o = env.run(&[
        "call",
        "--topic",
        &topic,
        "--context",
        r#"{"request_id": "req-7", "user": "u"}"#,
        "echo",
        r#"{"data": {"list": [1, "ü", null], "n": 1.5}}"#,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v, json!({"list": [1, "ü", null], "n": 1.5}));
    let seen = server.next_json(10);
    assert_eq!(seen["method"], "echo");
    assert_eq!(seen["context"]["request_id"], "req-7");

    // Server-directed, and --json gives one compact line.
    let o = env.run(&[
        "--json",
        "call",
        "--topic",
        &topic,
        "--server",
        "s1",
        "sleep",
        r#"{"seconds": 0.1}"#,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "0.1\n");
    server.next_json(10);
    // An integer comes back as the integer it was, as Python echoes it.
    let o = env.run(&[
        "--json",
        "call",
        "--topic",
        &topic,
        "sleep",
        r#"{"seconds": 0}"#,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "0\n");
    server.next_json(10);

    // A remote error: exit 1, class, module and message on stderr.
    let o = env.run(&["call", "--topic", &topic, "fail", r#"{"message": "boom"}"#]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).is_empty());
    assert!(
        stderr(&o).contains("builtins.ValueError: boom"),
        "{}",
        stderr(&o)
    );
    server.next_json(10);
    let o = env.run(&[
        "--json",
        "call",
        "--topic",
        &topic,
        "fail",
        r#"{"message": "gone", "exc_class": "nova.exception.InstanceNotFound"}"#,
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err: Value = serde_json::from_str(stderr(&o).trim()).unwrap();
    assert_eq!(
        err["error"],
        json!({"kind": "remote", "class": "InstanceNotFound", "module": "nova.exception",
               "message": "gone", "traceback": []})
    );
    server.next_json(10);

    // The dispatcher's own errors, and the ping method --ping enables.
    let o = env.run(&["call", "--topic", &topic, "nope"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("NoSuchMethod"), "{}", stderr(&o));
    let o = env.run(&["--json", "call", "--topic", &topic, "oslo_rpc_server_ping"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "\"pong\"\n");

    // The simulator's info() stamps the server time.
    let o = env.run(&[
        "--json",
        "call",
        "--topic",
        &topic,
        "info",
        r#"{"message": [1, "cargo", 1.0, null, null]}"#,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert!(v[3].as_f64().unwrap() > 1.7e9, "{v}");
    server.next_json(10);

    // Nobody serves this topic: exit 2 after the timeout.
    let started = Instant::now();
    let o = env.run(&[
        "call",
        "--topic",
        &env.topic("nobody"),
        "--timeout",
        "1",
        "echo",
        r#"{"data": 1}"#,
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("Timed out"), "{}", stderr(&o));
    assert!(started.elapsed() < Duration::from_secs(10));

    let code = server.interrupt();
    assert_eq!(code, Some(0), "Ctrl-C stops the server cleanly");
}

/// `GET /metrics` of a `--metrics-addr` server.
fn scrape(port: u16) -> String {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut page = String::new();
    conn.read_to_string(&mut page).unwrap();
    page
}

/// The value of the series starting with `series` (name and labels as Prometheus prints them).
fn metric(page: &str, series: &str) -> Option<f64> {
    page.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit_once(' '))
        .and_then(|(_, v)| v.parse().ok())
}

#[test]
fn rpc_server_serves_prometheus_metrics_of_its_traffic() {
    testkit::require_broker!();
    let env = Env::new("cli", "metrics");
    let topic = env.topic("t");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let server = rpc_server(&env, &topic, "s1", &["--quiet", "--metrics-addr", &addr]);
    for _ in 0..3 {
        let o = env.run(&["call", "--topic", &topic, "echo", r#"{"data": 1}"#]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    }
    let o = env.run(&["call", "--topic", &topic, "fail", r#"{"message": "boom"}"#]);
    assert_eq!(o.status.code(), Some(1));
    let o = env.run(&["call", "--topic", &topic, "nosuch", "{}"]);
    assert_eq!(o.status.code(), Some(1));
    let o = env.run(&["cast", "--topic", &topic, "echo", r#"{"data": 2}"#]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));

    // The cast is handled after its sender exits: wait for it to be counted.
    let deadline = Instant::now() + Duration::from_secs(10);
    let page = loop {
        let page = scrape(port);
        let ok = metric(
            &page,
            r#"oslo_messaging_rpc_server_requests_total{method="echo",outcome="ok"}"#,
        );
        if ok == Some(4.0) || Instant::now() > deadline {
            break page;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let get = |series: &str| metric(&page, series);
    assert_eq!(
        get(r#"oslo_messaging_rpc_server_requests_total{method="echo",outcome="ok"}"#),
        Some(4.0),
        "{page}"
    );
    assert_eq!(
        get(r#"oslo_messaging_rpc_server_requests_total{method="fail",outcome="error"}"#),
        Some(1.0),
        "{page}"
    );
    assert_eq!(
        get(
            r#"oslo_messaging_rpc_server_requests_total{method="(unknown)",outcome="no_such_method"}"#
        ),
        Some(1.0),
        "{page}"
    );
    assert_eq!(
        get(r#"oslo_messaging_rpc_server_handler_seconds_count{method="echo"}"#),
        Some(4.0),
        "{page}"
    );
    assert_eq!(
        get("oslo_messaging_rpc_server_in_flight "),
        Some(0.0),
        "{page}"
    );
    // Replies are confirmed publishes: each one is timed.
    assert!(
        get("oslo_messaging_rabbit_confirm_seconds_count").unwrap_or(0.0) >= 5.0,
        "{page}"
    );
    drop(server);
}

#[test]
fn cast_and_fanout_reach_their_servers() {
    testkit::require_broker!();
    let env = Env::new("cli", "cast");
    let topic = env.topic("t");
    let a = rpc_server(&env, &topic, "a", &[]);
    let b = rpc_server(&env, &topic, "b", &[]);

    let o = env.run(&[
        "cast",
        "--topic",
        &topic,
        "--server",
        "b",
        "echo",
        r#"{"data": "to-b"}"#,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).is_empty());
    assert_eq!(b.next_json(10)["args"]["data"], "to-b");

    let o = env.run(&[
        "--json",
        "cast",
        "--topic",
        &topic,
        "--fanout",
        "echo",
        r#"{"data": "all"}"#,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let sent: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(sent["fanout"], true);
    assert_eq!(a.next_json(10)["args"]["data"], "all");
    assert_eq!(b.next_json(10)["args"]["data"], "all");
    assert_eq!(a.interrupt(), Some(0));
    assert_eq!(b.interrupt(), Some(0));
}

#[test]
fn notify_then_listen_prints_json_lines() {
    testkit::require_broker!();
    let env = Env::new("cli", "notify");
    let topic = env.topic("n");
    // The notifier declares the topic.priority queues: the notifications wait there.
    for (priority, driver, payload) in [
        ("error", "messagingv2", r#"{"k": 1}"#),
        ("warning", "messaging", "[1, 2]"),
        ("sample", "messagingv2", r#""text""#),
    ] {
        let o = env.run(&[
            "notify",
            "--topic",
            &topic,
            "--publisher-id",
            "compute.host1",
            "--event-type",
            &format!("test.{priority}"),
            "--priority",
            priority,
            "--driver",
            driver,
            "--context",
            r#"{"user": "u", "auth_token": "secret"}"#,
            payload,
        ]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    }
    let o = env.run(&[
        "listen",
        "--topic",
        &topic,
        "--event-type",
        r"^test\.(error|warning)$",
        "--priority",
        "error",
        "--priority",
        "warn",
        "--count",
        "2",
        "--timeout",
        "20",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let lines: Vec<Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    let mut got: Vec<(String, Value)> = lines
        .iter()
        .map(|l| {
            (
                l["priority"].as_str().unwrap().to_owned(),
                l["payload"].clone(),
            )
        })
        .collect();
    got.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(
        got,
        [
            ("error".to_owned(), json!({"k": 1})),
            ("warn".to_owned(), json!([1, 2]))
        ]
    );
    for l in &lines {
        assert_eq!(l["publisher_id"], "compute.host1");
        assert_eq!(l["context"]["user"], "u");
        assert_eq!(l["context"]["auth_token"], Value::Null, "redacted");
        assert_eq!(l["metadata"]["message_id"].as_str().unwrap().len(), 36);
    }

    // The sample is still queued; a listener that sees nothing in time exits 2.
    let o = env.run(&[
        "listen",
        "--topic",
        &topic,
        "--priority",
        "sample",
        "--count",
        "2",
        "--timeout",
        "2",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(stdout(&o).lines().count(), 1);
    assert!(stderr(&o).contains("1 of 2"), "{}", stderr(&o));
}

#[test]
fn listen_with_a_pool_gets_its_own_copy() {
    testkit::require_broker!();
    let env = Env::new("cli", "pool");
    let topic = env.topic("n");
    let mut c = env.cmd();
    c.args([
        "-v",
        "listen",
        "--topic",
        &topic,
        "--pool",
        &env.topic("pool"),
        "--count",
        "1",
        "--timeout",
        "30",
    ]);
    let mut child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // -v logs when the listener is up.
    let _stderr = wait_until_listening(&mut child);
    let o = env.run(&[
        "notify",
        "--topic",
        &topic,
        "--publisher-id",
        "p",
        "--event-type",
        "e",
        "1",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let v: Value = serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    assert_eq!(v["payload"], 1);
    // The default queue has its copy too.
    let o = env.run(&[
        "listen",
        "--topic",
        &topic,
        "--count",
        "1",
        "--timeout",
        "10",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn bad_usage_exits_64_and_says_why() {
    // No broker needed: these fail before connecting.
    let bin = || Command::new(env!("CARGO_BIN_EXE_oslo-messaging"));
    for (args, needle) in [
        (
            &["call", "--topic", "t", "echo", "[1, 2]"][..],
            "must be a JSON object",
        ),
        (
            &["call", "--topic", "t", "echo", "{oops"],
            "is not valid JSON",
        ),
        (&["call", "echo"], "--topic"),
        (
            &["call", "--topic", "t", "--version", "x.y", "echo"],
            "--version",
        ),
        (
            &["call", "--topic", "t", "--timeout", "0", "echo"],
            "seconds",
        ),
        (
            &[
                "notify",
                "--publisher-id",
                "p",
                "--event-type",
                "e",
                "--priority",
                "loud",
                "1",
            ],
            "unknown notification priority",
        ),
        (
            &["listen", "--event-type", "(", "--timeout", "1"],
            "--event-type",
        ),
        (
            &["cast", "--topic", "t", "--fanout", "--server", "s", "m"],
            "cannot be used",
        ),
        (&["frobnicate"], "unrecognized subcommand"),
        (
            &["--url", "amqp1://u:hunter2@h/", "call", "--topic", "t", "m"],
            "unknown transport driver",
        ),
    ] {
        let o = bin().args(args).output().unwrap();
        assert_eq!(o.status.code(), Some(64), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(needle), "{args:?}: {}", stderr(&o));
        assert!(!stderr(&o).contains("hunter2"), "no password in errors");
    }
    for sub in ["call", "cast", "notify", "listen", "rpc-server", "demo"] {
        let o = bin().args([sub, "--help"]).output().unwrap();
        assert_eq!(o.status.code(), Some(0), "{sub} --help");
        for option in ["--url", "--config-file", "--exchange", "--json"] {
            assert!(stdout(&o).contains(option), "{sub} --help lacks {option}");
        }
    }
}

#[test]
fn the_demo_runs_against_rabbitmq() {
    testkit::require_broker!();
    let o = Command::new(env!("CARGO_BIN_EXE_oslo-messaging"))
        .args(["demo", "--url", &broker_url()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}\n{}", stdout(&o), stderr(&o));
    for needle in [
        "calc.add(a=2, b=3) -> 5",
        "remote builtins.ValueError: division by zero",
        "Timed out waiting for a reply",
        "INFO compute.instance.create.end from compute.host-1",
        "done.",
    ] {
        assert!(
            stdout(&o).contains(needle),
            "missing {needle:?}:\n{}",
            stdout(&o)
        );
    }
    assert!(
        !stdout(&o).contains("guest:guest"),
        "the password is masked"
    );
}

#[test]
fn an_unreachable_broker_is_a_failure_not_a_hang() {
    let started = Instant::now();
    let o = Command::new(env!("CARGO_BIN_EXE_oslo-messaging"))
        .args([
            "--url",
            "rabbit://guest:guest@127.0.0.1:1/",
            "cast",
            "--topic",
            "t",
            "--retry",
            "1",
            "m",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("127.0.0.1:1"), "{}", stderr(&o));
    assert!(started.elapsed() < Duration::from_secs(15));
}

#[test]
fn listen_on_an_unreachable_broker_ends_at_its_timeout() {
    let started = Instant::now();
    let o = Command::new(env!("CARGO_BIN_EXE_oslo-messaging"))
        .args([
            "--url",
            "rabbit://guest:guest@127.0.0.1:1/",
            "listen",
            "--count",
            "1",
            "--timeout",
            "2",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("0 of 1"), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("without --pool"),
        "warns about the shared queues: {}",
        stderr(&o)
    );
    assert!(started.elapsed() < Duration::from_secs(10));

    let o = Command::new(env!("CARGO_BIN_EXE_oslo-messaging"))
        .args(["listen", "--count", "0"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(64), "{}", stderr(&o));
}
