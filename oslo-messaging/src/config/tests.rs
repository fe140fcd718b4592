use super::*;
use crate::ErrorKind;

#[test]
fn defaults_match_python() {
    let c = Config::default();
    assert_eq!(c.default.transport_url.expose(), "rabbit://");
    assert_eq!(c.default.control_exchange, "openstack");
    assert_eq!(c.default.rpc_response_timeout, 60);
    assert_eq!(c.default.executor_thread_pool_size, 64);
    assert!(!c.default.rpc_ping_enabled);

    let r = &c.rabbit;
    assert!(!r.amqp_durable_queues && !r.amqp_auto_delete);
    assert_eq!(
        (r.rpc_conn_pool_size, r.conn_pool_min_size, r.conn_pool_ttl),
        (30, 2, 1200)
    );
    assert!(!r.ssl && r.ssl_enforce_hostname_verification);
    assert!((r.kombu_reconnect_delay - 1.0).abs() < f64::EPSILON);
    assert!(r.kombu_reconnect_splay.abs() < f64::EPSILON);
    assert_eq!(r.kombu_compression, None);
    assert_eq!(r.kombu_missing_consumer_retry_timeout, 60);
    assert_eq!(r.kombu_failover_strategy, "round-robin");
    assert_eq!(r.rabbit_login_method, "AMQPLAIN");
    assert_eq!(
        (
            r.rabbit_retry_interval,
            r.rabbit_retry_backoff,
            r.rabbit_interval_max
        ),
        (1, 2, 30)
    );
    assert!(!r.rabbit_ha_queues && !r.rabbit_quorum_queue && !r.rabbit_transient_quorum_queue);
    assert_eq!(r.rabbit_quorum_delivery_limit, 0);
    assert_eq!(r.rabbit_transient_queues_ttl, 1800);
    assert_eq!(r.rabbit_qos_prefetch_count, 0);
    assert_eq!((r.heartbeat_timeout_threshold, r.heartbeat_rate), (60, 3));
    assert!(r.direct_mandatory_flag && !r.enable_cancel_on_failover);
    assert!(!r.use_queue_manager && !r.rabbit_stream_fanout);
    assert!(!r.hostname.is_empty() && !r.processname.is_empty());

    let n = &c.notifications;
    assert_eq!(n.driver, None);
    assert_eq!(n.transport_url, None);
    assert_eq!(n.topics, ["notifications"]);
    assert_eq!(n.retry, -1);
    assert_eq!(n.routing_config, "");
}

#[test]
fn later_files_override_earlier_ones() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.conf");
    let b = dir.path().join("b.conf");
    std::fs::write(
        &a,
        "[DEFAULT]\ncontrol_exchange = nova\nrpc_response_timeout = 30\n\
         [oslo_messaging_rabbit]\nheartbeat_rate = 2\n",
    )
    .unwrap();
    std::fs::write(&b, "[DEFAULT]\nrpc_response_timeout = 90\n").unwrap();
    let c = Config::from_files(&[&a, &b]).unwrap();
    assert_eq!(c.default.control_exchange, "nova");
    assert_eq!(c.default.rpc_response_timeout, 90);
    assert_eq!(c.rabbit.heartbeat_rate, 2);
}

#[test]
fn an_unreadable_file_says_which_and_why_once() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.conf");
    let err = Config::from_files(&[&missing]).unwrap_err();
    assert_eq!(err.kind(), crate::ErrorKind::Configuration);
    let text = err.to_string();
    assert!(text.starts_with("cannot read config file "), "{text}");
    assert!(text.contains("missing.conf"), "{text}");
    // The I/O error, once.
    assert!(text.contains("No such file"), "{text}");
    assert_eq!(text.matches("No such file").count(), 1, "{text}");
}

#[test]
fn typed_conversion_and_python_spellings() {
    let c = Config::from_ini_str(
        "[oslo_messaging_rabbit]\n\
         ssl = Yes\n\
         amqp_durable_queues = 1\n\
         rabbit_ha_queues = off\n\
         kombu_reconnect_delay = 0.5\n\
         rabbit_qos_prefetch_count = 10 \n\
         kombu_compression = gzip\n\
         [oslo_messaging_notifications]\n\
         driver = messagingv2\n\
         driver = log\n\
         topics = notifications, audit ,\n",
    )
    .unwrap();
    assert!(c.rabbit.ssl && c.rabbit.amqp_durable_queues && !c.rabbit.rabbit_ha_queues);
    assert!((c.rabbit.kombu_reconnect_delay - 0.5).abs() < f64::EPSILON);
    assert_eq!(c.rabbit.rabbit_qos_prefetch_count, 10);
    assert_eq!(c.rabbit.kombu_compression.as_deref(), Some("gzip"));
    assert_eq!(
        c.notifications.driver.as_deref(),
        Some(&["messagingv2".to_owned(), "log".to_owned()][..])
    );
    assert_eq!(c.notifications.topics, ["notifications", "audit"]);
}

