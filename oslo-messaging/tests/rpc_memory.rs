//! RPC behaviour on the memory transport, porting the intent of oslo's
//! `tests/rpc/test_client.py`, `test_server.py`, `test_dispatcher.py` and the functional
//! `CallTestCase`/`CastTestCase`.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use oslo_messaging::rpc::{Endpoint, NoArgs, Request, RpcClient, RpcError, RpcServer, State};
use oslo_messaging::{Context, ErrorKind, Retry, Serializer, Target, Transport, Version};
use serde::Deserialize;
use serde_json::{Value, json};
use support::{Calls, recording_endpoint, start_server, stop};

fn ctx() -> Context {
    Context::new()
        .with("user", "alice")
        .with("request_id", "req-1")
}

#[tokio::test]
async fn call_returns_the_result_and_cast_runs_the_method() {
    let t = Transport::memory();
    let calls = Calls::default();
    let s = start_server(&t, "t", "s1", recording_endpoint("s1", &calls)).await;
    let client = RpcClient::new(&t, Target::new("t"));

    let out: Value = client
        .call(&ctx(), "echo", &json!({"value": [1, "x", {"y": null}]}))
        .await
        .unwrap();
    assert_eq!(out, json!([1, "x", {"y": null}]));

    client
        .cast(&ctx(), "record", &json!({"value": 7}))
        .await
        .unwrap();
    // A call after the cast on the same single server: the cast was handled before it replies.
    let _: Value = client.call(&ctx(), "whoami", &()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(calls.by("s1"), [json!(7)]);
    stop(&s).await;
}

/// `CallTestCase::test_specific_server` and `test_server_in_group`.
#[tokio::test]
async fn topic_requests_round_robin_and_server_requests_go_to_one_server() {
    let t = Transport::memory();
    let calls = Calls::default();
    let mut servers = Vec::new();
    for name in ["s1", "s2", "s3"] {
        servers.push(start_server(&t, "grp", name, recording_endpoint(name, &calls)).await);
    }
    let client = RpcClient::new(&t, Target::new("grp"));
    let mut who = Vec::new();
    for i in 0..9 {
        who.push(
            client
                .call::<String>(&ctx(), "record", &json!({"value": i}))
                .await
                .unwrap(),
        );
    }
    for name in ["s1", "s2", "s3"] {
        assert_eq!(who.iter().filter(|w| *w == name).count(), 3, "{who:?}");
        // Order is kept per server.
        let got: Vec<i64> = calls.by(name).iter().map(|v| v.as_i64().unwrap()).collect();
        assert!(got.windows(2).all(|w| w[0] < w[1]), "{got:?}");
    }

    let direct = client.prepare().server("s2").build().unwrap();
    for _ in 0..4 {
        assert_eq!(
            direct.call::<String>(&ctx(), "whoami", &()).await.unwrap(),
            "s2"
        );
    }
    for s in &servers {
        stop(s).await;
    }
}

/// `CastTestCase::test_fanout`.
#[tokio::test]
async fn fanout_cast_reaches_every_server() {
    let t = Transport::memory();
    let calls = Calls::default();
    let mut servers = Vec::new();
    for name in ["a", "b", "c"] {
        servers.push(start_server(&t, "fan", name, recording_endpoint(name, &calls)).await);
    }
    let client = RpcClient::new(&t, Target::new("fan").with_fanout(true));
    client
        .cast(&ctx(), "record", &json!({"value": "hi"}))
        .await
        .unwrap();
    for s in &servers {
        stop(s).await;
    }
    for name in ["a", "b", "c"] {
        assert_eq!(calls.by(name), [json!("hi")], "{name}");
    }
}

/// `CallTestCase::test_different_exchanges`.
#[tokio::test]
async fn exchanges_are_isolated() {
    let t = Transport::memory();
    let calls = Calls::default();
    let on_a = RpcServer::builder(&t, Target::new("x").with_server("s").with_exchange("a"))
        .endpoint(recording_endpoint("a", &calls))
        .build()
        .unwrap();
    on_a.start().await.unwrap();
    let on_default = start_server(&t, "x", "s", recording_endpoint("default", &calls)).await;

    let to_a = RpcClient::new(&t, Target::new("x").with_exchange("a"));
    let to_default = RpcClient::new(&t, Target::new("x"));
    for _ in 0..3 {
        assert_eq!(
            to_a.call::<String>(&ctx(), "whoami", &()).await.unwrap(),
            "a"
        );
        assert_eq!(
            to_default
                .call::<String>(&ctx(), "whoami", &())
                .await
                .unwrap(),
            "default"
        );
    }
    stop(&on_a).await;
    stop(&on_default).await;
}

/// `CallTestCase::test_timeout`.
#[tokio::test(start_paused = true)]
async fn call_without_server_times_out_naming_the_message() {
    let t = Transport::memory();
    let client = RpcClient::builder(&t, Target::new("nobody"))
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let start = tokio::time::Instant::now();
    let err = client.call::<Value>(&ctx(), "echo", &()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert!(
        err.to_string()
            .contains("Timed out waiting for a reply to message ID "),
        "{err}"
    );
    assert_eq!(start.elapsed(), Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn default_timeout_comes_from_rpc_response_timeout() {
    let conf = oslo_messaging::Config::builder()
        .rpc_response_timeout(7)
        .build()
        .unwrap();
    let t = Transport::memory_with_config(&conf);
    let client = RpcClient::new(&t, Target::new("nobody"));
    assert_eq!(client.timeout(), Duration::from_secs(7));
    let start = tokio::time::Instant::now();
    assert!(
        client
            .call::<Value>(&ctx(), "x", &())
            .await
            .unwrap_err()
            .is_timeout()
    );
    assert_eq!(start.elapsed(), Duration::from_secs(7));
}

/// `CallTestCase::test_mandatory_call`.
#[tokio::test(start_paused = true)]
async fn at_least_once_fails_fast_when_nobody_listens() {
    let t = Transport::memory();
    let client = RpcClient::builder(&t, Target::new("nobody"))
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let start = tokio::time::Instant::now();
    let err = client
        .prepare()
        .at_least_once(true)
        .build()
        .unwrap()
        .call::<Value>(&ctx(), "echo", &())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Undeliverable);
    // Python's MessageUndeliverable carries them too.
    assert_eq!(
        (err.exchange(), err.routing_key()),
        (Some("openstack"), Some("nobody"))
    );
    assert_eq!(start.elapsed(), Duration::ZERO);
    let err = client
        .prepare()
        .at_least_once(true)
        .build()
        .unwrap()
        .cast(&ctx(), "echo", &())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Undeliverable);
}

/// `CallTestCase::test_exception`: a builtins error arrives with its class, module and args.
#[tokio::test]
async fn remote_errors_arrive_as_sent() {
    let t = Transport::memory();
    let ep = Endpoint::builder()
        .method("subtract", |req: Request<Value>| async move {
            let n = req.args()["increment"].as_i64().unwrap_or(0);
            if n > 5 {
                return Err(RpcError::value_error(format!(
                    "result would be negative: {n}"
                )));
            }
            Ok(5 - n)
        })
        .method("missing", |_req: Request<NoArgs>| async {
            Err::<(), _>(RpcError::key_error("k").expected())
        })
        .method("custom", |_req: Request<NoArgs>| async {
            Err::<(), _>(
                RpcError::new("InstanceNotFound", "Instance 42 could not be found.")
                    .with_module("nova.exception")
                    .with_kwargs(json!({"instance_id": 42})),
            )
        })
        .build()
        .unwrap();
    let s = start_server(&t, "err", "s", ep).await;
    let client = RpcClient::new(&t, Target::new("err"));
    assert_eq!(
        client
            .call::<i64>(&ctx(), "subtract", &json!({"increment": 2}))
            .await
            .unwrap(),
        3
    );

    let err = client
        .call::<i64>(&ctx(), "subtract", &json!({"increment": 9}))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Remote);
    let r = err.remote_error().unwrap();
    assert_eq!((r.class(), r.module()), ("ValueError", "builtins"));
    assert_eq!(r.message(), "result would be negative: 9");
    assert!(r.is_builtin("ValueError"));

    let r = client.call::<()>(&ctx(), "missing", &()).await.unwrap_err();
    assert_eq!(r.remote_error().unwrap().message(), "'k'");

    let err = client.call::<()>(&ctx(), "custom", &()).await.unwrap_err();
    let r = err.remote_error().unwrap();
    assert_eq!(
        (r.class(), r.module()),
        ("InstanceNotFound", "nova.exception")
    );
    assert_eq!(r.kwargs()["instance_id"], 42);
    stop(&s).await;
}

/// `CallTestCase::test_endpoint_version_namespace`.
#[tokio::test]
async fn namespaces_and_versions() {
    let t = Transport::memory();
    let ep = Endpoint::builder()
        .namespace("Name1")
        .version(Version::new(7, 5))
        .legacy_namespaces(["Old"])
        .method("echo", |req: Request<Value>| async move {
            Ok::<_, RpcError>(req.args()["value"].clone())
        })
        .build()
        .unwrap();
    let s = start_server(&t, "ns", "s", ep).await;
    let base = RpcClient::new(&t, Target::new("ns"));
    let args = json!({"value": 1});

    let ok = base
        .prepare()
        .namespace("Name1")
        .version(Version::new(7, 5))
        .build()
        .unwrap();
    assert_eq!(
        ok.call::<Value>(&ctx(), "echo", &args).await.unwrap(),
        json!(1)
    );
    let older = base
        .prepare()
        .namespace("Name1")
        .version(Version::new(7, 1))
        .build()
        .unwrap();
    assert_eq!(
        older.call::<Value>(&ctx(), "echo", &args).await.unwrap(),
        json!(1)
    );
    let legacy = base
        .prepare()
        .namespace("Old")
        .version(Version::new(7, 0))
        .build()
        .unwrap();
    assert_eq!(
        legacy.call::<Value>(&ctx(), "echo", &args).await.unwrap(),
        json!(1)
    );

    let too_new = base
        .prepare()
        .namespace("Name1")
        .version(Version::new(7, 6))
        .build()
        .unwrap();
    let r = too_new
        .call::<Value>(&ctx(), "echo", &args)
        .await
        .unwrap_err();
    assert!(r.is_unsupported_version() && !r.is_no_such_method());
    let r = r.remote_error().unwrap();
    assert_eq!(
        (r.class(), r.module()),
        ("UnsupportedVersion", "oslo_messaging.rpc.dispatcher")
    );
    assert_eq!(
        r.message(),
        "Endpoint does not support RPC version 7.6. Attempted method: echo"
    );

    let wrong_ns = base
        .prepare()
        .namespace("Name2")
        .version(Version::new(7, 5))
        .build()
        .unwrap();
    let r = wrong_ns
        .call::<Value>(&ctx(), "echo", &args)
        .await
        .unwrap_err();
    assert_eq!(r.remote_error().unwrap().class(), "UnsupportedVersion");

    let no_method = ok.call::<Value>(&ctx(), "nosuch", &args).await.unwrap_err();
    assert!(no_method.is_no_such_method() && !no_method.is_unsupported_version());
    let r = no_method.remote_error().unwrap();
    assert_eq!(
        (r.class(), r.module()),
        ("NoSuchMethod", "oslo_messaging.rpc.dispatcher")
    );
    assert_eq!(r.message(), "Endpoint does not support RPC method nosuch");

    let private = ok.call::<Value>(&ctx(), "_echo", &args).await.unwrap_err();
    assert_eq!(private.remote_error().unwrap().class(), "NoSuchMethod");
    stop(&s).await;
}

/// `CallTestCase::test_monitor_long_call`.
#[tokio::test(start_paused = true)]
async fn call_monitoring_keeps_long_calls_alive() {
    let t = Transport::memory();
    let s = start_server(&t, "mon", "s", recording_endpoint("s", &Calls::default())).await;
    let args = json!({"seconds": 4});

    let plain = RpcClient::builder(&t, Target::new("mon"))
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let err = plain.call::<f64>(&ctx(), "sleep", &args).await.unwrap_err();
    assert!(err.is_timeout());

    let monitored = RpcClient::builder(&t, Target::new("mon"))
        .timeout(Duration::from_secs(3600))
        .call_monitor_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    assert!(
        (monitored.call::<f64>(&ctx(), "sleep", &args).await.unwrap() - 4.0).abs() < f64::EPSILON
    );

    // The monitor also catches a server that stops heartbeating: a handler that outlives the
    // caller's monitor window without a heartbeat (monitor 1 s: below oslo's 2 s minimum, so
    // the server sends none).
    let short = monitored
        .prepare()
        .call_monitor_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let start = tokio::time::Instant::now();
    assert!(
        short
            .call::<f64>(&ctx(), "sleep", &args)
            .await
            .unwrap_err()
            .is_timeout()
    );
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    stop(&s).await;
}

/// `CallTestCase::test_timeout_with_concurrently_queues`.
#[tokio::test(start_paused = true)]
async fn a_long_call_times_out_while_short_calls_succeed() {
    let t = Transport::memory();
    let s = start_server(&t, "conc", "s", recording_endpoint("s", &Calls::default())).await;
    let client = RpcClient::new(&t, Target::new("conc"));
    let long = {
        let c = client
            .prepare()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        tokio::spawn(async move {
            c.call::<f64>(&ctx(), "sleep", &json!({"seconds": 10}))
                .await
        })
    };
    let mut short = Vec::new();
    for _ in 0..10 {
        let c = client.clone();
        short.push(tokio::spawn(async move {
            c.call::<f64>(&ctx(), "sleep", &json!({"seconds": 1})).await
        }));
    }
    for h in short {
        assert!((h.await.unwrap().unwrap() - 1.0).abs() < f64::EPSILON);
    }
    assert!(long.await.unwrap().unwrap_err().is_timeout());
    stop(&s).await;
}

#[tokio::test]
async fn handlers_see_the_callers_context_with_client_timeout() {
    let t = Transport::memory();
    let ep = Endpoint::builder()
        .method("ctx", |req: Request<NoArgs>| async move {
            Ok::<_, RpcError>(Value::Object(req.context().as_map().clone()))
        })
        .build()
        .unwrap();
    let s = start_server(&t, "ctx", "s", ep).await;
    let client = RpcClient::new(&t, Target::new("ctx"));
    let got: Value = client.call(&ctx(), "ctx", &()).await.unwrap();
    assert_eq!(
        got,
        json!({"user": "alice", "request_id": "req-1", "client_timeout": null})
    );
    let monitored = client
        .prepare()
        .call_monitor_timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let got: Value = monitored.call(&ctx(), "ctx", &()).await.unwrap();
    assert_eq!(got["client_timeout"], json!(30));
    stop(&s).await;
}

#[derive(Deserialize)]
struct ResizeArgs {
    flavor: String,
    #[serde(default)]
    clean: bool,
}

/// Arguments that do not fit come back as Python's `TypeError`.
#[tokio::test]
async fn argument_mismatch_is_a_remote_type_error() {
    let t = Transport::memory();
    let ep = Endpoint::builder()
        .method("resize", |req: Request<ResizeArgs>| async move {
            let a = req.into_args();
            Ok::<_, RpcError>(format!("{}:{}", a.flavor, a.clean))
        })
        .build()
        .unwrap();
    let s = start_server(&t, "args", "s", ep).await;
    let client = RpcClient::new(&t, Target::new("args"));
    assert_eq!(
        client
            .call::<String>(&ctx(), "resize", &json!({"flavor": "m1"}))
            .await
            .unwrap(),
        "m1:false"
    );
    let err = client
        .call::<String>(&ctx(), "resize", &json!({"clean": true}))
        .await
        .unwrap_err();
    let r = err.remote_error().unwrap();
    assert_eq!((r.class(), r.module()), ("TypeError", "builtins"));
    assert_eq!(
        r.message(),
        "resize() missing 1 required positional argument: 'flavor'"
    );
    let err = client
        .call::<String>(&ctx(), "resize", &json!({"flavor": 5}))
        .await
        .unwrap_err();
    assert!(
        err.remote_error()
            .unwrap()
            .message()
            .starts_with("resize() argument 'flavor': invalid type")
    );
    stop(&s).await;
}

#[tokio::test]
async fn client_side_checks() {
    let t = Transport::memory();
    let fanout = RpcClient::new(&t, Target::new("t").with_fanout(true));
    let err = fanout.call::<Value>(&ctx(), "m", &()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidTarget);
    assert!(
        err.to_string()
            .contains("A call cannot be used with fanout"),
        "{err}"
    );

    let no_topic = RpcClient::new(&t, Target::empty());
    assert_eq!(
        no_topic.cast(&ctx(), "m", &()).await.unwrap_err().kind(),
        ErrorKind::InvalidTarget
    );

    let client = RpcClient::new(&t, Target::new("t"));
    let err = client.cast(&ctx(), "m", &json!([1, 2])).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Serialization);
    assert!(
        err.to_string().contains("must serialize to a JSON object"),
        "{err}"
    );

    let err = "1".parse::<Version>().unwrap_err();
    assert!(
        err.to_string()
            .contains("Version must contain a major and minor integer. Got 1"),
        "{err}"
    );
}

