//! Validation at the edge: the rules of the database constraints (sql/0001),
//! checked before a statement is sent, so an operator (or an HTTP client) is
//! told which field broke which rule and what to do, instead of reading a
//! constraint name. Each refusal is an [`Invalid`] naming the field and a
//! stable rule code (the HTTP API maps it to 422 with that code).
//!
//! A few rules are stricter than the table's (header values must be what an
//! HTTP header can carry, a `whsec_` secret must decode): what the database
//! would accept but the daemon could not send as meant is refused here too.

use base64::Engine as _;
use serde::Serialize;
use std::collections::BTreeMap;
use time::OffsetDateTime;

use crate::config::{check_retry_schedule, RetryScheduleError};
use crate::delivery::guard::{AddressGuard, MAX_URL_LEN};
use crate::delivery::signing::{SigningKey, SECRET_PREFIX};
use crate::triggers::{DeliveryMode, TriggerType};

pub const NAME_MAX_CHARS: usize = 255;
pub const SECRET_MIN_CHARS: usize = 32;
pub const SECRET_MAX_CHARS: usize = 256;
pub const HEADER_NAME_MAX: usize = 128;
/// Not a table rule: a receiver's server refuses huge headers anyway.
pub const HEADER_VALUE_MAX: usize = 4096;
pub const HEADERS_MAX: usize = 32;
pub const THRESHOLD_MIN: i32 = 1;
pub const THRESHOLD_MAX: i32 = 10_000_000;
pub const WINDOW_MIN_SECS: i32 = 60;
pub const WINDOW_MAX_SECS: i32 = 604_800;
pub const COOLDOWN_MAX_SECS: i32 = 604_800;
pub const MAX_CONCURRENCY_MAX: i32 = 1000;

/// Header names the daemon owns (same list as `plausible_webhooks_headers_ok`).
pub const RESERVED_HEADERS: &[&str] = &[
    "content-type",
    "user-agent",
    "content-length",
    "host",
    "x-webhook-signature",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "expect",
];

/// Which rule a value broke. The `code` is stable (API clients and scripts
/// reading the CLI's `--json` match on it). A refusal's `field` is the
/// field's JSON name (`window_secs`, `site_id`: docs/api.md#names), for the
/// CLI's flags as for the API's bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    Required,
    TooLong,
    TooShort,
    OutOfRange,
    TooMany,
    Syntax,
    HttpsRequired,
    Userinfo,
    NonPublicHost,
    Reserved,
    Duplicate,
    Encoding,
    NotApplicable,
    /// Over a size limit in bytes (a payload over `delivery.max_payload_bytes`).
    TooLarge,
    /// A key the input does not have (a typo would otherwise be ignored).
    UnknownField,
    /// A value of the wrong JSON type (a number where text belongs, ...).
    WrongType,
    /// The receiver did not accept the test event a checked create sends first.
    Unreachable,
}

impl Rule {
    pub fn code(self) -> &'static str {
        match self {
            Rule::Required => "required",
            Rule::TooLong => "too_long",
            Rule::TooShort => "too_short",
            Rule::OutOfRange => "out_of_range",
            Rule::TooMany => "too_many",
            Rule::Syntax => "syntax",
            Rule::HttpsRequired => "https_required",
            Rule::Userinfo => "userinfo",
            Rule::NonPublicHost => "non_public_host",
            Rule::Reserved => "reserved",
            Rule::Duplicate => "duplicate",
            Rule::Encoding => "encoding",
            Rule::NotApplicable => "not_applicable",
            Rule::TooLarge => "too_large",
            Rule::UnknownField => "unknown_field",
            Rule::WrongType => "wrong_type",
            Rule::Unreachable => "unreachable",
        }
    }
}

/// A refused value: the field, the rule, and a message that says what to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Invalid {
    pub field: String,
    pub rule: Rule,
    pub message: String,
}

impl Invalid {
    pub fn new(field: &str, rule: Rule, message: impl Into<String>) -> Self {
        Self {
            field: field.to_string(),
            rule,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {} [{}]", self.field, self.message, self.rule.code())
    }
}
impl std::error::Error for Invalid {}

pub type Valid<T> = Result<T, Invalid>;

/// Every rule an input broke, in the order its fields are checked (never
/// empty): a form shows them all at once, the API and the CLI the first
/// with the rest beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalids(Vec<Invalid>);

impl Invalids {
    pub fn first(&self) -> &Invalid {
        &self.0[0]
    }
    pub fn all(&self) -> &[Invalid] {
        &self.0
    }
    /// The refusal of `field`, if it broke a rule.
    pub fn of(&self, field: &str) -> Option<&Invalid> {
        self.0.iter().find(|i| i.field == field)
    }
    pub fn push(&mut self, i: Invalid) {
        self.0.push(i);
    }
    /// Blames `to` for what was blamed on `from` (a field read under another name).
    pub fn rename(&mut self, from: &str, to: &str) {
        for i in &mut self.0 {
            if i.field == from {
                i.field = to.to_string();
            }
        }
    }
}

impl From<Invalid> for Invalids {
    fn from(i: Invalid) -> Self {
        Invalids(vec![i])
    }
}

impl std::fmt::Display for Invalids {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (n, i) in self.0.iter().enumerate() {
            if n > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{i}")?;
        }
        Ok(())
    }
}
impl std::error::Error for Invalids {}

