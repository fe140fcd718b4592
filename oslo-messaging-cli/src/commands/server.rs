//! `rpc-server`: a test endpoint for operators, interop tests and Python's simulator clients.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use oslo_messaging::rpc::{Endpoint, Request, RpcError, RpcServer, State};
use oslo_messaging::{Context, Error, Target};
use serde::Deserialize;
use serde_json::{Value, json};

use super::Failure;
use crate::cli::{EXIT_OK, Global, RpcServerArgs};

/// How the server reports the requests it handles.
#[derive(Clone, Copy)]
enum Report {
    Quiet,
    Json,
    People,
}

impl Report {
    fn request(self, method: &str, ctx: &Context, args: &Value) {
        match self {
            Self::Quiet => {}
            Self::Json => super::out(
                &json!({"event": "request", "method": method, "args": args, "context": ctx.as_map()})
                    .to_string(),
            ),
            Self::People => super::out(&format!(
                "{method}({args}) request_id={}",
                ctx.request_id().unwrap_or("-")
            )),
        }
    }
}

#[derive(Deserialize)]
struct EchoArgs {
    data: Value,
}

#[derive(Deserialize)]
struct SleepArgs {
    /// Kept as sent, so the reply echoes `4` as `4` and `0.5` as `0.5`, as Python does.
    seconds: serde_json::Number,
}

#[derive(Deserialize)]
struct FailArgs {
    message: String,
    #[serde(default)]
    exc_class: Option<String>,
}

#[derive(Deserialize)]
struct InfoArgs {
    message: Value,
}

/// Seconds since the epoch, as Python's `time.time()`.
fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The error `fail` raises: `exc_class` is `Class` (module `builtins`) or `module.Class`.
fn failure(message: String, exc_class: Option<&str>) -> RpcError {
    let spec = exc_class.unwrap_or("ValueError");
    let (module, class) = spec.rsplit_once('.').unwrap_or(("builtins", spec));
    RpcError::new(class, message).with_module(module)
}

/// The endpoint: echo, sleep, fail and the simulator's info.
fn endpoint(report: Report) -> Result<Endpoint, Error> {
    Endpoint::builder()
        .state(report)
        .method(
            "echo",
            |State(report): State<Report>, req: Request<EchoArgs>| async move {
                let (ctx, args) = req.into_parts();
                report.request("echo", &ctx, &json!({"data": args.data}));
                Ok::<_, RpcError>(args.data)
            },
        )
        .method(
            "sleep",
            |State(report): State<Report>, req: Request<SleepArgs>| async move {
                let (ctx, args) = req.into_parts();
                report.request("sleep", &ctx, &json!({"seconds": args.seconds}));
                let seconds = args.seconds.as_f64().unwrap_or(f64::NAN);
                if !(seconds.is_finite() && (0.0..=86_400.0).contains(&seconds)) {
                    return Err(RpcError::value_error(format!(
                        "sleep length must be between 0 and 86400 seconds, not {}",
                        args.seconds
                    )));
                }
                tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
                Ok(args.seconds)
            },
        )
        .method(
            "fail",
            |State(report): State<Report>, req: Request<FailArgs>| async move {
                let (ctx, args) = req.into_parts();
                report.request(
                    "fail",
                    &ctx,
                    &json!({"message": args.message, "exc_class": args.exc_class}),
                );
                Err::<(), _>(failure(args.message, args.exc_class.as_deref()).expected())
            },
        )
        .method(
            "info",
            |State(report): State<Report>, req: Request<InfoArgs>| async move {
                let (ctx, args) = req.into_parts();
                report.request("info", &ctx, &json!({"message": args.message}));
                // The simulator's message: [seq, cargo, client_ts, server_ts, return_ts].
                let mut message = args.message;
                if let Some(slot) = message.as_array_mut().and_then(|m| m.get_mut(3)) {
                    *slot = json!(now());
                }
                Ok::<_, RpcError>(message)
            },
        )
        .build()
}

pub(crate) async fn run(global: &Global, args: &RpcServerArgs) -> Result<u8, Failure> {
    super::serve_metrics(args.metrics_addr)?;
    let conf = super::load_config(global)?;
    let transport = super::transport(global, &conf, None)?;
    let report = if args.quiet {
        Report::Quiet
    } else if super::for_people(global) {
        Report::People
    } else {
        Report::Json
    };
    let server = RpcServer::builder(
        &transport,
        Target::new(&args.topic).with_server(&args.server),
    )
    .endpoint(endpoint(report)?)
    .executor_pool_size(usize::from(args.concurrency))
    .ping(args.ping || conf.default.rpc_ping_enabled)
    .build()?;
    server.start().await?;
    if global.json || !super::for_people(global) {
        super::out(
            &json!({"event": "ready", "topic": args.topic, "server": args.server, "exchange": transport.control_exchange()})
                .to_string(),
        );
    } else {
        super::out(&format!(
            "serving topic {:?} as server {:?} on {} (exchange {:?}); Ctrl-C stops",
            args.topic,
            args.server,
            transport.url(),
            transport.control_exchange()
        ));
    }
    super::shutdown_signal().await;
    tracing::info!("stopping");
    server.stop().await;
    server.wait().await;
    transport.cleanup().await;
    if global.json {
        super::out(&json!({"event": "stopped"}).to_string());
    }
    Ok(EXIT_OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fail_takes_a_builtin_or_a_dotted_class() {
        let e = failure("m".into(), None);
        assert_eq!(
            (e.module(), e.class(), e.message()),
            ("builtins", "ValueError", "m")
        );
        let e = failure("m".into(), Some("KeyError"));
        assert_eq!((e.module(), e.class()), ("builtins", "KeyError"));
        let e = failure("m".into(), Some("nova.exception.InstanceNotFound"));
        assert_eq!(
            (e.module(), e.class()),
            ("nova.exception", "InstanceNotFound")
        );
    }
}
