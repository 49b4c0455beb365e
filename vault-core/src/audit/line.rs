//! The request log line: one JSON object per request, with the fields of its audit row.
//!
//! It is on every request's path, so it does not go through a tracing formatter: it is
//! serialized here in one pass and handed to the sink the shell installed (the server's
//! non-blocking log writer). Without one — the CLI, the Python package, tests — it is an
//! ordinary tracing event. Either way the log filter (`VAULT_LOG_LEVEL`) decides whether it
//! is written, as for target `vault::request` at level INFO.

use std::sync::OnceLock;

use super::json::JsonObject;
use crate::model::audit::AuditRecord;

/// Where request lines go: one call per line, which must not block.
pub trait LineSink: Send + Sync {
    fn write_line(&self, line: Vec<u8>);
}

static SINK: OnceLock<Box<dyn LineSink>> = OnceLock::new();

/// Sends request lines to `sink` from now on; false when a sink was installed already.
pub fn install_line_sink(sink: Box<dyn LineSink>) -> bool {
    SINK.set(sink).is_ok()
}

/// The line of `r` as JSON, ending in a newline: the keys a tracing JSON event of it
/// would have.
pub fn format_line(r: &AuditRecord, timestamp: &str) -> Vec<u8> {
    let mut line = JsonObject::with_capacity(384);
    line.field("timestamp", timestamp);
    line.field("level", "INFO");
    line.field("message", "request");
    line.field("target", "vault::request");
    line.field("request_id", &r.request_id);
    line.field("method", &r.method);
    line.field("path", &r.path);
    line.field("user_key_prefix", &r.key_prefix);
    line.field("user_id", &r.user_id);
    line.field("model", &r.model);
    line.field("status", r.status);
    line.field("latency_ms", r.latency_ms);
    line.field("tokens_input", r.tokens_input);
    line.field("tokens_output", r.tokens_output);
    line.field("completed", r.completed);
    line.field("error_code", r.error_code.map(|c| c.as_str()));
    let mut out = line.finish();
    out.push(b'\n');
    out
}

pub(super) fn log_request_line(r: &AuditRecord) {
    if !tracing::enabled!(target: "vault::request", tracing::Level::INFO) {
        return;
    }
    match SINK.get() {
        Some(sink) => sink.write_line(format_line(r, &crate::time::now_rfc3339())),
        None => tracing::info!(
            target: "vault::request",
            request_id = %r.request_id,
            method = %r.method,
            path = %r.path,
            user_key_prefix = r.key_prefix.as_deref(),
            user_id = r.user_id.as_deref(),
            model = r.model.as_deref(),
            status = r.status,
            latency_ms = r.latency_ms,
            tokens_input = r.tokens_input,
            tokens_output = r.tokens_output,
            completed = r.completed,
            error_code = r.error_code.map(|c| c.as_str()),
            "request"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_is_one_json_object_with_the_row_fields() {
        let record = AuditRecord {
            key_prefix: Some("vault_sk_AbCd".into()),
            error_code: Some(crate::error::ErrorCode::ClientDisconnected),
            path: "/v1/\"quoted\"".into(),
            ..crate::audit::test_record(7)
        };
        let line = format_line(&record, "2026-01-01T00:00:00.000Z");
        assert_eq!(line.last(), Some(&b'\n'));
        assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1);
        let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["request_id"], "req-7");
        assert_eq!(v["path"], "/v1/\"quoted\"");
        assert_eq!(v["user_key_prefix"], "vault_sk_AbCd");
        assert_eq!(v["error_code"], "client_disconnected");
        assert_eq!((v["status"].as_u64(), v["target"].as_str()), (Some(200), Some("vault::request")));
    }
}
