//! Reading one legacy file and taking its records apart.
//!
//! A file is read whole and parsed by serde_json; a syntax error is a
//! [`LegacyError::Malformed`] naming file, line and column, and aborts the import
//! before anything is written. Past that point nothing is an error: a record of
//! the wrong type is skipped with a reason, a field we cannot read is reported,
//! and whatever we do not model is kept as JSON in the record's `extra`.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::report::{FileReport, Implausible};
use super::timestamp::{self, TimestampError};

/// Files larger than this get a spinner while they are parsed.
pub(crate) const LARGE_FILE_BYTES: u64 = 5 * 1024 * 1024;

/// An error that stops the whole import before anything is written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LegacyError {
    /// The legacy directory does not exist or is not a directory.
    #[error(
        "{0} is not a directory (give the folder holding the old bot's sessions.json, tasks.json, ...)"
    )]
    NotADirectory(PathBuf),
    /// A file exists but cannot be read.
    #[error("cannot read {path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why: in the message, and so not a `source`, or a printed chain
        /// would name it twice.
        error: std::io::Error,
    },
    /// A file is not valid JSON. Nothing was imported.
    #[error(
        "{path}:{line}:{column}: malformed JSON: {message} (nothing was imported; fix or remove the file)"
    )]
    Malformed {
        /// The file.
        path: PathBuf,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// serde_json's description.
        message: String,
    },
}

/// What reading a file gave.
pub(crate) enum FileContent {
    /// No such file.
    Missing,
    /// 0 bytes or only whitespace (or a top-level `null`).
    Empty,
    /// A JSON document.
    Json(Value),
}

/// Reads and parses `dir/name`.
pub(crate) fn read_json(
    dir: &Path,
    name: &str,
    progress: &super::progress::Progress,
) -> Result<FileContent, LegacyError> {
    let path = dir.join(name);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(FileContent::Missing),
        Err(error) => return Err(LegacyError::Read { path, error }),
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(FileContent::Empty);
    }
    let spinner = (bytes.len() as u64 > LARGE_FILE_BYTES).then(|| {
        progress.spinner(format!(
            "parsing {name} ({:.1} MB)",
            bytes.len() as f64 / 1e6
        ))
    });
    let parsed = serde_json::from_slice::<Value>(&bytes);
    if let Some(spinner) = spinner {
        spinner.finish_and_clear();
    }
    match parsed {
        Ok(Value::Null) => Ok(FileContent::Empty),
        Ok(value) => Ok(FileContent::Json(value)),
        Err(e) => Err(LegacyError::Malformed {
            path,
            line: e.line(),
            column: e.column(),
            message: strip_position(&e.to_string()),
        }),
    }
}

/// serde_json appends " at line L column C"; we print the position first instead.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

/// The records of a file: from an array (`[i]`), a keyed object (the key), or
/// either of those under one wrapper key such as `{"tasks": ...}`. The flag says
/// whether the records were keyed (the key is then their id).
///
/// A wrapper is recognised when the object has a key from `wrappers` holding an
/// array or object and every other key holds a scalar (version, timestamps...):
/// those scalars are reported as notes, not imported.
pub(crate) fn records(
    value: Value,
    wrappers: &[&str],
    report: &mut FileReport,
) -> Result<(bool, Vec<(String, Value)>), String> {
    let value = unwrap(value, wrappers, report);
    match value {
        Value::Array(items) => Ok((
            false,
            items
                .into_iter()
                .enumerate()
                .map(|(i, v)| (format!("[{i}]"), v))
                .collect(),
        )),
        Value::Object(map) => Ok((true, map.into_iter().collect())),
        other => Err(format!(
            "the file holds {}, not an object or an array of records",
            type_name(&other)
        )),
    }
}

/// Removes one wrapper level (see [`records`]).
pub(crate) fn unwrap(value: Value, wrappers: &[&str], report: &mut FileReport) -> Value {
    let Value::Object(mut map) = value else {
        return value;
    };
    let wrapper = wrappers.iter().find(|w| {
        map.get(**w).is_some_and(|v| v.is_array() || v.is_object())
            && map
                .iter()
                .all(|(k, v)| k == **w || !(v.is_array() || v.is_object()))
    });
    match wrapper.and_then(|w| map.remove(*w).map(|inner| (*w, inner))) {
        Some((name, inner)) => {
            for (key, v) in &map {
                report.note(format!(
                    "top-level `{key}` = {v} beside `{name}` is not imported"
                ));
            }
            inner
        }
        None => Value::Object(map),
    }
}

/// "a number", "an array", ... for messages.
pub(crate) fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// One legacy record being taken apart. Each `take_*` removes the field it read,
/// so what is left at the end — plus the raw value of every field that could not
/// be used — is the record's `extra`.
pub(crate) struct Fields<'r> {
    map: Map<String, Value>,
    rejected: Map<String, Value>,
    report: &'r mut FileReport,
    record: String,
    now_ms: u64,
}

