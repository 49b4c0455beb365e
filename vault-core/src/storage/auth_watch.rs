//! Noticing that keys or users changed, in any process on the same database, without a
//! query per request. Triggers move `auth_epoch` on every such change; how a gateway
//! learns of a move depends on the engine:
//! - embedded: SQLite's `PRAGMA data_version` (a per-connection counter that moves when
//!   another connection commits, read without touching a table), then the epoch;
//! - PostgreSQL: the triggers also `NOTIFY vault_auth`, which a dedicated connection
//!   `LISTEN`s to; the epoch is read every second as well, to prove the connection alive
//!   and to catch anything missed. A lost connection is an error until it is back.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::sql::Statement;
use super::{Conn, Db, Engine};
use crate::error::{Result, VaultError};

const DATA_VERSION: &str = "PRAGMA data_version";
/// How often the listening connection also reads the epoch.
const EPOCH_EVERY: Duration = Duration::from_secs(1);
/// How long a read of the epoch may take before the connection counts as lost.
const EPOCH_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a lost connection is tried again.
const RECONNECT_EVERY: Duration = Duration::from_millis(500);

/// Reports whether the auth epoch moved since it last looked. Each call is cheap; the
/// caller calls it every few milliseconds from one thread, on one runtime.
pub struct AuthWatch(Inner);

enum Inner {
    Lite { conn: Conn, data_version: Statement, epoch: Statement, seen: (i64, i64) },
    Pg(Box<Listener>),
}

impl AuthWatch {
    /// Starts watching. Runs on the runtime that will call [`AuthWatch::moved`].
    pub async fn start(db: &Db) -> Result<AuthWatch> {
        match &db.engine {
            Engine::Lite(_) => {
                let conn = db.connect().await?;
                let data_version = conn.prepare(DATA_VERSION).await?;
                let epoch = conn.prepare(super::keys::AUTH_EPOCH).await?;
                let seen = (read_i64(&conn, &data_version).await?, read_i64(&conn, &epoch).await?);
                Ok(AuthWatch(Inner::Lite { conn, data_version, epoch, seen }))
            }
            Engine::Pg(pg) => {
                let mut listener = Listener {
                    config: pg.config.clone(),
                    tls: pg.tls.clone(),
                    live: None,
                    epoch: 0,
                    next_try: Instant::now(),
                };
                listener.connect().await?;
                Ok(AuthWatch(Inner::Pg(Box::new(listener))))
            }
        }
    }

    /// Whether the epoch moved; an error while the database cannot be watched (then
    /// nothing should be trusted that a change might have revoked).
    pub async fn moved(&mut self) -> Result<bool> {
        match &mut self.0 {
            Inner::Lite { conn, data_version, epoch, seen } => {
                let version = read_i64(conn, data_version).await?;
                if version == seen.0 {
                    return Ok(false);
                }
                // Moved by any commit (the audit writer's, every few ms under load): the
                // epoch says whether keys or users changed.
                let epoch = read_i64(conn, epoch).await?;
                let moved = epoch != seen.1;
                *seen = (version, epoch);
                Ok(moved)
            }
            Inner::Pg(listener) => listener.moved().await,
        }
    }
}

async fn read_i64(conn: &Conn, statement: &Statement) -> Result<i64> {
    let value = match conn.query_prepared(statement, ()).await?.next().await? {
        Some(row) => row.get(0),
        None => Err(VaultError::internal("watching keys for changes", "no row")),
    };
    // Not left stepped: that would hold a read transaction open between looks.
    statement.reset();
    value
}

/// A connection that listens on `vault_auth`.
pub(super) struct Listener {
    config: tokio_postgres::Config,
    tls: super::postgres_tls::Connector,
    live: Option<Live>,
    /// The epoch last read.
    epoch: i64,
    next_try: Instant,
}

struct Live {
    client: tokio_postgres::Client,
    /// The epochs notified, and `None` once the connection ended.
    notices: mpsc::UnboundedReceiver<i64>,
    epoch_read_at: Instant,
}

impl Listener {
    async fn connect(&mut self) -> Result<()> {
        self.next_try = Instant::now() + RECONNECT_EVERY;
        let lost = |e: tokio_postgres::Error| VaultError::internal("watching keys for changes", e);
        let connecting = tokio::time::timeout(EPOCH_TIMEOUT, self.config.connect(self.tls.clone()));
        let (client, mut connection) = connecting
            .await
            .map_err(|_| VaultError::internal("watching keys for changes", "the database did not answer"))?
            .map_err(lost)?;
        let (tx, notices) = mpsc::unbounded_channel();
        // The connection delivers notifications as messages; forward each one's epoch, and
        // close the channel when the connection ends.
        tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(Ok(message)) = messages.next().await {
                if let tokio_postgres::AsyncMessage::Notification(notice) = message
                    && tx.send(notice.payload().parse().unwrap_or(i64::MAX)).is_err()
                {
                    return;
                }
            }
        });
        client.batch_execute("LISTEN vault_auth").await.map_err(lost)?;
        // Read after LISTEN: a change between the two is seen either way.
        let epoch: i64 = client.query_one(super::keys::AUTH_EPOCH, &[]).await.map_err(lost)?.get(0);
        self.epoch = epoch;
        self.live = Some(Live { client, notices, epoch_read_at: Instant::now() });
        Ok(())
    }

    async fn moved(&mut self) -> Result<bool> {
        let Some(live) = &mut self.live else {
            if Instant::now() < self.next_try {
                return Err(VaultError::internal("watching keys for changes", "reconnecting"));
            }
            let before = self.epoch;
            self.connect().await?;
            // Whatever happened while disconnected was already treated as a change.
            return Ok(self.epoch != before);
        };
        let mut moved = false;
        // A short wait lets this runtime read the socket.
        loop {
            match tokio::time::timeout(Duration::from_millis(1), live.notices.recv()).await {
                Ok(Some(epoch)) if epoch > self.epoch => {
                    moved = true;
                    self.epoch = epoch;
                }
                Ok(Some(_)) => {}
                Ok(None) => {
                    self.live = None;
                    return Err(VaultError::internal("watching keys for changes", "the connection was lost"));
                }
                Err(_) => break,
            }
        }
        if live.epoch_read_at.elapsed() >= EPOCH_EVERY {
            let read = tokio::time::timeout(EPOCH_TIMEOUT, live.client.query_one(super::keys::AUTH_EPOCH, &[])).await;
            match read {
                Ok(Ok(row)) => {
                    let epoch: i64 = row.get(0);
                    moved |= epoch != self.epoch;
                    self.epoch = epoch;
                    live.epoch_read_at = Instant::now();
                }
                _ => {
                    self.live = None;
                    return Err(VaultError::internal("watching keys for changes", "the connection stopped answering"));
                }
            }
        }
        Ok(moved)
    }
}
