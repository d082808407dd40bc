//! How a success is written: JSON with its status, and the `Warning` a
//! deprecated input earns.

use axum::body::Body;
use axum::response::Response;
use hyper::header::{HeaderValue, CONTENT_TYPE, WARNING};
use hyper::StatusCode;
use serde::Serialize;

use crate::admin::ops::SITE_DEPRECATED;

/// `v` as JSON with `status`.
pub fn json<T: Serialize>(status: StatusCode, v: &T) -> Response {
    let body = serde_json::to_vec(v).expect("the API's bodies serialize");
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// `r` with `Warning: 299` saying `site` is deprecated, when it was given.
pub fn with_deprecation(mut r: Response, deprecated: bool) -> Response {
    if deprecated {
        let v = format!("299 plausible-webhooks \"{SITE_DEPRECATED}\"");
        if let Ok(v) = HeaderValue::from_str(&v) {
            r.headers_mut().insert(WARNING, v);
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deprecated_site_is_answered_with_a_warning_header() {
        let r = || json(StatusCode::OK, &serde_json::json!({}));
        assert!(with_deprecation(r(), false)
            .headers()
            .get(WARNING)
            .is_none());
        let w = with_deprecation(r(), true);
        let w = w.headers().get(WARNING).expect("a Warning header");
        let w = w.to_str().unwrap();
        assert!(
            w.starts_with("299 plausible-webhooks \"`site` is deprecated") && w.ends_with('"'),
            "{w}"
        );
    }
}
