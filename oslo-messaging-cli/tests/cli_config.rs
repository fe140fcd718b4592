//! `config sample` against Python's oslo-config-generator, and `config check`, run as an
//! operator runs them. The comparison needs Python oslo.messaging 18.3.1 (skipped without it
//! unless `CI` is set).

mod support;

use std::collections::BTreeMap;
use std::process::{Command, Output};

use serde_json::Value;

fn ours(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_oslo-messaging"))
        .args(args)
        .env_remove("OSLO_MESSAGING_URL")
        .output()
        .unwrap()
}

/// `group -> option -> default` of a sample file: the `#name = value` lines of each section.
fn defaults(sample: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut group = String::new();
    for line in sample.lines() {
        if let Some(g) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            group = g.to_owned();
        } else if let Some((name, value)) = line.strip_prefix('#').and_then(|l| l.split_once(" = "))
            && !name.contains(' ')
        {
            out.entry(group.clone())
                .or_default()
                .insert(name.to_owned(), value.to_owned());
        } else if let Some(name) = line.strip_prefix('#').and_then(|l| l.strip_suffix(" ="))
            && !name.contains(' ')
        {
            // oslo-config-generator writes an empty default without the trailing space.
            out.entry(group.clone())
                .or_default()
                .insert(name.to_owned(), String::new());
        }
    }
    out
}

/// Every option Python 18.3.1 lists for the groups we implement is in our sample with the
/// same default, and we list nothing else but what is said here.
#[test]
fn the_sample_has_the_options_and_defaults_of_pythons_generator() {
    let Some(python) = support::python() else {
        return;
    };
    let generator = python.with_file_name("oslo-config-generator");
    let theirs = Command::new(&generator)
        .args(["--namespace", "oslo.messaging"])
        .output()
        .unwrap();
    assert!(theirs.status.success(), "{theirs:?}");
    let theirs = defaults(&String::from_utf8(theirs.stdout).unwrap());
    let out = ours(&["config", "sample"]);
    assert!(out.status.success(), "{out:?}");
    let ours = defaults(&String::from_utf8(out.stdout).unwrap());

    // Python's generator leaves out the metrics and tracing groups, which 18.3.1 registers on
    // the global CONF only: their options come from the modules that register them.
    let groups: Vec<&String> = ours.keys().collect();
    assert_eq!(
        groups,
        [
            "DEFAULT",
            "oslo_messaging_kafka",
            "oslo_messaging_metrics",
            "oslo_messaging_notifications",
            "oslo_messaging_rabbit",
            "oslo_messaging_tracing"
        ]
    );
    assert!(theirs.contains_key("oslo_messaging_kafka"));
    let mut theirs = theirs;
    let registered = Command::new(&python)
        .args([
            "-c",
            "from oslo_messaging._metrics import client as m\n\
             from oslo_messaging._tracing import client as t\n\
             for g, opts in (('oslo_messaging_metrics', m.oslo_messaging_metrics),\n\
                             ('oslo_messaging_tracing', t.oslo_messaging_tracing)):\n\
             \x20   for o in opts:\n\
             \x20       d = o.default\n\
             \x20       print(g, o.name, str(d).lower() if isinstance(d, bool) else d, sep='\\t')",
        ])
        .output()
        .unwrap();
    assert!(registered.status.success(), "{registered:?}");
    for line in String::from_utf8(registered.stdout).unwrap().lines() {
        let mut parts = line.splitn(3, '\t');
        let (g, name, default) = (
            parts.next().unwrap(),
            parts.next().unwrap(),
            parts.next().unwrap_or(""),
        );
        theirs
            .entry(g.to_owned())
            .or_default()
            .insert(name.to_owned(), default.to_owned());
    }
    for (group, options) in &ours {
        let python = &theirs[group];
        for (name, default) in python {
            let mine = options
                .get(name)
                .unwrap_or_else(|| panic!("[{group}] {name} is missing from our sample"));
            // Machine-dependent defaults: Python's generator prints its own machine's.
            if ["hostname", "processname"].contains(&name.as_str()) {
                continue;
            }
            assert_eq!(mine, default, "[{group}] {name}");
        }
        for name in options.keys() {
            // `routing_config` is registered by Python's routing driver, not by list_opts;
            // `rabbit_direct_reply_to` is ours, and its help says so.
            assert!(
                python.contains_key(name)
                    || name == "routing_config"
                    || name == "rabbit_direct_reply_to",
                "[{group}] {name} is ours only"
            );
        }
    }
}

/// `config check` loads the files as a service would: URLs masked, the groups this library
/// ignores named; a file that does not load exits 64 saying why.
#[test]
fn check_shows_the_configuration_masked_and_what_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("nova.conf");
    std::fs::write(
        &conf,
        "[DEFAULT]\ntransport_url = rabbit://nova:s3cret@rmq1:5672/\ncontrol_exchange = nova\n\
         [oslo_messaging_notifications]\ndriver = messagingv2\n\
         [oslo_messaging_tracing]\ntracing_enabled = true\n\
         [oslo_messaging_kafka]\nconsumer_group = g\n\
         [oslo_messaging_amqp]\nidle_timeout = 10\n",
    )
    .unwrap();
    let path = conf.to_str().unwrap();
    let out = ours(&["--config-file", path, "config", "check"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(!text.contains("s3cret"), "{text}");
    assert!(
        text.contains("transport_url = rabbit://nova:***@rmq1:5672/"),
        "{text}"
    );
    assert!(text.contains("control_exchange = nova"), "{text}");
    assert!(
        text.contains("warning: [oslo_messaging_amqp] is set"),
        "{text}"
    );
    assert!(!text.contains("[oslo_messaging_tracing] is set"), "{text}");
    assert!(!text.contains("[oslo_messaging_kafka] is set"), "{text}");

    let out = ours(&["--json", "--config-file", path, "config", "check"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["unsupported_groups"],
        serde_json::json!(["oslo_messaging_amqp"])
    );
    assert_eq!(
        v["notification_drivers"],
        serde_json::json!(["messagingv2"])
    );

    std::fs::write(&conf, "[oslo_messaging_rabbit]\nheartbeat_rate = often\n").unwrap();
    let out = ours(&["--config-file", path, "config", "check"]);
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("[oslo_messaging_rabbit] heartbeat_rate"),
        "{err}"
    );
    let missing = dir.path().join("absent.conf");
    let out = ours(&[
        "--config-file",
        missing.to_str().unwrap(),
        "config",
        "check",
    ]);
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("cannot read config file") && err.contains("No such file"),
        "{err}"
    );
}
