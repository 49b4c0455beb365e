//! What the audit trail records about one request, and how it is asked for.

use serde::{Deserialize, Serialize};

use crate::error::ErrorCode;

/// What is recorded about one request, as it is written (and journaled).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AuditRecord {
    pub timestamp: String,
    pub request_id: String,
    pub method: String,
    pub path: String,
    /// The key that was used, to move its `last_used_at`; not stored in the row.
    pub key_id: Option<i64>,
    pub key_prefix: Option<String>,
    pub user_id: Option<String>,
    pub model: Option<String>,
    pub status: u16,
    pub latency_ms: u64,
    pub tokens_input: Option<u64>,
    pub tokens_output: Option<u64>,
    /// False when the answer was cut short (upstream failure, client gone).
    pub completed: bool,
    pub error_code: Option<ErrorCode>,
    /// How many requests the row stands for.
    #[serde(default)]
    pub repeat_count: RequestCount,
    /// How long the request waited its turn for the engine (`None`: it did not wait).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued_ms: Option<u64>,
    /// From the request's arrival to the first bytes of the upstream's answer (a stream's
    /// first token): kept in the per-minute rollups, not in the row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttft_ms: Option<u64>,
    /// When the upstream was asked and answered, for the metrics; never stored.
    #[serde(skip)]
    pub upstream: Option<crate::metrics::UpstreamTiming>,
}

/// How many requests a row stands for: 1, unless it sums up a flood.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RequestCount(pub u32);

impl Default for RequestCount {
    fn default() -> Self {
        RequestCount(1)
    }
}

impl AuditRecord {
    /// Whether the request failed: an error status, or an answer cut short.
    pub fn is_error(&self) -> bool {
        self.status >= 400 || !self.completed
    }

    /// Whether it was an inference request, the only kind usage insights count.
    pub fn is_inference(&self) -> bool {
        self.path.starts_with("/v1/")
    }
}

/// A stored audit row.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AuditEntry {
    pub id: i64,
    pub timestamp: String,
    pub request_id: String,
    pub method: String,
    pub path: String,
    pub key_prefix: Option<String>,
    pub user_id: Option<String>,
    pub model: Option<String>,
    pub status: u16,
    pub latency_ms: u64,
    pub tokens_input: Option<u64>,
    pub tokens_output: Option<u64>,
    pub completed: bool,
    pub error_code: Option<String>,
    /// How many requests the row stands for (more than 1 for a flood's summary row).
    pub repeat_count: u32,
    /// How long the request waited its turn for the engine, when it had to.
    pub queued_ms: Option<u64>,
}

/// Conditions on audit rows; every one given must hold.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub user_id: Option<String>,
    pub key_prefix: Option<String>,
    pub method: Option<String>,
    /// Rows whose path starts with this.
    pub path_prefix: Option<String>,
    pub status: Option<u16>,
    pub model: Option<String>,
    /// RFC 3339, inclusive.
    pub since: Option<String>,
    /// RFC 3339, exclusive.
    pub until: Option<String>,
}
