//! An RPC server and a client in one process.
//!
//! `cargo run --example rpc` uses the in-memory transport; `cargo run --example rpc -- URL` uses
//! that transport URL (for example `rabbit://guest:guest@127.0.0.1:5672/`).

use oslo_messaging::rpc::{Endpoint, Request, RpcClient, RpcError, RpcServer};
use oslo_messaging::{Context, Target, Transport};
use serde::Deserialize;

#[derive(Deserialize)]
struct Add {
    a: i64,
    b: i64,
}

#[tokio::main]
async fn main() -> oslo_messaging::Result<()> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "memory://".to_owned());
    let transport = Transport::from_url(&url)?;
    let topic = format!("example_rpc_{}", std::process::id());

    let calc = Endpoint::builder()
        .namespace("calc")
        .version("1.0".parse()?)
        .method("add", |req: Request<Add>| async move {
            let Add { a, b } = req.into_args();
            a.checked_add(b)
                .ok_or_else(|| RpcError::value_error("overflow"))
        })
        .build()?;
    let server = RpcServer::builder(&transport, Target::new(&topic).with_server("example-host"))
        .endpoint(calc)
        .build()?;
    server.start().await?;

    let client = RpcClient::new(&transport, Target::new(&topic).with_namespace("calc"));
    let sum: i64 = client
        .call(
            &Context::new(),
            "add",
            &serde_json::json!({"a": 40, "b": 2}),
        )
        .await?;
    println!("add(a=40, b=2) = {sum}");
    let err = client
        .call::<i64>(
            &Context::new(),
            "add",
            &serde_json::json!({"a": i64::MAX, "b": 1}),
        )
        .await
        .unwrap_err();
    println!("add(a=MAX, b=1) failed remotely: {err}");

    server.stop().await;
    server.wait().await;
    transport.cleanup().await;
    Ok(())
}
