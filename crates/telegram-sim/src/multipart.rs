//! A small, bounded `multipart/form-data` parser (RFC 7578) for whole
//! in-memory bodies — enough for what Bot API clients upload, without
//! requiring axum's `multipart` feature.

/// Most parts accepted in one body.
const MAX_PARTS: usize = 64;

/// One part of a multipart body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Part {
    /// `name` of the `Content-Disposition` header.
    pub name: String,
    /// `filename`, present for file parts.
    pub file_name: Option<String>,
    /// Raw content.
    pub data: Vec<u8>,
}

/// Why a multipart body could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum MultipartError {
    /// The content type has no usable `boundary` parameter.
    #[error("multipart boundary is missing")]
    MissingBoundary,
    /// The first delimiter line was not found.
    #[error("multipart body does not start with the boundary")]
    NoDelimiter,
    /// A part's headers were not terminated by an empty line.
    #[error("multipart part headers are not terminated")]
    UnterminatedHeaders,
    /// A part lacks `Content-Disposition: form-data; name=...`.
    #[error("multipart part has no form-data name")]
    MissingName,
    /// The closing delimiter was not found.
    #[error("multipart body is truncated")]
    Truncated,
    /// More than the accepted number of parts.
    #[error("too many multipart parts (more than {MAX_PARTS})")]
    TooManyParts,
}

/// Extracts the `boundary` parameter of a `multipart/form-data` content type.
pub(crate) fn boundary(content_type: &str) -> Result<String, MultipartError> {
    content_type
        .split(';')
        .skip(1)
        .filter_map(|param| param.split_once('='))
        .find(|(key, _)| key.trim().eq_ignore_ascii_case("boundary"))
        .map(|(_, value)| value.trim().trim_matches('"').to_owned())
        .filter(|b| !b.is_empty() && b.len() <= 200)
        .ok_or(MultipartError::MissingBoundary)
}

/// Parses a complete multipart body delimited by `boundary`.
pub(crate) fn parse(body: &[u8], boundary: &str) -> Result<Vec<Part>, MultipartError> {
    let delimiter = format!("--{boundary}").into_bytes();
    let close = format!("\r\n--{boundary}").into_bytes();
    let start = find(body, &delimiter, 0).ok_or(MultipartError::NoDelimiter)?;
    let mut pos = start + delimiter.len();
    let mut parts = Vec::new();
    loop {
        if body[pos..].starts_with(b"--") {
            return Ok(parts);
        }
        if parts.len() == MAX_PARTS {
            return Err(MultipartError::TooManyParts);
        }
        pos = skip_line_end(body, pos);
        let headers_end =
            find(body, b"\r\n\r\n", pos).ok_or(MultipartError::UnterminatedHeaders)?;
        let headers = String::from_utf8_lossy(&body[pos..headers_end]);
        let (name, file_name) = disposition(&headers)?;
        let data_start = headers_end + 4;
        let data_end = find(body, &close, data_start).ok_or(MultipartError::Truncated)?;
        parts.push(Part {
            name,
            file_name,
            data: body[data_start..data_end].to_vec(),
        });
        pos = data_end + close.len();
    }
}

fn skip_line_end(body: &[u8], pos: usize) -> usize {
    if body[pos..].starts_with(b"\r\n") {
        pos + 2
    } else if body[pos..].starts_with(b"\n") {
        pos + 1
    } else {
        pos
    }
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() || from > haystack.len() {
        return None;
    }
    haystack[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

/// Reads `name` and `filename` from the part's `Content-Disposition` header.
fn disposition(headers: &str) -> Result<(String, Option<String>), MultipartError> {
    let line = headers
        .lines()
        .find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case("content-disposition")
                .then_some(value)
        })
        .ok_or(MultipartError::MissingName)?;
    let mut name = None;
    let mut file_name = None;
    for (key, value) in disposition_params(line) {
        match key.to_ascii_lowercase().as_str() {
            "name" => name = Some(value),
            "name*" => name = Some(decode_ext_value(&value)),
            "filename" => file_name = Some(value),
            "filename*" => file_name = Some(decode_ext_value(&value)),
            _ => {}
        }
    }
    let name = name
        .filter(|n| !n.is_empty())
        .ok_or(MultipartError::MissingName)?;
    Ok((name, file_name))
}

