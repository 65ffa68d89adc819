//! Normalising the old bot's timestamps to unix milliseconds (UTC).
//!
//! The old bot wrote times however the moment suggested: `time.time()` floats,
//! integer seconds, JavaScript-style milliseconds, `datetime.isoformat()` strings
//! with or without a zone. Its own restart check read `1760504154` (seconds) as
//! milliseconds and judged the restart 55 years old. Here:
//!
//! - numbers (and numeric strings) are read by magnitude: `|n| < 1e11` is seconds,
//!   `< 1e14` milliseconds, `< 1e17` microseconds, otherwise nanoseconds. Any instant
//!   between 1973 and 5138 has exactly one plausible reading, and every instant the
//!   old bot can have written (2000 onward) lies in it;
//! - fractional values are rounded to the nearest millisecond;
//! - strings are ISO-8601 / RFC 3339 (`T` or space between date and time, optional
//!   fraction, `Z`, `+hh:mm`, `+hhmm` or ` UTC`); no zone means UTC; a bare date is
//!   midnight UTC.
//!
//! [`normalise`] never panics and never consults the clock; [`check_plausible`]
//! is the separate judgement "between 2000-01-01 and a day after now".

use chrono::{DateTime, NaiveDate, NaiveDateTime};
use serde_json::Value;

/// 2000-01-01T00:00:00Z, unix ms: nothing the old bot wrote is older.
pub const PLAUSIBLE_FROM_MS: i64 = 946_684_800_000;
/// How far past "now" a timestamp may lie (clock skew, zones written wrongly).
pub const FUTURE_SLACK_MS: i64 = 24 * 60 * 60 * 1000;

/// Why a value is not a usable timestamp.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimestampError {
    /// Not a number and not a date-time string we can read.
    #[error("not a timestamp")]
    NotATimestamp,
    /// A number too large for any reading, NaN or infinite.
    #[error("out of range")]
    OutOfRange,
    /// Readable, but before 2000-01-01.
    #[error("{0} is before 2000-01-01")]
    TooOld(String),
    /// Readable, but more than a day after the import.
    #[error("{0} is in the future")]
    InFuture(String),
}

/// Reads a JSON value as an instant in unix ms (may be negative). No plausibility
/// judgement: see [`check_plausible`].
pub fn normalise(value: &Value) -> Result<i64, TimestampError> {
    match value {
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                from_integer(i128::from(i))
            } else if let Some(u) = n.as_u64() {
                from_integer(i128::from(u))
            } else {
                n.as_f64()
                    .ok_or(TimestampError::NotATimestamp)
                    .and_then(from_float)
            }
        }
        Value::String(s) => normalise_str(s),
        _ => Err(TimestampError::NotATimestamp),
    }
}

/// Reads a string: a number in any unit or an ISO-8601 date-time.
pub fn normalise_str(s: &str) -> Result<i64, TimestampError> {
    let s = s.trim();
    if s.is_empty() {
        return Err(TimestampError::NotATimestamp);
    }
    if let Ok(i) = s.parse::<i128>() {
        return from_integer(i);
    }
    let numeric = s
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E'));
    if numeric && let Ok(f) = s.parse::<f64>() {
        return from_float(f);
    }
    parse_iso(s).ok_or(TimestampError::NotATimestamp)
}

/// Integer in seconds, ms, µs or ns, chosen by magnitude (see the module doc).
pub fn from_integer(n: i128) -> Result<i64, TimestampError> {
    let magnitude = n.unsigned_abs();
    let ms = if magnitude < 100_000_000_000 {
        n * 1000
    } else if magnitude < 100_000_000_000_000 {
        n
    } else if magnitude < 100_000_000_000_000_000 {
        n.div_euclid(1000)
    } else {
        n.div_euclid(1_000_000)
    };
    i64::try_from(ms).map_err(|_| TimestampError::OutOfRange)
}

/// Float in seconds, ms, µs or ns, chosen by magnitude; rounded to the ms.
pub fn from_float(f: f64) -> Result<i64, TimestampError> {
    if !f.is_finite() {
        return Err(TimestampError::OutOfRange);
    }
    let magnitude = f.abs();
    let ms = if magnitude < 1e11 {
        f * 1000.0
    } else if magnitude < 1e14 {
        f
    } else if magnitude < 1e17 {
        f / 1000.0
    } else {
        f / 1e6
    };
    let ms = ms.round();
    // i64::MAX is not exactly representable; stay well inside it.
    if ms.abs() < 9.0e18 {
        Ok(ms as i64)
    } else {
        Err(TimestampError::OutOfRange)
    }
}