/// `test_client.py::TestVersionCap` and `TestCanSendVersion`.
#[tokio::test]
async fn version_cap() {
    let t = Transport::memory();
    let capped = RpcClient::builder(&t, Target::new("t").with_version(Version::new(1, 6)))
        .version_cap(Version::new(1, 5))
        .build()
        .unwrap();
    let err = capped.cast(&ctx(), "m", &()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::VersionCap);
    assert!(
        err.to_string().contains("Requested message version, 1.6 is incompatible.  It needs to be equal in major version and less than or equal in minor version as the specified version cap 1.5."),
        "{err}"
    );
    assert!(!capped.can_send_version(None));
    assert!(capped.can_send_version(Some(&Version::new(1, 4))));
    assert!(!capped.can_send_version(Some(&Version::with_revision(1, 5, 1))));
    let ok = capped
        .prepare()
        .version(Version::new(1, 4))
        .build()
        .unwrap();
    ok.cast(&ctx(), "m", &()).await.unwrap();
    // oslo's gotcha: with a cap, a target without a version cannot send.
    let unversioned = RpcClient::builder(&t, Target::new("t"))
        .version_cap(Version::new(1, 5))
        .build()
        .unwrap();
    assert_eq!(
        unversioned.cast(&ctx(), "m", &()).await.unwrap_err().kind(),
        ErrorKind::VersionCap
    );
    assert!(RpcClient::new(&t, Target::new("t")).can_send_version(None));
}

