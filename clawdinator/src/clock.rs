//! The one clock: every time the fleet records is read here, in UTC.

/// The current time as RFC 3339 UTC (`2026-11-21T22:02:12Z`).
pub fn now_rfc3339() -> String {
    rfc3339(std::time::SystemTime::now())
}

/// A time as RFC 3339 UTC, to the second.
pub fn rfc3339(time: std::time::SystemTime) -> String {
    // Smithy's format adds a fraction when there is one: drop it first.
    let seconds = time.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    aws_smithy_types::DateTime::from_secs(seconds as i64)
        .fmt(aws_smithy_types::date_time::Format::DateTime)
        .unwrap_or_default()
}

/// A record's time: RFC 3339 in UTC with nanoseconds.
pub fn now_precise() -> String {
    // Nanoseconds, so records a moment apart still sort; seconds and
    // nanoseconds from the same reading of the clock.
    let now = std::time::SystemTime::now();
    let seconds = rfc3339(now);
    let nanos = now.duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("{}.{nanos:09}Z", seconds.trim_end_matches('Z'))
}

/// Seconds since the Unix epoch.
pub fn unix_seconds() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}
