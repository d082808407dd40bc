//! Reading a request body within bounds, for every HTTP face: at most
//! [`MAX_BODY_BYTES`] (refused at once when `Content-Length` says more),
//! within [`BODY_READ_TIMEOUT`] (a client that stalls or trickles its body
//! is cut off instead of holding a connection). Faces read the body only
//! after the caller is authenticated, so an anonymous client never makes
//! the daemon wait for one.

use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::header::CONTENT_LENGTH;
use hyper::HeaderMap;

/// Largest request body read.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// How much of a body over the limit is read and thrown away before the
/// refusal is sent: a connection closed with unread bytes is reset, and the
/// reset can destroy the refusal before the client reads it.
pub const MAX_DISCARD_BYTES: usize = 8 * MAX_BODY_BYTES;
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
    let deadline = tokio::time::Instant::now() + BODY_READ_TIMEOUT;
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        discard(body, deadline).await;
        return Err(BodyError::TooLarge);
    }
    let mut body = body;
    let mut buf = bytes::BytesMut::new();
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Err(BodyError::TooSlow),
            Ok(None) => return Ok(buf.freeze()),
            Ok(Some(Err(_))) => return Err(BodyError::Broken),
            Ok(Some(Ok(f))) => f,
        };
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > MAX_BODY_BYTES {
                discard(body, deadline).await;
                return Err(BodyError::TooLarge);
            }
            buf.extend_from_slice(&data);
        }
    }
}

/// Reads and drops what is left of `body`, up to [`MAX_DISCARD_BYTES`] and
/// until `deadline`, so the refusal that follows reaches the client.
async fn discard(mut body: Body, deadline: tokio::time::Instant) {
    let mut seen = 0usize;
    while seen <= MAX_DISCARD_BYTES {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(Some(Ok(f))) => seen += f.data_ref().map_or(0, |d| d.len()),
            _ => return,
        }
    }
}
