//! What RPC and notification handlers share: the state they are handed, and turning JSON into
//! the handler's own type with an error that says where it did not fit.

use std::any::Any;

use serde::de::DeserializeOwned;
use serde_json::Value;

/// Shared state handed to handlers registered after `state(...)` on an RPC
/// [`EndpointBuilder`](crate::rpc::EndpointBuilder) or a
/// [`NotificationEndpointBuilder`](crate::notify::NotificationEndpointBuilder).
///
/// # Examples
///
/// ```
/// use oslo_messaging::State;
/// use oslo_messaging::rpc::{Endpoint, NoArgs, Request, RpcError};
///
/// #[derive(Clone)]
/// struct Db {
///     name: &'static str,
/// }
///
/// let endpoint = Endpoint::builder()
///     .state(Db { name: "nova" })
///     .method("db", |State(db): State<Db>, _req: Request<NoArgs>| async move {
///         Ok::<_, RpcError>(db.name)
///     })
///     .build()?;
/// # Ok::<(), oslo_messaging::Error>(())
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct State<S>(pub S);

/// Where and why JSON did not fit a handler's type: the path (`.` for the top, `a.b[1]`
/// inside) and serde's complaint.
#[derive(Debug)]
pub(crate) struct Mismatch {
    pub(crate) path: String,
    pub(crate) text: String,
}

impl Mismatch {
    /// `text`, or `at <path>: text` below the top.
    pub(crate) fn describe(&self) -> String {
        if self.path == "." {
            self.text.clone()
        } else {
            format!("at {}: {}", self.path, self.text)
        }
    }
}

/// `value` as `T`, or where it does not fit.
pub(crate) fn from_json<T: DeserializeOwned>(value: Value) -> Result<T, Mismatch> {
    serde_path_to_error::deserialize::<_, T>(value).map_err(|e| Mismatch {
        path: e.path().to_string(),
        text: e.into_inner().to_string(),
    })
}

/// As [`from_json`], but a handler taking the JSON as it came (`T` is `Value`) gets `value`
/// itself, without a pass that rebuilds it.
pub(crate) fn from_json_owned<T: DeserializeOwned + 'static>(value: Value) -> Result<T, Mismatch> {
    let mut slot = Some(value);
    if let Some(same) = (&mut slot as &mut dyn Any)
        .downcast_mut::<Option<T>>()
        .and_then(Option::take)
    {
        return Ok(same);
    }
    from_json(slot.unwrap_or_default())
}

/// As [`from_json`], reading a borrowed value.
pub(crate) fn from_json_ref<T: DeserializeOwned>(value: &Value) -> Result<T, Mismatch> {
    serde_path_to_error::deserialize::<_, T>(value).map_err(|e| Mismatch {
        path: e.path().to_string(),
        text: e.into_inner().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Created {
        id: u64,
        flavor: Flavor,
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Flavor {
        vcpus: u32,
    }

    #[test]
    fn mismatches_say_where() {
        let e = from_json::<Created>(json!({"flavor": {"vcpus": 1}})).unwrap_err();
        assert_eq!(e.describe(), "missing field `id`");
        let e = from_json_ref::<Created>(&json!({"id": 1, "flavor": {"vcpus": "x"}})).unwrap_err();
        assert_eq!(e.path, "flavor.vcpus");
        assert!(
            e.describe().starts_with("at flavor.vcpus: invalid type"),
            "{e:?}"
        );
        assert!(from_json::<Created>(json!({"id": 1, "flavor": {"vcpus": 2}})).is_ok());
        // Owned: JSON handed over as it is, other types checked as by `from_json`.
        let v = json!({"id": 1, "flavor": {"vcpus": 2}});
        assert_eq!(from_json_owned::<Value>(v.clone()).unwrap(), v);
        assert!(from_json_owned::<Created>(v).is_ok());
        let e = from_json_owned::<Created>(json!({"id": "x"})).unwrap_err();
        assert_eq!(e.path, "id");
    }
}
