//! Reading a request body within bounds, for every HTTP face: at most
//! [`MAX_BODY_BYTES`] (refused at once when `Content-Length` says more),
//! within [`BODY_READ_TIMEOUT`] (a client that stalls or trickles its body
//! is cut off instead of holding a connection). Faces read the body only
//! after the caller is authenticated, so an anonymous client never makes
//! the daemon wait for one.

use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::header::CONTENT_LENGTH;
use hyper::HeaderMap;

/// Largest request body read.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// The longest a client may take to send its whole body.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a body was not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// Over [`MAX_BODY_BYTES`] (HTTP 413).
    TooLarge,
    /// Not all there within [`BODY_READ_TIMEOUT`] (HTTP 408).
    TooSlow,
    /// The connection failed while it was read (HTTP 400).
    Broken,
}

impl BodyError {
    pub fn code(self) -> &'static str {
        match self {
            BodyError::TooLarge => "body_too_large",
            BodyError::TooSlow => "body_timeout",
            BodyError::Broken => "bad_body",
        }
    }

    pub fn message(self) -> String {
        match self {
            BodyError::TooLarge => {
                format!("the request body must be at most {MAX_BODY_BYTES} bytes")
            }
            BodyError::TooSlow => format!(
                "the request body did not arrive within {} s",
                BODY_READ_TIMEOUT.as_secs()
            ),
            BodyError::Broken => "the request body could not be read".into(),
        }
    }
}

/// The whole body, within the bounds.
pub async fn read(headers: &HeaderMap, body: Body) -> Result<Bytes, BodyError> {
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(BodyError::TooLarge);
    }
    match tokio::time::timeout(
        BODY_READ_TIMEOUT,
        Limited::new(body, MAX_BODY_BYTES).collect(),
    )
    .await
    {
        Err(_) => Err(BodyError::TooSlow),
        Ok(Ok(b)) => Ok(b.to_bytes()),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => Err(BodyError::TooLarge),
        Ok(Err(_)) => Err(BodyError::Broken),
    }
}
