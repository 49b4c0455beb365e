//! The audit trail: one row and one JSON log line per request, failed and
//! unauthenticated ones included. Never a raw key, never a request body.
//!
//! - [`RequestAudit`]: the record of one request while it is served, finished exactly
//!   once — by its answer, or by the end of its stream.
//! - [`AuditLog`]: the writer that commits rows in groups, before their answers leave.
//! - [`query`] and [`export`]: reading the log back.

mod export;
mod query;
mod request;
mod writer;

pub use crate::model::audit::{AuditEntry, AuditFilter, AuditRecord};
pub use export::{ExportFormat, export};
pub use query::query;
pub use request::{CLIENT_CLOSED_REQUEST, RequestAudit};
pub use writer::AuditLog;

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