/// Splits `form-data; name="a"; filename="b \"c\""` into key/value pairs,
/// honouring quoted strings with backslash escapes.
fn disposition_params(line: &str) -> Vec<(String, String)> {
    let mut params = Vec::new();
    let mut rest = line;
    while let Some(semi) = rest.find(';') {
        rest = &rest[semi + 1..];
        let Some(eq) = rest.find('=') else { break };
        let key = rest[..eq].trim().to_owned();
        let (value, remaining) = param_value(&rest[eq + 1..]);
        params.push((key, value));
        rest = remaining;
    }
    params
}

fn param_value(input: &str) -> (String, &str) {
    let input = input.trim_start();
    let Some(quoted) = input.strip_prefix('"') else {
        let end = input.find(';').unwrap_or(input.len());
        return (input[..end].trim().to_owned(), &input[end..]);
    };
    let mut value = String::new();
    let mut chars = quoted.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => {
                if let Some((_, escaped)) = chars.next() {
                    value.push(escaped);
                }
            }
            '"' => return (value, &quoted[i + 1..]),
            _ => value.push(c),
        }
    }
    (value, "")
}

/// Decodes an RFC 5987 value such as `utf-8''%E2%82%AC.txt`.
fn decode_ext_value(value: &str) -> String {
    let encoded = value.splitn(3, '\'').nth(2).unwrap_or(value);
    super::params::percent_decode(encoded, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(boundary: &str, parts: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, file, data) in parts {
            out.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
            let mut disp = format!("Content-Disposition: form-data; name=\"{name}\"");
            if let Some(file) = file {
                disp.push_str(&format!("; filename=\"{file}\""));
            }
            out.extend_from_slice(disp.as_bytes());
            out.extend_from_slice(b"\r\nContent-Type: application/octet-stream\r\n\r\n");
            out.extend_from_slice(data);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        out
    }

    #[test]
    fn parses_fields_and_files() {
        let b = body(
            "XyZ",
            &[
                ("chat_id", None, b"42"),
                ("file", Some("a \\\"q\\\".txt"), b"line1\r\nline2"),
            ],
        );
        let parts = parse(&b, "XyZ").unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].name, "chat_id");
        assert_eq!(parts[0].data, b"42");
        assert_eq!(parts[1].file_name.as_deref(), Some("a \"q\".txt"));
        assert_eq!(parts[1].data, b"line1\r\nline2");
    }

    #[test]
    fn reads_boundary_parameter() {
        assert_eq!(
            boundary("multipart/form-data; boundary=\"abc\"").unwrap(),
            "abc"
        );
        assert_eq!(
            boundary("multipart/form-data").unwrap_err(),
            MultipartError::MissingBoundary
        );
    }

    #[test]
    fn decodes_extended_names() {
        let raw =
            b"--b\r\nContent-Disposition: form-data; name*=utf-8''caf%C3%A9\r\n\r\nx\r\n--b--";
        let parts = parse(raw, "b").unwrap();
        assert_eq!(parts[0].name, "café");
    }

    #[test]
    fn rejects_broken_bodies() {
        assert_eq!(
            parse(b"nothing", "b").unwrap_err(),
            MultipartError::NoDelimiter
        );
        assert_eq!(
            parse(
                b"--b\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nxx",
                "b"
            )
            .unwrap_err(),
            MultipartError::Truncated
        );
        assert_eq!(
            parse(b"--b\r\nX: y\r\n\r\nxx\r\n--b--", "b").unwrap_err(),
            MultipartError::MissingName
        );
        assert_eq!(
            parse(b"--b\r\nContent-Disposition: form-data", "b").unwrap_err(),
            MultipartError::UnterminatedHeaders
        );
        assert!(parse(b"--b", "b").is_err());
        assert_eq!(parse(b"--b--", "b").unwrap(), Vec::new());
    }
}
