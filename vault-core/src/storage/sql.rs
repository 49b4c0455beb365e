//! One small interface over the two database engines: the embedded libsql file (one box)
//! and PostgreSQL (several gateways sharing one database). Storage modules write their SQL
//! once, with SQLite's numbered placeholders (`?1`), and run it through these types;
//! nothing above the storage layer knows which engine runs.

use std::time::{Duration, Instant};

use crate::error::{Result, VaultError};

use super::postgres;

/// How long a background batch on the embedded database works before it may give way to
/// requests (see [`GiveWay`]).
const GIVE_WAY_EVERY: Duration = Duration::from_micros(50);

/// Where a background batch gives the CPU back to requests.
///
/// Its work is CPU work on a thread that may share a core with the threads serving
/// requests, and the scheduler does not preempt a running thread for a request that just
/// arrived: that request waits for the thread to yield, block, or finish its time slice
/// (a millisecond or more), even when the thread runs at the lowest priority. So at each of
/// its pause points (between the rows it prepares, between statements), after every
/// `GIVE_WAY_EVERY` of work, when `ask` says so, the thread gives the CPU back
/// (`sched_yield`), and a request that arrived meanwhile is served first (one that must
/// write waits for this transaction all the same). When `ask` says no, the thread runs
/// straight on: under full load, when some request is always ready, it must still get its
/// share of the CPU.
pub struct GiveWay<'a> {
    ask: &'a (dyn Fn() -> bool + Sync),
    working_since: Instant,
    every: Duration,
}

impl<'a> GiveWay<'a> {
    /// Work starts now.
    pub fn new(ask: &'a (dyn Fn() -> bool + Sync)) -> GiveWay<'a> {
        GiveWay { ask, working_since: Instant::now(), every: GIVE_WAY_EVERY }
    }

    /// One that asks at every pause point, however short the work.
    #[cfg(test)]
    pub(crate) fn at_every_point(ask: &'a (dyn Fn() -> bool + Sync)) -> GiveWay<'a> {
        GiveWay { every: Duration::ZERO, ..GiveWay::new(ask) }
    }

    /// Gives way if the work since the last time was long enough and `ask` says so.
    pub fn pause_point(&mut self) {
        if self.working_since.elapsed() >= self.every && (self.ask)() {
            std::thread::yield_now();
            self.working_since = Instant::now();
        }
    }
}

/// A value bound to a placeholder or read from a column.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Integer(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
    /// A PostgreSQL array, such as a column of many rows inserted at once with `UNNEST`.
    /// The embedded engine has no arrays: binding one there is an error.
    List(Vec<Value>),
}

macro_rules! from_integer {
    ($($t:ty),*) => {$(
        impl From<$t> for Value {
            fn from(v: $t) -> Value {
                Value::Integer(i64::from(v))
            }
        }
    )*};
}
from_integer!(i64, i32, u32, u16, u8, bool);

impl From<u64> for Value {
    /// Counts beyond `i64::MAX` are stored as `i64::MAX`.
    fn from(v: u64) -> Value {
        Value::Integer(i64::try_from(v).unwrap_or(i64::MAX))
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Value {
        Value::Real(v)
    }
}

impl From<String> for Value {
    fn from(v: String) -> Value {
        Value::Text(v)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Value {
        Value::Text(v.to_owned())
    }
}

impl From<&String> for Value {
    fn from(v: &String) -> Value {
        Value::Text(v.clone())
    }
}

impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Value {
        Value::Blob(v)
    }
}

impl From<&[u8]> for Value {
    fn from(v: &[u8]) -> Value {
        Value::Blob(v.to_vec())
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Value {
        v.map_or(Value::Null, Into::into)
    }
}

impl TryFrom<Value> for libsql::Value {
    type Error = VaultError;