impl<'r> Fields<'r> {
    pub(crate) fn new(
        map: Map<String, Value>,
        report: &'r mut FileReport,
        record: &str,
        now_ms: u64,
    ) -> Self {
        Fields {
            map,
            rejected: Map::new(),
            report,
            record: record.to_string(),
            now_ms,
        }
    }

    /// The first present, non-null field of `names`, removed.
    pub(crate) fn take(&mut self, names: &[&str]) -> Option<(String, Value)> {
        let name = names
            .iter()
            .find(|n| self.map.get(**n).is_some_and(|v| !v.is_null()))?;
        self.map.remove_entry(*name)
    }

    /// Keeps a field's raw value in `extra` (it was read but could not be used).
    pub(crate) fn reject(&mut self, name: String, value: Value) {
        self.rejected.insert(name, value);
    }

    /// A string field (numbers are accepted and written out).
    pub(crate) fn take_string(&mut self, names: &[&str]) -> Option<String> {
        let (name, value) = self.take(names)?;
        match value {
            Value::String(s) => Some(s),
            Value::Number(n) => Some(n.to_string()),
            other => {
                self.reject(name, other);
                None
            }
        }
    }

    /// An integer id field: a JSON integer or a string of one.
    pub(crate) fn take_i64(&mut self, names: &[&str]) -> Option<i64> {
        let (name, value) = self.take(names)?;
        match as_i64(&value) {
            Some(n) => Some(n),
            None => {
                self.reject(name, value);
                None
            }
        }
    }

    /// A non-negative number (a float or a numeric string).
    pub(crate) fn take_f64(&mut self, names: &[&str]) -> Option<f64> {
        let (name, value) = self.take(names)?;
        match as_f64(&value).filter(|f| f.is_finite() && *f >= 0.0) {
            Some(f) => Some(f),
            None => {
                self.reject(name, value);
                None
            }
        }
    }

    /// A non-negative integer count (floats are truncated).
    pub(crate) fn take_u64(&mut self, names: &[&str]) -> Option<u64> {
        self.take_f64(names).map(|f| f as u64)
    }

    /// A timestamp field, normalised to unix ms. A value that cannot be read or is
    /// implausible is reported (with `action`, what the caller does instead), kept
    /// raw in `extra`, and gives `None`.
    pub(crate) fn take_time(&mut self, names: &[&str], action: &'static str) -> Option<u64> {
        let (name, value) = self.take(names)?;
        match timestamp::to_unix_ms(&value, self.now_ms) {
            Ok(ms) => Some(ms),
            Err(problem) => {
                self.implausible(&name, &value, &problem, action);
                self.reject(name, value);
                None
            }
        }
    }

    fn implausible(
        &mut self,
        field: &str,
        raw: &Value,
        problem: &TimestampError,
        action: &'static str,
    ) {
        self.report.implausible.push(Implausible {
            file: self.report.file.clone(),
            record: self.record.clone(),
            field: field.to_string(),
            raw: raw.to_string(),
            problem: problem.to_string(),
            action: action.to_string(),
        });
    }

    /// Whether any field is left.
    pub(crate) fn is_empty(&self) -> bool {
        self.map.is_empty() && self.rejected.is_empty()
    }

    /// Names of the fields left unread.
    pub(crate) fn left_names(&self) -> Vec<String> {
        self.map
            .keys()
            .chain(self.rejected.keys())
            .cloned()
            .collect()
    }

    /// The file report, for notes.
    pub(crate) fn report(&mut self) -> &mut FileReport {
        self.report
    }

    /// Everything not taken, plus rejected raw values and `additions`, as a JSON
    /// object string; `None` when there is nothing.
    pub(crate) fn into_extra(mut self, additions: Vec<(&str, Value)>) -> Option<String> {
        for (k, v) in self.rejected {
            // A field both rejected and still present keeps the rejected one under
            // a distinct name, so neither is lost.
            if self.map.contains_key(&k) {
                self.map.insert(format!("{k}__rejected"), v);
            } else {
                self.map.insert(k, v);
            }
        }
        for (k, v) in additions {
            self.map.insert(k.to_string(), v);
        }
        (!self.map.is_empty()).then(|| canonical_json(&Value::Object(self.map)))
    }
}

/// An integer from a JSON integer, an integral float or a numeric string.
pub(crate) fn as_i64(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                .map(|f| f as i64)
        }),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A float from a JSON number or a numeric string.
pub(crate) fn as_f64(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// JSON with object keys sorted at every level, whatever serde_json's map type is:
/// the stable text fingerprints are computed from.
pub(crate) fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(v, out);
            }
            out.push('}');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// FNV-1a, 64 bits, as 16 hex digits: a fingerprint stable across Rust releases
/// and platforms (std's hasher promises neither).
pub(crate) fn fingerprint(text: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016x}")
}