#[test]
fn bad_values_name_group_option_and_value() {
    let cases = [
        (
            "[DEFAULT]\nrpc_response_timeout = soon\n",
            "[DEFAULT] rpc_response_timeout: invalid value \"soon\": expected an integer",
        ),
        (
            "[oslo_messaging_rabbit]\nssl = maybe\n",
            "[oslo_messaging_rabbit] ssl: invalid value \"maybe\": expected a boolean",
        ),
        (
            "[oslo_messaging_rabbit]\nkombu_reconnect_delay = 9\n",
            "kombu_reconnect_delay: invalid value \"9\": expected a value of at most 4.5",
        ),
        (
            "[oslo_messaging_rabbit]\nrabbit_retry_interval = 0\n",
            "rabbit_retry_interval: invalid value \"0\": expected a value of at least 1",
        ),
        (
            "[oslo_messaging_rabbit]\nkombu_failover_strategy = random\n",
            "expected one of round-robin, shuffle",
        ),
        (
            "[oslo_messaging_rabbit]\nrabbit_login_method = KERBEROS\n",
            "expected one of PLAIN, AMQPLAIN, EXTERNAL, RABBIT-CR-DEMO",
        ),
    ];
    for (text, want) in cases {
        let err = Config::from_ini_str(text).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Configuration);
        assert!(err.to_string().contains(want), "{text:?}: {err}");
    }
}

#[test]
fn unknown_options_in_files_are_ignored_but_not_in_set() {
    let c = Config::from_ini_str(
        "[DEFAULT]\ndebug = true\n[database]\nconnection = mysql://x\n\
         [oslo_messaging_rabbit]\nheartbeat_in_pthread = true\n",
    )
    .unwrap();
    assert_eq!(c.default.control_exchange, "openstack");

    let mut c = Config::default();
    let err = c
        .set("oslo_messaging_rabbit", "no_such_thing", "1")
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("no such option [oslo_messaging_rabbit] no_such_thing"),
        "{err}"
    );
}

#[test]
fn deprecated_names_still_work() {
    let c = Config::from_ini_str(
        "[DEFAULT]\nrpc_thread_pool_size = 8\nnotification_driver = messaging\n\
         notification_topics = a,b\n\
         [oslo_messaging_rabbit]\nkombu_reconnect_timeout = 5\n",
    )
    .unwrap();
    assert_eq!(c.default.executor_thread_pool_size, 8);
    assert_eq!(
        c.notifications.driver.as_deref(),
        Some(&["messaging".to_owned()][..])
    );
    assert_eq!(c.notifications.topics, ["a", "b"]);
    assert_eq!(c.rabbit.kombu_missing_consumer_retry_timeout, 5);
}

#[test]
fn empty_multi_value_means_explicitly_none() {
    let c = Config::from_ini_str("[oslo_messaging_notifications]\ndriver =\n").unwrap();
    assert_eq!(c.notifications.driver, Some(vec![]));
}

#[test]
fn url_query_overrides_with_typed_conversion() {
    let mut r = RabbitOptions::default();
    r.apply_query(&[
        ("rabbit_qos_prefetch_count".to_owned(), "2".to_owned()),
        ("ssl".to_owned(), "true".to_owned()),
    ])
    .unwrap();
    assert_eq!(r.rabbit_qos_prefetch_count, 2);
    assert!(r.ssl);

    let err = RabbitOptions::default()
        .apply_query(&[("nope".to_owned(), "1".to_owned())])
        .unwrap_err();
    assert!(err.to_string().contains("no such option \"nope\""), "{err}");
    let err = RabbitOptions::default()
        .apply_query(&[("heartbeat_rate".to_owned(), "x".to_owned())])
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("[oslo_messaging_rabbit] heartbeat_rate"),
        "{err}"
    );
}