#[tokio::test]
async fn the_pool_size_limits_concurrent_handlers() {
    let t = Transport::memory();
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let ep = Endpoint::builder()
        .state((running.clone(), peak.clone()))
        .method(
            "work",
            |State((running, peak)): State<(Arc<AtomicUsize>, Arc<AtomicUsize>)>,
             _r: Request<NoArgs>| async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                Ok::<_, RpcError>(())
            },
        )
        .build()
        .unwrap();
    let s = RpcServer::builder(&t, Target::new("pool").with_server("s"))
        .endpoint(ep)
        .executor_pool_size(3)
        .build()
        .unwrap();
    s.start().await.unwrap();
    let client = RpcClient::new(&t, Target::new("pool"));
    let mut calls = Vec::new();
    for _ in 0..12 {
        let c = client.clone();
        calls.push(tokio::spawn(async move {
            c.call::<()>(&ctx(), "work", &()).await
        }));
    }
    for c in calls {
        c.await.unwrap().unwrap();
    }
    assert_eq!(peak.load(Ordering::SeqCst), 3);
    stop(&s).await;
}

#[tokio::test(start_paused = true)]
async fn stop_lets_in_flight_handlers_finish_and_takes_no_new_requests() {
    let t = Transport::memory();
    let calls = Calls::default();
    let s = start_server(&t, "graceful", "s", recording_endpoint("s", &calls)).await;
    let client = RpcClient::builder(&t, Target::new("graceful"))
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let slow = {
        let c = client.clone();
        tokio::spawn(async move { c.call::<f64>(&ctx(), "sleep", &json!({"seconds": 5})).await })
    };
    tokio::time::sleep(Duration::from_millis(10)).await;
    s.stop().await;
    // The request already taken completes and replies after stop.
    assert!((slow.await.unwrap().unwrap() - 5.0).abs() < f64::EPSILON);
    s.wait().await;
    // New requests now wait in the topic queue for the next server.
    client
        .cast(&ctx(), "record", &json!({"value": 1}))
        .await
        .unwrap();
    let handle = t.memory_handle().unwrap();
    assert_eq!(handle.queue_depth("graceful"), Some(1));
    assert_eq!(handle.consumer_count("graceful"), Some(0));
    let again = start_server(&t, "graceful", "s", recording_endpoint("s", &calls)).await;
    let _: String = client.call(&ctx(), "whoami", &()).await.unwrap();
    assert_eq!(calls.by("s"), [json!(1)]);
    stop(&again).await;
}

