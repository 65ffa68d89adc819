//! Extractors whose rejections are our JSON errors: axum's own answer a bad query
//! string, path or body with plain text, which would break the `{"error","code"}`
//! contract. Also the JSON integer rule of JSON Schema (and so of the OpenAPI
//! document): `225.0` is the integer 225.

use axum::extract::{FromRequest, FromRequestParts};

use super::error::ApiError;

/// `Query<T>` rejecting with a JSON 400.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub(crate) struct ApiQuery<T>(pub T);

/// `Path<T>` rejecting with a JSON 400.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub(crate) struct ApiPath<T>(pub T);

/// `Json<T>` rejecting with a JSON 400 (413/415 kept).
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub(crate) struct ApiJson<T>(pub T);

/// An `i64` given as a JSON integer or as a number with no fractional part
/// (`225.0`), as JSON Schema's `integer` allows; `225.5` and out-of-range
/// numbers are rejected.
pub(crate) fn json_integer<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    let number = <serde_json::Number as serde::Deserialize>::deserialize(d)?;
    integer_of(&number).ok_or_else(|| {
        serde::de::Error::custom(format!("{number} is not a whole number in the i64 range"))
    })
}

/// [`json_integer`] for an optional field (absent or `null` is `None`).
pub(crate) fn optional_json_integer<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<i64>, D::Error> {
    let number = <Option<serde_json::Number> as serde::Deserialize>::deserialize(d)?;
    number
        .map(|n| {
            integer_of(&n).ok_or_else(|| {
                serde::de::Error::custom(format!("{n} is not a whole number in the i64 range"))
            })
        })
        .transpose()
}

fn integer_of(number: &serde_json::Number) -> Option<i64> {
    if let Some(i) = number.as_i64() {
        return Some(i);
    }
    let f = number.as_f64()?;
    // Beyond 2^53 a float no longer names one integer (…993.0 reads as …992).
    const EXACT: f64 = 9_007_199_254_740_992.0;
    (f.fract() == 0.0 && (-EXACT..=EXACT).contains(&f)).then_some(f as i64)
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    struct Ids {
        #[serde(deserialize_with = "super::json_integer")]
        user: i64,
        #[serde(default, deserialize_with = "super::optional_json_integer")]
        chat: Option<i64>,
    }

    fn parse(text: &str) -> Result<Ids, serde_json::Error> {
        serde_json::from_str(text)
    }

    #[test]
    fn whole_numbers_in_any_notation_are_integers() {
        let ids = parse(r#"{"user": 225.0, "chat": -565.0}"#).expect("whole floats");
        assert_eq!((ids.user, ids.chat), (225, Some(-565)));
        let ids = parse(r#"{"user": 7, "chat": null}"#).expect("plain");
        assert_eq!((ids.user, ids.chat), (7, None));
        assert_eq!(parse(r#"{"user": 1e3}"#).expect("exponent").user, 1000);
        assert_eq!(parse(r#"{"user": 7}"#).expect("no chat").chat, None);
    }

    #[test]
    fn fractions_out_of_range_and_non_numbers_are_refused() {
        for bad in [
            r#"{"user": 225.5}"#,
            r#"{"user": 9223372036854775808}"#,
            r#"{"user": 1e19}"#,
            r#"{"user": 9007199254740993.0}"#,
            r#"{"user": -1e19}"#,
            r#"{"user": "7"}"#,
            r#"{"user": 1, "chat": 0.5}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad} accepted");
        }
    }
}