fn parse_iso(s: &str) -> Option<i64> {
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Some(dt.timestamp_millis());
    }
    // Zone spelled `Z`/` UTC` after a space-separated time, or `+hhmm`.
    let (body, utc_suffix) = match s
        .strip_suffix(" UTC")
        .or_else(|| s.strip_suffix("UTC"))
        .or_else(|| s.strip_suffix('Z'))
        .or_else(|| s.strip_suffix('z'))
    {
        Some(body) => (body.trim_end(), true),
        None => (s, false),
    };
    if !utc_suffix {
        for format in [
            "%Y-%m-%dT%H:%M:%S%.f%z",
            "%Y-%m-%d %H:%M:%S%.f%z",
            "%Y-%m-%dT%H:%M%z",
            "%Y-%m-%d %H:%M%z",
        ] {
            if let Ok(dt) = DateTime::parse_from_str(body, format) {
                return Some(dt.timestamp_millis());
            }
        }
    }
    for format in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(dt) = NaiveDateTime::parse_from_str(body, format) {
            return Some(dt.and_utc().timestamp_millis());
        }
    }
    for format in ["%Y-%m-%d", "%Y/%m/%d"] {
        if let Ok(date) = NaiveDate::parse_from_str(body, format) {
            return date
                .and_hms_opt(0, 0, 0)
                .map(|dt| dt.and_utc().timestamp_millis());
        }
    }
    None
}

/// Whether an instant lies between 2000-01-01 and a day after `now_ms`.
pub fn check_plausible(ms: i64, now_ms: u64) -> Result<u64, TimestampError> {
    let now = i64::try_from(now_ms).unwrap_or(i64::MAX);
    if ms < PLAUSIBLE_FROM_MS {
        Err(TimestampError::TooOld(iso(ms)))
    } else if ms > now.saturating_add(FUTURE_SLACK_MS) {
        Err(TimestampError::InFuture(iso(ms)))
    } else {
        // ms >= PLAUSIBLE_FROM_MS > 0 here.
        Ok(ms as u64)
    }
}

/// Reads and judges a value: a plausible unix-ms instant or why not.
pub fn to_unix_ms(value: &Value, now_ms: u64) -> Result<u64, TimestampError> {
    check_plausible(normalise(value)?, now_ms)
}

/// An instant as RFC 3339 (UTC, ms), or the raw number when chrono cannot show it.
pub fn iso(ms: i64) -> String {
    match DateTime::from_timestamp_millis(ms) {
        Some(dt) => dt.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        None => format!("{ms} ms"),
    }
}

/// A UTC calendar day from a cost key: `YYYY-MM-DD`, `YYYY/MM/DD`, `YYYYMMDD`, or
/// any timestamp [`normalise_str`] reads (its UTC day). Returns yyyymmdd.
pub fn parse_day(s: &str) -> Option<u32> {
    let s = s.trim();
    for format in ["%Y-%m-%d", "%Y/%m/%d", "%Y%m%d"] {
        if let Ok(date) = NaiveDate::parse_from_str(s, format) {
            return yyyymmdd(date);
        }
    }
    // Only date-times here: a bare number is never a day (it could be a user id).
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let ms = parse_iso(s)?;
    DateTime::from_timestamp_millis(ms).and_then(|dt| yyyymmdd(dt.date_naive()))
}

/// A day of an instant (yyyymmdd), for instants from year 0 on.
pub fn day_of_ms(ms: i64) -> Option<u32> {
    DateTime::from_timestamp_millis(ms).and_then(|dt| yyyymmdd(dt.date_naive()))
}

fn yyyymmdd(date: NaiveDate) -> Option<u32> {
    use chrono::Datelike;
    let year = u32::try_from(date.year()).ok().filter(|y| *y <= 9999)?;
    Some(year * 10_000 + date.month() * 100 + date.day())
}

/// Whether a day (yyyymmdd) lies between 2000-01-01 and the day after `now_ms`.
pub fn day_is_plausible(day: u32, now_ms: u64) -> bool {
    let now = i64::try_from(now_ms).unwrap_or(i64::MAX);
    let latest = day_of_ms(now.saturating_add(FUTURE_SLACK_MS)).unwrap_or(u32::MAX);
    (20_000_101..=latest).contains(&day)
}
