//! Endpoints: named methods with a namespace and a version, and the typed handler API.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::de::{DeserializeOwned, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use super::error::RpcError;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::serve::{State, from_json_owned};
use crate::target::Target;
use crate::version::Version;

/// A request as a handler sees it: the caller's context, the method, and the keyword arguments
/// as `T`.
///
/// The context holds the caller's keys plus `client_timeout`, as in Python endpoints.
///
/// # Examples
///
/// ```
/// use oslo_messaging::Context;
/// use oslo_messaging::rpc::Request;
///
/// let req = Request::new(Context::new().with("user", "u"), "resize", serde_json::json!({"flavor": 2}));
/// assert_eq!(req.method(), "resize");
/// assert_eq!(req.context().get_str("user"), Some("u"));
/// let (_ctx, args) = req.into_parts();
/// assert_eq!(args["flavor"], 2);
/// ```
#[derive(Debug, Clone)]
pub struct Request<T> {
    context: Context,
    method: String,
    namespace: Option<String>,
    version: Option<String>,
    args: T,
}

impl<T> Request<T> {
    /// A request, for calling handlers directly in tests.
    pub fn new(context: Context, method: impl Into<String>, args: T) -> Self {
        Self {
            context,
            method: method.into(),
            namespace: None,
            version: None,
            args,
        }
    }

    pub(crate) fn with_target(
        mut self,
        namespace: Option<String>,
        version: Option<String>,
    ) -> Self {
        self.namespace = namespace;
        self.version = version;
        self
    }

    /// The caller's context.
    pub fn context(&self) -> &Context {
        &self.context
    }

    /// The method name.
    pub fn method(&self) -> &str {
        &self.method
    }

    /// The namespace the caller asked for.
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// The version the caller asked for (`None`: the caller sent none, meaning 1.0).
    pub fn version(&self) -> Option<&str> {
        self.version.as_deref()
    }

    /// The arguments.
    pub fn args(&self) -> &T {
        &self.args
    }

    /// Consumes the request, returning the arguments.
    pub fn into_args(self) -> T {
        self.args
    }

    /// Consumes the request, returning context and arguments.
    pub fn into_parts(self) -> (Context, T) {
        (self.context, self.args)
    }

    fn map_args<U>(self, args: U) -> Request<U> {
        Request {
            context: self.context,
            method: self.method,
            namespace: self.namespace,
            version: self.version,
            args,
        }
    }
}

/// Arguments of a method that takes none: accepts only an empty keyword-argument object.
///
/// ```
/// use oslo_messaging::rpc::NoArgs;
///
/// assert!(serde_json::from_str::<NoArgs>("{}").is_ok());
/// assert!(serde_json::from_str::<NoArgs>(r#"{"x": 1}"#).is_err());
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct NoArgs {}

impl<'de> Deserialize<'de> for NoArgs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = NoArgs;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("no keyword arguments")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<NoArgs, A::Error> {
                match map.next_key::<String>()? {
                    None => Ok(NoArgs {}),
                    Some(k) => Err(serde::de::Error::unknown_field(&k, &[])),
                }
            }
            fn visit_unit<E: serde::de::Error>(self) -> std::result::Result<NoArgs, E> {
                Ok(NoArgs {})
            }
        }
        d.deserialize_any(V)
    }
}

/// The boxed future a handler returns once erased.
pub(crate) type HandlerFuture =
    Pin<Box<dyn Future<Output = std::result::Result<Value, RpcError>> + Send>>;

