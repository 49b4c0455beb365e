//! Crossing the boundary: core results to Python objects, core errors to the exception
//! classes of `vault._errors`, and running core futures with the GIL released.

use pyo3::IntoPyObjectExt;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use serde::Serialize;
use vault_core::{ErrorKind, VaultError};

mod exceptions {
    pyo3::import_exception!(vault._errors, VaultError);
    pyo3::import_exception!(vault._errors, InvalidInput);
    pyo3::import_exception!(vault._errors, Unauthorized);
    pyo3::import_exception!(vault._errors, Forbidden);
    pyo3::import_exception!(vault._errors, NotFound);
    pyo3::import_exception!(vault._errors, Conflict);
    pyo3::import_exception!(vault._errors, UpstreamUnavailable);
    pyo3::import_exception!(vault._errors, UpstreamTimeout);
    pyo3::import_exception!(vault._errors, UpstreamError);
    pyo3::import_exception!(vault._errors, Unavailable);
}

/// The one conversion from a core error to a Python exception.
pub fn to_py_err(err: VaultError) -> PyErr {
    use exceptions::*;
    let details = err.details.as_deref().map(|d| d.to_string());
    let args = (err.message.clone(), err.code.to_string(), err.status(), details);
    match err.kind {
        ErrorKind::Invalid
        | ErrorKind::RequestTimeout
        | ErrorKind::HeadTooLarge
        | ErrorKind::PayloadTooLarge
        | ErrorKind::UnsupportedMediaType
        | ErrorKind::MethodNotAllowed => InvalidInput::new_err(args),
        ErrorKind::Unauthorized => Unauthorized::new_err(args),
        ErrorKind::Forbidden => Forbidden::new_err(args),
        ErrorKind::NotFound => NotFound::new_err(args),
        ErrorKind::Conflict => Conflict::new_err(args),
        ErrorKind::UpstreamUnavailable => UpstreamUnavailable::new_err(args),
        ErrorKind::UpstreamTimeout => UpstreamTimeout::new_err(args),
        ErrorKind::Upstream { .. } | ErrorKind::RateLimited => UpstreamError::new_err(args),
        ErrorKind::Unavailable => Unavailable::new_err(args),
        ErrorKind::Internal => VaultError::new_err(args),
    }
}

/// Runs a core future on the shared runtime with the GIL released.
pub fn run<T, F>(py: Python<'_>, future: F) -> PyResult<T>
where
    T: Send,
    F: std::future::Future<Output = Result<T, VaultError>> + Send,
{
    let runtime = crate::runtime()?;
    py.detach(|| runtime.block_on(future)).map_err(to_py_err)
}

/// A core value as Python objects (dicts, lists, str, int, float, bool, None).
pub fn to_py(py: Python<'_>, value: &impl Serialize) -> PyResult<Py<PyAny>> {
    let json = serde_json::to_value(value).map_err(|e| to_py_err(VaultError::internal("converting a result", e)))?;
    json_to_py(py, &json)
}

fn json_to_py(py: Python<'_>, value: &serde_json::Value) -> PyResult<Py<PyAny>> {
    use serde_json::Value;
    match value {
        Value::Null => Ok(py.None()),
        Value::Bool(b) => b.into_py_any(py),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => i.into_py_any(py),
            (_, Some(u), _) => u.into_py_any(py),
            (_, _, f) => f.unwrap_or(f64::NAN).into_py_any(py),
        },
        Value::String(s) => s.into_py_any(py),
        Value::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(json_to_py(py, item)?)?;
            }
            Ok(list.into_any().unbind())
        }
        Value::Object(map) => {
            let dict = PyDict::new(py);
            for (k, v) in map {
                dict.set_item(k, json_to_py(py, v)?)?;
            }
            Ok(dict.into_any().unbind())
        }
    }
}
