//! Timestamps as stored and shown: RFC 3339, UTC, millisecond precision.

use std::time::SystemTime;

/// Now, as an RFC 3339 UTC string with milliseconds.
pub fn now_rfc3339() -> String {
    format_rfc3339(SystemTime::now())
}

pub fn format_rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

/// Parses an RFC 3339 timestamp (any precision); `None` when it is not one.
pub fn parse_rfc3339(raw: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(raw).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_and_sort_as_text() {
        let a = now_rfc3339();
        assert!(a.ends_with('Z') && a.len() == 24, "{a}");
        assert!(parse_rfc3339(&a).is_some());
        let earlier = format_rfc3339(SystemTime::UNIX_EPOCH);
        assert!(earlier < a);
    }
}
