//! Keeping a flood of refused requests from filling the disk. Of the requests one peer
//! makes without a usable key (401), the first [`ROWS_PER_MINUTE`] of each minute get a
//! row of their own; the rest are counted into one summary row for that peer and minute,
//! written when the minute is over (or at shutdown).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use crate::model::audit::AuditRecord;

/// Refused requests per peer and minute that get a row of their own.
pub const ROWS_PER_MINUTE: u32 = 60;
/// Peers followed at once; past this, refused requests simply get their own rows.
const MAX_PEERS: usize = 10_000;

#[derive(Default)]
pub struct FloodGuard {
    peers: Mutex<HashMap<IpAddr, Window>>,
}

struct Window {
    minute: u64,
    rows: u32,
    /// The summary of this minute's requests beyond the limit, if any.
    summary: Option<AuditRecord>,
}

impl FloodGuard {
    /// Whether a refused request of `peer` in `minute` gets its own row. When not, it is
    /// counted into the peer's summary. Returns too the summary of the peer's previous
    /// minute, when this request is the first to see it over.
    pub fn admit(&self, peer: IpAddr, minute: u64, record: &AuditRecord) -> (bool, Option<AuditRecord>) {
        let Ok(mut peers) = self.peers.lock() else { return (true, None) };
        if peers.len() >= MAX_PEERS && !peers.contains_key(&peer) {
            return (true, None);
        }
        let window = peers.entry(peer).or_insert(Window { minute, rows: 0, summary: None });
        let finished = if window.minute == minute {
            None
        } else {
            let summary = window.summary.take();
            *window = Window { minute, rows: 0, summary: None };
            summary
        };
        if window.rows < ROWS_PER_MINUTE {
            window.rows += 1;
            return (true, finished);
        }
        match &mut window.summary {
            Some(summary) => summary.repeat_count.0 += 1,
            None => {
                let mut summary = record.clone();
                summary.request_id = format!("flood-{}", crate::secrets::new_id());
                summary.key_prefix = None;
                summary.latency_ms = 0;
                window.summary = Some(summary);
            }
        }
        (false, finished)
    }

    /// The summaries of minutes before `minute`, and forgets those peers.
    pub fn take_before(&self, minute: u64) -> Vec<AuditRecord> {
        let Ok(mut peers) = self.peers.lock() else { return Vec::new() };
        let mut due = Vec::new();
        peers.retain(|_, window| {
            if window.minute >= minute {
                return true;
            }
            due.extend(window.summary.take());
            false
        });
        due
    }
}

/// The current minute since the epoch.
pub fn this_minute() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() / 60).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_gets_its_rows_then_one_summary_per_minute() {
        let guard = FloodGuard::default();
        let peer: IpAddr = [10, 0, 0, 7].into();
        let other: IpAddr = [10, 0, 0, 8].into();
        let record = AuditRecord { status: 401, ..crate::audit::test_record(1) };
        let kept = (0..100).filter(|_| guard.admit(peer, 5, &record).0).count();
        assert_eq!(kept, ROWS_PER_MINUTE as usize);
        assert!(guard.admit(other, 5, &record).0, "another peer is not held back");
        // The next minute starts over and hands back the last minute's summary.
        let (kept, summary) = guard.admit(peer, 6, &record);
        assert!(kept);
        let summary = summary.unwrap();
        assert_eq!(summary.repeat_count.0, 100 - ROWS_PER_MINUTE);
        assert!(summary.request_id.starts_with("flood-"));
        assert!(guard.take_before(7).is_empty(), "nothing over the limit in minute 6");
    }
}
