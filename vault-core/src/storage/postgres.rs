//! The PostgreSQL engine: a small pool of connections, SQLite's `?N` placeholders turned
//! into PostgreSQL's `$N`, and values converted to and from the types PostgreSQL infers,
//! so one text of SQL serves both engines.

use std::error::Error as StdError;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use tokio_postgres::types::{FromSql, IsNull, Kind, ToSql, Type, to_sql_checked};

use super::postgres_tls::{Check, Connector, TlsOptions, split_url};
use super::sql::Value;
use crate::error::{Result, VaultError};

/// Connections one gateway keeps open at most: the audit writer and the key watcher hold
/// one each; requests that read share the rest.
const POOL_SIZE: usize = 16;
/// How long a request waits for a free connection, and for a new one to be made.
const WAIT: Duration = Duration::from_secs(10);
const CONNECT: Duration = Duration::from_secs(5);
/// Statements kept prepared per connection before the cache is emptied (dynamic filters
/// make a bounded but unknown number of texts).
const STATEMENT_CACHE: usize = 256;

/// Starts a write transaction: the transaction-scoped advisory lock makes writers take
/// turns, like SQLite's `BEGIN IMMEDIATE`.
pub(super) const BEGIN_WRITE: &str = "BEGIN; SELECT pg_advisory_xact_lock(7378428519135657472)";

/// Where a `postgres://` URL points, without its password, for messages.
pub fn describe(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        #[cfg(unix)]
        Some(tokio_postgres::config::Host::Unix(path)) => path.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config.get_user().unwrap_or("");
    let db = config.get_dbname().unwrap_or(user);
    format!("postgres://{user}@{host}:{port}/{db}")
}

/// Parses a `postgres://` URL, with libpq's TLS parameters; the error names `VAULT_DB_URL`
/// and never repeats the URL, which may hold a password.
pub fn parse_url(url: &str) -> Result<(tokio_postgres::Config, TlsOptions)> {
    let (url, tls) = split_url(url)?;
    let mut config = url
        .parse::<tokio_postgres::Config>()
        .map_err(|e| VaultError::config(format!("VAULT_DB_URL: not a valid postgres:// URL ({e})")))?;
    // With addresses alone, tokio-postgres has no name to give TLS and fails whenever the
    // server offers it; libpq checks the certificate against the address then, and so do we.
    if config.get_hosts().is_empty() {
        for addr in config.get_hostaddrs().to_vec() {
            config.host(addr.to_string());
        }
    }
    // An `@` in the password splits the URL in the wrong place: part of the password
    // would become the host, and be shown wherever the host is.
    let host_has_at =
        config.get_hosts().iter().any(|h| matches!(h, tokio_postgres::config::Host::Tcp(host) if host.contains('@')));
    if host_has_at {
        return Err(VaultError::config(
            "VAULT_DB_URL: the host part holds an `@`: percent-encode special characters of the password (`@` as %40)",
        ));
    }
    if tls.check != Check::Nothing && config.get_ssl_mode() == tokio_postgres::config::SslMode::Disable {
        return Err(VaultError::config("VAULT_DB_URL: `sslrootcert` with `sslmode=disable`: a certificate needs TLS"));
    }
    Ok((config, tls))
}

/// A pool of connections to one database.
pub struct Opened {
    pub pool: Pool,
    /// The parsed URL and the TLS of its connections, for connections of one's own
    /// (`LISTEN`).
    pub config: tokio_postgres::Config,
    pub tls: Connector,
}

