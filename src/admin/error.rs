//! What an operation can come to besides its result: one typed outcome per
//! kind of refusal, which each face maps once (the API to a status, the CLI
//! to an exit status and a line, the web page to a message), and the one
//! error body the API sends and the CLI's `--json` prints.

use std::time::Duration;

use serde::Serialize;
use tokio_postgres::error::SqlState;
use utoipa::ToSchema;

use super::validate::{self, Invalid, Invalids};

/// Why a caller who holds a role on a site is refused there anyway, as
/// Plausible's `AuthorizePublicAPI` refuses (typed: each face says it its way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// An API key bound to no team, on a site of a set-up team.
    LegacyKeyOnTeamSite,
    /// `sites.locked`, or the site's team is locked.
    SiteLocked,
}

impl Refusal {
    pub fn code(self) -> &'static str {
        match self {
            Refusal::LegacyKeyOnTeamSite => "invalid_api_key",
            Refusal::SiteLocked => "site_locked",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Refusal::LegacyKeyOnTeamSite => {
                "Invalid API key for this site: the key belongs to no team and the site's team is set up. \
                 Create an API key in that team's settings in Plausible."
            }
            Refusal::SiteLocked => {
                "This Plausible site is locked (its team's subscription is not active): \
                 its webhooks cannot be read or changed until the site owner subscribes."
            }
        }
    }
}

/// Why an operation did not happen.
#[derive(Debug)]
pub enum OpError {
    /// The input breaks rules: every field refused, in order.
    Invalid(Invalids),
    /// Nothing by that name that the caller may see. A site or webhook the
    /// caller holds no role on is not told apart from one that does not exist.
    NotFound(String),
    /// The caller's role on the site does not allow it.
    Forbidden(String),
    /// Refused by Plausible's rules beyond roles.
    Refused(Refusal),
    /// The current state forbids it, e.g. retrying a success without `force`.
    Conflict(String),
    /// A bound on work in flight is reached (test sends): try again after `retry_after`.
    Busy {
        message: String,
        retry_after: Duration,
    },
    /// The database cannot be reached, or refuses writes: try again later.
    Unavailable(String),
    /// Anything else; the cause is for the operator's eyes (the CLI prints
    /// it, the API and the page log it).
    Internal(anyhow::Error),
}

pub type OpResult<T> = Result<T, OpError>;

impl std::fmt::Display for OpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpError::Invalid(i) => write!(f, "invalid {i}"),
            OpError::NotFound(m)
            | OpError::Forbidden(m)
            | OpError::Conflict(m)
            | OpError::Unavailable(m) => f.write_str(m),
            OpError::Busy { message, .. } => f.write_str(message),
            OpError::Refused(r) => f.write_str(r.message()),
            OpError::Internal(e) => write!(f, "{e:#}"),
        }
    }
}
impl std::error::Error for OpError {}

impl From<Invalid> for OpError {
    fn from(i: Invalid) -> Self {
        OpError::Invalid(i.into())
    }
}
impl From<Invalids> for OpError {
    fn from(i: Invalids) -> Self {
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
        db_error(e, "talking to the database")
    }
}

/// Refused because the database is read-only (a standby, or
/// `default_transaction_read_only`): nothing the caller can fix.
const READ_ONLY: &str =
    "the database refuses writes right now (read-only); try again once it accepts them";
const UNREACHABLE: &str = "the database cannot be reached; try again shortly";

/// A database error as an [`OpError`]: a payload the database refuses for
/// its size is the caller's input; a read-only or lost database is
/// unavailable; anything else is internal, with `what` as its context.
pub fn db_error(e: tokio_postgres::Error, what: &str) -> OpError {
    if let Some(i) = validate::limit_refusal(&e) {
        return OpError::Invalid(i.into());
    }
    if e.code() == Some(&SqlState::READ_ONLY_SQL_TRANSACTION) {
        return OpError::Unavailable(READ_ONLY.into());
    }
    if e.is_closed() {
        return OpError::Unavailable(UNREACHABLE.into());
    }
    OpError::Internal(anyhow::Error::new(e).context(what.to_string()))
}

/// `r` with its database error mapped by [`db_error`].
pub fn db<T>(r: Result<T, tokio_postgres::Error>, what: &str) -> OpResult<T> {
    r.map_err(|e| db_error(e, what))
}