/// A function that can serve an RPC method.
///
/// Handlers have one of two shapes:
///
/// * `async fn(Request<T>) -> Result<R, E>`
/// * `async fn(State<S>, Request<T>) -> Result<R, E>`, registered after
///   [`EndpointBuilder::state`]
///
/// where `T: DeserializeOwned` is built from the keyword arguments, `R: Serialize` is the
/// result, and `E: Into<RpcError>`. Use `Request<serde_json::Value>` to take the raw arguments
/// and [`NoArgs`] for methods without any.
///
/// Arguments that do not fit `T` reach the caller as a `TypeError` naming the argument, as
/// Python's does: `resize() missing 1 required positional argument: 'flavor'`. Fields of `T`
/// that are optional (`Option`, `#[serde(default)]`) may be left out by callers; unknown
/// arguments are ignored unless `T` uses `#[serde(deny_unknown_fields)]`.
///
/// # Examples
///
/// ```
/// use oslo_messaging::State;
/// use oslo_messaging::rpc::{Endpoint, Request, RpcError};
///
/// async fn stop(State(host): State<String>, req: Request<serde_json::Value>) -> Result<String, RpcError> {
///     Ok(format!("{host} stops {}", req.args()["instance"]))
/// }
///
/// let endpoint = Endpoint::builder()
///     .state("host-1".to_owned())
///     .method("stop", stop)
///     .build()?;
/// # Ok::<(), oslo_messaging::Error>(())
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot serve an RPC method",
    note = "handlers are `async fn(Request<T>) -> Result<R, E>` or `async fn(State<S>, Request<T>) -> Result<R, E>` with T: DeserializeOwned, R: Serialize, E: Into<RpcError>"
)]
pub trait Handler<M, S>: Clone + Send + Sync + 'static {
    /// Runs the handler on a request whose arguments are still JSON.
    #[doc(hidden)]
    fn call(
        &self,
        state: &S,
        req: Request<Value>,
    ) -> Pin<Box<dyn Future<Output = std::result::Result<Value, RpcError>> + Send>>;
}

impl<F, Fut, T, R, E, S> Handler<(Request<T>,), S> for F
where
    F: Fn(Request<T>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = std::result::Result<R, E>> + Send + 'static,
    T: DeserializeOwned + Send + 'static,
    R: Serialize + 'static,
    E: Into<RpcError>,
{
    fn call(&self, _state: &S, req: Request<Value>) -> HandlerFuture {
        let method = req.method.clone();
        let req = match take_args::<T>(req) {
            Ok(r) => r,
            Err(e) => return Box::pin(async move { Err(e) }),
        };
        let fut = self(req);
        Box::pin(async move {
            let result = fut.await.map_err(Into::into)?;
            result_to_value(&method, result)
        })
    }
}

impl<F, Fut, T, R, E, S> Handler<(State<S>, Request<T>), S> for F
where
    F: Fn(State<S>, Request<T>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = std::result::Result<R, E>> + Send + 'static,
    T: DeserializeOwned + Send + 'static,
    R: Serialize + 'static,
    E: Into<RpcError>,
    S: Clone + Send + Sync + 'static,
{
    fn call(&self, state: &S, req: Request<Value>) -> HandlerFuture {
        let method = req.method.clone();
        let req = match take_args::<T>(req) {
            Ok(r) => r,
            Err(e) => return Box::pin(async move { Err(e) }),
        };
        let fut = self(State(state.clone()), req);
        Box::pin(async move {
            let result = fut.await.map_err(Into::into)?;
            result_to_value(&method, result)
        })
    }
}

fn result_to_value<R: Serialize + 'static>(
    method: &str,
    result: R,
) -> std::result::Result<Value, RpcError> {
    // A handler that already returns JSON hands it over as it is (no deep copy).
    let mut slot = Some(result);
    let as_json = (&mut slot as &mut dyn std::any::Any).downcast_mut::<Option<Value>>();
    if let Some(value) = as_json.and_then(Option::take) {
        return Ok(value);
    }
    // `Some(result)` serializes as `result`.
    serde_json::to_value(&slot).map_err(|e| {
        RpcError::type_error(format!(
            "the result of {method}() is not JSON serializable: {e}"
        ))
    })
}

/// Builds `T` from the keyword arguments; a mismatch becomes Python's `TypeError` text.
fn take_args<T: DeserializeOwned + 'static>(
    mut req: Request<Value>,
) -> std::result::Result<Request<T>, RpcError> {
    let args = match std::mem::take(&mut req.args) {
        Value::Null => Value::Object(serde_json::Map::new()),
        args => args,
    };
    match from_json_owned::<T>(args) {
        Ok(args) => Ok(req.map_args(args)),
        Err(e) => Err(RpcError::type_error(argument_error(
            &req.method,
            &e.path,
            &e.text,
        ))),
    }
}

fn backticked<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = text.strip_prefix(prefix)?;
    rest.split('`').next()
}

/// Python's wording for argument mismatches, from serde's error text.
fn argument_error(method: &str, path: &str, text: &str) -> String {
    if path == "."
        && let Some(name) = backticked(text, "missing field `")
    {
        return format!("{method}() missing 1 required positional argument: '{name}'");
    }
    // serde reports an unknown field at the field's own path.
    if let Some(name) = backticked(text, "unknown field `")
        && (path == "." || path == name)
    {
        return format!("{method}() got an unexpected keyword argument '{name}'");
    }
    if path == "." {
        return format!("{method}() arguments: {text}");
    }
    let arg = path.split(['.', '[']).next().unwrap_or(path);
    if arg == path {
        format!("{method}() argument '{arg}': {text}")
    } else {
        format!("{method}() argument '{arg}' (at {path}): {text}")
    }
}