#[tokio::test]
async fn a_panicking_handler_fails_only_its_call() {
    let t = Transport::memory();
    let ep = Endpoint::builder()
        .method("boom", |_r: Request<NoArgs>| async {
            if true {
                panic!("kaboom");
            }
            Ok::<(), RpcError>(())
        })
        .method("ok", |_r: Request<NoArgs>| async {
            Ok::<_, RpcError>("fine")
        })
        .build()
        .unwrap();
    let s = start_server(&t, "panic", "s", ep).await;
    let client = RpcClient::new(&t, Target::new("panic"));
    let err = client.call::<()>(&ctx(), "boom", &()).await.unwrap_err();
    let r = err.remote_error().unwrap();
    assert_eq!(r.class(), "RuntimeError");
    assert!(r.message().contains("kaboom"), "{}", r.message());
    assert_eq!(
        client.call::<String>(&ctx(), "ok", &()).await.unwrap(),
        "fine"
    );
    stop(&s).await;
}

#[tokio::test]
async fn ping_endpoint_when_enabled() {
    let t = Transport::memory();
    let s = RpcServer::builder(&t, Target::new("ping").with_server("s"))
        .endpoint(recording_endpoint("s", &Calls::default()))
        .ping(true)
        .build()
        .unwrap();
    s.start().await.unwrap();
    let client = RpcClient::new(&t, Target::new("ping"));
    assert_eq!(
        client
            .call::<String>(&ctx(), "oslo_rpc_server_ping", &json!({"any": 1}))
            .await
            .unwrap(),
        "pong"
    );
    stop(&s).await;

    let conf = oslo_messaging::Config::builder()
        .rpc_ping_enabled(true)
        .build()
        .unwrap();
    let t = Transport::memory_with_config(&conf);
    let s = start_server(&t, "ping", "s", recording_endpoint("s", &Calls::default())).await;
    let client = RpcClient::new(&t, Target::new("ping"));
    assert_eq!(
        client
            .call::<String>(&ctx(), "oslo_rpc_server_ping", &())
            .await
            .unwrap(),
        "pong"
    );
    stop(&s).await;
}

