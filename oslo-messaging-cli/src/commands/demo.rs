//! `demo`: a guided tour of the library in one process.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use oslo_messaging::notify::{
    Notification, NotificationEndpoint, NotificationListener, Notifier, NotifyDriver, Priority,
};
use oslo_messaging::rpc::{Endpoint, NoArgs, Request, RpcClient, RpcError, RpcServer, State};
use oslo_messaging::{Context, Error, ErrorKind, Target, Version};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::cli::{DemoArgs, EXIT_FAILURE, EXIT_OK, Global};

#[derive(Deserialize)]
struct Operands {
    a: f64,
    b: f64,
}

#[derive(Deserialize)]
struct Item {
    item: String,
}

/// What the servers did, for the tour to show.
#[derive(Clone, Default)]
struct Journal(Arc<Mutex<Vec<String>>>);

impl Journal {
    fn add(&self, line: String) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(line);
    }

    fn take(&self) -> Vec<String> {
        std::mem::take(
            &mut *self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

fn calculator() -> Result<Endpoint, Error> {
    Endpoint::builder()
        .namespace("calc")
        .version(Version::new(1, 1))
        .method("add", |req: Request<Operands>| async move {
            let Operands { a, b } = req.into_args();
            Ok::<_, RpcError>(a + b)
        })
        .method("divide", |req: Request<Operands>| async move {
            let Operands { a, b } = req.into_args();
            if b == 0.0 {
                // Part of the method's contract: logged at debug, not as a server failure.
                return Err(RpcError::value_error("division by zero").expected());
            }
            Ok(a / b)
        })
        .build()
}

fn inventory(host: &str, journal: &Journal) -> Result<Endpoint, Error> {
    Endpoint::builder()
        .state((host.to_owned(), journal.clone()))
        .method(
            "record",
            |State((host, journal)): State<(String, Journal)>, req: Request<Item>| async move {
                journal.add(format!("{host} recorded {:?}", req.args().item));
                Ok::<_, RpcError>(())
            },
        )
        .method(
            "refresh",
            |State((host, journal)): State<(String, Journal)>, _req: Request<NoArgs>| async move {
                journal.add(format!("{host} refreshed"));
                Ok::<_, RpcError>(())
            },
        )
        .method("slow", |req: Request<Value>| async move {
            let secs = req
                .args()
                .get("seconds")
                .and_then(Value::as_f64)
                .unwrap_or(1.0);
            if !(0.0..=3600.0).contains(&secs) {
                return Err(RpcError::value_error(format!(
                    "seconds must be between 0 and 3600, not {secs}"
                )));
            }
            tokio::time::sleep(Duration::from_secs_f64(secs)).await;
            Ok::<_, RpcError>(secs)
        })
        .build()
}

fn step(name: &str, text: impl std::fmt::Display) {
    println!("[{name:>7}] {text}");
}

pub(crate) async fn run(global: &Global, args: &DemoArgs) -> u8 {
    // Bad usage (a malformed --url, a bad configuration file) is told apart from a failed
    // demo by its exit status. Making a transport does not connect.
    if let Err(e) = super::load_config(global)
        .and_then(|conf| super::transport(global, &conf, Some("memory://")))
    {
        return super::Failure::from(e).report(global.json);
    }
    match tour(global, args).await {
        Ok(()) => {
            println!("done.");
            EXIT_OK
        }
        Err(e) => {
            eprintln!("error: the demo failed: {e}");
            EXIT_FAILURE
        }
    }
}

async fn tour(global: &Global, args: &DemoArgs) -> Result<(), String> {
    let mut conf = super::load_config(global).map_err(|e| e.to_string())?;
    let mut transport =
        super::transport(global, &conf, Some("memory://")).map_err(|e| e.to_string())?;
    let on_broker = !matches!(transport.url().driver_name(), "memory" | "fake");
    if on_broker {
        // On a shared broker: names of our own so concurrent demos do not meet, and
        // auto-delete queues and exchanges so the demo leaves nothing behind.
        if global.exchange.is_none() {
            conf.default.control_exchange = format!("oslo_messaging_demo_{}", std::process::id());
        }
        conf.set("oslo_messaging_rabbit", "amqp_auto_delete", "true")
            .map_err(|e| e.to_string())?;
        transport = super::transport(global, &conf, None).map_err(|e| e.to_string())?;
    }
    let suffix = if on_broker {
        format!("_{}", std::process::id())
    } else {
        String::new()
    };
    let topic = format!("demo{suffix}");
    let journal = Journal::default();
    let e = |e: Error| e.to_string();
    println!(
        "oslo-messaging demo on {} (control exchange {:?})",
        transport.url(),
        transport.control_exchange()
    );

    let mut servers = Vec::new();
    for host in ["host-1", "host-2"] {
        let server = RpcServer::builder(&transport, Target::new(&topic).with_server(host))
            .endpoint(calculator().map_err(e)?)
            .endpoint(inventory(host, &journal).map_err(e)?)
            // One handler at a time, so a cast is handled before a later call to the same
            // server, which the tour relies on to show what each step did.
            .executor_pool_size(1)
            .build()
            .map_err(e)?;
        server.start().await.map_err(e)?;
        servers.push(server);
    }
    step(
        "server",
        format!(
            "RPC servers host-1 and host-2 serve topic {topic:?}: endpoints calc 1.1 and inventory 1.0"
        ),
    );

    let ctx = Context::new()
        .with("user", "demo")
        .with("request_id", "req-demo-1");
    let calc = RpcClient::builder(
        &transport,
        Target::new(&topic)
            .with_namespace("calc")
            .with_version(Version::new(1, 1)),
    )
    .timeout(Duration::from_secs(10))
    .build()
    .map_err(e)?;
    let sum: f64 = calc
        .call(&ctx, "add", &json!({"a": 2, "b": 3}))
        .await
        .map_err(e)?;
    step("call", format!("calc.add(a=2, b=3) -> {sum}"));

    let inventory_client = RpcClient::builder(&transport, Target::new(&topic))
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(e)?;
    let to_host_2 = inventory_client
        .prepare()
        .server("host-2")
        .build()
        .map_err(e)?;
    to_host_2
        .cast(&ctx, "record", &json!({"item": "disk"}))
        .await
        .map_err(e)?;
    // A call to the same server after the cast: the cast has been handled when it returns.
    let _: f64 = to_host_2
        .call(&ctx, "slow", &json!({"seconds": 0}))
        .await
        .map_err(e)?;
    step(
        "cast",
        format!(
            "record(item=\"disk\") cast to host-2: {}",
            journal.take().join("; ")
        ),
    );

    let fanout = inventory_client.prepare().fanout(true).build().map_err(e)?;
    fanout.cast(&ctx, "refresh", &()).await.map_err(e)?;
    for host in ["host-1", "host-2"] {
        let direct = inventory_client.prepare().server(host).build().map_err(e)?;
        let _: f64 = direct
            .call(&ctx, "slow", &json!({"seconds": 0}))
            .await
            .map_err(e)?;
    }
    let mut reached = journal.take();
    reached.sort();
    step(
        "fanout",
        format!("refresh() fanout cast: {}", reached.join("; ")),
    );

    match calc
        .call::<f64>(&ctx, "divide", &json!({"a": 1, "b": 0}))
        .await
    {
        Err(err) if err.kind() == ErrorKind::Remote => {
            let r = err.remote_error().expect("remote errors carry the failure");
            step(
                "error",
                format!(
                    "calc.divide(a=1, b=0) -> remote {}.{}: {}",
                    r.module(),
                    r.class(),
                    r.message()
                ),
            );
        }
        other => return Err(format!("expected a remote ValueError, got {other:?}")),
    }

    let impatient = inventory_client
        .prepare()
        .timeout(Duration::from_secs_f64(args.timeout))
        .build()
        .map_err(e)?;
    match impatient
        .call::<f64>(&ctx, "slow", &json!({"seconds": args.timeout + 0.2}))
        .await
    {
        Err(err) if err.is_timeout() => {
            step(
                "timeout",
                format!("slow() with a {}s timeout -> {err}", args.timeout),
            );
        }
        other => return Err(format!("expected a timeout, got {other:?}")),
    }

    let notif_topic = format!("notifications{suffix}");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut endpoint = NotificationEndpoint::builder();
    for priority in [Priority::Info, Priority::Error] {
        let tx = tx.clone();
        endpoint = endpoint.on(priority, move |n: Notification| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(n);
            }
        });
    }
    let listener = NotificationListener::builder(&transport, vec![Target::new(&notif_topic)])
        .endpoint(endpoint.build().map_err(e)?)
        .executor_pool_size(1)
        .build()
        .map_err(e)?;
    listener.start().await.map_err(e)?;
    let notifier = Notifier::builder(&transport)
        .driver(NotifyDriver::MessagingV2)
        .publisher_id("compute.host-1")
        .topics([notif_topic.clone()])
        .build()
        .map_err(e)?;
    let nctx = ctx.clone().with("auth_token", "not-for-the-wire");
    notifier
        .info(
            &nctx,
            "compute.instance.create.end",
            &json!({"instance_id": "i-42", "state": "active"}),
        )
        .await
        .map_err(e)?;
    notifier
        .error(
            &nctx,
            "compute.instance.error",
            &json!({"instance_id": "i-43", "reason": "no valid host"}),
        )
        .await
        .map_err(e)?;
    for _ in 0..2 {
        let n = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .map_err(|_| "no notification arrived within 10 s".to_owned())?
            .ok_or("the listener stopped")?;
        step(
            "notify",
            format!(
                "{} {} from {} -> listener got {} (auth_token in context: {})",
                n.priority.as_wire(),
                n.event_type.as_deref().unwrap_or("?"),
                n.publisher_id.as_deref().unwrap_or("?"),
                n.payload,
                n.context
                    .get("auth_token")
                    .map_or("absent".into(), ToString::to_string),
            ),
        );
    }

    listener.stop().await;
    listener.wait().await;
    for s in &servers {
        s.stop().await;
    }
    for s in &servers {
        s.wait().await;
    }
    transport.cleanup().await;
    Ok(())
}
