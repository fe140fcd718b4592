//! oslo's `RequestNotifier` WSGI middleware as a `tower` layer (feature `tower`): an
//! `http.request` notification before each HTTP request is handled and an `http.response`
//! notification after, with the payloads Python sends.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use serde_json::{Map, Value, json};

use super::{Notifier, NotifierBuilder, Priority};
use crate::context::Context;
use crate::error::Result;
use crate::transport::Transport;

/// Sends `http.request` and `http.response` notifications (priority `INFO`, an empty context)
/// around each request of the service it wraps, as Python's
/// `oslo_messaging.notify.middleware.RequestNotifier`:
///
/// * `http.request`: `{"request": environ}`, where `environ` holds the request as WSGI's
///   upper-case variables (`REQUEST_METHOD`, `PATH_INFO`, `QUERY_STRING`, `SERVER_PROTOCOL`,
///   `CONTENT_TYPE`, `CONTENT_LENGTH`, `HTTP_<HEADER>`...) plus `HTTP_X_SERVICE_NAME` (the
///   service name, or the request's host), and never `HTTP_X_AUTH_TOKEN` (nor, beyond
///   Python, `Authorization`, `Proxy-Authorization`, `Cookie`, `X-Service-Token` or
///   `X-Subject-Token`);
/// * `http.response`: `{"request": environ, "response": {"status": "200 OK", "headers":
///   {...}}}` (without `X-Subject-Token`, `X-Auth-Token` or `Set-Cookie`), or, when the inner
///   service failed, `{"request": environ, "exception": {"value":
///   <the error>, "traceback": []}}` (Python sends `http.response` in both cases);
/// * methods in the ignore list (`ignore_req_list`, such as `GET,HEAD`) are passed through
///   without notifications.
///
/// The request waits for each notification, as in Python; a failure to send one is logged
/// and does not fail the request.
///
/// # Examples
///
/// ```
/// use oslo_messaging::Transport;
/// use oslo_messaging::notify::RequestNotifierLayer;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> oslo_messaging::Result<()> {
/// let transport = Transport::memory();
/// let layer = RequestNotifierLayer::builder(&transport)
///     .publisher_id("nova-api")
///     .service_name("compute")
///     .ignore_req_list("GET, HEAD")
///     .build()?;
/// // axum: Router::new().route(...).layer(layer)
/// # let _ = layer;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct RequestNotifierLayer {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    notifier: Notifier,
    service_name: Option<String>,
    ignore: Vec<String>,
}

/// Builds a [`RequestNotifierLayer`].
#[derive(Debug)]
#[must_use]
pub struct RequestNotifierLayerBuilder {
    notifier: NotifierBuilder,
    service_name: Option<String>,
    ignore: Vec<String>,
}

impl RequestNotifierLayerBuilder {
    /// The publisher id (Python's default: the program's file name).
    pub fn publisher_id(mut self, publisher_id: impl Into<String>) -> Self {
        self.notifier = self.notifier.publisher_id(publisher_id);
        self
    }

    /// `HTTP_X_SERVICE_NAME` in the payloads (default: the request's host).
    pub fn service_name(mut self, name: impl Into<String>) -> Self {
        self.service_name = Some(name.into());
        self
    }

    /// HTTP methods to pass through without notifications, comma-separated (Python's
    /// `ignore_req_list`).
    pub fn ignore_req_list(mut self, methods: &str) -> Self {
        self.ignore = methods
            .split(',')
            .map(|m| m.trim().to_ascii_uppercase())
            .filter(|m| !m.is_empty())
            .collect();
        self
    }

    /// The layer, with the configured notification drivers and topics.
    ///
    /// # Errors
    ///
    /// As [`NotifierBuilder::build`](super::NotifierBuilder::build).
    pub fn build(self) -> Result<RequestNotifierLayer> {
        let notifier = self.notifier.build()?;
        Ok(RequestNotifierLayer {
            shared: Arc::new(Shared {
                notifier,
                service_name: self.service_name,
                ignore: self.ignore,
            }),
        })
    }
}

impl RequestNotifierLayer {
    /// Starts building a layer that notifies on `transport`.
    pub fn builder(transport: &Transport) -> RequestNotifierLayerBuilder {
        RequestNotifierLayerBuilder {
            notifier: Notifier::builder(transport)
                .publisher_id(crate::config::default_processname()),
            service_name: None,
            ignore: Vec::new(),
        }
    }
}