/// `test_client.py::TestCastCall` retry semantics, against injected connection failures.
#[tokio::test(start_paused = true)]
async fn publish_retry_budget() {
    let t = Transport::memory();
    let h = t.memory_handle().unwrap();
    let client = RpcClient::new(&t, Target::new("r"));

    h.fail_next_publishes(1);
    let err = client
        .clone()
        .prepare()
        .retry(Retry::Times(0))
        .build()
        .unwrap()
        .cast(&ctx(), "m", &())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DeliveryFailure);
    assert!(err.to_string().contains("after 0 tries"), "{err}");

    h.fail_next_publishes(2);
    client
        .clone()
        .prepare()
        .retry(Retry::Times(2))
        .build()
        .unwrap()
        .cast(&ctx(), "m", &())
        .await
        .unwrap();

    h.fail_next_publishes(3);
    let err = client
        .clone()
        .prepare()
        .retry(Retry::Times(2))
        .build()
        .unwrap()
        .cast(&ctx(), "m", &())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DeliveryFailure);

    h.fail_next_publishes(5);
    let start = tokio::time::Instant::now();
    client.cast(&ctx(), "m", &()).await.unwrap();
    // Python's waits between reconnect attempts, 1, 2, 4, 6, 8 s (21 s), with the growing
    // part (all but the 1 s delay, 16 s in all) varying by 25% at random.
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_secs(17) && waited <= Duration::from_secs(25),
        "{waited:?}"
    );
}

