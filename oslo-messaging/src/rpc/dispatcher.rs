//! oslo's dispatch rules, without I/O.
//!
//! For each endpoint in order: skip it unless it accepts the request's namespace and its
//! version (default 1.0) is compatible with the requested one (default 1.0); the first endpoint
//! that passes and has the method serves it. When some endpoint passed but none had the method,
//! the answer is `NoSuchMethod`; when none passed, `UnsupportedVersion` (a namespace mismatch
//! included, as in Python).

use std::sync::Arc;

use serde_json::Value;

use super::endpoint::{Endpoint, ErasedHandler, Request};
use super::error::RpcError;
use crate::serializer::Serializer;
use crate::version::Version;
use crate::wire;

/// The method name of the optional health-check endpoint.
///
/// # Examples
///
/// ```
/// use oslo_messaging::rpc::{Endpoint, NoArgs, PING_METHOD, Request, RpcClient, RpcError, RpcServer};
/// use oslo_messaging::{Context, Target, Transport};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> oslo_messaging::Result<()> {
/// let transport = Transport::memory();
/// let endpoint = Endpoint::builder()
///     .method("noop", |_r: Request<NoArgs>| async { Ok::<_, RpcError>(()) })
///     .build()?;
/// let server = RpcServer::builder(&transport, Target::new("health").with_server("h1"))
///     .endpoint(endpoint)
///     .ping(true)
///     .build()?;
/// server.start().await?;
/// let pong: String = RpcClient::new(&transport, Target::new("health"))
///     .call(&Context::new(), PING_METHOD, &())
///     .await?;
/// assert_eq!(pong, "pong");
/// # server.stop().await;
/// # Ok(())
/// # }
/// ```
pub const PING_METHOD: &str = "oslo_rpc_server_ping";

/// Picks the endpoint method for each request.
#[derive(Debug, Clone)]
pub(crate) struct Dispatcher {
    endpoints: Arc<[Endpoint]>,
}

impl Dispatcher {
    /// A dispatcher over `endpoints`, with oslo's ping endpoint appended when `ping` is set.
    pub(crate) fn new(mut endpoints: Vec<Endpoint>, ping: bool) -> Self {
        if ping {
            let ping = Endpoint::builder()
                .method(PING_METHOD, |_req: Request<Value>| async {
                    Ok::<_, RpcError>("pong")
                })
                .build()
                .expect("the ping endpoint is valid");
            endpoints.push(ping);
        }
        Self {
            endpoints: endpoints.into(),
        }
    }

    /// The handler for `method` in `namespace` at `version` (`None`: 1.0).
    pub(crate) fn resolve(
        &self,
        method: &str,
        namespace: Option<&str>,
        version: Option<&str>,
    ) -> Result<&ErasedHandler, RpcError> {
        let version_text = version.unwrap_or("1.0");
        let Some(requested) = Version::parse_lenient(version_text) else {
            return Err(RpcError::unsupported_version(version_text, method));
        };
        let mut found_compatible = false;
        for endpoint in self.endpoints.iter() {
            if !endpoint.target().accepts_namespace(namespace)
                || !endpoint
                    .effective_version()
                    .is_compatible_with(Some(&requested))
            {
                continue;
            }
            if !method.starts_with('_')
                && let Some(handler) = endpoint.handler(method)
            {
                return Ok(handler);
            }
            found_compatible = true;
        }
        if found_compatible {
            Err(RpcError::no_such_method(method))
        } else {
            Err(RpcError::unsupported_version(version_text, method))
        }
    }