    fn try_from(v: Value) -> Result<libsql::Value> {
        Ok(match v {
            Value::Null => libsql::Value::Null,
            Value::Integer(i) => libsql::Value::Integer(i),
            Value::Real(f) => libsql::Value::Real(f),
            Value::Text(s) => libsql::Value::Text(s),
            Value::Blob(b) => libsql::Value::Blob(b),
            Value::List(_) => {
                return Err(VaultError::internal("binding a parameter", "the embedded database has no arrays"));
            }
        })
    }
}

impl From<libsql::Value> for Value {
    fn from(v: libsql::Value) -> Value {
        match v {
            libsql::Value::Null => Value::Null,
            libsql::Value::Integer(i) => Value::Integer(i),
            libsql::Value::Real(f) => Value::Real(f),
            libsql::Value::Text(s) => Value::Text(s),
            libsql::Value::Blob(b) => Value::Blob(b),
        }
    }
}

/// What can be bound to a statement's placeholders, in order.
pub trait Params {
    fn into_values(self) -> Vec<Value>;
}

impl Params for () {
    fn into_values(self) -> Vec<Value> {
        Vec::new()
    }
}

impl Params for Vec<Value> {
    fn into_values(self) -> Vec<Value> {
        self
    }
}

impl<T: Into<Value>, const N: usize> Params for [T; N] {
    fn into_values(self) -> Vec<Value> {
        self.into_iter().map(Into::into).collect()
    }
}

/// Placeholder values of mixed types: `params![id, name, None::<i64>]`.
macro_rules! params {
    ($($value:expr),* $(,)?) => {
        vec![$($crate::storage::sql::Value::from($value)),*]
    };
}
pub(crate) use params;

/// A column's value converted to a Rust type.
pub trait FromColumn: Sized {
    fn from_column(value: Value) -> std::result::Result<Self, String>;
}

impl FromColumn for Value {
    fn from_column(value: Value) -> std::result::Result<Self, String> {
        Ok(value)
    }
}

impl FromColumn for i64 {
    fn from_column(value: Value) -> std::result::Result<Self, String> {
        match value {
            Value::Integer(i) => Ok(i),
            other => Err(format!("expected an integer, found {other:?}")),
        }
    }
}

macro_rules! from_column_via_i64 {
    ($($t:ty),*) => {$(
        impl FromColumn for $t {
            fn from_column(value: Value) -> std::result::Result<Self, String> {
                let i = i64::from_column(value)?;
                <$t>::try_from(i).map_err(|_| format!("{i} is out of range"))
            }
        }
    )*};
}
from_column_via_i64!(i32, u32, u64);

impl FromColumn for bool {
    fn from_column(value: Value) -> std::result::Result<Self, String> {
        Ok(i64::from_column(value)? != 0)
    }
}

impl FromColumn for f64 {
    fn from_column(value: Value) -> std::result::Result<Self, String> {
        match value {
            Value::Real(f) => Ok(f),
            Value::Integer(i) => Ok(i as f64),
            other => Err(format!("expected a number, found {other:?}")),
        }
    }
}

impl FromColumn for String {
    fn from_column(value: Value) -> std::result::Result<Self, String> {
        match value {
            Value::Text(s) => Ok(s),
            other => Err(format!("expected text, found {other:?}")),
        }
    }
}

impl FromColumn for Vec<u8> {
    fn from_column(value: Value) -> std::result::Result<Self, String> {
        match value {
            Value::Blob(b) => Ok(b),
            other => Err(format!("expected bytes, found {other:?}")),
        }
    }
}

impl<T: FromColumn> FromColumn for Option<T> {
    fn from_column(value: Value) -> std::result::Result<Self, String> {
        match value {
            Value::Null => Ok(None),
            other => T::from_column(other).map(Some),
        }
    }
}

/// One row of a result.
pub enum Row {
    Lite(libsql::Row),
    Pg(tokio_postgres::Row),
}

impl Row {
    /// The value of column `index` (from 0) as `T`.
    pub fn get<T: FromColumn>(&self, index: i32) -> Result<T> {
        let value = match self {
            Row::Lite(row) => Value::from(row.get_value(index)?),
            Row::Pg(row) => postgres::column(row, index)?,
        };
        T::from_column(value).map_err(|why| VaultError::internal("reading a database column", why))
    }
}

/// The rows of a result, read one at a time.
pub enum Rows {
    Lite(libsql::Rows),
    Pg(std::vec::IntoIter<tokio_postgres::Row>),
}

impl Rows {
    pub async fn next(&mut self) -> Result<Option<Row>> {
        Ok(match self {
            Rows::Lite(rows) => rows.next().await?.map(Row::Lite),
            Rows::Pg(rows) => rows.next().map(Row::Pg),
        })
    }
}

/// Which engine a connection talks to, for the few statements the two spell differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// A statement prepared once and run many times (the audit writer's inserts).
pub enum Statement {
    Lite(libsql::Statement),
    /// PostgreSQL statements are kept in the connection's statement cache by their text.
    Pg(String),
}

impl Statement {
    /// Ends the statement's last run. An embedded query left stepped holds a read
    /// transaction open, which keeps checkpoints from finishing the WAL.
    pub fn reset(&self) {
        if let Statement::Lite(statement) = self {
            statement.reset();
        }
    }
}

/// A connection to the database.
pub enum Conn {
    Lite(libsql::Connection),
    Pg(Box<postgres::Client>),
}

impl Conn {
    pub fn dialect(&self) -> Dialect {
        match self {
            Conn::Lite(_) => Dialect::Sqlite,
            Conn::Pg(_) => Dialect::Postgres,
        }
    }