impl<S> tower_layer::Layer<S> for RequestNotifierLayer {
    type Service = RequestNotifier<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestNotifier {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The service a [`RequestNotifierLayer`] makes.
#[derive(Debug, Clone)]
pub struct RequestNotifier<S> {
    inner: S,
    shared: Arc<Shared>,
}

/// Request headers never sent: Python drops `X-Auth-Token`; we drop the other credentials too
/// (a notification is not the place for a bearer token or a session cookie).
const SECRET_REQUEST_KEYS: &[&str] = &[
    "HTTP_X_AUTH_TOKEN",
    "HTTP_X_SERVICE_TOKEN",
    "HTTP_X_SUBJECT_TOKEN",
    "HTTP_AUTHORIZATION",
    "HTTP_PROXY_AUTHORIZATION",
    "HTTP_COOKIE",
];

/// Response headers never sent (Keystone returns a new token in `X-Subject-Token`).
const SECRET_RESPONSE_HEADERS: &[&str] = &["x-subject-token", "x-auth-token", "set-cookie"];

/// The WSGI environment variables of `req`, as Python's `environ_to_dict` keeps them.
fn environ<B>(req: &http::Request<B>, service_name: Option<&str>) -> Map<String, Value> {
    let mut env = Map::new();
    env.insert("REQUEST_METHOD".into(), req.method().as_str().into());
    env.insert("SCRIPT_NAME".into(), "".into());
    env.insert("PATH_INFO".into(), req.uri().path().into());
    env.insert(
        "QUERY_STRING".into(),
        req.uri().query().unwrap_or_default().into(),
    );
    env.insert(
        "SERVER_PROTOCOL".into(),
        format!("{:?}", req.version()).into(),
    );
    let host = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default();
    // `[::1]:8774` has a port; `[::1]` has none.
    let port_split = host
        .rsplit_once(':')
        .filter(|(_, port)| !port.ends_with(']'));
    if let Some((name, port)) = port_split {
        env.insert("SERVER_NAME".into(), name.into());
        env.insert("SERVER_PORT".into(), port.into());
    } else if !host.is_empty() {
        env.insert("SERVER_NAME".into(), host.as_str().into());
        env.insert("SERVER_PORT".into(), "80".into());
    }
    for (name, value) in req.headers() {
        let key = match name.as_str() {
            "content-type" => "CONTENT_TYPE".to_owned(),
            "content-length" => "CONTENT_LENGTH".to_owned(),
            other => format!("HTTP_{}", other.to_ascii_uppercase().replace('-', "_")),
        };
        if SECRET_REQUEST_KEYS.contains(&key.as_str()) {
            continue;
        }
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        // Repeated headers join with a comma, as a WSGI server does.
        match env.get_mut(&key) {
            Some(Value::String(old)) => {
                old.push(',');
                old.push_str(&value);
            }
            _ => {
                env.insert(key, value.into());
            }
        }
    }
    env.insert(
        "HTTP_X_SERVICE_NAME".into(),
        service_name.unwrap_or(&host).into(),
    );
    env
}

impl Shared {
    async fn notify(&self, event_type: &str, payload: Value) {
        if let Err(e) = self
            .notifier
            .notify(&Context::new(), event_type, Priority::Info, &payload)
            .await
        {
            tracing::error!(event_type, error = %e, "An exception occurred processing the API call");
        }
    }
}

impl<S, B, RB> tower_service::Service<http::Request<B>> for RequestNotifier<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<RB>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: std::fmt::Display + Send,
    B: Send + 'static,
    RB: Send,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = std::result::Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<std::result::Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        // The clone that was polled ready serves this request (tower's usual swap).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let shared = self.shared.clone();
        if shared
            .ignore
            .iter()
            .any(|m| m.as_str() == req.method().as_str())
        {
            return Box::pin(inner.call(req));
        }
        let env = Value::Object(environ(&req, shared.service_name.as_deref()));
        Box::pin(async move {
            shared.notify("http.request", json!({"request": env})).await;
            let result = inner.call(req).await;
            let payload = match &result {
                Ok(response) => {
                    let status = response.status();
                    let mut headers = Map::new();
                    for (name, value) in response.headers() {
                        if SECRET_RESPONSE_HEADERS.contains(&name.as_str()) {
                            continue;
                        }
                        headers.insert(
                            name.as_str().to_owned(),
                            String::from_utf8_lossy(value.as_bytes()).into(),
                        );
                    }
                    json!({
                        "request": env,
                        "response": {
                            "status": format!(
                                "{} {}",
                                status.as_u16(),
                                status.canonical_reason().unwrap_or_default()
                            ),
                            "headers": headers,
                        },
                    })
                }
                Err(e) => json!({
                    "request": env,
                    "exception": {"value": e.to_string(), "traceback": []},
                }),
            };
            shared.notify("http.response", payload).await;
            result
        })
    }
}
