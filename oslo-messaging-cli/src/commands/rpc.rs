//! `call` and `cast`.

use std::time::Duration;

use oslo_messaging::rpc::RpcClientBuilder;
use oslo_messaging::{RpcClient, Target, Transport};
use serde_json::{Map, Value, json};

use super::Failure;
use crate::cli::{CallArgs, CastArgs, EXIT_OK, Global, RpcArgs};

/// The transport, a client builder for the RPC arguments, and the keyword arguments to send.
fn client(
    global: &Global,
    rpc: &RpcArgs,
) -> Result<(Transport, RpcClientBuilder, Map<String, Value>), Failure> {
    let conf = super::load_config(global)?;
    let transport = super::transport(global, &conf, None)?;
    let mut target = Target::new(&rpc.topic);
    if let Some(server) = &rpc.server {
        target = target.with_server(server);
    }
    if let Some(ns) = &rpc.namespace {
        target = target.with_namespace(ns);
    }
    if let Some(v) = &rpc.version {
        let version = v.parse().map_err(|e: oslo_messaging::Error| {
            Failure::Usage(format!("--version: {}", e.message()))
        })?;
        target = target.with_version(version);
    }
    let client = RpcClient::builder(&transport, target).retry(super::retry(rpc.retry));
    Ok((transport, client, rpc.args.clone().unwrap_or_default()))
}

pub(crate) async fn call(global: &Global, args: &CallArgs) -> Result<u8, Failure> {
    let (transport, mut client, kwargs) = client(global, &args.rpc)?;
    if let Some(t) = args.timeout {
        client = client.timeout(Duration::from_secs_f64(t));
    }
    if let Some(t) = args.call_monitor_timeout {
        client = client.call_monitor_timeout(Duration::from_secs_f64(t));
    }
    let client = client.build()?;
    let ctx = super::context(args.rpc.context.as_ref());
    let outcome = client.call(&ctx, &args.rpc.method, &kwargs).await;
    // Closes the connection, and exports the call's span when tracing is on.
    transport.cleanup().await;
    let result: Value = outcome?;
    if global.json {
        super::out(&result.to_string());
    } else {
        super::out(&serde_json::to_string_pretty(&result).unwrap_or_else(|_| result.to_string()));
    }
    Ok(EXIT_OK)
}

pub(crate) async fn cast(global: &Global, args: &CastArgs) -> Result<u8, Failure> {
    let (transport, client, kwargs) = client(global, &args.rpc)?;
    let client = client.fanout(args.fanout).build()?;
    let ctx = super::context(args.rpc.context.as_ref());
    let outcome = client.cast(&ctx, &args.rpc.method, &kwargs).await;
    transport.cleanup().await;
    outcome?;
    if global.json {
        super::out(
            &json!({"sent": true, "topic": args.rpc.topic, "method": args.rpc.method, "fanout": args.fanout})
                .to_string(),
        );
    }
    Ok(EXIT_OK)
}
