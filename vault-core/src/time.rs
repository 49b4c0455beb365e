//! Timestamps as stored and shown: RFC 3339, UTC, millisecond precision.

use std::time::SystemTime;

/// Now, as an RFC 3339 UTC string with milliseconds.
pub fn now_rfc3339() -> String {
    format_rfc3339(SystemTime::now())
}

pub fn format_rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

/// The latest time the formats here can write: the end of year 9999.
fn latest() -> SystemTime {
    SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(253_402_300_799)
}

/// `at` as RFC 3339, or `None` outside the years 1970 to 9999 (which the format cannot
/// write: formatting such a time would panic).
pub fn try_format_rfc3339(at: SystemTime) -> Option<String> {
    (at >= SystemTime::UNIX_EPOCH && at <= latest()).then(|| format_rfc3339(at))
}

/// A timestamp as given (`2026-05-01 08:00:00Z`, `…T08:00:00Z`, any precision) written the
/// way stored timestamps are, so the two compare as text; `None` when it is not one.
pub fn normalize_rfc3339(raw: &str) -> Option<String> {
    parse_rfc3339(raw).and_then(try_format_rfc3339)
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

    #[test]
    fn bounds_are_written_as_stored_and_out_of_range_times_are_refused() {
        assert_eq!(normalize_rfc3339("2026-05-01T08:00:00Z").as_deref(), Some("2026-05-01T08:00:00.000Z"));
        assert_eq!(normalize_rfc3339("2026-05-01 08:00:00Z").as_deref(), Some("2026-05-01T08:00:00.000Z"));
        assert_eq!(normalize_rfc3339("yesterday"), None);
        let before_1970 = SystemTime::UNIX_EPOCH - std::time::Duration::from_secs(1);
        assert_eq!(try_format_rfc3339(before_1970), None);
        assert_eq!(try_format_rfc3339(latest() + std::time::Duration::from_secs(1)), None);
        assert_eq!(try_format_rfc3339(latest()).as_deref(), Some("9999-12-31T23:59:59.000Z"));
    }
}