#[test]
fn conflicts_python_refuses() {
    let cases = [
        (
            "rabbit_ha_queues = true\nrabbit_quorum_queue = true\n",
            "rabbit_ha_queues and rabbit_quorum_queue cannot both be enabled",
        ),
        (
            "rabbit_ha_queues = true\nrabbit_transient_quorum_queue = true\n",
            "rabbit_ha_queues and rabbit_transient_quorum_queue cannot both be enabled",
        ),
        (
            "rabbit_stream_fanout = true\n",
            "rabbit_stream_fanout needs",
        ),
        ("conn_pool_min_size = 40\n", "rpc_conn_pool_size must be"),
        (
            "kombu_compression = lz4\n",
            "kombu_compression \"lz4\" is not supported",
        ),
    ];
    for (body, want) in cases {
        // Loading reports the conflict; so does validating a configuration changed in code.
        let err = Config::from_ini_str(&format!("[oslo_messaging_rabbit]\n{body}")).unwrap_err();
        assert!(err.to_string().contains(want), "{body:?}: {err}");
        let mut c = Config::default();
        for line in body.lines() {
            let (k, v) = line.split_once(" = ").unwrap();
            c.set("oslo_messaging_rabbit", k, v).unwrap();
        }
        let err = c.validate().unwrap_err();
        assert!(err.to_string().contains(want), "{body:?}: {err}");
    }
    let ok = Config::from_ini_str(
        "[oslo_messaging_rabbit]\nrabbit_stream_fanout = true\nrabbit_qos_prefetch_count = 10\n\
         rabbit_transient_quorum_queue = true\n",
    )
    .unwrap();
    ok.validate().unwrap();
}

#[test]
fn builder_checks_options() {
    let err = Config::builder()
        .option("DEFAULT", "rpc_response_timeout", "x")
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Configuration);
    let c = Config::builder()
        .transport_url("memory://")
        .rpc_response_timeout(5)
        .notification_drivers(["noop"])
        .build()
        .unwrap();
    assert_eq!(c.default.transport_url.expose(), "memory://");
    assert_eq!(c.default.rpc_response_timeout, 5);
}

#[test]
fn debug_never_shows_transport_url_secrets() {
    let c = Config::from_ini_str(
        "[DEFAULT]\ntransport_url = rabbit://u:Sup3rS3cret@h/\n\
         [oslo_messaging_notifications]\ntransport_url = rabbit://u:Sup3rS3cret@h/\n",
    )
    .unwrap();
    assert!(!format!("{c:?}").contains("Sup3rS3cret"));
    assert_eq!(
        c.notification_transport_url().expose(),
        "rabbit://u:Sup3rS3cret@h/"
    );
}

#[test]
fn option_listing_covers_every_group() {
    let rabbit = RabbitOptions::options();
    assert!(
        rabbit
            .iter()
            .any(|o| o.name == "rabbit_quorum_queue" && o.default == "false")
    );
    let hb = rabbit
        .iter()
        .find(|o| o.name == "heartbeat_timeout_threshold")
        .unwrap();
    assert_eq!(hb.default, "60");
    assert!(!hb.help.is_empty());
    let url = DefaultOptions::options()
        .into_iter()
        .find(|o| o.name == "transport_url")
        .unwrap();
    assert_eq!(url.default, "(secret)");
    assert_eq!(NotificationOptions::options().len(), 5);
}

/// oslo.config's order: built-in default < service default < files (in order) < set in code.
#[test]
fn service_defaults_sit_below_the_files_and_code_above() {
    let file = "[DEFAULT]\ncontrol_exchange = cells\n";
    let layered = |text: Option<&str>| {
        let mut b = Config::builder()
            .default_control_exchange("nova")
            .default_executor_thread_pool_size(8);
        if let Some(t) = text {
            b = b.ini_str(t);
        }
        b.build().unwrap()
    };
    let c = layered(None);
    assert_eq!(c.default.control_exchange, "nova");
    assert_eq!(c.default.executor_thread_pool_size, 8);
    let c = layered(Some(file));
    assert_eq!(c.default.control_exchange, "cells");
    assert_eq!(c.default.executor_thread_pool_size, 8);
    // Set in code wins over everything, whatever the order of the calls.
    let c = Config::builder()
        .control_exchange("override")
        .ini_str(file)
        .default_control_exchange("nova")
        .build()
        .unwrap();
    assert_eq!(c.default.control_exchange, "override");
    // Later sources win; `$` substitution sees the service default.
    let c = Config::builder()
        .default_control_exchange("nova")
        .ini_str("[oslo_messaging_rabbit]\nprocessname = $control_exchange-api\n")
        .ini_str("[oslo_messaging_rabbit]\nheartbeat_rate = 4\n")
        .build()
        .unwrap();
    assert_eq!(c.rabbit.processname, "nova-api");
    assert_eq!(c.rabbit.heartbeat_rate, 4);
    // A service default is checked as a file value would be.
    let err = Config::builder()
        .service_default("DEFAULT", "rpc_response_timeout", "soon")
        .build()
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("service default [DEFAULT] rpc_response_timeout"),
        "{err}"
    );
    let err = Config::builder()
        .service_default("DEFAULT", "no_such_option", "1")
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("no such option"), "{err}");
}