/// No connection from the pool: the database is down or unreachable.
pub fn pool_error(e: deadpool_postgres::PoolError) -> OpError {
    tracing::warn!(
        error = crate::logging::error_line(&e),
        "admin: no database connection"
    );
    OpError::Unavailable(UNREACHABLE.into())
}

impl OpError {
    /// The HTTP status of each kind of refusal, for both HTTP faces (the
    /// API and the web page). As Plausible answers: 401 for a key not valid
    /// on the site, 402 for a locked site.
    pub fn http_status(&self) -> hyper::StatusCode {
        use hyper::StatusCode as S;
        match self {
            OpError::Invalid(_) => S::UNPROCESSABLE_ENTITY,
            OpError::NotFound(_) => S::NOT_FOUND,
            OpError::Forbidden(_) => S::FORBIDDEN,
            OpError::Refused(Refusal::LegacyKeyOnTeamSite) => S::UNAUTHORIZED,
            OpError::Refused(Refusal::SiteLocked) => S::PAYMENT_REQUIRED,
            OpError::Conflict(_) => S::CONFLICT,
            OpError::Busy { .. } => S::TOO_MANY_REQUESTS,
            OpError::Unavailable(_) => S::SERVICE_UNAVAILABLE,
            OpError::Internal(_) => S::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable `code`: the rule broken, or what kind of refusal it is.
    pub fn code(&self) -> &'static str {
        match self {
            OpError::Invalid(i) => i.first().rule.code(),
            OpError::NotFound(_) => "not_found",
            OpError::Forbidden(_) => "forbidden",
            OpError::Refused(r) => r.code(),
            OpError::Conflict(_) => "conflict",
            OpError::Busy { .. } => "too_many_tests",
            OpError::Unavailable(_) => "database_unavailable",
            OpError::Internal(_) => "internal",
        }
    }

    /// The refusal as the API sends it and the CLI's `--json` prints it. An
    /// internal error's cause is told only where the operator reads it: the
    /// CLI passes it as `internal_message`, the API a sentence saying where
    /// the log is.
    pub fn body(&self, internal_message: &str) -> ErrorBody {
        match self {
            OpError::Invalid(i) => {
                let first = i.first();
                let mut b = ErrorBody::new(self.code(), &first.message, Some(&first.field));
                b.error.errors = Some(
                    i.all()
                        .iter()
                        .map(|i| FieldError {
                            field: i.field.clone(),
                            code: i.rule.code().to_string(),
                            message: i.message.clone(),
                        })
                        .collect(),
                );
                b
            }
            OpError::Internal(_) => ErrorBody::new(self.code(), internal_message, None),
            e => ErrorBody::new(self.code(), &e.to_string(), None),
        }
    }
}

/// Every refusal, from the API and from the CLI's `--json`:
/// `{"error": {"code": "https_required", "message": "…", "field": "url", "errors": [...]}}`
/// (`field` only when one field is to blame; `errors` on a validation
/// refusal: every field refused, the first of which `code`, `message` and
/// `field` repeat).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable: the rule broken (`https_required`, `out_of_range`, ...) or the
    /// kind of refusal (`not_found`, `forbidden`, `conflict`, ...).
    pub code: String,
    /// What happened and what to do, in words.
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<FieldError>>,
}

/// One field's refusal in a validation error's `errors`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldError {
    pub field: String,
    pub code: String,
    pub message: String,
}

impl ErrorBody {
    pub fn new(code: &str, message: &str, field: Option<&str>) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: code.to_string(),
                message: message.to_string(),
                field: field.map(str::to_string),
                errors: None,
            },
        }
    }
}

/// Logs an internal error for the operator, where `face` says who met it. A
/// database error is logged by code, constraint and message only: its
/// DETAIL can quote a whole row, secrets included.
pub fn log_internal(face: &str, e: &anyhow::Error) {
    let text = e
        .chain()
        .map(|c| match c.downcast_ref::<tokio_postgres::Error>() {
            Some(pg) => match pg.as_db_error() {
                Some(db) => format!(
                    "{} {}{}",
                    db.code().code(),
                    db.message(),
                    db.constraint()
                        .map(|c| format!(" (constraint {c})"))
                        .unwrap_or_default()
                ),
                None => pg.to_string(),
            },
            None => c.to_string(),
        })
        .collect::<Vec<_>>()
        .join(": ");
    tracing::error!(error = text, "{face}: internal error");
}