#[derive(Debug)]
struct Tagging;

impl Serializer for Tagging {
    fn serialize_entity(&self, _ctx: &Context, e: Value) -> oslo_messaging::Result<Value> {
        Ok(json!({"tagged": e}))
    }
    fn deserialize_entity(&self, _ctx: &Context, e: Value) -> oslo_messaging::Result<Value> {
        Ok(e.get("tagged").cloned().unwrap_or(e))
    }
    fn serialize_context(&self, ctx: &Context) -> oslo_messaging::Result<Context> {
        Ok(ctx.clone().with("serialized", true))
    }
}

#[tokio::test]
async fn serializers_convert_arguments_results_and_contexts() {
    let t = Transport::memory();
    let h = t.memory_handle().unwrap();
    h.record_sent(true);
    let ep = Endpoint::builder()
        .method("double", |req: Request<Value>| async move {
            assert_eq!(req.context().get("serialized"), Some(&json!(true)));
            Ok::<_, RpcError>(req.args()["n"].as_i64().unwrap() * 2)
        })
        .build()
        .unwrap();
    let s = RpcServer::builder(&t, Target::new("ser").with_server("s"))
        .endpoint(ep)
        .serializer(Arc::new(Tagging))
        .build()
        .unwrap();
    s.start().await.unwrap();
    let client = RpcClient::builder(&t, Target::new("ser"))
        .serializer(Arc::new(Tagging))
        .build()
        .unwrap();
    assert_eq!(
        client
            .call::<i64>(&ctx(), "double", &json!({"n": 21}))
            .await
            .unwrap(),
        42
    );
    let sent = h.sent();
    let request = sent[0].decoded().unwrap();
    assert_eq!(request["args"], json!({"n": {"tagged": 21}}));
    assert_eq!(request["_context_serialized"], json!(true));
    let reply = sent[1].decoded().unwrap();
    assert_eq!(reply["result"], json!({"tagged": 42}));
    stop(&s).await;
}

#[tokio::test]
async fn wire_messages_carry_python_keys() {
    let t = Transport::memory();
    let h = t.memory_handle().unwrap();
    h.record_sent(true);
    let s = start_server(&t, "w", "s", recording_endpoint("s", &Calls::default())).await;
    let client = RpcClient::builder(&t, Target::new("w").with_version(Version::new(1, 0)))
        .call_monitor_timeout(Duration::from_secs(4))
        .build()
        .unwrap();
    let _: Value = client
        .call(&ctx(), "echo", &json!({"value": 1}))
        .await
        .unwrap();
    let sent = h.sent();
    assert_eq!(
        (sent[0].exchange.as_str(), sent[0].routing_key.as_str()),
        ("openstack", "w")
    );
    let req = sent[0].decoded().unwrap();
    let keys: Vec<&str> = req.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "method",
            "args",
            "version",
            "_msg_id",
            "_reply_q",
            "_timeout",
            "_unique_id",
            "_context_user",
            "_context_request_id"
        ]
    );
    assert_eq!(req["_timeout"], json!(4));
    assert!(req["_reply_q"].as_str().unwrap().starts_with("reply_"));
    assert_eq!(sent[1].exchange, "");
    assert_eq!(sent[1].routing_key, req["_reply_q"].as_str().unwrap());
    assert!(sent[1].mandatory);
    let reply = sent[1].decoded().unwrap();
    assert_eq!(reply["_msg_id"], req["_msg_id"]);
    assert_eq!(reply["ending"], json!(true));
    stop(&s).await;
}

#[tokio::test]
async fn bad_requests_are_dropped_and_the_next_one_served() {
    let t = Transport::memory();
    let calls = Calls::default();
    let s = start_server(&t, "bad", "s", recording_endpoint("s", &calls)).await;
    let h = t.memory_handle().unwrap();
    for body in [
        &b"not json"[..],
        b"[1,2]",
        br#"{"oslo.version": "3.0", "oslo.message": "{}"}"#,
        br#"{"oslo.version": "2.0", "oslo.message": "{\"args\": {}}"}"#,
        b"\xff\xfe\x00",
    ] {
        assert_eq!(h.publish_raw("openstack", "bad", body.to_vec()), 1);
    }
    let client = RpcClient::new(&t, Target::new("bad"));
    assert_eq!(
        client.call::<String>(&ctx(), "whoami", &()).await.unwrap(),
        "s"
    );
    stop(&s).await;
}

