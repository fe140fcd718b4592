//! `[oslo_messaging_metrics]` against the real oslo.metrics collector (PyPI `oslo.metrics`): a
//! Python 18.3.1 client and a Rust client make the same calls, casts, timeout and remote error,
//! and the collector's Prometheus page shows the same series for both.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use oslo_messaging::rpc::{Endpoint, Request, RpcError, RpcServer};
use oslo_messaging::{Config, Context, RpcClient, Target, Transport};
use serde_json::{Value, json};
use support::python::{Peer, PeerOpts, python_server};
use support::rabbit::Scope;
use testkit::broker::url as broker_url;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The oslo.metrics collector, listening on `socket` and serving Prometheus on `port`.
struct Collector {
    _child: tokio::process::Child,
    port: u16,
}

impl Collector {
    async fn start(dir: &std::path::Path) -> Self {
        let socket = dir.join("metrics.sock");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let conf = dir.join("oslo-metrics.conf");
        std::fs::write(
            &conf,
            format!(
                "[oslo_metrics]\nmetrics_socket_file = {}\nprometheus_host = 127.0.0.1\nprometheus_port = {port}\n",
                socket.display()
            ),
        )
        .unwrap();
        let child = tokio::process::Command::new(testkit::python::python().unwrap())
            .args(["-m", "oslo_metrics", "--config-file"])
            .arg(&conf)
            .kill_on_drop(true)
            .spawn()
            .expect("start the oslo.metrics collector");
        let collector = Self {
            _child: child,
            port,
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !(socket.exists() && collector.scrape().await.is_some()) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the collector did not start"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        collector
    }

    /// The Prometheus page, or `None` while it does not answer.
    async fn scrape(&self) -> Option<String> {
        let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .ok()?;
        conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .await
            .ok()?;
        let mut page = String::new();
        conn.read_to_string(&mut page).await.ok()?;
        page.split_once("\r\n\r\n").map(|(_, body)| body.to_owned())
    }
}

/// The `oslo_messaging_rpc_client_*` counters of `process` (histograms by their `_count`), by
/// series name and labels without `process`.
fn client_series(page: &str, process: &str) -> BTreeMap<String, f64> {
    let needle = format!("process=\"{process}\"");
    page.lines()
        .filter(|l| l.starts_with("oslo_messaging_rpc_client_") && l.contains(&needle))
        .filter(|l| !l.contains("_bucket{") && !l.contains("_sum{") && !l.contains("_created{"))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let series = series
                .replace(&format!(",{needle}"), "")
                .replace(&format!("{needle},"), "");
            Some((series, value.parse().ok()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_and_python_clients_give_the_collector_the_same_series() {
    testkit::require_python!();
    let dir = tempfile::tempdir().unwrap();
    let collector = Collector::start(dir.path()).await;
    let socket = dir.path().join("metrics.sock").display().to_string();
    let scope = Scope::new("oslo_metrics");
    let topic = scope.topic("metrics");
    let url = broker_url();
    let server = python_server(&topic, "s1", &PeerOpts::new(&url, &scope.exchange)).await;

    // Python: two calls, a cast, a timeout and a remote ValueError.
    let py_metrics = [
        ("metrics_enabled", "true"),
        ("metrics_socket_file", socket.as_str()),
        ("metrics_process_name", "py-client"),
        ("metrics_thread_stop_timeout", "1"),
    ];
    let opts = PeerOpts {
        metrics: &py_metrics,
        ..PeerOpts::new(&url, &scope.exchange)
    };
    let ops = [
        json!({"op": "call", "method": "echo", "args": {"data": 1}}),
        json!({"op": "call", "method": "echo", "args": {"data": 2}}),
        json!({"op": "cast", "method": "echo", "args": {"data": 3}}),
        json!({"op": "call", "method": "sleep", "args": {"seconds": 3}, "timeout": 1}),
        json!({"op": "call", "method": "fail", "args": {"message": "bad flavor"}}),
    ];
    let mut client = Peer::spawn("client", &["--topic", &topic], &opts);
    for op in &ops {
        client.send(op).await;
        let out = client.next(30).await;
        assert!(
            out.get("ok").is_some() || out.get("error").is_some(),
            "{out}"
        );
    }
    client.finish().await;

    // Rust: the same.
    let conf = Config::builder()
        .control_exchange(&scope.exchange)
        .option("oslo_messaging_metrics", "metrics_enabled", "true")
        .option("oslo_messaging_metrics", "metrics_socket_file", &socket)
        .option(
            "oslo_messaging_metrics",
            "metrics_process_name",
            "rs-client",
        )
        .build()
        .unwrap();
    let t = Transport::with_config(&url, &conf).unwrap();
    let client = RpcClient::new(&t, Target::new(&topic));
    let ctx = Context::new();
    let one: Value = client
        .call(&ctx, "echo", &json!({"data": 1}))
        .await
        .unwrap();
    assert_eq!(one, 1);
    let two: Value = client
        .call(&ctx, "echo", &json!({"data": 2}))
        .await
        .unwrap();
    assert_eq!(two, 2);
    client
        .cast(&ctx, "echo", &json!({"data": 3}))
        .await
        .unwrap();
    let late = client
        .prepare()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap()
        .call::<Value>(&ctx, "sleep", &json!({"seconds": 3}))
        .await
        .unwrap_err();
    assert!(late.is_timeout());
    let failed = client
        .call::<Value>(&ctx, "fail", &json!({"message": "bad flavor"}))
        .await
        .unwrap_err();
    assert_eq!(failed.remote_error().unwrap().class(), "ValueError");

    // Both sets arrive; they are the same series with the same counts.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let (py, rs) = loop {
        let page = collector.scrape().await.unwrap_or_default();
        let (py, rs) = (
            client_series(&page, "py-client"),
            client_series(&page, "rs-client"),
        );
        let starts = |s: &BTreeMap<String, f64>| {
            s.iter()
                .filter(|(k, _)| k.starts_with("oslo_messaging_rpc_client_invocation_start_total"))
                .map(|(_, v)| v)
                .sum::<f64>()
        };
        if starts(&py) >= 5.0 && starts(&rs) >= 5.0 && py.len() == rs.len() {
            break (py, rs);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the collector did not get both clients' metrics:\npython {py:#?}\nrust {rs:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for (series, count) in &py {
        println!("{count:>3}  {series}");
    }
    assert_eq!(
        rs, py,
        "the same series and counts from Rust as from Python"
    );
    assert!(
        py.keys()
            .any(|k| k.contains("exception=\"MessagingTimeout\"")),
        "{py:#?}"
    );
    assert!(
        py.keys().any(|k| k.contains("exception=\"ValueError\"")),
        "{py:#?}"
    );
    server.finish().await;
    t.cleanup().await;
}

/// A call whose caller stops waiting (drops the future) still ends its measurement: with
/// `exception="Cancelled"`, a value Python, whose calls cannot be abandoned, never sends.
#[tokio::test]
async fn an_abandoned_call_ends_as_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cancel.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let receive = || {
        let mut buf = vec![0u8; 65536];
        let n = sock.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    };
    let conf = Config::builder()
        .option("oslo_messaging_metrics", "metrics_enabled", "true")
        .option(
            "oslo_messaging_metrics",
            "metrics_socket_file",
            &path.display().to_string(),
        )
        .build()
        .unwrap();
    let t = Transport::memory_with_config(&conf);
    let slow = Endpoint::builder()
        .method("slow", |_req: Request<Value>| async move {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok::<_, RpcError>(Value::Null)
        })
        .build()
        .unwrap();
    let server = RpcServer::builder(&t, Target::new("c").with_server("s"))
        .endpoint(slow)
        .build()
        .unwrap();
    server.start().await.unwrap();
    let client = RpcClient::new(&t, Target::new("c"));
    let (ctx, args) = (Context::new(), json!({}));
    let call = client.call::<Value>(&ctx, "slow", &args);
    assert!(
        tokio::time::timeout(Duration::from_millis(50), call)
            .await
            .is_err()
    );
    assert!(receive().contains("rpc_client_invocation_start_total"));
    let ended = receive();
    assert!(
        ended.contains(r#""name": "rpc_client_exception_total""#),
        "{ended}"
    );
    assert!(ended.contains(r#""exception": "Cancelled""#), "{ended}");
}