/// Opens a pool and proves the database can be reached with these credentials.
pub async fn open(url: &str) -> Result<Opened> {
    let (mut config, tls_options) = parse_url(url)?;
    let tls = Connector::new(&tls_options)?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT);
    }
    // A gateway that vanished mid-transaction (power, network) must not hold the write lock
    // for hours, and a writer waits for it no longer than the embedded database's busy
    // timeout.
    config.keepalives_idle(Duration::from_secs(30));
    let options = config.get_options().unwrap_or("").to_owned();
    config.options(format!("{options} -c idle_in_transaction_session_timeout=60000 -c lock_timeout=10000").trim());
    let target = describe(&config);
    let manager =
        Manager::from_config(config.clone(), tls.clone(), ManagerConfig { recycling_method: RecyclingMethod::Fast });
    let pool = Pool::builder(manager)
        .max_size(POOL_SIZE)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(WAIT))
        .create_timeout(Some(CONNECT + Duration::from_secs(1)))
        .build()
        .map_err(|e| VaultError::config(format!("VAULT_DB_URL: {e}")))?;
    let first = pool
        .get()
        .await
        .map_err(|e| VaultError::config(format!("VAULT_DB_URL: cannot connect to {target}: {}", pool_error(&e))))?;
    let encryption = match first.query_opt(ENCRYPTION, &[]).await {
        Ok(Some(row)) => row.try_get::<_, String>(0).ok(),
        Ok(None) => Some(String::new()),
        Err(_) => None,
    };
    let checked = match tls_options.check {
        Check::Nothing => "server not verified",
        Check::Chain => "certificate chain verified",
        Check::ChainAndName => "certificate and host name verified",
    };
    match encryption.as_deref() {
        Some("") => tracing::info!(database = %target, "connected to PostgreSQL without TLS"),
        Some(version) => {
            tracing::info!(database = %target, tls = %version, "connected to PostgreSQL over TLS ({checked})")
        }
        None => tracing::info!(database = %target, "connected to PostgreSQL (whether over TLS is not known)"),
    }
    drop(first);
    Ok(Opened { pool, config, tls })
}

/// The TLS version of this connection, or `NULL` without TLS.
const ENCRYPTION: &str = "SELECT version FROM pg_stat_ssl WHERE pid = pg_backend_pid() AND ssl";

/// A pool error in words, with the database's own message where there is one.
fn pool_error(err: &deadpool_postgres::PoolError) -> String {
    match err {
        deadpool_postgres::PoolError::Backend(e) => db_message(e),
        other => other.to_string(),
    }
}

fn db_message(err: &tokio_postgres::Error) -> String {
    match err.as_db_error() {
        Some(db) => db.message().to_owned(),
        None => match err.source() {
            Some(source) => format!("{err}: {source}"),
            None => err.to_string(),
        },
    }
}

impl From<tokio_postgres::Error> for VaultError {
    fn from(err: tokio_postgres::Error) -> Self {
        VaultError::internal("accessing the database", db_message(&err))
    }
}

/// Takes a connection from the pool.
pub async fn connect(pool: &Pool) -> Result<Client> {
    let object = pool.get().await.map_err(|e| VaultError::internal("connecting to the database", pool_error(&e)))?;
    Ok(Client { object: Some(object), abandoned: AtomicBool::new(false), in_transaction: AtomicBool::new(false) })
}

/// A pooled connection.
pub struct Client {
    object: Option<Object>,
    /// A transaction was dropped unfinished: roll back before the next statement.
    abandoned: AtomicBool,
    /// A transaction may be open: from before `BEGIN` is sent until `COMMIT` or
    /// `ROLLBACK` went through, so a begin that failed or was cancelled counts too.
    in_transaction: AtomicBool,
}

impl Client {
    fn inner(&self) -> Result<&Object> {
        self.object.as_ref().ok_or_else(|| VaultError::internal("accessing the database", "connection closed"))
    }

    async fn ready(&self) -> Result<&Object> {
        let inner = self.inner()?;
        if self.abandoned.swap(false, Ordering::AcqRel) {
            inner.batch_execute("ROLLBACK").await?;
            self.in_transaction.store(false, Ordering::Release);
        }
        Ok(inner)
    }

    async fn statement(&self, sql: &str) -> Result<(&Object, tokio_postgres::Statement)> {
        let inner = self.ready().await?;
        if inner.statement_cache.size() > STATEMENT_CACHE {
            inner.statement_cache.clear();
        }
        let statement = inner.prepare_cached(&placeholders(sql)).await?;
        Ok((inner, statement))
    }

    pub(super) async fn prepare(&self, sql: &str) -> Result<()> {
        self.statement(sql).await.map(drop)
    }

    pub(super) async fn query(&self, sql: &str, values: Vec<Value>) -> Result<Vec<tokio_postgres::Row>> {
        let (inner, statement) = self.statement(sql).await?;
        Ok(inner.query(&statement, &refs(&values)).await?)
    }

    pub(super) async fn execute(&self, sql: &str, values: Vec<Value>) -> Result<u64> {
        let (inner, statement) = self.statement(sql).await?;
        Ok(inner.execute(&statement, &refs(&values)).await?)
    }

    pub(super) async fn execute_batch(&self, sql: &str) -> Result<()> {
        Ok(self.ready().await?.batch_execute(sql).await?)
    }