/// A registered method, type-erased.
pub(crate) type ErasedHandler = Arc<dyn Fn(Request<Value>) -> HandlerFuture + Send + Sync>;

/// A set of RPC methods with a namespace and a version, as a Python endpoint object with its
/// `target` attribute.
///
/// Only the methods registered are callable: this is oslo's explicit access policy, and names
/// starting with `_` cannot be registered at all.
///
/// # Examples
///
/// ```
/// use oslo_messaging::rpc::{Endpoint, Request, RpcError, State};
/// use serde::Deserialize;
///
/// #[derive(Deserialize)]
/// struct Add {
///     a: i64,
///     b: i64,
/// }
///
/// #[derive(Clone)]
/// struct Calc {
///     offset: i64,
/// }
///
/// async fn add(State(calc): State<Calc>, req: Request<Add>) -> Result<i64, RpcError> {
///     let Add { a, b } = req.into_args();
///     Ok(a + b + calc.offset)
/// }
///
/// let endpoint = Endpoint::builder()
///     .namespace("calc")
///     .version("1.2".parse()?)
///     .state(Calc { offset: 0 })
///     .method("add", add)
///     .method("ping", |_req: Request<serde_json::Value>| async { Ok::<_, RpcError>("pong") })
///     .build()?;
/// assert_eq!(endpoint.methods().count(), 2);
/// # Ok::<(), oslo_messaging::Error>(())
/// ```
#[derive(Clone)]
pub struct Endpoint {
    target: Target,
    methods: HashMap<String, ErasedHandler>,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&String> = self.methods.keys().collect();
        names.sort();
        f.debug_struct("Endpoint")
            .field("namespace", &self.target.namespace())
            .field("version", &self.target.version())
            .field("methods", &names)
            .finish()
    }
}

impl Endpoint {
    /// Starts an endpoint with no namespace and version 1.0 (Python's defaults).
    pub fn builder() -> EndpointBuilder<()> {
        EndpointBuilder {
            target: Target::empty(),
            state: (),
            methods: Vec::new(),
        }
    }

    /// The endpoint's namespace and version.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The names of its methods.
    pub fn methods(&self) -> impl Iterator<Item = &str> {
        self.methods.keys().map(String::as_str)
    }

    pub(crate) fn handler(&self, method: &str) -> Option<&ErasedHandler> {
        self.methods.get(method)
    }

    /// The version requests are checked against: the endpoint's, or 1.0.
    pub(crate) fn effective_version(&self) -> Version {
        self.target.version().copied().unwrap_or(Version::new(1, 0))
    }
}

/// Builds an [`Endpoint`]; `S` is the state handed to handlers.
///
/// # Examples
///
/// ```
/// use oslo_messaging::rpc::{Endpoint, NoArgs, Request, RpcError};
///
/// let err = Endpoint::builder()
///     .method("_hidden", |_r: Request<NoArgs>| async { Ok::<_, RpcError>(()) })
///     .build()
///     .unwrap_err();
/// assert!(err.to_string().contains("starts with '_'"));
/// ```
#[must_use]
pub struct EndpointBuilder<S> {
    target: Target,
    state: S,
    methods: Vec<(String, ErasedHandler)>,
}