/// Collects the refusals of an input's fields, checking on after the first.
#[derive(Debug, Default)]
pub struct Checks(Vec<Invalid>);

impl Checks {
    /// The value when `r` is valid; otherwise the refusal is kept and None returned.
    pub fn check<T>(&mut self, r: Valid<T>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(i) => {
                self.0.push(i);
                None
            }
        }
    }

    /// `check` of an optional value: Some(None) when absent.
    pub fn optional<T, U>(
        &mut self,
        v: Option<T>,
        f: impl FnOnce(T) -> Valid<U>,
    ) -> Option<Option<U>> {
        match v {
            None => Some(None),
            Some(v) => self.check(f(v)).map(Some),
        }
    }

    pub fn refuse(&mut self, i: Invalid) {
        self.0.push(i);
    }

    pub fn is_clean(&self) -> bool {
        self.0.is_empty()
    }

    /// Ok when nothing was refused.
    pub fn done(self) -> Result<(), Invalids> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(Invalids(self.0))
        }
    }

    /// `done`, then the value the checked fields make (their `check`s all
    /// returned Some, so `make` may unwrap them).
    pub fn finish<T>(self, make: impl FnOnce() -> T) -> Result<T, Invalids> {
        self.done().map(|()| make())
    }
}

/// The name under which the database refuses a payload over
/// `delivery.max_payload_bytes` (sql/0005_payload_size.sql).
pub const PAYLOAD_SIZE_CONSTRAINT: &str = "webhook_deliveries_payload_size";

/// The names under which the database refuses a webhook over
/// `limits.max_webhooks_per_site` and a trigger over
/// `limits.max_triggers_per_webhook` (sql/0012_amplification_caps.sql).
pub const WEBHOOKS_PER_SITE_CONSTRAINT: &str = "webhooks_per_site_limit";
pub const TRIGGERS_PER_WEBHOOK_CONSTRAINT: &str = "webhook_triggers_per_webhook_limit";

/// The database's refusal of a payload over the limit, or of a webhook or
/// trigger over its cap, as a validation error (422, exit 1). The database
/// holds the limits in force (and is the one measure of a payload, as it
/// renders jsonb), so its words are kept: the size or count, the limit and
/// what to do. Recognised by the constraint name, not the text.
pub fn limit_refusal(e: &tokio_postgres::Error) -> Option<Invalid> {
    let db = e.as_db_error()?;
    let (field, rule) = match db.constraint()? {
        PAYLOAD_SIZE_CONSTRAINT => ("payload", Rule::TooLarge),
        WEBHOOKS_PER_SITE_CONSTRAINT => ("site_id", Rule::TooMany),
        TRIGGERS_PER_WEBHOOK_CONSTRAINT => ("triggers", Rule::TooMany),
        _ => return None,
    };
    Some(Invalid::new(field, rule, db.message()))
}

/// Text a statement sends to PostgreSQL as a parameter (a site, a goal, an
/// event name): PostgreSQL refuses a NUL character in text, and the
/// statement would fail as an internal error instead of a refusal.
pub fn no_nul(field: &str, raw: &str) -> Valid<()> {
    if raw.contains('\0') {
        return Err(Invalid::new(
            field,
            Rule::Encoding,
            "must not contain a NUL character (\\0): PostgreSQL text cannot hold one",
        ));
    }
    Ok(())
}

/// 1..=255 characters after trimming, no control characters.
pub fn name(raw: &str) -> Valid<String> {
    let v = raw.trim();
    if v.is_empty() {
        return Err(Invalid::new(
            "name",
            Rule::Required,
            "must not be empty; give the webhook a name people will recognise",
        ));
    }
    if v.chars().count() > NAME_MAX_CHARS {
        return Err(Invalid::new(
            "name",
            Rule::TooLong,
            format!("at most {NAME_MAX_CHARS} characters"),
        ));
    }
    if v.chars().any(char::is_control) {
        return Err(Invalid::new(
            "name",
            Rule::Encoding,
            "must not contain control characters (newlines, tabs)",
        ));
    }
    Ok(v.to_string())
}