    /// Whether the server closed the connection (an embedded one never is).
    pub fn is_closed(&self) -> bool {
        match self {
            Conn::Lite(_) => false,
            Conn::Pg(client) => client.is_closed(),
        }
    }

    /// Runs a query and returns its rows.
    pub async fn query(&self, sql: &str, params: impl Params) -> Result<Rows> {
        match self {
            Conn::Lite(conn) => Ok(Rows::Lite(conn.query(sql, lite_params(params)?).await?)),
            Conn::Pg(client) => Ok(Rows::Pg(client.query(sql, params.into_values()).await?.into_iter())),
        }
    }

    /// Runs a statement and returns the number of rows it changed.
    pub async fn execute(&self, sql: &str, params: impl Params) -> Result<u64> {
        match self {
            Conn::Lite(conn) => Ok(conn.execute(sql, lite_params(params)?).await?),
            Conn::Pg(client) => client.execute(sql, params.into_values()).await,
        }
    }

    /// Runs several statements separated by `;`, without parameters.
    pub async fn execute_batch(&self, sql: &str) -> Result<()> {
        match self {
            Conn::Lite(conn) => {
                conn.execute_batch(sql).await?;
            }
            Conn::Pg(client) => client.execute_batch(sql).await?,
        }
        Ok(())
    }

    /// Prepares a statement for [`Conn::run`] and [`Conn::query_prepared`].
    pub async fn prepare(&self, sql: &str) -> Result<Statement> {
        match self {
            Conn::Lite(conn) => Ok(Statement::Lite(conn.prepare(sql).await?)),
            Conn::Pg(client) => {
                client.prepare(sql).await?;
                Ok(Statement::Pg(sql.to_owned()))
            }
        }
    }

    /// Runs a prepared statement and leaves it ready for the next run.
    pub async fn run(&self, statement: &Statement, params: impl Params) -> Result<u64> {
        match (self, statement) {
            (Conn::Lite(_), Statement::Lite(statement)) => {
                statement.reset();
                let outcome = statement.execute(lite_params(params)?).await;
                statement.reset();
                Ok(outcome? as u64)
            }
            (Conn::Pg(client), Statement::Pg(sql)) => client.execute(sql, params.into_values()).await,
            _ => Err(mismatched_statement()),
        }
    }

    /// Runs prepared statements in order: one after another on the embedded database,
    /// with a pause point of `give_way` between each two; pipelined on PostgreSQL (all sent
    /// before the first answer is awaited, so a batch costs about one round trip instead of
    /// one per statement).
    pub async fn run_all(&self, runs: Vec<(&Statement, Vec<Value>)>, give_way: &mut GiveWay<'_>) -> Result<()> {
        match self {
            Conn::Lite(_) => {
                for (i, (statement, params)) in runs.into_iter().enumerate() {
                    if i > 0 {
                        give_way.pause_point();
                    }
                    self.run(statement, params).await?;
                }
            }
            Conn::Pg(_) => {
                futures_util::future::try_join_all(runs.into_iter().map(|(s, p)| self.run(s, p))).await?;
            }
        }
        Ok(())
    }

    /// Runs a prepared query and returns its rows.
    pub async fn query_prepared(&self, statement: &Statement, params: impl Params) -> Result<Rows> {
        match (self, statement) {
            (Conn::Lite(_), Statement::Lite(statement)) => {
                statement.reset();
                Ok(Rows::Lite(statement.query(lite_params(params)?).await?))
            }
            (Conn::Pg(client), Statement::Pg(sql)) => {
                Ok(Rows::Pg(client.query(sql, params.into_values()).await?.into_iter()))
            }
            _ => Err(mismatched_statement()),
        }
    }

    /// Starts a transaction that takes the write lock at once, so a busy embedded database
    /// makes it wait (busy timeout) instead of failing on a lock upgrade.
    pub async fn write_transaction(&self) -> Result<Tx<'_>> {
        self.begin(libsql::TransactionBehavior::Immediate).await
    }