#[tokio::test]
async fn duplicate_requests_run_once() {
    let t = Transport::memory();
    let calls = Calls::default();
    let s = start_server(&t, "dup", "s", recording_endpoint("s", &calls)).await;
    let h = t.memory_handle().unwrap();
    let body = br#"{"oslo.version": "2.0", "oslo.message": "{\"method\": \"record\", \"args\": {\"value\": 1}, \"_unique_id\": \"same\"}"}"#;
    h.publish_raw("openstack", "dup", body.to_vec());
    h.publish_raw("openstack", "dup", body.to_vec());
    let _: String = RpcClient::new(&t, Target::new("dup"))
        .call(&ctx(), "whoami", &())
        .await
        .unwrap();
    assert_eq!(calls.len(), 1);
    stop(&s).await;
}

#[tokio::test(start_paused = true)]
async fn expired_requests_are_not_delivered() {
    let t = Transport::memory();
    let calls = Calls::default();
    // Declare the queues, then leave: requests wait in the queue.
    let s = start_server(&t, "exp", "s", recording_endpoint("s", &calls)).await;
    stop(&s).await;
    let client = RpcClient::builder(&t, Target::new("exp"))
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    assert!(
        client
            .call::<String>(&ctx(), "record", &json!({"value": 1}))
            .await
            .unwrap_err()
            .is_timeout()
    );
    let s = start_server(&t, "exp", "s", recording_endpoint("s", &calls)).await;
    let _: String = client
        .prepare()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
        .call(&ctx(), "whoami", &())
        .await
        .unwrap();
    assert_eq!(
        calls.len(),
        0,
        "the expired call was dropped, as RabbitMQ drops it"
    );
    stop(&s).await;
}

#[tokio::test]
async fn lifecycle_is_ordered() {
    let t = Transport::memory();
    let build = || {
        RpcServer::builder(&t, Target::new("life").with_server("s"))
            .endpoint(recording_endpoint("s", &Calls::default()))
            .build()
            .unwrap()
    };
    let early = build();
    early.wait().await; // never started: returns at once
    early.stop().await;
    assert_eq!(
        early.start().await.unwrap_err().kind(),
        ErrorKind::InvalidState,
        "stopped before start"
    );

    let s = build();
    s.start().await.unwrap();
    assert_eq!(s.start().await.unwrap_err().kind(), ErrorKind::InvalidState);
    let waiter = {
        let s = s.clone();
        tokio::spawn(async move { s.wait().await })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!waiter.is_finished(), "wait() waits for stop()");
    s.stop().await;
    waiter.await.unwrap();
    s.wait().await; // idempotent

    let err = RpcServer::builder(&t, Target::new("no-server"))
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidTarget);
}

/// Two handlers stopping their own server while another task waits: no deadlock.
#[tokio::test]
async fn concurrent_stops_from_handlers_do_not_deadlock() {
    let t = Transport::memory();
    let slot: Arc<std::sync::OnceLock<RpcServer>> = Arc::default();
    let ep = Endpoint::builder()
        .state(slot.clone())
        .method("shutdown", |State(slot): State<Arc<std::sync::OnceLock<RpcServer>>>, _r: Request<NoArgs>| async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            slot.get().unwrap().stop().await;
            Ok::<_, RpcError>(())
        })
        .build()
        .unwrap();
    let s = start_server(&t, "selfstop", "s", ep).await;
    slot.set(s.clone()).ok();
    let client = RpcClient::new(&t, Target::new("selfstop"));
    for _ in 0..2 {
        client.cast(&ctx(), "shutdown", &()).await.unwrap();
    }
    tokio::time::timeout(Duration::from_secs(5), s.wait())
        .await
        .expect("no deadlock");
}

/// A cancelled `wait()` loses nothing: the shutdown finishes in the background.
#[tokio::test(start_paused = true)]
async fn cancelled_wait_still_cleans_up() {
    let t = Transport::memory();
    let s = start_server(&t, "cw", "s", recording_endpoint("s", &Calls::default())).await;
    let h = t.memory_handle().unwrap();
    let client = RpcClient::new(&t, Target::new("cw"));
    client
        .cast(&ctx(), "sleep", &json!({"seconds": 10}))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1)).await;
    s.stop().await;
    assert!(
        tokio::time::timeout(Duration::from_secs(1), s.wait())
            .await
            .is_err()
    );
    tokio::time::sleep(Duration::from_secs(20)).await;
    let fanout: Vec<String> = h
        .queues()
        .into_iter()
        .filter(|q| q.starts_with("cw_fanout_"))
        .collect();
    assert!(
        fanout.is_empty(),
        "the fanout queue was deleted: {fanout:?}"
    );
    s.wait().await;
}