/// SPEC §4: https, at most 2048 characters, no userinfo, a host that is a
/// name or a public IP (per `guard`, so the operator's allow-list applies).
/// A name's DNS answers are checked at send time. Returns the URL in the
/// normal form that is stored (and that hyper parses).
pub fn url(raw: &str, guard: &AddressGuard) -> Valid<String> {
    let raw = raw.trim();
    let err = |rule, m: String| Err(Invalid::new("url", rule, m));
    if raw.is_empty() {
        return err(Rule::Required, "is required (https://…)".into());
    }
    if raw.len() > MAX_URL_LEN {
        return err(
            Rule::TooLong,
            format!("longer than {MAX_URL_LEN} characters"),
        );
    }
    let u = match url::Url::parse(raw) {
        Ok(u) => u,
        Err(e) => return err(Rule::Syntax, format!("not a valid URL ({e})")),
    };
    if u.scheme() != "https" {
        return err(
            Rule::HttpsRequired,
            format!(
                "scheme must be https, not {}; receivers must accept TLS",
                u.scheme()
            ),
        );
    }
    if !u.username().is_empty() || u.password().is_some() {
        return err(
            Rule::Userinfo,
            "must not contain a user name or password; put credentials in a custom header (--header 'Authorization=Bearer …')".into(),
        );
    }
    match u.host() {
        None => return err(Rule::Syntax, "has no host".into()),
        // The guard's rule (IPs, and `localhost` as the loopback it always is).
        Some(host) => {
            if let Err(why) = guard.check_host(&host) {
                return err(Rule::NonPublicHost, format!("host is not public: {why}"));
            }
        }
    }
    let normal = u.to_string();
    if normal.len() > MAX_URL_LEN {
        return err(
            Rule::TooLong,
            format!("longer than {MAX_URL_LEN} characters once normalised"),
        );
    }
    if normal.parse::<hyper::Uri>().is_err() || normal.chars().any(char::is_whitespace) {
        return err(
            Rule::Syntax,
            "cannot be sent as an HTTP request target; percent-encode unusual characters".into(),
        );
    }
    Ok(normal)
}

/// 32..=256 characters; a `whsec_` secret must be base64 after the prefix
/// (Standard Webhooks libraries decode it, so anything else would never verify).
/// What a receiver must know about a secret that is not `whsec_<base64>`:
/// Standard Webhooks libraries base64-decode the secret they are given and
/// refuse this one unless handed its bytes.
pub fn secret_warning(secret: &str) -> Option<String> {
    (!secret.starts_with(SECRET_PREFIX)).then(|| {
        "this secret is not of the form whsec_<base64>: Standard Webhooks libraries refuse it as given \
         (`Invalid base64-encoded string`); receivers must hand them its UTF-8 bytes (Python \
         Webhook(secret.encode()), Node new Webhook(secret, {format: \"raw\"}), Go NewWebhookRaw([]byte(secret))), \
         or leave --secret out to get a generated whsec_ one; docs/receiving.md shows both kinds"
            .to_string()
    })
}

/// The signing modes of `webhooks.signature` (sql/0017), the default first.
pub const SIGNATURE_MODES: [&str; 2] = ["hmac", "both"];

/// How a webhook signs: `hmac`, or `both` (`v1a` added). HMAC signs every
/// request (the product spec), so there is no ed25519-only mode.
pub fn signature_mode(raw: &str) -> Valid<String> {
    // The value is not quoted back: access::quote sits above this file.
    let v = raw.trim().to_ascii_lowercase();
    if SIGNATURE_MODES.contains(&v.as_str()) {
        return Ok(v);
    }
    let why = if v == "ed25519" {
        "is not a signing mode: every request carries the HMAC signatures; give both to add \
         ed25519 (v1a) beside them (a receiver that verifies only v1a ignores the v1, entries)"
    } else {
        "is not a signing mode: give hmac (v1, and X-Webhook-Signature) or both (v1a, ed25519, \
         added)"
    };
    Err(Invalid::new("signature", Rule::Syntax, why))
}

/// An ed25519 private key to import: `whsk_` + base64 of the 32-byte seed
/// or of the 64 bytes seed and public key.
pub fn signing_key(raw: &str) -> Valid<SigningKey> {
    SigningKey::parse(raw).map_err(|e| {
        Invalid::new(
            "signing_key",
            Rule::Encoding,
            format!("{e}; leave it out to have a key pair generated"),
        )
    })
}

pub fn secret(raw: &str) -> Valid<String> {
    let n = raw.chars().count();
    if n < SECRET_MIN_CHARS {
        return Err(Invalid::new(
            "secret",
            Rule::TooShort,
            format!("at least {SECRET_MIN_CHARS} characters; leave it out to have one generated"),
        ));
    }
    if n > SECRET_MAX_CHARS {
        return Err(Invalid::new(
            "secret",
            Rule::TooLong,
            format!("at most {SECRET_MAX_CHARS} characters"),
        ));
    }
    if let Some(b) = raw.strip_prefix(SECRET_PREFIX) {
        if base64::engine::general_purpose::STANDARD.decode(b).is_err() {
            return Err(Invalid::new(
                "secret",
                Rule::Encoding,
                "starts with whsec_ but the rest is not base64; receivers' Standard Webhooks libraries could not use it",
            ));
        }
    }
    if raw.chars().any(char::is_control) {
        return Err(Invalid::new(
            "secret",
            Rule::Encoding,
            "must not contain control characters",
        ));
    }
    Ok(raw.to_string())
}

