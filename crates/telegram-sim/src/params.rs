//! Bot API request parameters, read uniformly from the query string and a
//! JSON, `application/x-www-form-urlencoded` or `multipart/form-data` body.
//!
//! Like the real API, scalar parameters may be given as JSON values or as
//! strings (`"chat_id": "42"`), and structured ones (`reply_parameters`,
//! `commands`) as JSON or as a JSON-encoded string.

use serde_json::{Map, Value};

use super::{
    error::ApiFailure,
    multipart::{self, Part},
};

/// Parsed parameters of one Bot API call.
#[derive(Debug, Default)]
pub(crate) struct Params {
    fields: Map<String, Value>,
    files: Vec<Part>,
}

impl Params {
    /// Parses query string and body according to `content_type`. Body fields
    /// override query fields of the same name.
    pub(crate) fn parse(
        content_type: Option<&str>,
        query: Option<&str>,
        body: &[u8],
    ) -> Result<Self, ApiFailure> {
        let mut params = Self::default();
        if let Some(query) = query {
            params.extend_form(query.as_bytes());
        }
        let mime = content_type
            .and_then(|ct| ct.split(';').next())
            .map(|m| m.trim().to_ascii_lowercase())
            .unwrap_or_default();
        match mime.as_str() {
            "application/x-www-form-urlencoded" => params.extend_form(body),
            "multipart/form-data" => params.extend_multipart(content_type.unwrap_or(""), body)?,
            _ if body.iter().all(u8::is_ascii_whitespace) => {}
            _ => params.extend_json(body)?,
        }
        Ok(params)
    }

    fn extend_form(&mut self, raw: &[u8]) {
        let raw = String::from_utf8_lossy(raw);
        for pair in raw.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            self.fields.insert(
                percent_decode(key, true),
                Value::String(percent_decode(value, true)),
            );
        }
    }

    fn extend_json(&mut self, body: &[u8]) -> Result<(), ApiFailure> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| ApiFailure::bad_request(format!("can't parse JSON body: {e}")))?;
        match value {
            Value::Object(map) => {
                self.fields.extend(map);
                Ok(())
            }
            _ => Err(ApiFailure::bad_request("JSON body must be an object")),
        }
    }

    fn extend_multipart(&mut self, content_type: &str, body: &[u8]) -> Result<(), ApiFailure> {
        let bad = |e: multipart::MultipartError| {
            ApiFailure::bad_request(format!("can't parse multipart body: {e}"))
        };
        let boundary = multipart::boundary(content_type).map_err(bad)?;
        for part in multipart::parse(body, &boundary).map_err(bad)? {
            if part.file_name.is_some() {
                self.files.push(part);
            } else {
                let text = String::from_utf8_lossy(&part.data).into_owned();
                self.fields.insert(part.name, Value::String(text));
            }
        }
        Ok(())
    }

    /// Whether a non-null value is present.
    pub(crate) fn has(&self, key: &str) -> bool {
        self.fields.get(key).is_some_and(|v| !v.is_null())
    }

    /// A scalar parameter as text (numbers and booleans are stringified).
    pub(crate) fn str(&self, key: &str) -> Option<String> {
        match self.fields.get(key)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }

    /// An integer parameter given as a JSON number or a decimal string.
    pub(crate) fn i64(&self, key: &str) -> Option<i64> {
        match self.fields.get(key)? {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    /// A boolean parameter (`true`, `"true"`, `1`, `"1"`).
    pub(crate) fn bool(&self, key: &str) -> Option<bool> {
        match self.fields.get(key)? {
            Value::Bool(b) => Some(*b),
            Value::Number(n) => Some(n.as_i64() != Some(0)),
            Value::String(s) => Some(matches!(s.trim(), "true" | "True" | "1")),
            _ => None,
        }
    }

    /// A structured parameter given as JSON or as a JSON-encoded string.
    pub(crate) fn json(&self, key: &str) -> Result<Option<Value>, ApiFailure> {
        match self.fields.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => serde_json::from_str(s)
                .map(Some)
                .map_err(|_| ApiFailure::bad_request(format!("can't parse {key} JSON object"))),
            Some(other) => Ok(Some(other.clone())),
        }
    }

    /// The uploaded file part with this field name.
    pub(crate) fn file(&self, field: &str) -> Option<&Part> {
        self.files.iter().find(|p| p.name == field)
    }
}

/// Decodes `%XX` escapes (and `+` as space when `plus_as_space`); invalid
/// escapes are kept literally, invalid UTF-8 is replaced.
pub(crate) fn percent_decode(input: &str, plus_as_space: bool) -> String {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => match bytes.get(i + 1..i + 3).and_then(hex_pair) {
                Some(b) => {
                    out.push(b);
                    i += 3;
                    continue;
                }
                None => out.push(b'%'),
            },
            b'+' if plus_as_space => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_pair(pair: &[u8]) -> Option<u8> {
    let hi = char::from(pair[0]).to_digit(16)?;
    let lo = char::from(pair[1]).to_digit(16)?;
    u8::try_from(hi * 16 + lo).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_body_and_query_merge() {
        let p = Params::parse(
            Some("application/json"),
            Some("chat_id=1&text=q"),
            br#"{"text":"hi","reply_parameters":{"message_id":3}}"#,
        )
        .unwrap();
        assert_eq!(p.i64("chat_id"), Some(1));
        assert_eq!(p.str("text").as_deref(), Some("hi"));
        assert_eq!(
            p.json("reply_parameters").unwrap().unwrap()["message_id"],
            3
        );
    }

    #[test]
    fn form_body_is_decoded() {
        let p = Params::parse(
            Some("application/x-www-form-urlencoded"),
            None,
            b"chat_id=-100&text=a+b%26c%F0%9F%98%80&commands=%5B%5D",
        )
        .unwrap();
        assert_eq!(p.i64("chat_id"), Some(-100));
        assert_eq!(p.str("text").as_deref(), Some("a b&c😀"));
        assert_eq!(p.json("commands").unwrap(), Some(Value::Array(vec![])));
    }

    #[test]
    fn malformed_json_is_a_bad_request() {
        let err = Params::parse(Some("application/json"), None, b"{\"chat_id\": ").unwrap_err();
        assert_eq!(err.code, 400);
        assert!(
            err.description
                .starts_with("Bad Request: can't parse JSON body")
        );
        let err = Params::parse(Some("application/json"), None, b"[1]").unwrap_err();
        assert_eq!(err.code, 400);
    }

    #[test]
    fn empty_body_is_fine() {
        let p = Params::parse(None, None, b"").unwrap();
        assert!(!p.has("chat_id"));
    }

    #[test]
    fn multipart_separates_files() {
        let body = b"--B\r\nContent-Disposition: form-data; name=\"chat_id\"\r\n\r\n7\r\n\
--B\r\nContent-Disposition: form-data; name=\"doc\"; filename=\"r.txt\"\r\n\r\nhello\r\n--B--\r\n";
        let p = Params::parse(Some("multipart/form-data; boundary=B"), None, body).unwrap();
        assert_eq!(p.i64("chat_id"), Some(7));
        assert_eq!(p.file("doc").unwrap().data, b"hello");
        assert!(Params::parse(Some("multipart/form-data"), None, body).is_err());
    }

    #[test]
    fn percent_decoding_is_lenient() {
        assert_eq!(percent_decode("100%", false), "100%");
        assert_eq!(percent_decode("%zz%4", false), "%zz%4");
        assert_eq!(percent_decode("a+b", false), "a+b");
        assert_eq!(percent_decode("%FF", false), "\u{FFFD}");
    }
}