    /// Starts a transaction that reads one consistent state of the database.
    pub async fn read_transaction(&self) -> Result<Tx<'_>> {
        self.begin(libsql::TransactionBehavior::Deferred).await
    }

    async fn begin(&self, behavior: libsql::TransactionBehavior) -> Result<Tx<'_>> {
        let native = match self {
            Conn::Lite(conn) => Some(conn.transaction_with_behavior(behavior).await?),
            Conn::Pg(client) => {
                let begin = match behavior {
                    libsql::TransactionBehavior::Deferred => "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY",
                    // One writer at a time across every gateway, as the embedded database
                    // has: rules that read before they write (the last admin key, the audit
                    // chain's next row) hold.
                    _ => postgres::BEGIN_WRITE,
                };
                client.begin(begin).await?;
                None
            }
        };
        Ok(Tx { conn: self, native, open: true })
    }
}

/// An open transaction on a connection. It reads and writes through the connection
/// (`Deref`), and is rolled back unless committed.
pub struct Tx<'a> {
    conn: &'a Conn,
    /// The embedded engine's own transaction, which rolls back when dropped.
    native: Option<libsql::Transaction>,
    open: bool,
}

impl Tx<'_> {
    pub async fn commit(self) -> Result<()> {
        self.finish(true).await
    }

    pub async fn rollback(self) -> Result<()> {
        self.finish(false).await
    }

    async fn finish(mut self, commit: bool) -> Result<()> {
        self.open = false;
        match (self.native.take(), self.conn) {
            (Some(native), _) if commit => Ok(native.commit().await?),
            (Some(native), _) => Ok(native.rollback().await?),
            (None, Conn::Pg(client)) => client.end(if commit { "COMMIT" } else { "ROLLBACK" }).await,
            (None, Conn::Lite(_)) => Ok(()),
        }
    }
}

impl std::ops::Deref for Tx<'_> {
    type Target = Conn;

    fn deref(&self) -> &Conn {
        self.conn
    }
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        // PostgreSQL cannot be told from here (no await in drop): the connection rolls back
        // before its next statement, or is closed instead of going back to the pool.
        if self.open
            && let Conn::Pg(client) = self.conn
        {
            client.abandoned();
        }
    }
}

/// The columns of `rows`, each as a [`Value::List`]: the parameters of an insert of many
/// rows at once through PostgreSQL's `UNNEST`. Rows of different widths are refused: a
/// short one would shift the values of the rows after it.
pub fn columns(rows: Vec<Vec<Value>>) -> Result<Vec<Value>> {
    let width = rows.first().map_or(0, Vec::len);
    let mut columns: Vec<Vec<Value>> = (0..width).map(|_| Vec::with_capacity(rows.len())).collect();
    for row in rows {
        if row.len() != width {
            return Err(VaultError::internal("binding rows as columns", "rows of different widths"));
        }
        for (column, value) in columns.iter_mut().zip(row) {
            column.push(value);
        }
    }
    Ok(columns.into_iter().map(Value::List).collect())
}

fn lite_params(params: impl Params) -> Result<Vec<libsql::Value>> {
    params.into_values().into_iter().map(libsql::Value::try_from).collect()
}

fn mismatched_statement() -> VaultError {
    VaultError::internal("running a prepared statement", "prepared on another engine")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pause_point_asks_only_after_enough_work_and_starts_over_when_it_gave_way() {
        let asked = std::sync::atomic::AtomicUsize::new(0);
        let answer = std::sync::atomic::AtomicBool::new(true);
        let ask = || {
            asked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            answer.load(std::sync::atomic::Ordering::Relaxed)
        };
        let asked_so_far = || asked.load(std::sync::atomic::Ordering::Relaxed);

        let mut not_yet = GiveWay { every: Duration::from_secs(3600), ..GiveWay::new(&ask) };
        not_yet.pause_point();
        assert_eq!(asked_so_far(), 0, "not enough work yet");

        let mut give_way = GiveWay::at_every_point(&ask);
        let before = Instant::now();
        give_way.pause_point();
        assert_eq!(asked_so_far(), 1);
        assert!(give_way.working_since >= before, "it gave way: the work starts over");
        answer.store(false, std::sync::atomic::Ordering::Relaxed);
        let since = give_way.working_since;
        give_way.pause_point();
        give_way.pause_point();
        assert_eq!(asked_so_far(), 3, "told to run on, it asks again at the next point");
        assert_eq!(give_way.working_since, since, "and the work goes on");
    }
}
