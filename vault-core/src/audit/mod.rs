//! The audit trail: one row and one JSON log line per request, failed and
//! unauthenticated ones included. Never a raw key, never a request body.
//!
//! - [`RequestAudit`]: the record of one request while it is served, finished exactly
//!   once — by its answer, or by the end of its stream.
//! - [`AuditLog`]: rows go to a journal file before their answers leave, and to the
//!   database in batches moments later (recovered from the journal after a crash).
//! - [`query`], [`export`] and [`stats`]: reading the log back.

pub mod chain;
mod export;
mod flood;
mod journal;
mod json;
mod line;
mod priority;
pub mod query;
mod request;
mod retention;
mod staging;
pub mod stats;
mod writer;

pub use crate::model::audit::{AuditEntry, AuditFilter, AuditRecord};
pub use export::{ExportFormat, export, export_range};
pub use line::{LineSink, format_line, install_line_sink};
pub use query::{AuditPage, count, page, query};
pub use request::{CLIENT_CLOSED_REQUEST, RequestAudit};
pub use retention::prune;
pub use stats::{AuditStats, stats};
pub use writer::{AuditLog, COMMIT_DELAY, WriterStats};

/// Stores rows directly, without the writer (for tests that need rows of their own making).
#[cfg(test)]
pub(crate) async fn store_for_test(db: &crate::storage::Db, records: &[AuditRecord]) {
    let refs: Vec<&AuditRecord> = records.iter().collect();
    let writer = crate::storage::audit::BatchWriter::new(db, Vec::new()).await.unwrap();
    writer.write(&refs, &[], None).await.unwrap();
}

#[cfg(test)]
pub(crate) fn test_record(i: usize) -> AuditRecord {
    AuditRecord {
        timestamp: crate::time::now_rfc3339(),
        request_id: format!("req-{i}"),
        method: "POST".into(),
        path: "/v1/chat/completions".into(),
        status: 200,
        latency_ms: 3,
        tokens_input: Some(5),
        tokens_output: Some(7),
        completed: true,
        ..AuditRecord::default()
    }
}
