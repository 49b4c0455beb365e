//! `import vault`: Python bindings over vault-core — no behaviour of their own. Each
//! method converts its arguments, runs one core function on the shared tokio runtime with
//! the GIL released, and converts the result (as dicts and lists) or the error (as one of
//! the exception classes of `vault._errors`).

mod convert;
mod gateway;

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use pyo3::prelude::*;
use vault_core::audit::{self, AuditFilter, ExportFormat};
use vault_core::config::{self, Config};
use vault_core::keys::{self, Principal, Scope};
use vault_core::storage::Db;
use vault_core::{VaultError, conversations, setup, training, users};

use crate::convert::{run, to_py, to_py_err};

/// The one runtime every call of this module runs on.
pub(crate) fn runtime() -> PyResult<&'static tokio::runtime::Runtime> {
    static RUNTIME: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("vault-py")
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| to_py_err(VaultError::internal("starting the runtime", e)))
}

/// An open Vault database: keys, users, conversations, training jobs, the audit log.
///
/// Open one with ``Vault.open()``; it uses the same settings and environment variables
/// as the server (``VAULT_DB_URL``, ``VAULT_DATA_DIR``).
#[pyclass(name = "Vault", module = "vault._vault", frozen)]
struct PyVault {
    db: Arc<Db>,
    config: Config,
}

#[pymethods]
impl PyVault {
    /// Opens (creating if needed) the database.
    ///
    /// Args:
    ///     db_url: the database file; default ``VAULT_DB_URL``, else ``<data_dir>/vault.db``.
    ///     data_dir: default ``VAULT_DATA_DIR``, else ``./data``.
    #[staticmethod]
    #[pyo3(signature = (db_url=None, data_dir=None))]
    fn open(py: Python<'_>, db_url: Option<String>, data_dir: Option<String>) -> PyResult<PyVault> {
        let mut overrides: config::Overrides = HashMap::new();
        if let Some(url) = db_url {
            overrides.insert(config::VAULT_DB_URL, url);
        }
        if let Some(dir) = data_dir {
            overrides.insert(config::VAULT_DATA_DIR, dir);
        }
        let config = Config::load(&overrides).map_err(to_py_err)?;
        let location = config.db.clone();
        let db = run(py, async move { Db::open(&location).await })?;
        Ok(PyVault { db: Arc::new(db), config })
    }

    /// API keys: ``create``, ``list``, ``revoke``.
    #[getter]
    fn keys(&self) -> Keys {
        Keys { db: self.db.clone() }
    }

    /// Users: ``create``, ``list``, ``deactivate``.
    #[getter]
    fn users(&self) -> Users {
        Users { db: self.db.clone() }
    }

    /// A user's conversations: ``list``, ``get``, ``export``.
    #[getter]
    fn conversations(&self) -> Conversations {
        Conversations { db: self.db.clone() }
    }

    /// Training job records: ``list``, ``get``.
    #[getter]
    fn training(&self) -> TrainingJobs {
        TrainingJobs { db: self.db.clone() }
    }

    /// The audit log: ``query``, ``export``.
    #[getter]
    fn audit(&self) -> Audit {
        Audit { db: self.db.clone() }
    }

    /// The resolved settings (no secrets) as a dict.
    #[getter]
    fn config(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        to_py(py, &self.config.summary())
    }

    /// The first-boot wizard's state: ``{"status": "pending" | "in_progress" | "complete",
    /// "flag_file": bool, "steps": [{"name", "state", "updated_at", "summary"}, ...]}``.
    fn setup_status(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let (db, config) = (self.db.clone(), self.config.clone());
        let status = run(py, async move { setup::status(&config, &db).await })?;
        to_py(py, &status)
    }

    fn __repr__(&self) -> String {
        format!("Vault(db_url={:?})", self.config.summary()["db_url"].as_str().unwrap_or(""))
    }
}

/// API keys of a Vault. A key is shown whole only once, by ``create``.
#[pyclass(module = "vault._vault", frozen)]
struct Keys {
    db: Arc<Db>,
}

#[pymethods]
impl Keys {
    /// Creates a key and returns it as a dict; ``result["key"]`` is the raw key, shown this once.
    ///
    /// Args:
    ///     label: who or what the key is for.
    ///     scope: ``"user"`` or ``"admin"``.
    ///     user_id: the user the key acts for.
    #[pyo3(signature = (label, scope="user", user_id=None))]
    fn create(&self, py: Python<'_>, label: String, scope: &str, user_id: Option<String>) -> PyResult<Py<PyAny>> {
        let scope: Scope = scope.parse().map_err(to_py_err)?;
        let db = self.db.clone();
        let created =
            run(py, async move { keys::create(&db, &label, scope, user_id.as_deref(), Some("python")).await })?;
        to_py(py, &created)
    }

