//! The operator's operations over the database: webhooks (create, list, show,
//! update, enable, disable, delete, restore, rotate-secret), their triggers,
//! the delivery log (list, show), retry, replay, and the test event. Shared by
//! the CLI and the HTTP API: each takes a database client, validates its input
//! with [`super::validate`], and returns a serde-serializable value or an
//! [`OpError`] (invalid input, not found, conflict with the current state, or a
//! database failure). Nothing here prints.
//!
//! A site is named by its domain or its numeric id; a webhook by its id or a
//! unique prefix of it (at least 4 characters); a delivery by its full id.
//!
//! One vocabulary (docs/api.md#names): what an operation returns is the
//! body both the API and the CLI's `--json` send, a list under its
//! resource's name (`{"webhooks": [...]}`), a refusal as [`OpError::body`];
//! `site_id` is a site's domain, as receivers and Plausible's own API call
//! it, `plausible_site_id` its numeric id.
//!
//! One file per subject: `webhooks`, `triggers`, `deliveries`, `status`, `test_send`;
//! what they share (the error type, sites) is here.

mod deliveries;
mod status;
mod test_send;
mod triggers;
mod webhooks;

pub use deliveries::*;
pub use status::*;
pub use test_send::*;
pub use triggers::*;
pub use webhooks::*;

use serde::Serialize;
use tokio_postgres::Client;

use super::validate::{self, Invalid};

/// The longest grace period a rotated-out secret may keep signing.
pub const MAX_ROTATION_GRACE_SECS: i64 = 30 * 86_400;
pub const DEFAULT_ROTATION_GRACE_SECS: i64 = 86_400;
/// Rows made due again per statement by `replay` (bounded locks).
pub const REPLAY_BATCH: i64 = 5_000;
pub const DELIVERIES_LIMIT_MAX: i64 = 10_000;

/// Why an operation did not happen.
#[derive(Debug)]
pub enum OpError {
    /// The input breaks a rule (HTTP 422).
    Invalid(Invalid),
    /// What was named does not exist (HTTP 404).
    NotFound(String),
    /// The current state forbids it, e.g. retrying a success without `force` (HTTP 409).
    Conflict(String),
    /// The database (or the network) failed (HTTP 500).
    Internal(anyhow::Error),
}

impl std::fmt::Display for OpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpError::Invalid(i) => write!(f, "invalid {i}"),
            OpError::NotFound(m) | OpError::Conflict(m) => f.write_str(m),
            OpError::Internal(e) => write!(f, "{e:#}"),
        }
    }
}
impl std::error::Error for OpError {}

impl From<Invalid> for OpError {
    fn from(i: Invalid) -> Self {
        OpError::Invalid(i)
    }
}
impl From<anyhow::Error> for OpError {
    fn from(e: anyhow::Error) -> Self {
        OpError::Internal(e)
    }
}
impl From<tokio_postgres::Error> for OpError {
    fn from(e: tokio_postgres::Error) -> Self {
        OpError::Internal(anyhow::Error::new(e))
    }
}

pub type OpResult<T> = Result<T, OpError>;

impl OpError {
    /// The stable `code`: the rule broken, or what kind of refusal it is.
    pub fn code(&self) -> &'static str {
        match self {
            OpError::Invalid(i) => i.rule.code(),
            OpError::NotFound(_) => "not_found",
            OpError::Conflict(_) => "conflict",
            OpError::Internal(_) => "internal",
        }
    }

    /// The refusal as the API sends it and the CLI's `--json` prints it.
    /// An internal error's cause is told only where the operator reads it:
    /// the CLI prints it, the API logs it and sends `internal_message`.
    pub fn body(&self, internal_message: &str) -> ErrorBody {
        match self {
            OpError::Invalid(i) => ErrorBody::new(self.code(), &i.message, Some(&i.field)),
            OpError::NotFound(m) | OpError::Conflict(m) => ErrorBody::new(self.code(), m, None),
            OpError::Internal(_) => ErrorBody::new(self.code(), internal_message, None),
        }
    }
}

/// Every refusal, from the API and from the CLI's `--json`:
/// `{"error": {"code": "https_required", "message": "…", "field": "url"}}`
/// (`field` only when one field is to blame).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ErrorBody {
    pub fn new(code: &str, message: &str, field: Option<&str>) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: code.to_string(),
                message: message.to_string(),
                field: field.map(str::to_string),
            },
        }
    }
}

/// A database error as an [`OpError`]: a payload the database refuses for
/// its size is the caller's input (422, exit 1), anything else internal.
pub(super) fn db<T>(r: Result<T, tokio_postgres::Error>, what: &str) -> OpResult<T> {
    r.map_err(|e| match validate::payload_refusal(&e) {
        Some(i) => OpError::Invalid(i),
        None => OpError::Internal(anyhow::Error::new(e).context(what.to_string())),
    })
}

// ---------------------------------------------------------------- sites

#[derive(Debug, Clone, Serialize)]
pub struct Site {
    pub id: i64,
    pub domain: String,
}

/// A site by its domain (as Plausible names it; also its former domain for
/// a while after a domain change, `domain_changed_from`, as Plausible's API
/// finds it) or its numeric id.
pub async fn site(db_: &Client, site: &str) -> OpResult<Site> {
    let site = site.trim();
    validate::no_nul("site_id", site)?;
    let row = match site.parse::<i64>() {
        Ok(id) => {
            db_.query_opt("SELECT id, domain FROM sites WHERE id = $1", &[&id])
                .await
        }
        Err(_) => {
            db_.query_opt(
                "SELECT id, domain FROM sites WHERE domain = $1 OR domain_changed_from = $1
                 ORDER BY domain = $1 DESC LIMIT 1",
                &[&site],
            )
            .await
        }
    };
    match db(row, "looking up the site")? {
        Some(r) => Ok(Site {
            id: r.get(0),
            domain: r.get(1),
        }),
        None => Err(OpError::NotFound(format!(
            "no site `{site}`; name a site by its domain as in Plausible (example.com) or by its numeric id"
        ))),
    }
}