/// Dropping the last handle of a running server stops it.
#[tokio::test]
async fn dropping_a_running_server_stops_it() {
    let t = Transport::memory();
    let s = start_server(
        &t,
        "dropped",
        "s",
        recording_endpoint("s", &Calls::default()),
    )
    .await;
    let h = t.memory_handle().unwrap();
    assert_eq!(h.consumer_count("dropped"), Some(1));
    drop(s);
    for _ in 0..100 {
        if h.consumer_count("dropped") == Some(0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(h.consumer_count("dropped"), Some(0));
}

#[tokio::test(start_paused = true)]
async fn malformed_calls_get_a_failure_instead_of_a_timeout() {
    let t = Transport::memory();
    let s = start_server(
        &t,
        "malformed",
        "s",
        recording_endpoint("s", &Calls::default()),
    )
    .await;
    let h = t.memory_handle().unwrap();
    h.record_sent(true);
    // A call to a topic nobody serves; its request shows us its _msg_id and _reply_q.
    let client = RpcClient::builder(&t, Target::new("nobody"))
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let call = tokio::spawn(async move { client.call::<Value>(&ctx(), "x", &()).await });
    tokio::time::sleep(Duration::from_millis(1)).await;
    let req = h.sent()[0].decoded().unwrap();
    // The same reply address in a request without "method", sent to the live server.
    let bad = json!({"args": {}, "_msg_id": req["_msg_id"], "_reply_q": req["_reply_q"]});
    let body = json!({"oslo.version": "2.0", "oslo.message": bad.to_string()}).to_string();
    assert_eq!(h.publish_raw("openstack", "malformed", body), 1);
    let start = tokio::time::Instant::now();
    let err = call.await.unwrap().unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "failed fast, not after the 60 s timeout"
    );
    let r = err.remote_error().unwrap();
    assert_eq!((r.class(), r.module()), ("TypeError", "builtins"));
    assert!(
        r.message().contains("malformed RPC request"),
        "{}",
        r.message()
    );
    stop(&s).await;
}

#[tokio::test]
async fn cleanup_shuts_the_transport_down() {
    let t = Transport::memory();
    let client = RpcClient::new(&t, Target::new("x"));
    t.cleanup().await;
    assert_eq!(
        client.cast(&ctx(), "m", &()).await.unwrap_err().kind(),
        ErrorKind::ShutDown
    );
}

#[tokio::test]
async fn separate_transports_on_one_memory_url_talk() {
    let vhost = support::unique("vh");
    let url = format!("memory:///{vhost}");
    let server_side = Transport::from_url(&url).unwrap();
    let client_side = Transport::from_url(&url).unwrap();
    let s = start_server(
        &server_side,
        "shared",
        "s",
        recording_endpoint("s", &Calls::default()),
    )
    .await;
    let client = RpcClient::new(&client_side, Target::new("shared"));
    assert_eq!(
        client.call::<String>(&ctx(), "whoami", &()).await.unwrap(),
        "s"
    );
    stop(&s).await;
}

/// Cancel safety: a dropped call leaves nothing behind, and later calls work.
#[tokio::test]
async fn dropping_a_call_forgets_it() {
    let t = Transport::memory();
    let s = start_server(
        &t,
        "cancel",
        "s",
        recording_endpoint("s", &Calls::default()),
    )
    .await;
    let client = RpcClient::new(&t, Target::new("cancel"));
    let r = tokio::time::timeout(
        Duration::from_millis(20),
        client.call::<f64>(&ctx(), "sleep", &json!({"seconds": 0.2})),
    )
    .await;
    assert!(r.is_err(), "the call was cancelled");
    tokio::time::sleep(Duration::from_millis(300)).await; // its late reply arrives and is dropped
    assert_eq!(
        client.call::<String>(&ctx(), "whoami", &()).await.unwrap(),
        "s"
    );
    stop(&s).await;
}

#[test]
fn public_handles_are_send_and_sync() {
    fn check<T: Send + Sync + Clone + 'static>() {}
    check::<Transport>();
    check::<RpcClient>();
    check::<RpcServer>();
    check::<oslo_messaging::Notifier>();
    check::<oslo_messaging::NotificationListener>();
    check::<oslo_messaging::Error>();
}

/// One builder for new and prepared clients; errors are reported by `build()`.
#[tokio::test]
async fn the_client_builder_reports_errors_at_build() {
    let t = Transport::memory();
    let err = RpcClient::builder(&t, Target::empty())
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidTarget);
    // A topic given by prepare() fixes it, as Python's prepare(topic=...) does.
    let client = RpcClient::new(&t, Target::empty())
        .prepare()
        .topic("t")
        .version("2.3".parse().unwrap())
        .timeout(Duration::from_secs(7))
        .build()
        .unwrap();
    assert_eq!(client.target().topic(), Some("t"));
    assert_eq!(client.target().version(), Some(&Version::new(2, 3)));
    assert_eq!(client.timeout(), Duration::from_secs(7));
    // What prepare() overrides stays on the copy.
    let back = client.prepare().clear_version().build().unwrap();
    assert_eq!(back.target().version(), None);
    assert_eq!(client.target().version(), Some(&Version::new(2, 3)));
}