    /// Lists keys (prefixes only), oldest first.
    #[pyo3(signature = (include_revoked=true))]
    fn list(&self, py: Python<'_>, include_revoked: bool) -> PyResult<Py<PyAny>> {
        let db = self.db.clone();
        to_py(py, &run(py, async move { keys::list(&db, include_revoked).await })?)
    }

    /// Checks a raw key as the gateway would and returns who it acts as
    /// (``{"key_prefix", "scope", "user_id"}``). Raises ``Unauthorized`` for an unknown,
    /// revoked or deactivated key, and ``Forbidden`` when ``scope="admin"`` is asked of a user key.
    #[pyo3(signature = (key, scope=None))]
    fn check(&self, py: Python<'_>, key: String, scope: Option<&str>) -> PyResult<Py<PyAny>> {
        let need_admin = scope.map(str::parse).transpose().map_err(to_py_err)? == Some(Scope::Admin);
        let db = self.db.clone();
        let principal = run(py, async move {
            let principal = keys::resolve(&db, &key).await?;
            if need_admin {
                principal.require_admin()?;
            }
            Ok(principal)
        })?;
        let summary = serde_json::json!({
            "key_prefix": principal.key_prefix,
            "scope": principal.scope,
            "user_id": principal.user_id,
        });
        to_py(py, &summary)
    }

    /// Revokes a key named by the whole key, its ``vault_sk_`` prefix, or its id. A running
    /// gateway refuses it from its next request on.
    fn revoke(&self, py: Python<'_>, key: String) -> PyResult<Py<PyAny>> {
        let db = self.db.clone();
        to_py(py, &run(py, async move { keys::revoke(&db, &key, Some("python")).await })?)
    }
}

/// Users of a Vault.
#[pyclass(module = "vault._vault", frozen)]
struct Users {
    db: Arc<Db>,
}

#[pymethods]
impl Users {
    /// Creates a user.
    ///
    /// Args:
    ///     name: up to 200 characters.
    ///     email: unique, case-insensitively.
    ///     role: ``"user"`` or ``"admin"``.
    #[pyo3(signature = (name, email, role="user"))]
    fn create(&self, py: Python<'_>, name: String, email: String, role: &str) -> PyResult<Py<PyAny>> {
        let role: users::Role = role.parse().map_err(to_py_err)?;
        let db = self.db.clone();
        to_py(py, &run(py, async move { users::create(&db, &name, &email, role, Some("python")).await })?)
    }

    /// Lists users, oldest first.
    fn list(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let db = self.db.clone();
        to_py(py, &run(py, async move { users::list(&db).await })?)
    }

    /// Deactivates a user: their keys stop working on a running gateway's next request.
    fn deactivate(&self, py: Python<'_>, user_id: String) -> PyResult<Py<PyAny>> {
        let db = self.db.clone();
        to_py(py, &run(py, async move { users::deactivate(&db, &user_id, Some("python")).await })?)
    }
}

/// One user's conversations.
#[pyclass(module = "vault._vault", frozen)]
struct Conversations {
    db: Arc<Db>,
}

#[pymethods]
impl Conversations {
    /// A page of the user's conversations, most recently updated first:
    /// ``{"items": [...], "total": n, "limit": l, "offset": o}``.
    #[pyo3(signature = (user_id, limit=20, offset=0))]
    fn list(&self, py: Python<'_>, user_id: String, limit: u32, offset: u32) -> PyResult<Py<PyAny>> {
        let db = self.db.clone();
        let who = Principal::for_user(&user_id);
        to_py(py, &run(py, async move { conversations::list(&db, &who, Some(limit), Some(offset)).await })?)
    }

    /// One of the user's conversations with its messages.
    fn get(&self, py: Python<'_>, user_id: String, conversation_id: String) -> PyResult<Py<PyAny>> {
        let db = self.db.clone();
        to_py(
            py,
            &run(py, async move { conversations::get(&db, &Principal::for_user(&user_id), &conversation_id).await })?,
        )
    }

    /// One of the user's conversations as a document: ``format`` is ``"json"`` or ``"markdown"``.
    #[pyo3(signature = (user_id, conversation_id, format="json"))]
    fn export(&self, py: Python<'_>, user_id: String, conversation_id: String, format: &str) -> PyResult<String> {
        let format: conversations::ExportFormat = format.parse().map_err(to_py_err)?;
        let db = self.db.clone();
        run(
            py,
            async move { conversations::export(&db, &Principal::for_user(&user_id), &conversation_id, format).await },
        )
    }
}

/// Training job records.
#[pyclass(module = "vault._vault", frozen)]
struct TrainingJobs {
    db: Arc<Db>,
}

#[pymethods]
impl TrainingJobs {
    /// Jobs, newest first; ``status`` keeps only jobs in that state.
    #[pyo3(signature = (status=None))]
    fn list(&self, py: Python<'_>, status: Option<String>) -> PyResult<Py<PyAny>> {
        let status = status.as_deref().map(str::parse).transpose().map_err(to_py_err)?;
        let db = self.db.clone();
        to_py(py, &run(py, async move { training::list(&db, status).await })?)
    }

