//! Who may read what: every route's [`Access`], and the check that read routes
//! pass before their handler runs.
//!
//! Invariants: the probes (`/health`, `/livez`, `/readyz`) are always open, so
//! service managers and load balancers need no secret; when `http.bind` is a
//! loopback address the read routes are open too (only this machine can reach
//! them); on any other address every read route — `/api/*`, `/metrics`, the
//! dashboard — needs a bearer token, the read-only one (`http.read_token_env`)
//! or the admin one, compared in constant time, and is refused (403) when
//! neither is configured. Admin routes always need the admin token (see
//! `admin`). The dashboard page alone also takes the token as `?token=`, since a
//! browser cannot add a header to a navigation.

use std::net::SocketAddr;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::AppState;
use super::error::ApiError;

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Nothing: the health probes.
    Open,
    /// Nothing on a loopback bind; the read or admin token on any other.
    Read,
    /// The admin token, always.
    Admin,
}

/// The path of the dashboard page, the one route that takes `?token=`.
const PAGE_PATH: &str = "/";

/// Whether `bind` only accepts connections from this machine.
pub(crate) fn is_loopback(bind: &str) -> bool {
    match bind.parse::<SocketAddr>() {
        Ok(addr) => addr.ip().is_loopback(),
        Err(_) => bind
            .rsplit_once(':')
            .is_some_and(|(host, _)| host.eq_ignore_ascii_case("localhost")),
    }
}

/// The `token` parameter of a query string (tokens are URL-safe, not decoded).
fn token_from_query(query: Option<&str>) -> Option<&str> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == "token")
        .map(|(_, v)| v)
}

fn matches(given: &str, expected: Option<&str>) -> bool {
    expected.is_some_and(|e| bool::from(given.as_bytes().ct_eq(e.as_bytes())))
}

/// Middleware of the [`Access::Read`] routes: lets the request through when the
/// server listens on loopback or the request carries the read or admin token.
pub(crate) async fn require_reader(
    State(api): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    if api.loopback {
        return next.run(req).await;
    }
    let admin = api.ctx.admin_token.as_deref();
    let read = api.read_token.as_deref();
    if admin.is_none() && read.is_none() {
        let http = &api.ctx.config.http;
        return ApiError::forbidden(format!(
            "http.bind {} is not a loopback address: set ${} (read-only) or ${} to open the API",
            http.bind, http.read_token_env, http.admin_token_env
        ))
        .into_response();
    }
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let given = bearer.or_else(|| {
        (req.uri().path() == PAGE_PATH)
            .then(|| token_from_query(req.uri().query()))
            .flatten()
    });
    match given {
        Some(given) if matches(given, read) || matches(given, admin) => next.run(req).await,
        Some(_) => ApiError::unauthorized("wrong bearer token").into_response(),
        None if req.uri().path() == PAGE_PATH => {
            ApiError::unauthorized("the dashboard needs a token: open /?token=<token>")
                .into_response()
        }
        None => ApiError::unauthorized(
            "this address is not loopback: send Authorization: Bearer <token> (the read or admin token)",
        )
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::{is_loopback, token_from_query};

    #[test]
    fn loopback_binds_are_recognised() {
        assert!(is_loopback("127.0.0.1:8080"));
        assert!(is_loopback("[::1]:8080"));
        assert!(is_loopback("localhost:8080"));
        assert!(!is_loopback("0.0.0.0:8080"));
        assert!(!is_loopback("[::]:8080"));
        assert!(!is_loopback("192.168.1.4:8080"));
        assert!(!is_loopback("example.org:80"));
    }

    #[test]
    fn the_token_is_read_from_the_query() {
        assert_eq!(token_from_query(Some("a=1&token=xyz")), Some("xyz"));
        assert_eq!(token_from_query(Some("tokens=1")), None);
        assert_eq!(token_from_query(None), None);
    }
}