    /// Resolves and runs a request: the handler sees the caller's context plus
    /// `client_timeout`, both passed through `serializer`, and its result is serialized back.
    pub(crate) fn dispatch(
        &self,
        request: wire::Request,
        client_timeout: Value,
        serializer: Option<Arc<dyn Serializer>>,
    ) -> impl Future<Output = Result<Value, RpcError>> + Send + 'static {
        let resolved = self
            .resolve(
                &request.method,
                request.namespace.as_deref(),
                request.version.as_deref(),
            )
            .cloned();
        async move {
            let handler = resolved?;
            let wire::Request {
                method,
                args,
                namespace,
                version,
                context,
            } = request;
            let mut context = context;
            context.insert("client_timeout", client_timeout);
            let (context, args) = match &serializer {
                None => (context, Value::Object(args)),
                Some(s) => {
                    let ctx = s.deserialize_context(context).map_err(RpcError::from)?;
                    let mut out = serde_json::Map::with_capacity(args.len());
                    for (k, v) in args {
                        out.insert(k, s.deserialize_entity(&ctx, v).map_err(RpcError::from)?);
                    }
                    (ctx, Value::Object(out))
                }
            };
            let req = Request::new(context.clone(), method, args).with_target(namespace, version);
            let result = handler(req).await?;
            match &serializer {
                None => Ok(result),
                Some(s) => s.serialize_entity(&context, result).map_err(RpcError::from),
            }
        }
    }
}