/// One custom header: a token name the daemon does not own, a value an HTTP
/// header can carry (visible ASCII and spaces, no CR/LF/NUL).
pub fn header(name: &str, value: &str) -> Valid<()> {
    let field = format!("headers.{name}");
    let tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+.^_`|~-".contains(c);
    if name.is_empty() || name.len() > HEADER_NAME_MAX || !name.chars().all(tchar) {
        return Err(Invalid::new(
            &field,
            Rule::Syntax,
            format!("a header name is 1..={HEADER_NAME_MAX} letters, digits or !#$%&'*+.^_`|~-"),
        ));
    }
    if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
        return Err(Invalid::new(
            &field,
            Rule::Reserved,
            "is set by the daemon (content type, user agent, signatures, connection handling) and cannot be overridden",
        ));
    }
    if value.len() > HEADER_VALUE_MAX {
        return Err(Invalid::new(
            &field,
            Rule::TooLong,
            format!("a header value is at most {HEADER_VALUE_MAX} bytes"),
        ));
    }
    // Stricter than HeaderValue (which lets bytes >= 0x80 through as obs-text).
    if !value.chars().all(|c| c == '\t' || (' '..='~').contains(&c)) {
        return Err(Invalid::new(
            &field,
            Rule::Encoding,
            "a header value may hold visible ASCII characters and spaces only (no newlines or control characters)",
        ));
    }
    Ok(())
}

