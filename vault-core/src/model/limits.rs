//! Rate limits: how much a key or a user may ask of the inference engine.

use serde::{Deserialize, Serialize};

/// Limits of one key or one user; `None`: no limit of its own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitSet {
    /// Requests per minute.
    pub rpm: Option<u64>,
    /// Tokens per minute, prompt and completion.
    pub tpm: Option<u64>,
    /// Requests under way at once.
    pub concurrency: Option<u64>,
    /// Turns in the queue while the engine is full, against 1 for everyone else (see
    /// `inference::admission`); a user's applies to all of their keys. Not a limit: no
    /// default applies.
    #[serde(default)]
    pub weight: Option<u64>,
}

impl LimitSet {
    pub fn is_unlimited(&self) -> bool {
        self.rpm.is_none() && self.tpm.is_none() && self.concurrency.is_none()
    }

    /// Whether nothing at all is set, weight included.
    pub fn is_empty(&self) -> bool {
        self.is_unlimited() && self.weight.is_none()
    }

    /// These limits, with `defaults` where none is set.
    pub fn or(self, defaults: LimitSet) -> LimitSet {
        LimitSet {
            rpm: self.rpm.or(defaults.rpm),
            tpm: self.tpm.or(defaults.tpm),
            concurrency: self.concurrency.or(defaults.concurrency),
            weight: self.weight,
        }
    }
}

/// The limits a request is held to: its key's and its user's (the stricter applies).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub key: LimitSet,
    pub user: LimitSet,
}
