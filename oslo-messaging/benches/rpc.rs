//! Round trips through the memory transport: what our own layers (codec, dispatch, reply
//! correlation) cost per call, without a broker.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use oslo_messaging::rpc::{Endpoint, Request, RpcClient, RpcError, RpcServer};
use oslo_messaging::{Context, Target, Transport};
use serde_json::{Value, json};

fn round_trip(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let transport = Transport::memory();
    let server = rt.block_on(async {
        let ep = Endpoint::builder()
            .method("echo", |req: Request<Value>| async move {
                Ok::<_, RpcError>(req.into_args())
            })
            .build()
            .unwrap();
        let s = RpcServer::builder(&transport, Target::new("bench").with_server("s"))
            .endpoint(ep)
            .build()
            .unwrap();
        s.start().await.unwrap();
        s
    });
    let client = RpcClient::new(&transport, Target::new("bench"));
    let ctx = Context::new()
        .with("user", "alice")
        .with("request_id", "req-1");
    let mut group = c.benchmark_group("memory_call");
    for size in [100usize, 64 * 1024] {
        let args = json!({"data": "x".repeat(size)});
        group.bench_with_input(BenchmarkId::new("round_trip", size), &args, |b, args| {
            b.to_async(&rt).iter(|| async {
                let out: Value = client.call(&ctx, "echo", black_box(args)).await.unwrap();
                black_box(out)
            });
        });
    }
    group.bench_function("cast", |b| {
        let args = json!({"data": "x".repeat(100)});
        b.to_async(&rt)
            .iter(|| async { client.cast(&ctx, "echo", black_box(&args)).await.unwrap() });
    });
    group.finish();
    rt.block_on(async {
        server.stop().await;
        server.wait().await;
    });
}

criterion_group!(benches, round_trip);
criterion_main!(benches);