/// How often the server sends call-monitor heartbeats for a caller's `_timeout`: every half of
/// its integer part, when that is at least 2 seconds (oslo's watchdog; numbers and numeric
/// strings accepted).
pub(crate) fn heartbeat_interval(client_timeout: &Value) -> Option<std::time::Duration> {
    let whole: i64 = match client_timeout {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite())
                .map(|f| f.trunc() as i64)
        })?,
        Value::String(s) => s.trim().parse().ok()?,
        Value::Bool(true) => 1,
        _ => return None,
    };
    if whole < 2 {
        if whole != 0 {
            tracing::warn!(client_timeout = %client_timeout, "client provided an invalid timeout value");
        }
        return None;
    }
    Some(std::time::Duration::from_secs_f64(whole as f64 / 2.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::Context;
    use serde_json::json;
    use std::time::Duration;

    fn ep(ns: Option<&str>, version: Option<&str>, methods: &[&str]) -> Endpoint {
        let mut b = Endpoint::builder();
        if let Some(ns) = ns {
            b = b.namespace(ns);
        }
        if let Some(v) = version {
            b = b.version(v.parse().unwrap());
        }
        for m in methods {
            let name = (*m).to_owned();
            b = b.method(*m, move |_r: Request<Value>| {
                let name = name.clone();
                async move { Ok::<_, RpcError>(name) }
            });
        }
        b.build().unwrap()
    }

    async fn call(
        d: &Dispatcher,
        method: &str,
        ns: Option<&str>,
        v: Option<&str>,
    ) -> Result<Value, RpcError> {
        let req = wire::Request {
            method: method.into(),
            args: serde_json::Map::new(),
            namespace: ns.map(Into::into),
            version: v.map(Into::into),
            context: Context::new(),
        };
        d.dispatch(req, Value::Null, None).await
    }

    /// The cases of oslo's `tests/rpc/test_dispatcher.py::TestDispatcher`.
    #[tokio::test]
    async fn selection_follows_oslo() {
        let d = Dispatcher::new(
            vec![
                ep(None, None, &["foo"]),
                ep(Some("ns"), Some("1.5"), &["bar", "foo"]),
                ep(None, Some("2.3"), &["baz"]),
            ],
            false,
        );
        assert_eq!(call(&d, "foo", None, None).await.unwrap(), json!("foo"));
        assert_eq!(
            call(&d, "bar", Some("ns"), Some("1.4")).await.unwrap(),
            json!("bar")
        );
        assert_eq!(
            call(&d, "baz", None, Some("2.1")).await.unwrap(),
            json!("baz")
        );

        let e = call(&d, "bar", None, None).await.unwrap_err();
        assert_eq!(e.message(), "Endpoint does not support RPC method bar");

        let e = call(&d, "foo", Some("ns"), Some("1.6")).await.unwrap_err();
        assert_eq!(e.class(), "UnsupportedVersion");
        assert_eq!(
            e.message(),
            "Endpoint does not support RPC version 1.6. Attempted method: foo"
        );

        let e = call(&d, "foo", Some("other"), None).await.unwrap_err();
        assert_eq!(
            e.message(),
            "Endpoint does not support RPC version 1.0. Attempted method: foo"
        );

        let e = call(&d, "foo", None, Some("3.0")).await.unwrap_err();
        assert_eq!(e.class(), "UnsupportedVersion");
    }

    #[tokio::test]
    async fn first_compatible_endpoint_wins() {
        let a = Endpoint::builder()
            .method("m", |_r: Request<Value>| async { Ok::<_, RpcError>("a") })
            .build()
            .unwrap();
        let b = Endpoint::builder()
            .method("m", |_r: Request<Value>| async { Ok::<_, RpcError>("b") })
            .build()
            .unwrap();
        let d = Dispatcher::new(vec![a, b], false);
        assert_eq!(call(&d, "m", None, None).await.unwrap(), json!("a"));
    }

    #[tokio::test]
    async fn private_names_are_no_such_method() {
        let d = Dispatcher::new(vec![ep(None, None, &["foo"])], false);
        let e = call(&d, "_foo", None, None).await.unwrap_err();
        assert!(e.is_no_such_method());
        let e = call(&d, "__class__", None, None).await.unwrap_err();
        assert!(e.is_no_such_method());
    }

    #[tokio::test]
    async fn ping_endpoint_answers_pong_at_version_1_0_only() {
        let d = Dispatcher::new(vec![ep(None, Some("1.3"), &["foo"])], true);
        assert_eq!(
            call(&d, PING_METHOD, None, None).await.unwrap(),
            json!("pong")
        );
        assert_eq!(
            call(&d, PING_METHOD, None, Some("1.0.0")).await.unwrap(),
            json!("pong")
        );
        // Python: the 1.3 endpoint is compatible with 1.1 but has no ping: NoSuchMethod.
        assert!(
            call(&d, PING_METHOD, None, Some("1.1"))
                .await
                .unwrap_err()
                .is_no_such_method()
        );
        let e = call(&d, PING_METHOD, None, Some("1.4")).await.unwrap_err();
        assert_eq!(e.class(), "UnsupportedVersion");
        let off = Dispatcher::new(vec![ep(None, None, &["foo"])], false);
        assert!(
            call(&off, PING_METHOD, None, None)
                .await
                .unwrap_err()
                .is_no_such_method()
        );
    }

    #[tokio::test]
    async fn garbage_versions_are_unsupported() {
        let d = Dispatcher::new(vec![ep(None, None, &["foo"])], false);
        for v in ["1", "x.y", ""] {
            let e = call(&d, "foo", None, Some(v)).await.unwrap_err();
            assert_eq!(e.class(), "UnsupportedVersion", "{v:?}");
        }
    }

    #[tokio::test]
    async fn handler_sees_client_timeout_in_context() {
        let e = Endpoint::builder()
            .method("ctx", |r: Request<Value>| async move {
                Ok::<_, RpcError>(Value::Object(r.context().as_map().clone()))
            })
            .build()
            .unwrap();
        let d = Dispatcher::new(vec![e], false);
        let req = wire::Request {
            method: "ctx".into(),
            args: serde_json::Map::new(),
            namespace: None,
            version: None,
            context: Context::new().with("user", "alice"),
        };
        let out = d.dispatch(req, json!(30), None).await.unwrap();
        assert_eq!(out, json!({"user": "alice", "client_timeout": 30}));
    }

    /// oslo's `_watchdog`: `int(client_timeout) / 2`, nothing below 2.
    #[test]
    fn heartbeat_interval_matches_watchdog() {
        let cases = [
            (json!(null), None),
            (json!(0), None),
            (json!(1), None),
            (json!(1.9), None),
            (json!(2), Some(1.0)),
            (json!(2.9), Some(1.0)),
            (json!(5), Some(2.5)),
            (json!("4"), Some(2.0)),
            (json!("abc"), None),
            (json!([1]), None),
        ];
        for (v, want) in cases {
            assert_eq!(
                heartbeat_interval(&v),
                want.map(Duration::from_secs_f64),
                "{v}"
            );
        }
    }
}
