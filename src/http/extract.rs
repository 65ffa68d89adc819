//! Extractors whose rejections are our JSON errors: axum's own answer a bad query
//! string, path or body with plain text, which would break the `{"error","code"}`
//! contract.

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
