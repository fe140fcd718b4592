//! Python values to JSON values and back, as oslo's `jsonutils` would carry them.
//!
//! Dicts, lists, tuples, strings, ints, floats, booleans and `None` convert directly; anything
//! else goes through `oslo_serialization.jsonutils.to_primitive` first (datetimes, sets, UUIDs,
//! objects with `iteritems`...), as `jsonutils.dumps(default=to_primitive)` does. What JSON
//! cannot carry without loss is refused with a clear error: ints beyond 64 bits, NaN and the
//! infinities, dict keys that are not strings (after `to_primitive`'s own rules).

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use serde_json::{Map, Number, Value};

/// How deep a value may nest before it is refused (a cycle, or something absurd).
const MAX_DEPTH: usize = 200;

/// Converts a Python value to JSON. `what` names the value in errors ("the arguments").
pub(crate) fn to_json(value: &Bound<'_, PyAny>, what: &str) -> PyResult<Value> {
    convert(value, what, 0)
}

/// Converts a Python dict to a JSON object.
pub(crate) fn to_json_object(value: &Bound<'_, PyAny>, what: &str) -> PyResult<Map<String, Value>> {
    match to_json(value, what)? {
        Value::Object(map) => Ok(map),
        Value::Null => Ok(Map::new()),
        other => Err(PyTypeError::new_err(format!(
            "{what} must be a dict, not a JSON {}",
            type_name(&other)
        ))),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn convert(value: &Bound<'_, PyAny>, what: &str, depth: usize) -> PyResult<Value> {
    if depth > MAX_DEPTH {
        return Err(PyValueError::new_err(format!(
            "{what} nests deeper than {MAX_DEPTH} levels (a cycle?)"
        )));
    }
    if value.is_none() {
        return Ok(Value::Null);
    }
    // bool before int: a Python bool is an int.
    if let Ok(b) = value.cast::<PyBool>() {
        return Ok(Value::Bool(b.is_true()));
    }
    if let Ok(i) = value.cast::<PyInt>() {
        if let Ok(n) = i.extract::<i64>() {
            return Ok(Value::from(n));
        }
        if let Ok(n) = i.extract::<u64>() {
            return Ok(Value::from(n));
        }
        return Err(PyValueError::new_err(format!(
            "{what} holds an int beyond 64 bits ({}), which JSON peers cannot read exactly",
            i.str()?
        )));
    }
    if let Ok(f) = value.cast::<PyFloat>() {
        let x = f.value();
        return Number::from_f64(x).map(Value::Number).ok_or_else(|| {
            PyValueError::new_err(format!(
                "{what} holds {x}, which JSON cannot carry (NaN and the infinities are not JSON)"
            ))
        });
    }
    if let Ok(s) = value.cast::<PyString>() {
        return Ok(Value::String(s.to_cow()?.into_owned()));
    }
    if let Ok(d) = value.cast::<PyDict>() {
        let mut map = Map::with_capacity(d.len());
        for (k, v) in d.iter() {
            map.insert(key(&k, what)?, convert(&v, what, depth + 1)?);
        }
        return Ok(Value::Object(map));
    }
    if let Ok(l) = value.cast::<PyList>() {
        return l
            .iter()
            .map(|v| convert(&v, what, depth + 1))
            .collect::<PyResult<Vec<_>>>()
            .map(Value::Array);
    }
    if let Ok(t) = value.cast::<PyTuple>() {
        return t
            .iter()
            .map(|v| convert(&v, what, depth + 1))
            .collect::<PyResult<Vec<_>>>()
            .map(Value::Array);
    }
    // Anything else: what oslo's jsonutils makes of it.
    let py = value.py();
    let primitive = py
        .import("oslo_serialization.jsonutils")?
        .getattr("to_primitive")?
        .call1((value,))?;
    if primitive.is(value) {
        return Err(PyTypeError::new_err(format!(
            "{what} holds a {} that JSON cannot carry",
            value.get_type().name()?
        )));
    }
    convert(&primitive, what, depth + 1)
}

/// A dict key as JSON has it: strings as they are; ints, floats, booleans and `None` as
/// Python's `json` writes them.
fn key(k: &Bound<'_, PyAny>, what: &str) -> PyResult<String> {
    if let Ok(s) = k.cast::<PyString>() {
        return Ok(s.to_cow()?.into_owned());
    }
    if k.is_none() {
        return Ok("null".to_owned());
    }
    if let Ok(b) = k.cast::<PyBool>() {
        return Ok(if b.is_true() { "true" } else { "false" }.to_owned());
    }
    if k.cast::<PyInt>().is_ok() || k.cast::<PyFloat>().is_ok() {
        return Ok(k.str()?.to_cow()?.into_owned());
    }
    Err(PyTypeError::new_err(format!(
        "{what} has a dict key of type {}; JSON keys must be str, int, float, bool or None",
        k.get_type().name()?
    )))
}

/// Converts JSON to Python values, as `json.loads` makes them.
pub(crate) fn to_py<'py>(py: Python<'py>, value: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match value {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into_pyobject(py)?.into_any()
            } else if let Some(u) = n.as_u64() {
                u.into_pyobject(py)?.into_any()
            } else {
                n.as_f64().unwrap_or(f64::NAN).into_pyobject(py)?.into_any()
            }
        }
        Value::String(s) => PyString::new(py, s).into_any(),
        Value::Array(a) => {
            let list = PyList::empty(py);
            for v in a {
                list.append(to_py(py, v)?)?;
            }
            list.into_any()
        }
        Value::Object(m) => to_py_dict(py, m)?.into_any(),
    })
}

/// Converts a JSON object to a Python dict.
pub(crate) fn to_py_dict<'py>(
    py: Python<'py>,
    map: &Map<String, Value>,
) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    for (k, v) in map {
        dict.set_item(k, to_py(py, v)?)?;
    }
    Ok(dict)
}