impl<S> fmt::Debug for EndpointBuilder<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EndpointBuilder")
            .field("target", &self.target)
            .field(
                "methods",
                &self.methods.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl<S: Clone + Send + Sync + 'static> EndpointBuilder<S> {
    /// Sets the namespace callers must name.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.target = self.target.with_namespace(namespace);
        self
    }

    /// Adds namespaces also accepted.
    pub fn legacy_namespaces<I, N>(mut self, namespaces: I) -> Self
    where
        I: IntoIterator<Item = N>,
        N: Into<String>,
    {
        self.target = self.target.with_legacy_namespaces(namespaces);
        self
    }

    /// Sets the version implemented (`"1.2".parse()?`; default 1.0).
    pub fn version(mut self, version: Version) -> Self {
        self.target = self.target.with_version(version);
        self
    }

    /// Hands `state` to handlers registered after this call (as `State<S2>`).
    pub fn state<S2: Clone + Send + Sync + 'static>(self, state: S2) -> EndpointBuilder<S2> {
        EndpointBuilder {
            target: self.target,
            state,
            methods: self.methods,
        }
    }

    /// Registers `handler` as method `name`.
    pub fn method<M, H>(mut self, name: impl Into<String>, handler: H) -> Self
    where
        H: Handler<M, S>,
    {
        let state = self.state.clone();
        let erased: ErasedHandler = Arc::new(move |req| handler.call(&state, req));
        self.methods.push((name.into(), erased));
        self
    }

    /// The endpoint.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Configuration`](crate::ErrorKind::Configuration) for an empty, reserved
    /// (`target`) or private (`_name`) method name, or a name registered twice.
    pub fn build(self) -> Result<Endpoint> {
        let mut methods = HashMap::with_capacity(self.methods.len());
        for (name, handler) in self.methods {
            if name.is_empty() {
                return Err(Error::config("an RPC method name cannot be empty"));
            }
            if name.starts_with('_') {
                return Err(Error::config(format!(
                    "RPC method {name:?} starts with '_': such methods are never callable (oslo's default access policy)"
                )));
            }
            if name == "target" {
                return Err(Error::config(
                    "'target' is a reserved endpoint attribute; do not define an RPC method named 'target'",
                ));
            }
            if methods.insert(name.clone(), handler).is_some() {
                return Err(Error::config(format!(
                    "RPC method {name:?} is registered twice"
                )));
            }
        }
        Ok(Endpoint {
            target: self.target,
            methods,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct AddArgs {
        a: i64,
        #[serde(default)]
        b: i64,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Strict {
        a: i64,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Nested {
        inner: Strict,
    }

    fn req(args: Value) -> Request<Value> {
        Request::new(Context::new(), "add", args)
    }

    #[test]
    fn argument_errors_read_like_python() {
        let e = take_args::<AddArgs>(req(json!({"b": 1}))).unwrap_err();
        assert_eq!((e.class(), e.module()), ("TypeError", "builtins"));
        assert_eq!(
            e.message(),
            "add() missing 1 required positional argument: 'a'"
        );

        let e = take_args::<Strict>(req(json!({"a": 1, "c": 2}))).unwrap_err();
        assert_eq!(e.message(), "add() got an unexpected keyword argument 'c'");

        let e = take_args::<AddArgs>(req(json!({"a": "x"}))).unwrap_err();
        assert!(
            e.message()
                .starts_with("add() argument 'a': invalid type: string \"x\""),
            "{}",
            e.message()
        );

        let e = take_args::<Nested>(req(json!({"inner": {"a": 1, "z": 0}}))).unwrap_err();
        assert!(
            e.message()
                .starts_with("add() argument 'inner' (at inner.z)"),
            "{}",
            e.message()
        );

        let e = take_args::<NoArgs>(req(json!({"x": 1}))).unwrap_err();
        assert_eq!(e.message(), "add() got an unexpected keyword argument 'x'");

        assert!(take_args::<NoArgs>(req(Value::Null)).is_ok());
        let ok = take_args::<AddArgs>(req(json!({"a": 2}))).unwrap();
        assert_eq!(ok.args().a, 2);
    }

    #[test]
    fn builder_rejects_bad_names_and_versions() {
        let h = |_r: Request<Value>| async { Ok::<_, RpcError>(()) };
        let cases: Vec<(EndpointBuilder<()>, &str)> = vec![
            (Endpoint::builder().method("_private", h), "starts with '_'"),
            (Endpoint::builder().method("target", h), "reserved"),
            (Endpoint::builder().method("", h), "cannot be empty"),
            (
                Endpoint::builder().method("a", h).method("a", h),
                "registered twice",
            ),
        ];
        for (b, want) in cases {
            let err = b.build().unwrap_err();
            assert!(err.to_string().contains(want), "{err}");
        }
    }

    #[tokio::test]
    async fn state_reaches_handlers() {
        #[derive(Clone)]
        struct S(i64);
        let ep = Endpoint::builder()
            .state(S(40))
            .method("f", |State(s): State<S>, r: Request<AddArgs>| async move {
                Ok::<_, RpcError>(s.0 + r.args().a)
            })
            .build()
            .unwrap();
        let h = ep.handler("f").unwrap();
        let out = h(Request::new(Context::new(), "f", json!({"a": 2})))
            .await
            .unwrap();
        assert_eq!(out, json!(42));
    }
}
