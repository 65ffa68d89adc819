//! Error types: [`SimError`] for the control side, [`ApiFailure`] for the
//! error answers of the Bot API side.

use std::{net::SocketAddr, time::Duration};

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde_json::json;

use super::{html::HtmlError, redact::masked_token};

/// Errors of the control API.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The listening socket could not be bound.
    #[error("cannot bind the Telegram simulator to {addr}: {error}")]
    Bind {
        /// Requested address.
        addr: SocketAddr,
        /// Underlying error: in the message, and so not a `source`, or a
        /// printed chain would name it twice.
        error: std::io::Error,
    },
    /// The token is not registered (shown redacted).
    #[error("bot token {0} is not registered in the simulator")]
    UnknownBot(String),
    /// The token cannot be used in a Bot API URL.
    #[error(
        "invalid bot token {0}: must be non-empty, without '/', whitespace or control characters"
    )]
    InvalidToken(String),
    /// The referenced message does not exist (or was deleted).
    #[error("message {message_id} not found in chat {chat_id}")]
    MessageNotFound {
        /// Chat id.
        chat_id: i64,
        /// Message id.
        message_id: i32,
    },
    /// A raw update was not a JSON object with exactly one update field.
    #[error("invalid update: {0}")]
    InvalidUpdate(String),
    /// A `wait_for*` condition did not become true in time.
    #[error("timed out after {waited:?} waiting for {what}")]
    Timeout {
        /// How long it waited.
        waited: Duration,
        /// What it waited for.
        what: String,
    },
    /// A control request was malformed.
    #[error("bad control request: {0}")]
    BadRequest(String),
    /// The simulator was shut down.
    #[error("the Telegram simulator has shut down")]
    ShutDown,
}

impl SimError {
    pub(crate) fn unknown_bot(token: &str) -> Self {
        Self::UnknownBot(masked_token(token))
    }

    /// HTTP status used by the control routes for this error.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Self::UnknownBot(_) | Self::MessageNotFound { .. } => StatusCode::NOT_FOUND,
            Self::InvalidToken(_) | Self::InvalidUpdate(_) | Self::BadRequest(_) => {
                StatusCode::BAD_REQUEST
            }
            Self::Timeout { .. } => StatusCode::REQUEST_TIMEOUT,
            Self::ShutDown => StatusCode::SERVICE_UNAVAILABLE,
            Self::Bind { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for SimError {
    fn into_response(self) -> Response {
        let body = json!({ "ok": false, "error": self.to_string() });
        (self.status(), Json(body)).into_response()
    }
}

/// An error answer of the Bot API: `{"ok":false,"error_code":..,"description":..}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code} {description}")]
pub struct ApiFailure {
    /// HTTP status and `error_code`.
    pub code: u16,
    /// `description`.
    pub description: String,
    /// `parameters.retry_after`, for 429.
    pub retry_after: Option<u64>,
}

impl ApiFailure {
    /// An error with an arbitrary code and description.
    pub fn new(code: u16, description: impl Into<String>) -> Self {
        Self {
            code,
            description: description.into(),
            retry_after: None,
        }
    }

    /// 400 with `Bad Request: <what>`.
    pub fn bad_request(what: impl std::fmt::Display) -> Self {
        Self::new(400, format!("Bad Request: {what}"))
    }

    /// 400 `Bad Request: can't parse entities: <detail>`.
    pub fn cant_parse_entities(detail: impl std::fmt::Display) -> Self {
        Self::bad_request(format!("can't parse entities: {detail}"))
    }

    /// 401 `Unauthorized`.
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized")
    }

    /// 404 `Not Found`.
    pub fn not_found() -> Self {
        Self::new(404, "Not Found")
    }

    /// 409 conflict with another `getUpdates`.
    pub fn conflict() -> Self {
        Self::new(
            409,
            "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running",
        )
    }

    /// 413 for oversized requests.
    pub fn too_large() -> Self {
        Self::new(413, "Request Entity Too Large")
    }

    /// 429 with `retry_after`.
    pub fn retry_after(seconds: u64) -> Self {
        Self {
            code: 429,
            description: format!("Too Many Requests: retry after {seconds}"),
            retry_after: Some(seconds),
        }
    }

    /// A 5xx error (other statuses are mapped to 500).
    pub fn server_error(status: u16) -> Self {
        let status = if (500..=599).contains(&status) {
            status
        } else {
            500
        };
        let reason = StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Server Error");
        Self::new(status, reason)
    }

    /// HTTP status to answer with (invalid codes become 500).
    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl From<HtmlError> for ApiFailure {
    fn from(err: HtmlError) -> Self {
        Self::cant_parse_entities(err)
    }
}

impl IntoResponse for ApiFailure {
    fn into_response(self) -> Response {
        let mut body = json!({
            "ok": false,
            "error_code": self.code,
            "description": self.description,
        });
        if let Some(seconds) = self.retry_after {
            body["parameters"] = json!({ "retry_after": seconds });
        }
        (self.status(), Json(body)).into_response()
    }
}
