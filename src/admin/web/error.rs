//! The page's one error type: every refusal (an operation's [`OpError`],
//! a sign-in missing, a forged form) becomes a page that says what
//! happened and what to do, with the status that says its kind. A handler
//! returns it; [`render`], a layer over the page's routes that knows the
//! page's base path, turns it into HTML.

use std::sync::Arc;

use askama::Template;
use axum::response::{IntoResponse, Response};
use hyper::StatusCode;

use super::view::{html, Chrome, ErrorPage, Layout, SignedOutPage};
use crate::admin::error::OpError;

#[derive(Debug)]
pub enum WebError {
    /// The page is off (`web.enabled = false`).
    Off,
    /// Nobody is signed in.
    SignedOut,
    /// A form not from this page, or without its CSRF token.
    Forged,
    /// A request that cannot be read.
    BadRequest(String),
    /// The database cannot be reached.
    Unavailable,
    /// What an operation refused.
    Op(OpError),
}

impl From<OpError> for WebError {
    fn from(e: OpError) -> Self {
        WebError::Op(e)
    }
}

/// A response still to be rendered by [`render`].
#[derive(Clone)]
struct Unrendered(Arc<std::sync::Mutex<Option<WebError>>>);

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let mut r = StatusCode::INTERNAL_SERVER_ERROR.into_response();
        r.extensions_mut()
            .insert(Unrendered(Arc::new(std::sync::Mutex::new(Some(self)))));
        r
    }
}

impl WebError {
    fn status(&self) -> StatusCode {
        match self {
            WebError::Off => StatusCode::NOT_FOUND,
            WebError::SignedOut => StatusCode::UNAUTHORIZED,
            WebError::Forged => StatusCode::FORBIDDEN,
            WebError::BadRequest(_) => StatusCode::BAD_REQUEST,
            WebError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            WebError::Op(e) => e.http_status(),
        }
    }

    /// A title and a message, with what to do.
    fn words(&self) -> (&'static str, String) {
        match self {
            WebError::Off => ("Not found", "This page is not served here.".into()),
            WebError::SignedOut => ("Signed out", String::new()),
            WebError::Forged => (
                "Not sent from this page",
                "The form was not sent from this page (or the page is older than your sign-in). Go back, reload the page and try again.".into(),
            ),
            WebError::BadRequest(m) => ("Bad request", m.clone()),
            WebError::Unavailable => (
                "The database cannot be reached",
                "Try again in a moment; if it lasts, the operator will find the cause in the daemon's log.".into(),
            ),
            WebError::Op(e) => {
                let title = match e {
                    OpError::Invalid(_) => "Not accepted",
                    OpError::NotFound(_) => "Not found",
                    OpError::Forbidden(_) => "Not allowed",
                    OpError::Refused(_) => "Refused",
                    OpError::Conflict(_) => "Not now",
                    OpError::Busy { .. } => "Busy",
                    OpError::Unavailable(_) => "The database cannot be reached",
                    OpError::Internal(_) => "Something went wrong",
                };
                let message = match e {
                    OpError::Internal(cause) => {
                        crate::admin::error::log_internal("web page", cause);
                        "The operation failed on the server; the operator will find the cause in the daemon's log.".into()
                    }
                    e => e.to_string(),
                };
                (title, message)
            }
        }
    }
}

/// Renders an error a handler returned as the page for it.
pub async fn render(chrome: Arc<Chrome>, r: Response) -> Response {
    let Some(Unrendered(e)) = r.extensions().get::<Unrendered>().cloned() else {
        return r;
    };
    let Some(e) = e.lock().expect("an error to render").take() else {
        return r;
    };
    let status = e.status();
    let layout = Layout::anonymous(&chrome, e.words().0);
    let body = match &e {
        WebError::SignedOut => SignedOutPage::new(layout, &chrome, None).render(),
        _ => ErrorPage {
            l: layout,
            message: e.words().1,
        }
        .render(),
    };
    html(status, body)
}
