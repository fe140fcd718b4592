//! Wire codec cost: encoding and decoding RPC requests and replies, per payload size.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use oslo_messaging::Context;
use oslo_messaging::wire::{self, CallInfo, Request};
use serde_json::{Map, Value, json};

fn request(payload: usize) -> Request {
    let mut args = Map::new();
    args.insert("data".into(), Value::String("x".repeat(payload)));
    args.insert("count".into(), json!(3));
    let context = Context::new()
        .with("user", "alice")
        .with("project_id", "p1")
        .with("request_id", "req-123");
    let mut req = Request::new("echo", args, context);
    req.version = Some("1.2".into());
    req
}

fn codec(c: &mut Criterion) {
    let mut group = c.benchmark_group("codec");
    for size in [100usize, 1024, 64 * 1024] {
        let req = request(size);
        let info = CallInfo::new(
            "65db6de7fdc54f00a5c3552dacfe3bb6",
            "reply_d4902a819fab4dbba0c08fd084044f0a",
            None,
        );
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(
            BenchmarkId::new("call_encode_decode", size),
            &req,
            |b, req| {
                b.iter(|| {
                    let body = wire::encode_request(
                        black_box(req),
                        Some(&info),
                        "7870927a196042f8aeb8fac721fbcf77",
                    );
                    black_box(wire::decode_request(&body).unwrap())
                });
            },
        );
        let result = Value::String("y".repeat(size));
        group.bench_with_input(
            BenchmarkId::new("reply_encode_decode", size),
            &result,
            |b, result| {
                b.iter(|| {
                    let body = wire::encode_reply(
                        "65db6de7fdc54f00a5c3552dacfe3bb6",
                        "0bd29a075dd84167bb87d7f0cd7a000f",
                        &Ok(black_box(result).clone()),
                    );
                    black_box(wire::decode_reply(&body).unwrap())
                });
            },
        );
    }
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