/// A set of custom headers: each valid, no name twice (names are case-insensitive).
pub fn headers(h: &BTreeMap<String, String>) -> Valid<()> {
    if h.len() > HEADERS_MAX {
        return Err(Invalid::new(
            "headers",
            Rule::TooMany,
            format!("at most {HEADERS_MAX} custom headers"),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for (k, v) in h {
        header(k, v)?;
        if !seen.insert(k.to_ascii_lowercase()) {
            return Err(Invalid::new(
                &format!("headers.{k}"),
                Rule::Duplicate,
                "given twice (header names are case-insensitive)",
            ));
        }
    }
    Ok(())
}

/// `NAME=VALUE` (or `NAME: VALUE`) from the command line.
pub fn header_arg(arg: &str) -> Valid<(String, String)> {
    let split = arg
        .find(['=', ':'])
        .map(|i| (arg[..i].trim(), arg[i + 1..].trim()));
    let Some((k, v)) = split else {
        return Err(Invalid::new(
            "headers",
            Rule::Syntax,
            format!("`{arg}` is not NAME=VALUE"),
        ));
    };
    header(k, v)?;
    Ok((k.to_string(), v.to_string()))
}

/// At most 10 retries, each 1 s ..= 24 h (the `webhooks_retry_schedule_limits` rule).
pub fn retry_schedule(secs: &[i64]) -> Valid<Vec<i32>> {
    check_retry_schedule(secs.iter().copied()).map_err(|e| {
        let rule = match e {
            RetryScheduleError::TooMany { .. } => Rule::TooMany,
            RetryScheduleError::DelayOutOfRange { .. } => Rule::OutOfRange,
        };
        Invalid::new("retry_schedule_secs", rule, e.to_string())
    })?;
    // In range: each fits an i32.
    Ok(secs.iter().map(|&s| s as i32).collect())
}

/// A webhook's format: `standard` (the signed envelope) or a chat service
/// (`slack`, `discord`, `teams`, `google_chat`); `google-chat` and any case
/// are read too.
pub fn format(v: &str) -> Valid<String> {
    let name = v.trim().to_ascii_lowercase().replace('-', "_");
    crate::delivery::chat::Format::parse(&name)
        .map(|f| f.as_str().to_string())
        .ok_or_else(|| {
            Invalid::new(
                "format",
                Rule::Syntax,
                format!(
                    "`{}` is not a format: give one of {}",
                    v.chars().take(40).collect::<String>(),
                    crate::config::MESSAGE_FORMATS.join(", ")
                ),
            )
        })
}

/// Requests per second per webhook, at least 1.
pub fn rate_limit(v: i64) -> Valid<i32> {
    range("rate_limit_per_sec", v, 1, i64::from(i32::MAX))
}

/// Concurrent requests per webhook (over all instances together), 1..=1000.
pub fn max_concurrency(v: i64) -> Valid<i32> {
    range("max_concurrency", v, 1, i64::from(MAX_CONCURRENCY_MAX))
}

/// Unique visitors, 1..=10,000,000.
pub fn threshold(v: i64) -> Valid<i32> {
    range(
        "threshold",
        v,
        i64::from(THRESHOLD_MIN),
        i64::from(THRESHOLD_MAX),
    )
}

/// 1 min ..= 7 days.
pub fn window_secs(v: i64) -> Valid<i32> {
    seconds_range("window_secs", v, WINDOW_MIN_SECS, WINDOW_MAX_SECS)
}

/// `range` for a duration: the bounds and the value in seconds, said so.
fn seconds_range(field: &str, v: i64, lo: i32, hi: i32) -> Valid<i32> {
    if v < i64::from(lo) || v > i64::from(hi) {
        return Err(Invalid::new(
            field,
            Rule::OutOfRange,
            format!("must be between {lo} s and {hi} s, got {v} s"),
        ));
    }
    Ok(v as i32)
}

/// 0 ..= 7 days.
pub fn cooldown_secs(v: i64) -> Valid<i32> {
    seconds_range("cooldown_secs", v, 0, COOLDOWN_MAX_SECS)
}

fn range(field: &str, v: i64, lo: i64, hi: i64) -> Valid<i32> {
    if v < lo || v > hi {
        return Err(Invalid::new(
            field,
            Rule::OutOfRange,
            format!("must be between {lo} and {hi}, got {v}"),
        ));
    }
    Ok(v as i32)
}

/// Subscriptions a webhook may hold at most (`webhooks_events_format`).
pub const EVENTS_MAX: usize = 64;
/// The longest event type name.
pub const EVENT_TYPE_MAX: usize = 64;

/// An event type name (`plausible_webhooks_event_type_ok`): dot-separated
/// words of lowercase letters, digits and underscores, each starting with a
/// letter, at most 64 characters.
pub fn event_type(field: &str, raw: &str) -> Valid<String> {
    let t = raw.trim();
    let word_ok = |w: &str| {
        let mut c = w.chars();
        c.next().is_some_and(|f| f.is_ascii_lowercase())
            && c.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    };
    if t.len() > EVENT_TYPE_MAX || !t.split('.').all(word_ok) {
        return Err(Invalid::new(
            field,
            Rule::Syntax,
            format!(
                "`{}` is not an event type: dot-separated words of a-z, 0-9 and _, each starting with a letter, at most {EVENT_TYPE_MAX} characters (site.tracking_stopped)",
                t.chars().take(100).collect::<String>()
            ),
        ));
    }
    Ok(t.to_string())
}

/// A subscription (`plausible_webhooks_events_ok`): an event type, a prefix
/// of one followed by `.*` (`site.*`), or `*` (every event).
pub fn event_pattern(raw: &str) -> Valid<String> {
    let p = raw.trim();
    if p == "*" {
        return Ok(p.to_string());
    }
    match p.strip_suffix(".*") {
        Some(prefix) => event_type("events", prefix).map(|_| p.to_string()),
        None => event_type("events", p),
    }
}

/// `a, b c\nd` → `[a, b, c, d]`: subscriptions as a person lists them.
pub fn split_patterns(s: &str) -> Vec<String> {
    s.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect()
}

/// A set of subscriptions (each given one may list several, `a,b`): each
/// valid, none twice, at most [`EVENTS_MAX`].
pub fn event_patterns(given: &[String]) -> Valid<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for g in given.iter().flat_map(|g| split_patterns(g)) {
        let p = event_pattern(&g)?;
        if !out.contains(&p) {
            out.push(p);
        }
    }
    if out.len() > EVENTS_MAX {
        return Err(Invalid::new(
            "events",
            Rule::TooMany,
            format!("at most {EVENTS_MAX} subscriptions; a wildcard (site.*) covers many"),
        ));
    }
    Ok(out)
}

/// A trigger type as an operator writes it (`TriggerType::parse`).
pub fn trigger_type(s: &str) -> Valid<TriggerType> {
    TriggerType::parse(s).ok_or_else(|| {
        Invalid::new(
            "type",
            Rule::Syntax,
            format!("`{s}` is not a trigger type; use spike, drop, goal, event or tracking"),
        )
    })
}

/// A trigger's settings, checked together: threshold and cooldown belong
/// to spike and drop, a goal to goal completion, an event name and props to
/// custom events, a delivery mode to goal and custom-event triggers, and a
/// window to spike, drop, digests and tracking triggers (how long without
/// an event is an outage).
#[derive(Debug, Clone, Default)]
pub struct TriggerInput {
    pub threshold: Option<i64>,
    pub window_secs: Option<i64>,
    pub cooldown_secs: Option<i64>,
    pub has_goal: bool,
    pub event_name: Option<String>,
    pub props: Vec<(String, String)>,
    pub mode: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriggerValues {
    pub threshold: Option<i32>,
    pub window_secs: Option<i32>,
    pub cooldown_secs: Option<i32>,
    pub event_name: Option<String>,
    pub props: BTreeMap<String, String>,
    pub mode: DeliveryMode,
}

/// Props a custom_event trigger may require at most (Plausible keeps 30
/// custom props per event).
pub const TRIGGER_PROPS_MAX: usize = 30;

pub fn trigger(t: TriggerType, i: &TriggerInput) -> Valid<TriggerValues> {
    let mode = match i.mode.as_deref().map(str::trim).filter(|m| !m.is_empty()) {
        None => DeliveryMode::Each,
        Some(m) => DeliveryMode::parse(m).ok_or_else(|| {
            Invalid::new(
                "mode",
                Rule::Syntax,
                format!(
                    "`{}` is not a delivery mode; use each or digest",
                    m.chars().take(100).collect::<String>()
                ),
            )
        })?,
    };
    let not_for = |field: &str, why: &str| Err(Invalid::new(field, Rule::NotApplicable, why));
    if t.per_occurrence() {
        for (set, field) in [
            (i.threshold.is_some(), "threshold"),
            (i.cooldown_secs.is_some(), "cooldown_secs"),
        ] {
            if set {
                return not_for(
                    field,
                    "applies to spike and drop triggers only; a goal or custom-event trigger fires once per occurrence (or once per digest window)",
                );
            }
        }
        if i.window_secs.is_some() && mode == DeliveryMode::Each {
            return not_for(
                "window_secs",
                "applies to spike and drop triggers and to digests (mode digest); this trigger sends each occurrence",
            );
        }
    } else if mode != DeliveryMode::Each {
        return not_for("mode", "applies to goal and custom-event triggers only");
    }
    if t == TriggerType::TrackingStopped {
        for (set, field) in [
            (i.threshold.is_some(), "threshold"),
            (i.cooldown_secs.is_some(), "cooldown_secs"),
        ] {
            if set {
                return not_for(
                    field,
                    "applies to spike and drop triggers only; a tracking trigger sends one site.tracking_stopped per outage (no events for its window) and one site.tracking_resumed when events are back",
                );
            }
        }
    }
    if i.has_goal && t != TriggerType::GoalCompletion {
        return not_for("goal", "applies to goal triggers only");
    }
    let event_name =
        match (t, i.event_name.as_deref().map(str::trim)) {
            (TriggerType::CustomEvent, Some(n)) if !n.is_empty() => Some(custom_event_name(n)?),
            (TriggerType::CustomEvent, _) => return Err(Invalid::new(
                "event_name",
                Rule::Required,
                "is required: the custom event's name as the site sends it (plausible('Signup'))",
            )),
            (_, Some(n)) if !n.is_empty() => {
                return not_for("event_name", "applies to custom-event triggers only")
            }
            _ => None,
        };
    if !i.props.is_empty() && t != TriggerType::CustomEvent {
        return not_for(
            "props",
            "applies to custom-event triggers only (a goal's props are the goal's, set in Plausible)",
        );
    }
    let mut props = BTreeMap::new();
    for (k, v) in &i.props {
        let (k, v) = (k.trim(), v.trim());
        no_nul("props", k)?;
        no_nul("props", v)?;
        if k.is_empty() || k.chars().count() > 300 || v.chars().count() > 2000 {
            return Err(Invalid::new(
                "props",
                Rule::Syntax,
                "each prop is key=value with a key of 1–300 characters and a value of at most 2000",
            ));
        }
        if props.insert(k.to_string(), v.to_string()).is_some() {
            return Err(Invalid::new(
                "props",
                Rule::Syntax,
                format!(
                    "`{}` is given twice; an event carries one value per prop",
                    k.chars().take(100).collect::<String>()
                ),
            ));
        }
    }
    if props.len() > TRIGGER_PROPS_MAX {
        return Err(Invalid::new(
            "props",
            Rule::TooMany,
            format!("at most {TRIGGER_PROPS_MAX} props"),
        ));
    }
    Ok(TriggerValues {
        threshold: i.threshold.map(threshold).transpose()?,
        window_secs: i.window_secs.map(window_secs).transpose()?,
        cooldown_secs: i.cooldown_secs.map(cooldown_secs).transpose()?,
        event_name,
        props,
        mode,
    })
}

/// A custom event's name as Plausible takes one: 1–120 characters, no
/// control characters; not `pageview` or `engagement`, which Plausible sends
/// itself (a page goal, or a scroll goal, names those).
pub fn custom_event_name(n: &str) -> Valid<String> {
    no_nul("event_name", n)?;
    if n.chars().count() > 120 || n.chars().any(char::is_control) {
        return Err(Invalid::new(
            "event_name",
            Rule::Syntax,
            "an event name is at most 120 characters, without control characters (Plausible's limit)",
        ));
    }
    if n == "pageview" || n == "engagement" {
        return Err(Invalid::new(
            "event_name",
            Rule::NotApplicable,
            format!("`{n}` is Plausible's own event, not a custom event; for pages, add a page goal in Plausible and a goal trigger"),
        ));
    }
    Ok(n.to_string())
}

/// A duration: seconds as a number, or with units as `humantime` reads
/// them: `90s`, `5m`, `12h`, `7d`, several parts adding up (`1h30m`).
pub fn duration_secs(field: &str, raw: &str) -> Valid<i64> {
    let s = raw.trim();
    let bad = || {
        Invalid::new(
            field,
            Rule::Syntax,
            format!("`{raw}` is not a duration like 90s, 5m, 12h or 7d"),
        )
    };
    if let Ok(n) = s.parse::<i64>() {
        return Ok(n);
    }
    // humantime reads `m` as minutes and `M` as months: only the units this
    // tool documents are let through, so `1M` is not a month by accident.
    if s.is_empty() || !s.chars().all(|c| c.is_ascii_digit() || "smhd ".contains(c)) {
        return Err(bad());
    }
    let d = humantime::parse_duration(s).map_err(|_| bad())?;
    i64::try_from(d.as_secs()).map_err(|_| bad())
}

/// `1m,5m,30m` (empty or `none`: no retries).
pub fn retry_schedule_arg(raw: &str) -> Valid<Vec<i32>> {
    let raw = raw.trim();
    if raw.is_empty() || raw.eq_ignore_ascii_case("none") {
        return Ok(Vec::new());
    }
    let secs = raw
        .split(',')
        .map(|p| duration_secs("retry_schedule_secs", p))
        .collect::<Valid<Vec<_>>>()?;
    retry_schedule(&secs)
}

/// A point in time: RFC 3339 (`2026-11-23T10:00:00Z`), or a duration ago (`2h`).
pub fn since(field: &str, raw: &str, now: OffsetDateTime) -> Valid<OffsetDateTime> {
    if let Ok(t) = OffsetDateTime::parse(raw.trim(), &time::format_description::well_known::Rfc3339)
    {
        return Ok(t);
    }
    let secs = duration_secs(field, raw).map_err(|_| {
        Invalid::new(
            field,
            Rule::Syntax,
            format!(
                "`{raw}` is neither a time like 2026-11-23T10:00:00Z nor a duration ago like 2h"
            ),
        )
    })?;
    // Ten years back at most: further is a typo, and would overflow the clock.
    if !(0..=10 * 366 * 86_400).contains(&secs) {
        return Err(Invalid::new(
            field,
            Rule::OutOfRange,
            format!("`{raw}` reaches back more than 10 years"),
        ));
    }
    Ok(now - time::Duration::seconds(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule<T: std::fmt::Debug>(r: Valid<T>) -> (String, Rule) {
        let e = r.unwrap_err();
        (e.field, e.rule)
    }

    #[test]
    fn urls() {
        let g = AddressGuard::default();
        assert_eq!(
            url(" https://example.com/hook?a=1 ", &g).unwrap(),
            "https://example.com/hook?a=1"
        );
        for (u, r) in [
            ("http://example.com/", Rule::HttpsRequired),
            ("https://u:p@example.com/", Rule::Userinfo),
            ("https://10.1.2.3/", Rule::NonPublicHost),
            ("https://[::1]/", Rule::NonPublicHost),
            ("https://localhost:8443/", Rule::NonPublicHost),
            ("nope", Rule::Syntax),
            ("", Rule::Required),
        ] {
            assert_eq!(rule(url(u, &g)), ("url".into(), r), "{u}");
        }
        let long = format!("https://example.com/{}", "a".repeat(2100));
        assert_eq!(rule(url(&long, &g)).1, Rule::TooLong);
        // The guard's one rule: localhost is the loopback it always resolves to.
        let e = url("https://localhost:8443/", &g).unwrap_err();
        assert!(
            e.message
                .starts_with("host is not public: localhost always resolves to 127.0.0.1: 127.0.0.1 is a loopback address"),
            "{e}"
        );
        assert_eq!(
            rule(url("https://[::ffff:192.168.0.1]/", &g)).1,
            Rule::NonPublicHost
        );
        let g = AddressGuard::new(vec!["127.0.0.0/8".parse().unwrap()]);
        assert!(url("https://localhost:8443/x", &g).is_ok());
    }

    #[test]
    fn secrets_names_headers() {
        assert_eq!(rule(secret("short")).1, Rule::TooShort);
        assert_eq!(rule(secret(&"x".repeat(257))).1, Rule::TooLong);
        assert_eq!(
            rule(secret("whsec_!!!not-base64-at-all-but-long-enough")).1,
            Rule::Encoding
        );
        assert!(secret(&crate::delivery::signing::generate_secret()).is_ok());
        assert!(secret(&"p".repeat(32)).is_ok());
        assert_eq!(rule(name("  ")).1, Rule::Required);
        assert_eq!(rule(name(&"n".repeat(256))).1, Rule::TooLong);
        assert_eq!(name(" Slack ").unwrap(), "Slack");
        assert_eq!(rule(header("Content-Type", "x")).1, Rule::Reserved);
        assert_eq!(rule(header("webhook-signature", "x")).1, Rule::Reserved);
        assert_eq!(rule(header("Bad Name", "x")).1, Rule::Syntax);
        assert_eq!(rule(header("X-A", "a\r\nb")).1, Rule::Encoding);
        assert_eq!(
            header_arg("Authorization=Bearer abc").unwrap(),
            ("Authorization".into(), "Bearer abc".into())
        );
        let mut h = BTreeMap::new();
        h.insert("X-A".to_string(), "1".to_string());
        h.insert("x-a".to_string(), "2".to_string());
        assert_eq!(rule(headers(&h)).1, Rule::Duplicate);
    }

    #[test]
    fn event_types_and_subscriptions() {
        for ok in [
            "goal_completion",
            "site.tracking_stopped",
            "a.b_2.c",
            "plausible.x9",
        ] {
            assert_eq!(event_type("event", ok).unwrap(), ok);
        }
        for bad in [
            "",
            "Goal",
            "a..b",
            ".a",
            "a.",
            "1a",
            "a-b",
            "a.*",
            &"a".repeat(65),
        ] {
            assert_eq!(rule(event_type("event", bad)).1, Rule::Syntax, "{bad}");
        }
        for ok in ["*", "site.*", "goal_completion"] {
            assert_eq!(event_pattern(ok).unwrap(), ok);
        }
        for bad in ["**", "site*", "*.site", "site.*.*", ".*"] {
            assert_eq!(
                rule(event_pattern(bad)),
                ("events".into(), Rule::Syntax),
                "{bad}"
            );
        }
        let given: Vec<String> = ["site.*", " site.* ", "test"].map(String::from).to_vec();
        assert_eq!(event_patterns(&given).unwrap(), ["site.*", "test"]);
        let many: Vec<String> = (0..65).map(|i| format!("e{i}")).collect();
        assert_eq!(rule(event_patterns(&many)).1, Rule::TooMany);
    }

    #[test]
    fn numbers_durations_and_triggers() {
        assert_eq!(duration_secs("w", "1h30m").unwrap(), 5400);
        assert_eq!(duration_secs("w", "90").unwrap(), 90);
        assert!(duration_secs("w", "5x").is_err());
        assert_eq!(
            retry_schedule_arg("1m,5m,30m").unwrap(),
            vec![60, 300, 1800]
        );
        assert_eq!(retry_schedule_arg("none").unwrap(), Vec::<i32>::new());
        assert_eq!(rule(retry_schedule_arg("2d")).1, Rule::OutOfRange);
        assert_eq!(
            rule(retry_schedule_arg(&["1s"; 11].join(","))).1,
            Rule::TooMany
        );
        assert_eq!(rule(threshold(0)), ("threshold".into(), Rule::OutOfRange));
        assert!(threshold(10_000_000).is_ok());
        assert_eq!(rule(window_secs(59)).1, Rule::OutOfRange);
        assert_eq!(rule(max_concurrency(1001)).1, Rule::OutOfRange);
        assert_eq!(rule(rate_limit(0)).1, Rule::OutOfRange);
        let goal_with_threshold = TriggerInput {
            threshold: Some(5),
            ..Default::default()
        };
        assert_eq!(
            rule(trigger(TriggerType::GoalCompletion, &goal_with_threshold)),
            ("threshold".into(), Rule::NotApplicable)
        );
        let spike_with_goal = TriggerInput {
            has_goal: true,
            ..Default::default()
        };
        assert_eq!(
            rule(trigger(TriggerType::VisitorSpike, &spike_with_goal)).1,
            Rule::NotApplicable
        );
        assert_eq!(trigger_type("spike").unwrap(), TriggerType::VisitorSpike);
        assert_eq!(
            trigger_type("tracking").unwrap(),
            TriggerType::TrackingStopped
        );
        let tracking_with_threshold = TriggerInput {
            threshold: Some(5),
            ..Default::default()
        };
        assert_eq!(
            rule(trigger(
                TriggerType::TrackingStopped,
                &tracking_with_threshold
            )),
            ("threshold".into(), Rule::NotApplicable)
        );
        let tracking_window = TriggerInput {
            window_secs: Some(7200),
            ..Default::default()
        };
        assert_eq!(
            trigger(TriggerType::TrackingStopped, &tracking_window)
                .unwrap()
                .window_secs,
            Some(7200)
        );
        let now = time::macros::datetime!(2026-11-23 12:00 UTC);
        assert_eq!(
            since("since", "2h", now).unwrap(),
            time::macros::datetime!(2026-11-23 10:00 UTC)
        );
        assert_eq!(
            since("since", "2026-11-23T09:00:00Z", now).unwrap(),
            time::macros::datetime!(2026-11-23 09:00 UTC)
        );
    }
}
