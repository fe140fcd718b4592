//! `notify::RequestNotifierLayer` (feature `tower`) around an axum server: the notifications
//! Python's `RequestNotifier` middleware sends, for a real HTTP request.

use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use oslo_messaging::notify::{Notifier, RequestNotifierLayer};
use oslo_messaging::{Config, Transport};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceExt;

fn transport() -> Transport {
    let conf = Config::builder()
        .option("oslo_messaging_notifications", "driver", "test")
        .build()
        .unwrap();
    Transport::memory_with_config(&conf)
}

async fn http(port: u16, request: &str) -> String {
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    conn.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).await.unwrap();
    answer
}

#[tokio::test]
async fn an_axum_request_sends_http_request_and_http_response() {
    let t = transport();
    let layer = RequestNotifierLayer::builder(&t)
        .publisher_id("nova-api")
        .ignore_req_list("get, HEAD")
        .build()
        .unwrap();
    let app = Router::new()
        .route(
            "/servers",
            post(|| async {
                (
                    [
                        ("x-openstack-request-id", "req-1"),
                        ("x-subject-token", "new-s3cret"),
                    ],
                    "created",
                )
            }),
        )
        .route("/servers", get(|| async { "list" }))
        .layer(layer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let answer = http(
        port,
        "POST /servers?all_tenants=1 HTTP/1.1\r\nHost: api.example:8774\r\n\
         X-Auth-Token: s3cret\r\nAuthorization: Bearer s3cret2\r\nCookie: session=s3cret3\r\n\
         Content-Type: application/json\r\nContent-Length: 2\r\n\
         Connection: close\r\n\r\n{}",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    // Ignored: no notification.
    let answer = http(
        port,
        "GET /servers HTTP/1.1\r\nHost: api.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.ends_with("list"), "{answer}");

    let sent = Notifier::captured(&t);
    assert_eq!(sent.len(), 2, "{sent:#?}");
    let (request, response) = (&sent[0].message, &sent[1].message);
    assert_eq!(request.event_type, "http.request");
    assert_eq!(request.publisher_id.as_deref(), Some("nova-api"));
    assert_eq!(request.priority, "INFO");
    let env = &request.payload["request"];
    assert_eq!(env["REQUEST_METHOD"], "POST");
    assert_eq!(env["PATH_INFO"], "/servers");
    assert_eq!(env["QUERY_STRING"], "all_tenants=1");
    assert_eq!(env["CONTENT_TYPE"], "application/json");
    assert_eq!(env["HTTP_HOST"], "api.example:8774");
    assert_eq!(env["SERVER_NAME"], "api.example");
    assert_eq!(env["SERVER_PORT"], "8774");
    assert_eq!(
        env["HTTP_X_SERVICE_NAME"], "api.example:8774",
        "the host by default"
    );
    assert_eq!(env["HTTP_X_AUTH_TOKEN"], Value::Null, "never sent");
    assert!(!request.payload.to_string().contains("s3cret"));
    assert_eq!(
        env["HTTP_AUTHORIZATION"],
        Value::Null,
        "no credentials at all"
    );
    assert_eq!(env["HTTP_COOKIE"], Value::Null);

    assert_eq!(response.event_type, "http.response");
    assert_eq!(response.payload["request"], *env);
    assert_eq!(response.payload["response"]["status"], "200 OK");
    assert_eq!(
        response.payload["response"]["headers"]["x-openstack-request-id"],
        "req-1"
    );
    assert!(
        !response.payload.to_string().contains("s3cret"),
        "{response:?}"
    );
    assert_eq!(
        sent[0].context.as_map().len(),
        0,
        "an empty context, as Python sends"
    );
}

#[tokio::test]
async fn a_failing_service_sends_the_exception() {
    let t = transport();
    let layer = RequestNotifierLayer::builder(&t)
        .service_name("compute")
        .build()
        .unwrap();
    let failing = tower::service_fn(|_req: http::Request<()>| async {
        Err::<http::Response<()>, _>("the database is gone".to_owned())
    });
    let service = tower::Layer::layer(&layer, failing);
    let req = http::Request::builder()
        .method("DELETE")
        .uri("/servers/1")
        .header("host", "[::1]")
        .body(())
        .unwrap();
    let err = tokio::time::timeout(Duration::from_secs(5), service.oneshot(req))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err, "the database is gone");
    let sent = Notifier::captured(&t);
    assert_eq!(sent.len(), 2);
    let env = &sent[0].message.payload["request"];
    assert_eq!(env["HTTP_X_SERVICE_NAME"], "compute");
    assert_eq!(env["SERVER_NAME"], "[::1]", "an IPv6 host without a port");
    assert_eq!(env["SERVER_PORT"], "80");
    assert_eq!(sent[1].message.event_type, "http.response");
    assert_eq!(
        sent[1].message.payload["exception"],
        json!({"value": "the database is gone", "traceback": []})
    );
    assert!(sent[1].message.payload.get("response").is_none());
}
