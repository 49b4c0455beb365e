//! `vault.Gateway`: a whole gateway inside the Python process, on an ephemeral port, in
//! front of a given upstream or the built-in fake one — for test harnesses and notebooks.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use pyo3::prelude::*;
use vault_core::config;
use vault_core::{ErrorCode, VaultError};
use vault_server::embedded::{EmbeddedGateway, FakeOptions, Upstream};

use crate::convert::{run, to_py_err};

/// A gateway running in this process on ``127.0.0.1`` and a free port.
///
/// Use it as a context manager; it stops (finishing requests and flushing the audit log)
/// on exit::
///
///     with vault.Gateway() as gw:                          # built-in fake upstream
///         client = openai.OpenAI(base_url=gw.url + "/v1", api_key=key)
///
/// Args:
///     upstream: the vLLM base URL; ``None`` starts the built-in fake upstream.
///     data_dir: where its database lives (default: a new directory under the temp dir).
///     db_url: the database file (default: ``<data_dir>/vault.db``).
///     token_delay_ms: the fake upstream's delay between streamed tokens.
///     upstream_timeout: seconds the upstream may take to start answering.
#[pyclass(name = "Gateway", module = "vault._vault")]
pub struct PyGateway {
    upstream: Option<String>,
    data_dir: String,
    db_url: Option<String>,
    token_delay_ms: u64,
    upstream_timeout: Option<f64>,
    running: Mutex<Option<EmbeddedGateway>>,
}

fn fresh_data_dir() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("vault-gateway-{}-{n}", std::process::id())).display().to_string()
}

fn not_running() -> PyErr {
    to_py_err(VaultError::conflict(
        ErrorCode::GatewayNotRunning,
        "The gateway is not running; call start() or use `with`.",
    ))
}

impl PyGateway {
    fn with_running<T>(&self, f: impl FnOnce(&EmbeddedGateway) -> T) -> PyResult<T> {
        let running = self.running.lock().map_err(|_| not_running())?;
        running.as_ref().map(f).ok_or_else(not_running)
    }
}

#[pymethods]
impl PyGateway {
    #[new]
    #[pyo3(signature = (upstream=None, *, data_dir=None, db_url=None, token_delay_ms=0, upstream_timeout=None))]
    fn new(
        upstream: Option<String>,
        data_dir: Option<String>,
        db_url: Option<String>,
        token_delay_ms: u64,
        upstream_timeout: Option<f64>,
    ) -> PyGateway {
        PyGateway {
            upstream,
            data_dir: data_dir.unwrap_or_else(fresh_data_dir),
            db_url,
            token_delay_ms,
            upstream_timeout,
            running: Mutex::new(None),
        }
    }

    /// Starts serving; an error if it already runs.
    fn start(&self, py: Python<'_>) -> PyResult<()> {
        let mut running = self.running.lock().map_err(|_| not_running())?;
        if running.is_some() {
            return Err(to_py_err(VaultError::conflict(ErrorCode::GatewayRunning, "The gateway is already running.")));
        }
        let mut overrides: config::Overrides = HashMap::new();
        overrides.insert(config::VAULT_HOST, "127.0.0.1".into());
        overrides.insert(config::VAULT_PORT, "0".into());
        overrides.insert(config::VAULT_DATA_DIR, self.data_dir.clone());
        if let Some(db_url) = &self.db_url {
            overrides.insert(config::VAULT_DB_URL, db_url.clone());
        }
        if let Some(timeout) = self.upstream_timeout {
            overrides.insert(config::VAULT_UPSTREAM_TIMEOUT, timeout.to_string());
        }
        let upstream = match &self.upstream {
            Some(url) => Upstream::Url(url.clone()),
            None => Upstream::Fake(FakeOptions {
                token_delay: Duration::from_millis(self.token_delay_ms),
                ..Default::default()
            }),
        };
        *running = Some(run(py, EmbeddedGateway::start(overrides, upstream))?);
        Ok(())
    }

    /// Stops serving: in-flight requests finish and every audit row is stored first.
    fn stop(&self, py: Python<'_>) -> PyResult<()> {
        let taken = self.running.lock().map_err(|_| not_running())?.take();
        let Some(running) = taken else { return Ok(()) };
        run(py, running.stop())
    }

    /// Waits until the audit rows of every request answered so far are in the database
    /// (they reach it moments after their answers), e.g. before reading them with
    /// ``vault.Vault.open(data_dir=gw.data_dir).audit``.
    fn flush_audit(&self, py: Python<'_>) -> PyResult<()> {
        let vault = self.with_running(|r| r.vault.clone())?;
        run(py, async move {
            vault.audit.flush().await;
            Ok(())
        })
    }

    /// Whether it is serving.
    #[getter]
    fn running(&self) -> bool {
        self.running.lock().map(|r| r.is_some()).unwrap_or(false)
    }

    /// ``http://127.0.0.1:<port>``; add ``/v1`` for an OpenAI client.
    #[getter]
    fn url(&self) -> PyResult<String> {
        self.with_running(|r| r.url().to_string())
    }

    /// The upstream it forwards to (the fake's URL when it runs the fake).
    #[getter]
    fn upstream_url(&self) -> PyResult<String> {
        self.with_running(|r| r.upstream_url().to_string())
    }

    /// Its data directory; ``vault.Vault.open(data_dir=gw.data_dir)`` reads its database.
    #[getter]
    fn data_dir(&self) -> String {
        self.data_dir.clone()
    }

    fn __enter__(slf: Py<Self>, py: Python<'_>) -> PyResult<Py<Self>> {
        slf.borrow(py).start(py)?;
        Ok(slf)
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, pyo3::types::PyTuple>) -> PyResult<bool> {
        self.stop(py)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        match self.with_running(|r| r.url().to_string()) {
            Ok(url) => format!("Gateway(url={url:?})"),
            Err(_) => "Gateway(stopped)".into(),
        }
    }
}

impl Drop for PyGateway {
    fn drop(&mut self) {
        // Dropped while running (no `with`, no stop()): ask it to stop; the runtime finishes it.
        if let Ok(mut running) = self.running.lock()
            && let Some(running) = running.take()
        {
            running.stop_in_background();
        }
    }
}