#[test]
fn groups_this_library_does_not_implement_are_reported() {
    let c = Config::from_ini_str(
        "[oslo_messaging_amqp]\nserver_request_prefix = exclusive\n\
         [oslo_messaging_kafka]\nconsumer_group = g\n[api]\nauth_strategy = keystone\n\
         [oslo_messaging_amqp]\nidle_timeout = 10\n",
    )
    .unwrap();
    // A service's own groups are not ours to judge; oslo.messaging's unimplemented ones are.
    assert_eq!(c.unsupported_groups(), ["oslo_messaging_amqp"]);
    // The Kafka driver's group is read.
    assert_eq!(c.kafka.consumer_group, "g");
    assert!(Config::default().unsupported_groups().is_empty());
}

#[test]
fn the_sample_lists_every_option_and_loads_as_the_defaults() {
    let sample = Config::sample_ini();
    let mut count = 0;
    for (group, opts) in Config::list_opts() {
        assert!(sample.contains(&format!("[{group}]\n")), "{group}");
        for o in opts {
            assert!(
                sample.contains(&format!("\n#{} = {}\n", o.name, o.sample)),
                "{group} {}",
                o.name
            );
            count += 1;
        }
    }
    assert_eq!(
        count,
        5 + 5 + 38 + 5 + 5 + 14,
        "every option of the six groups"
    );
    assert!(sample.contains("\n#kombu_reconnect_delay = 1.0\n"));
    assert!(sample.contains("\n#kombu_compression = <None>\n"));
    assert!(sample.contains("\n#driver = \n"));
    assert!(sample.contains("# Deprecated group/name - [DEFAULT]/rpc_thread_pool_size\n"));
    assert!(
        sample
            .lines()
            .all(|l| l.len() <= 79 || !l.starts_with("# ")),
        "wrapped"
    );
    // Uncommenting every option gives the defaults back.
    let mut rebuilt = String::new();
    for l in sample.lines() {
        if l.starts_with('[') {
            rebuilt.push_str(l);
            rebuilt.push('\n');
        } else if let Some(rest) = l.strip_prefix('#')
            && rest.contains(" = ")
            && !rest.contains("<None>")
        {
            rebuilt.push_str(rest);
            rebuilt.push('\n');
        }
    }
    let loaded = Config::from_ini_str(&rebuilt).unwrap();
    let defaults = Config::default();
    assert_eq!(loaded.default, defaults.default);
    assert_eq!(loaded.rabbit, defaults.rabbit);
    assert_eq!(loaded.notifications.topics, defaults.notifications.topics);
    assert_eq!(loaded.tracing, defaults.tracing);
    assert_eq!(loaded.metrics, defaults.metrics);
}

#[test]
fn metrics_options_read_as_python_reads_them() {
    let c = Config::default();
    assert!(!c.metrics.metrics_enabled);
    assert_eq!(c.metrics.metrics_buffer_size, 1000);
    assert_eq!(
        c.metrics.metrics_socket_file,
        "/var/tmp/metrics_collector.sock"
    );
    assert_eq!(c.metrics.metrics_process_name, "");
    assert_eq!(c.metrics.metrics_thread_stop_timeout, 10);
    let c = Config::from_ini_str(
        "[oslo_messaging_metrics]\nmetrics_enabled = true\nmetrics_process_name = nova-api\n",
    )
    .unwrap();
    assert!(c.metrics.metrics_enabled);
    assert_eq!(c.metrics.metrics_process_name, "nova-api");
    let err =
        Config::from_ini_str("[oslo_messaging_metrics]\nmetrics_buffer_size = 0\n").unwrap_err();
    assert!(err.to_string().contains("metrics_buffer_size"), "{err}");
}

#[test]
fn tracing_options_read_as_python_reads_them() {
    let c = Config::default();
    assert!(!c.tracing.tracing_enabled);
    assert_eq!(c.tracing.tracing_service_name, "openstack");
    assert_eq!(
        c.tracing.otel_exporter_otlp_endpoint,
        "http://localhost:4318"
    );
    assert_eq!(c.tracing.otlp_protocol, "http/protobuf");
    assert!(!c.tracing.insecure);
    let c = Config::from_ini_str(
        "[oslo_messaging_tracing]\ntracing_enabled = True\ntracing_service_name = nova\n\
         otlp_protocol = grpc\notel_exporter_otlp_endpoint = http://collector:4317\n",
    )
    .unwrap();
    assert!(c.tracing.tracing_enabled);
    assert_eq!(c.tracing.tracing_service_name, "nova");
    assert_eq!(c.tracing.otlp_protocol, "grpc");
    assert!(c.unsupported_groups().is_empty());
    let err =
        Config::from_ini_str("[oslo_messaging_tracing]\notlp_protocol = zipkin\n").unwrap_err();
    assert!(err.to_string().contains("otlp_protocol"), "{err}");
}