    pub(super) async fn begin(&self, sql: &str) -> Result<()> {
        let inner = self.ready().await?;
        self.in_transaction.store(true, Ordering::Release);
        if let Err(err) = inner.batch_execute(sql).await {
            // Perhaps inside a transaction now, perhaps an aborted one: end it first.
            self.abandoned();
            return Err(err.into());
        }
        Ok(())
    }

    pub(super) async fn end(&self, sql: &str) -> Result<()> {
        self.inner()?.batch_execute(sql).await?;
        self.in_transaction.store(false, Ordering::Release);
        Ok(())
    }

    pub(super) fn is_closed(&self) -> bool {
        self.object.as_ref().is_none_or(|object| object.is_closed())
    }

    pub(super) fn abandoned(&self) {
        self.abandoned.store(true, Ordering::Release);
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        // A connection perhaps left inside a transaction (dropped unfinished, or a begin
        // cancelled) is closed, not given to the next user.
        if (self.abandoned.load(Ordering::Acquire) || self.in_transaction.load(Ordering::Acquire))
            && let Some(object) = self.object.take()
        {
            drop(Object::take(object));
        }
    }
}

fn refs(values: &[Value]) -> Vec<&(dyn ToSql + Sync)> {
    values.iter().map(|v| v as &(dyn ToSql + Sync)).collect()
}

/// SQLite's `?N` placeholders as PostgreSQL's `$N` (outside quoted text and identifiers).
pub fn placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut quote: Option<char> = None;
    for c in sql.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '\'' || c == '"' => quote = Some(c),
            None if c == '?' => {
                out.push('$');
                continue;
            }
            None => {}
        }
        out.push(c);
    }
    out
}

impl ToSql for Value {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> std::result::Result<IsNull, Box<dyn StdError + Sync + Send>> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Integer(i) => match *ty {
                Type::INT8 => i.to_sql(ty, out),
                Type::INT4 => i32::try_from(*i)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*i)?.to_sql(ty, out),
                Type::FLOAT8 => (*i as f64).to_sql(ty, out),
                Type::FLOAT4 => (*i as f32).to_sql(ty, out),
                Type::BOOL => (*i != 0).to_sql(ty, out),
                Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
                    i.to_string().as_str().to_sql(ty, out)
                }
                _ => Err(format!("an integer cannot be sent as {ty}").into()),
            },
            Value::Real(f) => match *ty {
                Type::FLOAT8 => f.to_sql(ty, out),
                Type::FLOAT4 => (*f as f32).to_sql(ty, out),
                Type::TEXT | Type::VARCHAR | Type::UNKNOWN => f.to_string().as_str().to_sql(ty, out),
                _ => Err(format!("a real number cannot be sent as {ty}").into()),
            },
            Value::Text(s) => match *ty {
                Type::INT8 => s.parse::<i64>()?.to_sql(ty, out),
                Type::INT4 => s.parse::<i32>()?.to_sql(ty, out),
                Type::FLOAT8 => s.parse::<f64>()?.to_sql(ty, out),
                Type::BYTEA => s.as_bytes().to_sql(ty, out),
                _ => s.as_str().to_sql(ty, out),
            },
            Value::Blob(b) => match *ty {
                Type::BYTEA => b.as_slice().to_sql(ty, out),
                _ => Err(format!("bytes cannot be sent as {ty}").into()),
            },
            // Each element is sent as the array's member type, as a single value would be.
            Value::List(items) => match ty.kind() {
                Kind::Array(_) => items.to_sql(ty, out),
                _ => Err(format!("a list cannot be sent as {ty}").into()),
            },
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// Column `index` of a row as a [`Value`].
pub(super) fn column(row: &tokio_postgres::Row, index: i32) -> Result<Value> {
    let bad = |why: String| VaultError::internal("reading a database column", why);
    let idx = usize::try_from(index).map_err(|_| bad(format!("no column {index}")))?;
    let ty = row.columns().get(idx).ok_or_else(|| bad(format!("no column {index}")))?.type_().clone();
    let value = match ty {
        Type::INT8 => row.try_get::<_, Option<i64>>(idx)?.map(Value::Integer),
        Type::INT4 => row.try_get::<_, Option<i32>>(idx)?.map(|v| Value::Integer(v.into())),
        Type::INT2 => row.try_get::<_, Option<i16>>(idx)?.map(|v| Value::Integer(v.into())),
        Type::OID => row.try_get::<_, Option<u32>>(idx)?.map(|v| Value::Integer(v.into())),
        Type::BOOL => row.try_get::<_, Option<bool>>(idx)?.map(|v| Value::Integer(v.into())),
        Type::FLOAT8 => row.try_get::<_, Option<f64>>(idx)?.map(Value::Real),
        Type::FLOAT4 => row.try_get::<_, Option<f32>>(idx)?.map(|v| Value::Real(v.into())),
        Type::NUMERIC => row.try_get::<_, Option<Numeric>>(idx)?.map(|n| n.0),
        Type::BYTEA => row.try_get::<_, Option<Vec<u8>>>(idx)?.map(Value::Blob),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
            row.try_get::<_, Option<String>>(idx)?.map(Value::Text)
        }
        other => return Err(bad(format!("column {index} has the unsupported type {other}"))),
    };
    Ok(value.unwrap_or(Value::Null))
}