    /// One job with its config and metrics.
    fn get(&self, py: Python<'_>, job_id: String) -> PyResult<Py<PyAny>> {
        let db = self.db.clone();
        to_py(py, &run(py, async move { training::get(&db, &job_id).await })?)
    }
}

/// The audit log: one row per request the gateway served.
#[pyclass(module = "vault._vault", frozen)]
struct Audit {
    db: Arc<Db>,
}

#[allow(clippy::too_many_arguments)]
fn filter(
    user_id: Option<String>,
    key_prefix: Option<String>,
    method: Option<String>,
    path: Option<String>,
    status: Option<u16>,
    model: Option<String>,
    since: Option<String>,
    until: Option<String>,
) -> AuditFilter {
    AuditFilter { user_id, key_prefix, method, path_prefix: path, status, model, since, until }
}

#[pymethods]
impl Audit {
    /// Rows matching every filter given, newest first, as a list of dicts.
    ///
    /// Args:
    ///     user_id, key_prefix, method, model, status: exact matches.
    ///     path: rows whose path starts with this.
    ///     since, until: RFC 3339 timestamps (``since`` inclusive, ``until`` exclusive).
    ///     limit: 1 to 1000.
    ///     before_id: only rows older than this id (to page back in time).
    #[pyo3(signature = (*, user_id=None, key_prefix=None, method=None, path=None, status=None, model=None,
                        since=None, until=None, limit=100, before_id=None))]
    #[allow(clippy::too_many_arguments)]
    fn query(
        &self,
        py: Python<'_>,
        user_id: Option<String>,
        key_prefix: Option<String>,
        method: Option<String>,
        path: Option<String>,
        status: Option<u16>,
        model: Option<String>,
        since: Option<String>,
        until: Option<String>,
        limit: u32,
        before_id: Option<i64>,
    ) -> PyResult<Py<PyAny>> {
        let filter = filter(user_id, key_prefix, method, path, status, model, since, until);
        let db = self.db.clone();
        to_py(py, &run(py, async move { audit::query(&db, &filter, Some(limit), before_id).await })?)
    }

    /// Writes matching rows, oldest first, to the file at ``path`` as ``"csv"`` or
    /// ``"json"``, in constant memory. Returns the number of rows written.
    #[pyo3(signature = (path, format="csv", *, user_id=None, key_prefix=None, method=None, path_prefix=None,
                        status=None, model=None, since=None, until=None))]
    #[allow(clippy::too_many_arguments)]
    fn export(
        &self,
        py: Python<'_>,
        path: std::path::PathBuf,
        format: &str,
        user_id: Option<String>,
        key_prefix: Option<String>,
        method: Option<String>,
        path_prefix: Option<String>,
        status: Option<u16>,
        model: Option<String>,
        since: Option<String>,
        until: Option<String>,
    ) -> PyResult<u64> {
        let format: ExportFormat = format.parse().map_err(to_py_err)?;
        let filter = filter(user_id, key_prefix, method, path_prefix, status, model, since, until);
        let db = self.db.clone();
        run(py, async move {
            let file = std::fs::File::create(&path)
                .map_err(|e| VaultError::invalid_field(format!("path: cannot create {}: {e}", path.display())))?;
            let mut out = std::io::BufWriter::new(file);
            audit::export(db, &filter, format, &mut out, &mut |_| {}).await
        })
    }
}

/// Asks an inference upstream (vLLM's OpenAI server) for its model list: a pre-flight
/// check for scripts. Raises ``UpstreamUnavailable`` when nothing answers,
/// ``UpstreamTimeout`` after ``timeout`` seconds, ``UpstreamError`` for an error answer.
#[pyfunction]
#[pyo3(signature = (url, timeout=5.0, api_key=None))]
fn check_upstream(py: Python<'_>, url: String, timeout: f64, api_key: Option<String>) -> PyResult<Py<PyAny>> {
    use vault_core::inference::InferenceBackend;
    if !(timeout.is_finite() && timeout > 0.0) {
        return Err(to_py_err(VaultError::invalid_field("timeout: must be a positive number of seconds")));
    }
    let models = run(py, async move {
        let backend = vault_core::inference::vllm::VllmBackend::new(
            &url,
            api_key.as_deref(),
            std::time::Duration::from_secs_f64(timeout),
            64 * 1024 * 1024,
        )?;
        backend.list_models().await
    })?;
    to_py(py, &models)
}

/// The native part of ``vault``; import ``vault`` instead.
#[pymodule]
fn _vault(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyVault>()?;
    m.add_class::<Keys>()?;
    m.add_class::<Users>()?;
    m.add_class::<Conversations>()?;
    m.add_class::<TrainingJobs>()?;
    m.add_class::<Audit>()?;
    m.add_class::<gateway::PyGateway>()?;
    m.add_function(wrap_pyfunction!(check_upstream, m)?)?;
    Ok(())
}
