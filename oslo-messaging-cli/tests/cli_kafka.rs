//! `notify` and `listen` with a `kafka://` URL, as an operator runs them, on a private tansu
//! broker (skipped without one, unless `CI` is set).

mod support;

use std::process::{Command, Output, Stdio};

use serde_json::{Value, json};
use support::wait_until_listening;
use testkit::kafka::Tansu;

fn cli(url: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_oslo-messaging"));
    c.args(["--url", url]);
    c
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn run(url: &str, args: &[&str]) -> Output {
    cli(url).args(args).output().expect("run the binary")
}

#[test]
fn notify_and_listen_work_on_a_kafka_url() {
    testkit::require_kafka!();
    let broker = Tansu::start();
    let topic = testkit::unique("clik");
    broker.create_priority_topics(&topic, 1);
    let url = broker.url("");
    let mut listener = cli(&url)
        .args(["-v", "--json", "listen", "--topic", &topic, "--pool", "ops"])
        .args(["--count", "2", "--timeout", "60"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // -v logs when the listener is up (its partitions assigned).
    let _stderr = wait_until_listening(&mut listener);
    for (priority, payload) in [("error", r#"{"k": 1}"#), ("info", "[1, 2]")] {
        let o = run(
            &url,
            &[
                "notify",
                "--topic",
                &topic,
                "--publisher-id",
                "compute.host1",
                "--event-type",
                &format!("test.{priority}"),
                "--priority",
                priority,
                "--context",
                r#"{"user": "u", "auth_token": "secret"}"#,
                payload,
            ],
        );
        assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    }
    let out = listener.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let mut got: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    got.sort_by_key(|l| l["priority"].as_str().unwrap().to_owned());
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0]["priority"], "error");
    assert_eq!(got[0]["payload"], json!({"k": 1}));
    assert_eq!(got[1]["priority"], "info");
    assert_eq!(got[1]["payload"], json!([1, 2]));
    for l in &got {
        assert_eq!(l["publisher_id"], "compute.host1");
        assert_eq!(l["context"]["user"], "u");
        assert_eq!(l["context"]["auth_token"], Value::Null, "redacted");
    }
}

#[test]
fn rpc_on_a_kafka_url_is_a_clear_failure() {
    testkit::require_kafka!();
    let o = run("kafka://127.0.0.1:1/", &["cast", "--topic", "t", "m", "{}"]);
    assert_ne!(o.status.code(), Some(0));
    assert!(
        text(&o.stderr).contains("notifications only"),
        "{}",
        text(&o.stderr)
    );
}