/// A `NUMERIC` (what PostgreSQL's `SUM` of integers gives): a whole number as an integer,
/// anything else as a real.
struct Numeric(Value);

impl<'a> FromSql<'a> for Numeric {
    fn from_sql(_: &Type, raw: &'a [u8]) -> std::result::Result<Numeric, Box<dyn StdError + Sync + Send>> {
        // ndigits, weight, sign, dscale, then ndigits base-10000 digits, most significant first.
        let word = |i: usize| -> std::result::Result<i16, Box<dyn StdError + Sync + Send>> {
            match raw.get(i * 2..i * 2 + 2) {
                Some(b) => Ok(i16::from_be_bytes([b[0], b[1]])),
                None => Err("truncated numeric".into()),
            }
        };
        let (ndigits, weight, sign, dscale) = (word(0)?, word(1)?, word(2)? as u16, word(3)?);
        if sign == 0xC000 {
            return Ok(Numeric(Value::Real(f64::NAN)));
        }
        let mut whole: i128 = 0;
        let mut exact = dscale == 0;
        let mut real = 0f64;
        for i in 0..ndigits.max(0) as usize {
            let digit = word(4 + i)?;
            let power = i32::from(weight) - i as i32;
            real += f64::from(digit) * 10000f64.powi(power);
            if power >= 0 {
                whole = whole.saturating_add(i128::from(digit).saturating_mul(10000i128.saturating_pow(power as u32)));
            } else if digit != 0 {
                exact = false;
            }
        }
        let negative = sign == 0x4000;
        let value = match (exact, i64::try_from(whole)) {
            (true, Ok(w)) => Value::Integer(if negative { -w } else { w }),
            _ => Value::Real(if negative { -real } else { real }),
        };
        Ok(Numeric(value))
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::NUMERIC
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_renamed_outside_quotes() {
        assert_eq!(placeholders("SELECT ?1, '?2', \"a?\" WHERE x = ?12"), "SELECT $1, '?2', \"a?\" WHERE x = $12");
    }

    #[test]
    fn urls_are_described_without_their_password() {
        let (config, _) = parse_url("postgres://vault:secret@db.local:5433/vault").unwrap();
        assert_eq!(describe(&config), "postgres://vault@db.local:5433/vault");
        let err = parse_url("postgres://vault:secret@db.local:notaport/vault").err().unwrap();
        assert!(err.message.starts_with("VAULT_DB_URL") && !err.message.contains("secret"), "{}", err.message);
        let err = parse_url("postgres://vault:p@zq9x@db.local/vault").err().unwrap();
        assert!(err.message.contains("percent-encode") && !err.message.contains("zq9x"), "{}", err.message);
        let err =
            parse_url("postgres://vault:secret@db.local/vault?sslmode=disable&sslrootcert=/ca.pem").err().unwrap();
        assert!(err.message.contains("sslmode=disable") && !err.message.contains("secret"), "{}", err.message);
    }

    #[test]
    fn numerics_become_integers_when_whole() {
        // 1234567 = 123 * 10000^1 + 4567 * 10000^0
        let raw: Vec<u8> = [2i16, 1, 0, 0, 123, 4567].iter().flat_map(|w| w.to_be_bytes()).collect();
        assert_eq!(Numeric::from_sql(&Type::NUMERIC, &raw).unwrap().0, Value::Integer(1_234_567));
        // -2.5 = -(2 * 10000^0 + 5000 * 10000^-1), scale 1
        let raw: Vec<u8> = [2i16, 0, 0x4000, 1, 2, 5000].iter().flat_map(|w| w.to_be_bytes()).collect();
        assert_eq!(Numeric::from_sql(&Type::NUMERIC, &raw).unwrap().0, Value::Real(-2.5));
    }
}
