//! Configuration: a TOML file (see `config/plausible-webhooks.example.toml`, where
//! every key is documented), every key overridable from the environment.
//!
//! Environment overrides: `PLAUSIBLE_WEBHOOKS__<SECTION>__<KEY>=<value>` sets
//! `[section] key`; the value is read as a TOML value when it parses as one
//! (numbers, booleans, arrays) and as a string otherwise. `DATABASE_URL` sets
//! `database.url`. The defaults below are the documented ones.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Exit status for bad configuration (sysexits.h EX_CONFIG).
pub const EX_CONFIG: i32 = 78;

pub const ENV_PREFIX: &str = "PLAUSIBLE_WEBHOOKS__";
/// The variables of this name family that are read elsewhere (`--config`'s,
/// the test kit's): not mistakes for `ENV_PREFIX`.
const OTHER_VARS: &[&str] = &[
    "PLAUSIBLE_WEBHOOKS_CONFIG",
    "PLAUSIBLE_WEBHOOKS_TEST_PG_DIR",
    "PLAUSIBLE_WEBHOOKS_TEST_PG_IDLE_SECS",
    "PLAUSIBLE_WEBHOOKS_CHDB_PYTHON",
    "PLAUSIBLE_WEBHOOKS_CHDB24_PYTHON",
    OPERATOR_SECRET_VAR,
    SMTP_PASSWORD_VAR,
];
/// The configuration's sections, the tables of [`Config`] (a unit test
/// holds the two together).
pub const SECTIONS: &[&str] = &[
    "database",
    "delivery",
    "queue",
    "health",
    "shutdown",
    "log",
    "retention",
    "admin",
    "analytics",
    "triggers",
    "plausible",
    "web",
    "limits",
    "mail",
];
pub const DEFAULT_CONFIG_PATH: &str = "/etc/plausible-webhooks/config.toml";

/// A configuration error: names the key, where its value came from (the
/// file's line or the environment variable), and says what to do.
#[derive(Debug)]
pub struct ConfigError {
    /// `section.key`, when the error is about one key.
    key: Option<String>,
    /// Where the key's value was set, once known (`Origins::annotate`).
    origin: Option<String>,
    msg: String,
}

impl ConfigError {
    fn plain(msg: impl Into<String>) -> ConfigError {
        ConfigError {
            key: None,
            origin: None,
            msg: msg.into(),
        }
    }

    /// The key the error is about (`section.key`), if it is about one.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.key, &self.origin) {
            (Some(k), Some(o)) => write!(f, "config key `{k}` ({o}): {}", self.msg),
            (Some(k), None) => write!(f, "config key `{k}`: {}", self.msg),
            (None, _) => f.write_str(&self.msg),
        }
    }
}
impl std::error::Error for ConfigError {}

fn bad(key: &str, msg: impl std::fmt::Display) -> ConfigError {
    ConfigError {
        key: Some(key.to_string()),
        origin: None,
        msg: msg.to_string(),
    }
}

/// Where each key's value came from, to name it in errors.
struct Origins {
    /// The config file's name (None: no file, or text handed in directly).
    file: Option<String>,
    /// `section.key` → the 1-based line of the file that sets it.
    lines: BTreeMap<String, usize>,
    /// `section.key` → the environment variable that set it (these win).
    env: BTreeMap<String, String>,
}

impl Origins {
    fn new(text: &str, file: Option<&Path>) -> Origins {
        // Spans of each `[section] key = value`; a file of another shape
        // (its errors are reported without a line) gives none.
        type Spanned = BTreeMap<String, BTreeMap<String, toml::Spanned<toml::Value>>>;
        let line_of = |at: usize| text[..at.min(text.len())].matches('\n').count() + 1;
        let lines = toml::from_str::<Spanned>(text)
            .map(|sections| {
                sections
                    .iter()
                    .flat_map(|(s, keys)| {
                        keys.iter()
                            .map(move |(k, v)| (format!("{s}.{k}"), line_of(v.span().start)))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Origins {
            file: file.map(|p| p.display().to_string()),
            lines,
            env: BTreeMap::new(),
        }
    }

    fn origin(&self, key: &str) -> Option<String> {
        // A section's own errors (an unknown section) are where its first
        // key was set: the section itself has no line or variable of its own.
        let within = |k: &&String| k.starts_with(&format!("{key}."));
        let var = self
            .env
            .get(key)
            .or_else(|| self.env.keys().find(within).map(|k| &self.env[k]));
        if let Some(var) = var {
            return Some(format!("set by the environment variable {var}"));
        }
        let line = self
            .lines
            .get(key)
            .or_else(|| self.lines.keys().find(within).map(|k| &self.lines[k]))?;
        Some(match &self.file {
            Some(f) => format!("{f} line {line}"),
            None => format!("config file line {line}"),
        })
    }

    fn annotate(&self, mut e: ConfigError) -> ConfigError {
        if e.origin.is_none() {
            e.origin = e.key.as_deref().and_then(|k| self.origin(k));
        }
        e
    }

    /// A deserialization error, naming the key and the expected form.
    fn deserialize_error(&self, e: serde_path_to_error::Error<toml::de::Error>) -> ConfigError {
        let key = e.path().to_string();
        let raw = e.inner().message().trim().to_string();
        if key.is_empty() || key == "." {
            return ConfigError::plain(format!("config: {raw}"));
        }
        let mut msg = plain_words(&raw);
        if raw.starts_with("unknown field") {
            msg.push_str(
                "; remove it or fix its name (config/plausible-webhooks.example.toml documents every key)",
            );
        }
        if raw.contains("expected a sequence") {
            let example = array_example(&key);
            match self.env.get(&key) {
                Some(var) => msg.push_str(&format!(
                    "; write it as a TOML array, quoted for the shell: {var}='{example}'"
                )),
                None => msg.push_str(&format!("; write it as a TOML array: {example}")),
            }
        }
        self.annotate(bad(&key, msg))
    }
}

/// serde's type names in the words the config example uses.
fn plain_words(msg: &str) -> String {
    let mut out = msg.to_string();
    for (from, to) in [
        ("expected usize", "expected a whole number"),
        ("expected u64", "expected a whole number"),
        ("expected u32", "expected a whole number"),
        ("expected u16", "expected a whole number"),
        ("expected i64", "expected a whole number"),
        ("expected i32", "expected a whole number"),
        ("expected f64", "expected a number"),
        ("expected a sequence", "expected an array"),
    ] {
        out = out.replace(from, to);
    }
    out
}

/// What an array key's value looks like, for the error that says how to write it.
fn array_example(key: &str) -> &'static str {
    match key {
        "delivery.allow_cidrs" => r#"["127.0.0.0/8"]"#,
        "delivery.retry_schedule_secs" => "[60, 300, 1800]",
        "admin.operator_token_sha256" => r#"["<64 hex digits: sha256 of the token>"]"#,
        _ => "[...]",
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub database: DatabaseConfig,
    pub delivery: DeliveryConfig,
    pub queue: QueueConfig,
    pub health: HealthConfig,
    pub shutdown: ShutdownConfig,
    pub log: LogConfig,
    pub retention: RetentionConfig,
    pub admin: AdminConfig,
    pub analytics: AnalyticsConfig,
    pub triggers: TriggersConfig,
    pub plausible: PlausibleConfig,
    pub web: WebConfig,
    pub limits: LimitsConfig,
    pub mail: MailConfig,
    /// What was set but means nothing (a variable that looks like an
    /// override and is none): said once at start, not refused, since such a
    /// variable may belong to another program.
    #[serde(skip)]
    pub warnings: Vec<String>,
    /// The file it was read from (None: no file), to name it.
    #[serde(skip)]
    pub file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// libpq-style URL or key=value string. Must be a direct or session-pooled
    /// connection: PgBouncer in transaction mode breaks LISTEN.
    pub url: String,
    pub pool_size: usize,
    /// false: the daemon's own bookkeeping commits without waiting for the
    /// WAL flush (PostgreSQL's `synchronous_commit = off`, for its sessions
    /// only). Faster; after a PostgreSQL crash (not a daemon crash) the last
    /// fraction of a second of outcomes is redone: deliveries may be sent
    /// again, with the same `webhook-id`. See db::engine_pool.
    pub synchronous_commit: bool,
}
pub const DEFAULT_POOL_SIZE: usize = 8;
/// The two forms `database.url` takes, for the errors that refuse it.
const DATABASE_URL_FORMS: &str = "postgres://user:password@host:5432/dbname, or key=value pairs: host=/var/run/postgresql user=plausible dbname=plausible_db";

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            pool_size: DEFAULT_POOL_SIZE,
            synchronous_commit: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// Deliveries in flight (claimed, not yet completed) per instance.
    pub max_in_flight: usize,
    pub connect_timeout_ms: u64,
    /// Whole request: connect, TLS, send, response head and body.
    pub request_timeout_ms: u64,
    /// How long a claim is held. Must exceed request_timeout_ms plus a margin,
    /// so a delivery still in flight is never rescued and sent twice.
    pub lease_secs: u64,
    /// Seconds to wait after each failed attempt; its length is the number of retries.
    pub retry_schedule_secs: Vec<u32>,
    /// Relative jitter applied to each retry delay (0.1 = ±10%).
    pub retry_jitter: f64,
    /// Upper bound for a receiver's Retry-After.
    pub retry_after_cap_secs: u32,
    /// At most this much of a response body is read.
    pub response_read_max_bytes: usize,
    /// At most this much of a response body is stored in the attempt log.
    pub response_log_max_bytes: usize,
    /// Per-webhook rate limit when the webhook sets none (over all
    /// instances together: see queue::admission); 0 = unlimited.
    pub default_rate_limit_per_sec: u32,
    /// Per-webhook concurrent requests (per instance) when the webhook sets
    /// none; a webhook's own max_concurrency holds over all instances.
    pub default_max_concurrency: u32,
    /// PEM file of extra CA certificates trusted besides the webpki roots.
    pub extra_ca_file: Option<PathBuf>,
    /// CIDRs exempt from the address guard (e.g. "127.0.0.0/8" for tests).
    pub allow_cidrs: Vec<String>,
    /// Largest payload a delivery may be enqueued with, in bytes of the
    /// payload as PostgreSQL renders it (`octet_length(payload::text)`, what
    /// goes into the body's `data`). Enforced by the database on INSERT and
    /// UPDATE (migration 5), whoever writes; the daemon writes this value
    /// into the database at `migrate` and at start. Rows queued before are
    /// delivered as written. Also what a claim may budget per row.
    pub max_payload_bytes: usize,
    /// Payload bytes this instance holds in flight at most (claimed, outcome
    /// not yet written): a claim takes rows only while their payloads fit, so
    /// a burst of large payloads cannot take the daemon's memory with it
    /// (memory is about twice this: the payload and the signed body). One
    /// row always goes when nothing is in flight, whatever its size.
    pub max_bytes_in_flight: usize,
}
pub const DEFAULT_MAX_IN_FLIGHT: usize = 512;
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 5_000;
pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 10_000;
pub const DEFAULT_LEASE_SECS: u64 = 30;
/// The lease must exceed the request timeout by at least this much.
pub const MIN_LEASE_MARGIN: Duration = Duration::from_secs(2);
pub const DEFAULT_RETRY_SCHEDULE_SECS: [u32; 3] = [60, 300, 1800];
pub const MAX_RETRIES: usize = 10;
pub const MAX_RETRY_DELAY_SECS: u32 = 86_400;
pub const DEFAULT_RETRY_JITTER: f64 = 0.1;
pub const DEFAULT_RETRY_AFTER_CAP_SECS: u32 = 3_600;
pub const DEFAULT_RESPONSE_READ_MAX_BYTES: usize = 64 * 1024;
pub const DEFAULT_RESPONSE_LOG_MAX_BYTES: usize = 4 * 1024;
pub const DEFAULT_MAX_CONCURRENCY: u32 = 64;
/// 256 KiB: hundreds of times what Plausible's events need (a goal
/// completion or spike is under 2 KiB), as much as SQS/SNS carry in a
/// message and in line with hosted webhook services (Hook0 takes ~700 KiB,
/// Novu 512 KB); 512 in flight then hold at most ~128 MiB of payload text.
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 256 * 1024;
/// The database refuses limits outside this range too (migration 5's CHECK):
/// the test event and every trigger payload's fixed part fit in 4 KiB, and
/// above 16 MiB a full in-flight window could take gigabytes.
pub const MIN_MAX_PAYLOAD_BYTES: usize = 4 * 1024;
pub const MAX_MAX_PAYLOAD_BYTES: usize = 16 * 1024 * 1024;
/// 32 MiB: 512 deliveries of 64 KiB; Plausible's events (under 2 KiB) never reach it.
pub const DEFAULT_MAX_BYTES_IN_FLIGHT: usize = 32 * 1024 * 1024;
pub const MIN_MAX_BYTES_IN_FLIGHT: usize = 1024 * 1024;
pub const MAX_MAX_BYTES_IN_FLIGHT: usize = 4 * 1024 * 1024 * 1024;

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            connect_timeout_ms: DEFAULT_CONNECT_TIMEOUT_MS,
            request_timeout_ms: DEFAULT_REQUEST_TIMEOUT_MS,
            lease_secs: DEFAULT_LEASE_SECS,
            retry_schedule_secs: DEFAULT_RETRY_SCHEDULE_SECS.to_vec(),
            retry_jitter: DEFAULT_RETRY_JITTER,
            retry_after_cap_secs: DEFAULT_RETRY_AFTER_CAP_SECS,
            response_read_max_bytes: DEFAULT_RESPONSE_READ_MAX_BYTES,
            response_log_max_bytes: DEFAULT_RESPONSE_LOG_MAX_BYTES,
            default_rate_limit_per_sec: 0,
            default_max_concurrency: DEFAULT_MAX_CONCURRENCY,
            extra_ca_file: None,
            allow_cidrs: Vec::new(),
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
            max_bytes_in_flight: DEFAULT_MAX_BYTES_IN_FLIGHT,
        }
    }
}

impl DeliveryConfig {
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.lease_secs)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Backstop poll when no notification arrives (±20% jitter).
    pub poll_interval_ms: u64,
    /// Most rows one claim takes.
    pub claim_batch_max: usize,
    /// Most completions written in one statement.
    pub complete_batch_max: usize,
    /// Completion statements in flight at once (on as many connections).
    pub complete_in_flight: usize,
    /// How often expired leases are looked for.
    pub rescue_interval_ms: u64,
    /// How often the LISTEN connection is checked with a cheap query.
    pub listener_check_interval_ms: u64,
}
pub const DEFAULT_POLL_INTERVAL_MS: u64 = 5_000;
pub const DEFAULT_CLAIM_BATCH_MAX: usize = 1_000;
pub const DEFAULT_COMPLETE_BATCH_MAX: usize = 2_000;
/// One: two at once measured no faster on a 2-core machine, where the
/// daemon, PostgreSQL and the receiver share the cores (docs/benchmarks.md);
/// more may help where PostgreSQL has cores to spare.
pub const DEFAULT_COMPLETE_IN_FLIGHT: usize = 1;
pub const DEFAULT_RESCUE_INTERVAL_MS: u64 = 10_000;
pub const DEFAULT_LISTENER_CHECK_INTERVAL_MS: u64 = 15_000;

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            poll_interval_ms: DEFAULT_POLL_INTERVAL_MS,
            claim_batch_max: DEFAULT_CLAIM_BATCH_MAX,
            complete_batch_max: DEFAULT_COMPLETE_BATCH_MAX,
            complete_in_flight: DEFAULT_COMPLETE_IN_FLIGHT,
            rescue_interval_ms: DEFAULT_RESCUE_INTERVAL_MS,
            listener_check_interval_ms: DEFAULT_LISTENER_CHECK_INTERVAL_MS,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// A webhook is disabled after this many consecutive deliveries ended `failed`...
    pub disable_after_failures: u32,
    /// ...spanning at least this long. 0 failures disables auto-disable.
    pub disable_after_secs: u64,
    /// This many consecutive deliveries ended `failed` make a webhook
    /// `failing` and send `webhook.failing` (docs/events.md); written into
    /// the database at `migrate` and at start.
    pub failing_after_failures: u32,
    /// Where operational events go besides the sites' subscribed webhooks
    /// (`webhook.failing`, `.disabled`, `.recovered`, `delivery.exhausted`),
    /// and the only place the analytics source's health goes
    /// (`analytics.unavailable`, `.incompatible`, `.recovered`): an https URL, signed with the secret from
    /// PLAUSIBLE_WEBHOOKS_OPERATOR_SECRET or `operator_secret_file`. Empty:
    /// none.
    pub operator_url: String,
    /// How the operator endpoint's messages are written: `standard` (the
    /// signed envelope), or a chat service's incoming-webhook message
    /// (`slack`, `discord`, `teams`, `google_chat`;
    /// docs/receiving.md#chat-formats), so the operator's alerts can go
    /// straight to a channel.
    pub operator_format: String,
    pub operator_secret_file: Option<PathBuf>,
    /// Resolved from the environment or the file (never from TOML).
    #[serde(skip)]
    pub operator_secret: Option<Redacted>,
}
pub const DEFAULT_DISABLE_AFTER_FAILURES: u32 = 20;
pub const DEFAULT_DISABLE_AFTER_SECS: u64 = 86_400;
/// The first delivery that fails for good opens a streak worth telling.
pub const DEFAULT_FAILING_AFTER_FAILURES: u32 = 1;
/// The operator endpoint's secret, from the environment.
pub const OPERATOR_SECRET_VAR: &str = "PLAUSIBLE_WEBHOOKS_OPERATOR_SECRET";
pub const DEFAULT_OPERATOR_FORMAT: &str = "standard";
/// The message formats a webhook may have, as stored (the `webhooks_format`
/// CHECK of sql/0018; `delivery::chat::Format` renders each and a test there
/// keeps the two lists equal).
pub const MESSAGE_FORMATS: [&str; 5] = ["standard", "slack", "discord", "teams", "google_chat"];

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            disable_after_failures: DEFAULT_DISABLE_AFTER_FAILURES,
            disable_after_secs: DEFAULT_DISABLE_AFTER_SECS,
            failing_after_failures: DEFAULT_FAILING_AFTER_FAILURES,
            operator_url: String::new(),
            operator_format: DEFAULT_OPERATOR_FORMAT.into(),
            operator_secret_file: None,
            operator_secret: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// On SIGTERM, in-flight deliveries get this long to finish; the rest are
    /// released back to the queue.
    pub grace_secs: u64,
}
pub const DEFAULT_GRACE_SECS: u64 = 15;

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            grace_secs: DEFAULT_GRACE_SECS,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// "text" or "json".
    pub format: String,
    /// A tracing-subscriber filter, e.g. "info" or "plausible_webhooks=debug". RUST_LOG wins.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: "text".into(),
            level: "info".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Finished deliveries (and their attempts) older than this are pruned.
    pub days: u32,
    pub prune_interval_secs: u64,
    pub prune_batch: i64,
}
pub const DEFAULT_RETENTION_DAYS: u32 = 30;
pub const DEFAULT_PRUNE_INTERVAL_SECS: u64 = 600;
pub const DEFAULT_PRUNE_BATCH: i64 = 5_000;

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            days: DEFAULT_RETENTION_DAYS,
            prune_interval_secs: DEFAULT_PRUNE_INTERVAL_SECS,
            prune_batch: DEFAULT_PRUNE_BATCH,
        }
    }
}

/// Caps on what one site can set up, against amplification (a site with
/// 10,000 webhooks, a webhook with 1,000 triggers, one event fanned out to
/// 10,000 deliveries). The database enforces them on every writer (migration
/// 12); the daemon writes these values into it at `migrate` and at start.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Webhooks a site may have (deleted ones, still restorable, apart).
    pub max_webhooks_per_site: u32,
    /// Triggers a webhook may have.
    pub max_triggers_per_webhook: u32,
    /// Deliveries one `webhook_enqueue` call may make.
    pub max_enqueue_deliveries: u32,
}
pub const DEFAULT_MAX_WEBHOOKS_PER_SITE: u32 = 100;
pub const DEFAULT_MAX_TRIGGERS_PER_WEBHOOK: u32 = 20;
pub const DEFAULT_MAX_ENQUEUE_DELIVERIES: u32 = 100;
/// The largest any cap may be set to (the database's CHECK says the same).
pub const MAX_LIMIT: u32 = 1_000_000;

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_webhooks_per_site: DEFAULT_MAX_WEBHOOKS_PER_SITE,
            max_triggers_per_webhook: DEFAULT_MAX_TRIGGERS_PER_WEBHOOK,
            max_enqueue_deliveries: DEFAULT_MAX_ENQUEUE_DELIVERIES,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Address of the admin HTTP listener (health, metrics, REST API), e.g.
    /// "127.0.0.1:8787". Empty: no listener.
    pub listen: String,
    /// The listener speaks plain HTTP: a non-loopback address must be allowed
    /// explicitly (put TLS in front of it).
    pub allow_non_loopback: bool,
    /// Lowercase hex SHA-256 of each operator bearer token (access to every site).
    pub operator_token_sha256: Vec<String>,
    /// File holding Plausible's SECRET_KEY_BASE, for Plausible API keys. The
    /// SECRET_KEY_BASE environment variable wins over it.
    pub secret_key_base_file: Option<PathBuf>,
    /// Resolved from SECRET_KEY_BASE or `secret_key_base_file` (never from TOML).
    #[serde(skip)]
    pub secret_key_base: Option<Redacted>,
}

impl AdminConfig {
    /// The listen address, None when the listener is off.
    pub fn listen_addr(&self) -> Result<Option<std::net::SocketAddr>, ConfigError> {
        if self.listen.trim().is_empty() {
            return Ok(None);
        }
        let addr: std::net::SocketAddr = self.listen.trim().parse().map_err(|_| {
            bad(
                "admin.listen",
                format!("`{}` is not an address like 127.0.0.1:8787", self.listen),
            )
        })?;
        if !addr.ip().is_loopback() && !self.allow_non_loopback {
            return Err(bad(
                "admin.listen",
                format!(
                    "{addr} is not a loopback address; the admin listener speaks plain HTTP with bearer tokens: \
                     keep it on 127.0.0.1 (behind a TLS proxy) or set admin.allow_non_loopback = true"
                ),
            ));
        }
        Ok(Some(addr))
    }
}

/// A secret: kept out of `Debug` output (and so out of logs).
#[derive(Clone, PartialEq, Eq)]
pub struct Redacted(pub String);

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnalyticsConfig {
    /// Where analytics events are read: "postgres" (a table or view with
    /// Plausible's events_v2 column names) or "clickhouse" (Plausible's own
    /// events_v2, over ClickHouse's HTTP interface).
    pub source: String,
    /// The table or view, optionally qualified (`analytics.events_v2`: a
    /// PostgreSQL schema, or a ClickHouse database).
    pub table: String,
    /// A separate PostgreSQL database for the events; empty = `database.url`.
    pub database_url: String,
    /// Timeout of one analytics query (PostgreSQL's statement_timeout; for
    /// ClickHouse, the whole HTTP request).
    pub query_timeout_ms: u64,
    /// ClickHouse's HTTP(S) interface, as Plausible's CLICKHOUSE_DATABASE_URL
    /// without credentials: `http://127.0.0.1:8123/plausible_events_db` (the
    /// path names the database; empty = plausible_events_db).
    pub clickhouse_url: String,
    /// The ClickHouse user (a read-only one: README "ClickHouse").
    pub clickhouse_user: String,
    /// File holding the ClickHouse user's password. The CLICKHOUSE_PASSWORD
    /// environment variable wins over it; neither is ever logged.
    pub clickhouse_password_file: Option<PathBuf>,
    /// Resolved from CLICKHOUSE_PASSWORD or `clickhouse_password_file` (never from TOML).
    #[serde(skip)]
    pub clickhouse_password: Option<Redacted>,
    /// PEM file of extra CA certificates for an https:// ClickHouse URL.
    pub clickhouse_ca_file: Option<PathBuf>,
    pub clickhouse_connect_timeout_ms: u64,
}
pub const DEFAULT_ANALYTICS_TABLE: &str = "events_v2";
pub const DEFAULT_ANALYTICS_QUERY_TIMEOUT_MS: u64 = 30_000;
/// Plausible's ClickHouse database name.
pub const DEFAULT_CLICKHOUSE_DATABASE: &str = "plausible_events_db";
pub const DEFAULT_CLICKHOUSE_USER: &str = "default";
pub const DEFAULT_CLICKHOUSE_CONNECT_TIMEOUT_MS: u64 = 5_000;

impl Default for AnalyticsConfig {
    fn default() -> Self {
        Self {
            source: "postgres".into(),
            table: DEFAULT_ANALYTICS_TABLE.into(),
            database_url: String::new(),
            query_timeout_ms: DEFAULT_ANALYTICS_QUERY_TIMEOUT_MS,
            clickhouse_url: String::new(),
            clickhouse_user: DEFAULT_CLICKHOUSE_USER.into(),
            clickhouse_password_file: None,
            clickhouse_password: None,
            clickhouse_ca_file: None,
            clickhouse_connect_timeout_ms: DEFAULT_CLICKHOUSE_CONNECT_TIMEOUT_MS,
        }
    }
}

/// Where the ClickHouse source connects, resolved from `analytics.*`.
#[derive(Debug, Clone)]
pub struct ClickhouseTarget {
    /// scheme://host:port, no path, no credentials.
    pub endpoint: url::Url,
    pub database: String,
    pub table: String,
}

impl AnalyticsConfig {
    /// The ClickHouse endpoint, database and table (validated).
    pub fn clickhouse_target(&self) -> Result<ClickhouseTarget, ConfigError> {
        let raw = self.clickhouse_url.trim();
        if raw.is_empty() {
            return Err(bad(
                "analytics.clickhouse_url",
                "is not set; set it to ClickHouse's HTTP interface, e.g. \"http://127.0.0.1:8123/plausible_events_db\"",
            ));
        }
        let url = url::Url::parse(raw).map_err(|e| {
            bad(
                "analytics.clickhouse_url",
                format!("cannot be parsed ({e}); use http://host:8123/database"),
            )
        })?;
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err(bad(
                "analytics.clickhouse_url",
                format!("`{}` is not http or https: the source speaks ClickHouse's HTTP interface (port 8123, or 8443 for TLS)", url.scheme()),
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad(
                "analytics.clickhouse_url",
                "must not carry credentials: put the user in analytics.clickhouse_user and the password in \
                 CLICKHOUSE_PASSWORD or analytics.clickhouse_password_file",
            ));
        }
        if url.host_str().is_none() || url.query().is_some() || url.fragment().is_some() {
            return Err(bad(
                "analytics.clickhouse_url",
                format!("`{raw}` must be scheme://host:port/database, with no query or fragment"),
            ));
        }
        let path_db = url.path().trim_matches('/');
        let (database, table) = match self.table.split_once('.') {
            Some((db, table)) => {
                if !path_db.is_empty() && path_db != db {
                    return Err(bad(
                        "analytics.table",
                        format!("names database `{db}` but analytics.clickhouse_url names `{path_db}`; name it once"),
                    ));
                }
                (db.to_string(), table.to_string())
            }
            None if path_db.is_empty() => {
                (DEFAULT_CLICKHOUSE_DATABASE.to_string(), self.table.clone())
            }
            None => (path_db.to_string(), self.table.clone()),
        };
        if !is_identifier(&database) {
            return Err(bad(
                "analytics.clickhouse_url",
                format!("the database `{database}` is not a name (letters, digits, _)"),
            ));
        }
        let mut endpoint = url.clone();
        endpoint.set_path("");
        Ok(ClickhouseTarget {
            endpoint,
            database,
            table,
        })
    }

    /// The database the events are read from.
    pub fn url<'a>(&'a self, main: &'a DatabaseConfig) -> &'a str {
        if self.database_url.trim().is_empty() {
            &main.url
        } else {
            &self.database_url
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TriggersConfig {
    /// Off: this instance evaluates no triggers (it still delivers).
    pub enabled: bool,
    /// How often each visitor_spike / traffic_drop trigger is evaluated.
    pub evaluation_interval_secs: u64,
    /// Triggers claimed per transaction by one instance.
    pub evaluation_batch: i64,
    /// How often each goal_completion trigger scans for new completions.
    pub goal_scan_interval_ms: u64,
    /// Events may reach the analytics table this late (and out of order):
    /// every scan looks this far back behind its cursor.
    pub goal_lateness_secs: u64,
    /// A goal trigger whose cursor is older than this (daemon down, trigger
    /// re-enabled) resumes from this far back, with a warning.
    pub goal_max_catchup_secs: u64,
}
pub const DEFAULT_EVALUATION_INTERVAL_SECS: u64 = 60;
pub const DEFAULT_EVALUATION_BATCH: i64 = 500;
pub const DEFAULT_GOAL_SCAN_INTERVAL_MS: u64 = 1_000;
pub const DEFAULT_GOAL_LATENESS_SECS: u64 = 60;
pub const DEFAULT_GOAL_MAX_CATCHUP_SECS: u64 = 3_600;

impl Default for TriggersConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            evaluation_interval_secs: DEFAULT_EVALUATION_INTERVAL_SECS,
            evaluation_batch: DEFAULT_EVALUATION_BATCH,
            goal_scan_interval_ms: DEFAULT_GOAL_SCAN_INTERVAL_MS,
            goal_lateness_secs: DEFAULT_GOAL_LATENESS_SECS,
            goal_max_catchup_secs: DEFAULT_GOAL_MAX_CATCHUP_SECS,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct PlausibleConfig {
    /// Plausible's public URL (`https://plausible.example.com`); when set,
    /// spike and drop payloads carry a dashboard link.
    pub base_url: String,
}

/// Where the web page is served under the admin listener (what a reverse
/// proxy beside Plausible forwards: `https://plausible.example.com/webhooks/`).
pub const DEFAULT_WEB_BASE_PATH: &str = "/webhooks";
/// Plausible CE's session cookie (since 2.1.3; 2.1.0–2.1.2 named it `_plausible_prod`).
pub const PLAUSIBLE_SESSION_COOKIE: &str = "_plausible_key";
/// Plausible's endpoint signing salt (since 2.1.0; a literal in its
/// `lib/plausible_web/endpoint.ex`, not configurable there).
pub const PLAUSIBLE_SIGNING_SALT: &str =
    "I45i0SKHEku2f3tJh6y4v8gztrb/eG5KGCOe/o/AwFb7VHeuvDOn7AAq6KsdmOFM";
/// How long the page's own sign-ins (an API key, a portal link) last.
pub const DEFAULT_WEB_SESSION_HOURS: u32 = 12;
pub const MAX_WEB_SESSION_HOURS: u32 = 720;

/// The web page for site owners (docs/web.md): served by the admin listener
/// under `base_path`, signed in with the Plausible session the browser
/// already has (when the page is on Plausible's host), a Plausible API key,
/// or a portal link.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebConfig {
    pub enabled: bool,
    /// The path the page is served under, e.g. "/webhooks" (no trailing slash).
    pub base_path: String,
    /// The page's public address up to the host (`https://plausible.example.com`),
    /// for links to it (portal links, emails); empty: `plausible.base_url`.
    pub public_url: String,
    /// Plausible's session cookie: its name and signing salt (Plausible CE's by default).
    pub session_cookie: String,
    pub signing_salt: String,
    /// How long a sign-in with an API key or a portal link lasts.
    pub session_hours: u32,
    /// Offer sign-in with a Plausible API key (for a page not on Plausible's host).
    pub api_key_sign_in: bool,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            enabled: false,
            base_path: DEFAULT_WEB_BASE_PATH.into(),
            public_url: String::new(),
            session_cookie: PLAUSIBLE_SESSION_COOKIE.into(),
            signing_salt: PLAUSIBLE_SIGNING_SALT.into(),
            session_hours: DEFAULT_WEB_SESSION_HOURS,
            api_key_sign_in: true,
        }
    }
}

/// Owner emails (docs/operating.md#owner-emails): when a webhook is
/// disabled, the owners and admins of its site's team are told by email.
/// Opt-in. Each key left empty (0 for the port) is taken from Plausible CE's
/// own mailer variables when they are set (SMTP_HOST_ADDR, SMTP_HOST_PORT,
/// SMTP_USER_NAME, SMTP_USER_PWD, SMTP_HOST_SSL_ENABLED, MAILER_EMAIL,
/// MAILER_NAME), so the daemon beside Plausible mails as Plausible does.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MailConfig {
    pub enabled: bool,
    /// The SMTP server (else SMTP_HOST_ADDR).
    pub smtp_host: String,
    /// Else SMTP_HOST_PORT, else 465 for `tls = "implicit"`, 587 for `starttls`.
    pub smtp_port: u16,
    /// Else SMTP_USER_NAME; empty: no authentication.
    pub smtp_user: String,
    /// The password: PLAUSIBLE_WEBHOOKS_SMTP_PASSWORD, else SMTP_USER_PWD,
    /// else this file (never from TOML).
    pub smtp_password_file: Option<PathBuf>,
    #[serde(skip)]
    pub smtp_password: Option<Redacted>,
    /// `starttls` (STARTTLS required, never plain text) or `implicit` (TLS
    /// from the first byte, port 465); else SMTP_HOST_SSL_ENABLED=true means
    /// implicit, anything else starttls.
    pub tls: String,
    /// A PEM file of CA certificates trusted beside the webpki roots (a
    /// relay with a private CA).
    pub ca_file: Option<PathBuf>,
    /// The From address (else MAILER_EMAIL, with MAILER_NAME as its name).
    pub sender: String,
    /// One mail's whole SMTP conversation, connect to QUIT.
    pub timeout_secs: u64,
    /// Attempts before a mail is given up (`failed`, its error kept).
    pub max_attempts: u32,
    /// How often the mailer looks for mails to send (a failed attempt is
    /// retried after `retry_secs`, doubled each time).
    pub interval_secs: u64,
    pub retry_secs: u64,
}

/// The SMTP password, from the environment.
pub const SMTP_PASSWORD_VAR: &str = "PLAUSIBLE_WEBHOOKS_SMTP_PASSWORD";

impl Default for MailConfig {
    fn default() -> Self {
        MailConfig {
            enabled: false,
            smtp_host: String::new(),
            smtp_port: 0,
            smtp_user: String::new(),
            smtp_password_file: None,
            smtp_password: None,
            tls: String::new(),
            ca_file: None,
            sender: String::new(),
            timeout_secs: 30,
            max_attempts: 5,
            interval_secs: 10,
            retry_secs: 60,
        }
    }
}

impl MailConfig {
    /// Fills what the file left empty from Plausible CE's mailer variables.
    fn resolve(&mut self, env: &BTreeMap<String, String>) -> Result<(), ConfigError> {
        let var = |k: &str| {
            env.get(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        if self.smtp_host.trim().is_empty() {
            self.smtp_host = var("SMTP_HOST_ADDR").unwrap_or_default();
        }
        if self.tls.trim().is_empty() {
            let ssl = var("SMTP_HOST_SSL_ENABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"));
            self.tls = if ssl { "implicit" } else { "starttls" }.into();
        }
        if self.smtp_port == 0 {
            self.smtp_port = match var("SMTP_HOST_PORT") {
                Some(p) => p.parse().map_err(|_| {
                    bad(
                        "mail.smtp_port",
                        format!("SMTP_HOST_PORT `{p}` is not a port number"),
                    )
                })?,
                None if self.tls == "implicit" => 465,
                None => 587,
            };
        }
        if self.smtp_user.trim().is_empty() {
            self.smtp_user = var("SMTP_USER_NAME").unwrap_or_default();
        }
        if self.sender.trim().is_empty() {
            if let Some(email) = var("MAILER_EMAIL") {
                self.sender = match var("MAILER_NAME") {
                    Some(name) => format!("{name} <{email}>"),
                    None => email,
                };
            }
        }
        self.smtp_password = match secret(env, SMTP_PASSWORD_VAR, None, "mail.smtp_password_file")?
        {
            Some(p) => Some(p),
            None => secret(
                env,
                "SMTP_USER_PWD",
                self.smtp_password_file.as_deref(),
                "mail.smtp_password_file",
            )?,
        };
        Ok(())
    }

    fn check(&self) -> Result<(), ConfigError> {
        if !self.enabled {
            return Ok(());
        }
        if self.smtp_host.trim().is_empty() {
            return Err(bad(
                "mail.smtp_host",
                "owner emails need an SMTP server: set mail.smtp_host or Plausible's SMTP_HOST_ADDR",
            ));
        }
        if !["starttls", "implicit"].contains(&self.tls.as_str()) {
            return Err(bad(
                "mail.tls",
                format!(
                    "`{}` is not starttls or implicit (mail goes over TLS only)",
                    self.tls
                ),
            ));
        }
        if self.sender.trim().is_empty() {
            return Err(bad(
                "mail.sender",
                "owner emails need a From address: set mail.sender or Plausible's MAILER_EMAIL",
            ));
        }
        if self.sender.parse::<lettre::message::Mailbox>().is_err() {
            return Err(bad(
                "mail.sender",
                format!("`{}` is not an address like webhooks@example.com or Name <webhooks@example.com>", self.sender),
            ));
        }
        if !self.smtp_user.is_empty() && self.smtp_password.is_none() {
            return Err(bad(
                "mail.smtp_user",
                format!("needs a password: set {SMTP_PASSWORD_VAR}, Plausible's SMTP_USER_PWD or mail.smtp_password_file"),
            ));
        }
        if let Some(p) = &self.ca_file {
            if !p.is_file() {
                return Err(bad(
                    "mail.ca_file",
                    format!("{} is not a readable file", p.display()),
                ));
            }
        }
        if !(1..=600).contains(&self.timeout_secs) {
            return Err(bad("mail.timeout_secs", "must be between 1 and 600"));
        }
        if !(1..=100).contains(&self.max_attempts) {
            return Err(bad("mail.max_attempts", "must be between 1 and 100"));
        }
        if self.interval_secs == 0 || self.retry_secs == 0 {
            return Err(bad(
                "mail.interval_secs",
                "mail.interval_secs and mail.retry_secs must be positive",
            ));
        }
        Ok(())
    }
}

impl Config {
    /// Where the web page is, as links to it are written: `web.public_url`
    /// (or `plausible.base_url`) and `web.base_path`; the path alone when
    /// neither is set.
    pub fn web_url(&self) -> String {
        let origin = if self.web.public_url.trim().is_empty() {
            self.plausible.base_url.trim()
        } else {
            self.web.public_url.trim()
        };
        format!("{}{}", origin.trim_end_matches('/'), self.web.base_path)
    }

    fn check_web(&self) -> Result<(), ConfigError> {
        let w = &self.web;
        let p = &w.base_path;
        let path_ok = p.starts_with('/')
            && !p.ends_with('/')
            && p.len() > 1
            && p.len() <= 100
            && p[1..].split('/').all(|seg| {
                !seg.is_empty()
                    && seg
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.~".contains(c))
            });
        if !path_ok {
            return Err(bad(
                "web.base_path",
                format!("`{p}` is not a path like /webhooks (a leading slash, no trailing one, letters, digits, - _ . ~)"),
            ));
        }
        if p == "/api"
            || p.starts_with("/api/")
            || ["/healthz", "/readyz", "/metrics"].contains(&p.as_str())
        {
            return Err(bad(
                "web.base_path",
                format!("`{p}` is the admin listener's own; choose another, e.g. /webhooks"),
            ));
        }
        if !w.public_url.trim().is_empty() {
            let ok = url::Url::parse(w.public_url.trim())
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
            if !ok {
                return Err(bad(
                    "web.public_url",
                    "must be an http(s) URL like https://plausible.example.com",
                ));
            }
        }
        if !(1..=MAX_WEB_SESSION_HOURS).contains(&w.session_hours) {
            return Err(bad(
                "web.session_hours",
                format!("must be between 1 and {MAX_WEB_SESSION_HOURS}"),
            ));
        }
        if w.session_cookie.is_empty()
            || !w
                .session_cookie
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
        {
            return Err(bad(
                "web.session_cookie",
                "must be a cookie name (letters, digits, _ - .)",
            ));
        }
        if !w.enabled {
            return Ok(());
        }
        if self.admin.listen.trim().is_empty() {
            return Err(bad(
                "web.enabled",
                "the page is served by the admin listener: set admin.listen too",
            ));
        }
        match &self.admin.secret_key_base {
            None => Err(bad(
                "web.enabled",
                "the page needs Plausible's SECRET_KEY_BASE (its session cookies, API keys and the page's own signatures): set SECRET_KEY_BASE or admin.secret_key_base_file",
            )),
            Some(Redacted(k)) if k.len() < 64 => Err(bad(
                "web.enabled",
                format!("SECRET_KEY_BASE is {} bytes; Plausible's session cookies need it at least 64 (as Plug requires)", k.len()),
            )),
            Some(_) => Ok(()),
        }
    }

    /// Loads the file (if given, or the default path when it exists), applies
    /// environment overrides, and validates.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let env: BTreeMap<String, String> = std::env::vars().collect();
        let text = match path {
            Some(p) => Some(std::fs::read_to_string(p).map_err(|e| {
                ConfigError::plain(format!(
                    "cannot read config file {}: {e}; pass --config with a readable file",
                    p.display()
                ))
            })?),
            None => std::fs::read_to_string(DEFAULT_CONFIG_PATH).ok(),
        };
        let file = match path {
            Some(p) => Some(p),
            None => text.as_ref().map(|_| Path::new(DEFAULT_CONFIG_PATH)),
        };
        let mut cfg = Self::from_source(text.as_deref().unwrap_or(""), file, &env)?;
        cfg.file = file.map(Path::to_path_buf);
        Ok(cfg)
    }

    /// Parses `toml_text`, applies the overrides found in `env`, validates.
    pub fn from_parts(
        toml_text: &str,
        env: &BTreeMap<String, String>,
    ) -> Result<Config, ConfigError> {
        Self::from_source(toml_text, None, env)
    }

    /// `from_parts`, naming `file` in errors about the keys it sets.
    fn from_source(
        toml_text: &str,
        file: Option<&Path>,
        env: &BTreeMap<String, String>,
    ) -> Result<Config, ConfigError> {
        let mut root: toml::Table = toml_text.parse().map_err(|e| {
            let name = file.map_or("config file".to_string(), |f| f.display().to_string());
            ConfigError::plain(format!("{name} is not valid TOML: {e}"))
        })?;
        let mut origins = Origins::new(toml_text, file);
        if let Some(url) = env.get("DATABASE_URL") {
            table_mut(&mut root, "database")?
                .insert("url".into(), toml::Value::String(url.clone()));
            origins
                .env
                .insert("database.url".into(), "DATABASE_URL".into());
        }
        for (name, value) in env {
            let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let mut parts = rest.splitn(2, "__");
            let (Some(section), Some(key)) = (parts.next(), parts.next()) else {
                return Err(ConfigError::plain(format!(
                    "environment variable {name}: expected {ENV_PREFIX}<SECTION>__<KEY>"
                )));
            };
            let (section, key) = (section.to_ascii_lowercase(), key.to_ascii_lowercase());
            let parsed = format!("v = {value}")
                .parse::<toml::Table>()
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or_else(|| toml::Value::String(value.clone()));
            origins.env.insert(format!("{section}.{key}"), name.clone());
            table_mut(&mut root, &section)?.insert(key, parsed);
        }
        let mut cfg: Config = serde_path_to_error::deserialize(toml::Value::Table(root))
            .map_err(|e| origins.deserialize_error(e))?;
        cfg.admin.secret_key_base =
            secret_key_base(&cfg.admin, env).map_err(|e| origins.annotate(e))?;
        if !cfg.health.operator_url.trim().is_empty() {
            cfg.health.operator_secret = secret(
                env,
                OPERATOR_SECRET_VAR,
                cfg.health.operator_secret_file.as_deref(),
                "health.operator_secret_file",
            )
            .map_err(|e| origins.annotate(e))?;
        }
        if cfg.mail.enabled {
            cfg.mail.resolve(env).map_err(|e| origins.annotate(e))?;
        }
        if cfg.analytics.source == "clickhouse" {
            cfg.analytics.clickhouse_password =
                clickhouse_password(&cfg.analytics, env).map_err(|e| origins.annotate(e))?;
        }
        cfg.validate().map_err(|e| origins.annotate(e))?;
        cfg.warnings = unused_vars(env);
        Ok(cfg)
    }

    /// One check per section; the first error found, naming its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.check_database()?;
        self.check_delivery()?;
        self.check_queue()?;
        self.check_log()?;
        self.check_admin()?;
        self.check_analytics()?;
        self.check_triggers()?;
        self.check_plausible()?;
        self.check_retention()?;
        self.check_health()?;
        self.check_limits()?;
        self.check_web()?;
        self.mail.check()
    }

    fn check_health(&self) -> Result<(), ConfigError> {
        let h = &self.health;
        if !(1..=1_000_000).contains(&h.failing_after_failures) {
            return Err(bad(
                "health.failing_after_failures",
                "must be between 1 and 1000000",
            ));
        }
        if !MESSAGE_FORMATS.contains(&h.operator_format.as_str()) {
            return Err(bad(
                "health.operator_format",
                format!("must be one of {}", MESSAGE_FORMATS.join(", ")),
            ));
        }
        let url = h.operator_url.trim();
        if url.is_empty() {
            return Ok(());
        }
        let host_ok = url
            .strip_prefix("https://")
            .and_then(|rest| rest.split(['/', '?', '#']).next())
            .is_some_and(|host| !host.is_empty() && !host.contains('@'));
        if !host_ok || url.len() > 2048 || url.chars().any(char::is_whitespace) {
            return Err(bad(
                "health.operator_url",
                "must be an https:// URL with a host (no user or password), at most 2048 characters",
            ));
        }
        match &h.operator_secret {
            None => Err(bad(
                "health.operator_url",
                format!("needs a signing secret: set {OPERATOR_SECRET_VAR} or health.operator_secret_file (32–256 characters; `plausible-webhooks` generates whsec_ ones on create)"),
            )),
            Some(Redacted(s)) if !(32..=256).contains(&s.chars().count()) => Err(bad(
                "health.operator_secret_file",
                "the operator endpoint's secret must be 32–256 characters",
            )),
            Some(_) => Ok(()),
        }
    }

    fn check_limits(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        for (key, v) in [
            ("limits.max_webhooks_per_site", l.max_webhooks_per_site),
            (
                "limits.max_triggers_per_webhook",
                l.max_triggers_per_webhook,
            ),
            ("limits.max_enqueue_deliveries", l.max_enqueue_deliveries),
        ] {
            if !(1..=MAX_LIMIT).contains(&v) {
                return Err(bad(key, format!("must be between 1 and {MAX_LIMIT}")));
            }
        }
        Ok(())
    }

    fn check_database(&self) -> Result<(), ConfigError> {
        if self.database.url.trim().is_empty() {
            return Err(bad(
                "database.url",
                "is not set; set DATABASE_URL or [database] url to Plausible's PostgreSQL database",
            ));
        }
        let url = self.database.url.trim();
        // tokio-postgres reads anything that is not postgres:// or
        // postgresql:// as key=value pairs, so a misspelled scheme would
        // only be "invalid connection string".
        if let Some((scheme, _)) = url.split_once("://") {
            let is_scheme = scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
            if is_scheme && !matches!(scheme, "postgres" | "postgresql") {
                return Err(bad(
                    "database.url",
                    format!(
                        "is a `{scheme}://` URL; a PostgreSQL URL starts with postgres:// or postgresql:// ({DATABASE_URL_FORMS})"
                    ),
                ));
            }
        }
        url.parse::<tokio_postgres::Config>().map_err(|e| {
            bad(
                "database.url",
                format!("cannot be parsed ({e}); write it as {DATABASE_URL_FORMS}"),
            )
        })?;
        if self.database.pool_size < 2 {
            return Err(bad("database.pool_size", "must be at least 2"));
        }
        Ok(())
    }

    fn check_delivery(&self) -> Result<(), ConfigError> {
        let d = &self.delivery;
        if d.max_in_flight == 0 {
            return Err(bad("delivery.max_in_flight", "must be at least 1"));
        }
        if d.connect_timeout_ms == 0 || d.connect_timeout_ms > d.request_timeout_ms {
            return Err(bad(
                "delivery.connect_timeout_ms",
                "must be > 0 and not above delivery.request_timeout_ms",
            ));
        }
        if d.lease() < d.request_timeout() + MIN_LEASE_MARGIN {
            return Err(bad(
                "delivery.lease_secs",
                format!(
                    "must exceed delivery.request_timeout_ms by at least {}s, or a slow delivery could be rescued and sent twice",
                    MIN_LEASE_MARGIN.as_secs()
                ),
            ));
        }
        validate_retry_schedule("delivery.retry_schedule_secs", &d.retry_schedule_secs)?;
        if !(0.0..=0.5).contains(&d.retry_jitter) {
            return Err(bad("delivery.retry_jitter", "must be between 0.0 and 0.5"));
        }
        if d.response_read_max_bytes == 0 || d.response_log_max_bytes > d.response_read_max_bytes {
            return Err(bad(
                "delivery.response_log_max_bytes",
                "must not exceed delivery.response_read_max_bytes (which must be > 0)",
            ));
        }
        if d.default_max_concurrency == 0 {
            return Err(bad(
                "delivery.default_max_concurrency",
                "must be at least 1",
            ));
        }
        if !(MIN_MAX_PAYLOAD_BYTES..=MAX_MAX_PAYLOAD_BYTES).contains(&d.max_payload_bytes) {
            return Err(bad(
                "delivery.max_payload_bytes",
                format!(
                    "must be between {MIN_MAX_PAYLOAD_BYTES} (4 KiB) and {MAX_MAX_PAYLOAD_BYTES} (16 MiB)"
                ),
            ));
        }
        if !(MIN_MAX_BYTES_IN_FLIGHT..=MAX_MAX_BYTES_IN_FLIGHT).contains(&d.max_bytes_in_flight) {
            return Err(bad(
                "delivery.max_bytes_in_flight",
                format!(
                    "must be between {MIN_MAX_BYTES_IN_FLIGHT} (1 MiB) and {MAX_MAX_BYTES_IN_FLIGHT} (4 GiB)"
                ),
            ));
        }
        if d.max_bytes_in_flight < 2 * d.max_payload_bytes {
            // A row over the bytes left goes only when nothing is in flight:
            // a budget of at least two of the largest payloads keeps that rare.
            return Err(bad(
                "delivery.max_bytes_in_flight",
                format!(
                    "must be at least twice delivery.max_payload_bytes ({}), got {}: raise it or lower max_payload_bytes",
                    d.max_payload_bytes, d.max_bytes_in_flight
                ),
            ));
        }
        if let Some(p) = &d.extra_ca_file {
            if !p.is_file() {
                return Err(bad(
                    "delivery.extra_ca_file",
                    format!("{} is not a readable file", p.display()),
                ));
            }
        }
        self.allow_nets()?;
        Ok(())
    }

    fn check_queue(&self) -> Result<(), ConfigError> {
        let q = &self.queue;
        for (key, v) in [
            ("queue.poll_interval_ms", q.poll_interval_ms),
            ("queue.rescue_interval_ms", q.rescue_interval_ms),
            (
                "queue.listener_check_interval_ms",
                q.listener_check_interval_ms,
            ),
        ] {
            if v < 10 {
                return Err(bad(key, "must be at least 10"));
            }
        }
        if q.claim_batch_max == 0 || q.complete_batch_max == 0 {
            return Err(bad(
                "queue.claim_batch_max",
                "batch sizes must be at least 1",
            ));
        }
        // Each write in flight holds a connection; the claimer, the rescuer
        // and the trigger services need theirs.
        if q.complete_in_flight == 0 || q.complete_in_flight + 1 >= self.database.pool_size {
            return Err(bad(
                "queue.complete_in_flight",
                format!(
                    "must be at least 1 and below database.pool_size - 1 ({}); raise database.pool_size for more",
                    self.database.pool_size.saturating_sub(1)
                ),
            ));
        }
        Ok(())
    }

    fn check_log(&self) -> Result<(), ConfigError> {
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return Err(bad("log.format", "must be \"text\" or \"json\""));
        }
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map_err(|e| bad("log.level", format!("is not a valid filter ({e})")))?;
        Ok(())
    }

    fn check_admin(&self) -> Result<(), ConfigError> {
        self.admin.listen_addr()?;
        for h in &self.admin.operator_token_sha256 {
            if h.len() != 64 || !h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                return Err(bad(
                    "admin.operator_token_sha256",
                    "each entry must be the lowercase hex SHA-256 of a token (64 characters): \
                     printf %s \"$TOKEN\" | sha256sum",
                ));
            }
        }
        Ok(())
    }

    fn check_analytics(&self) -> Result<(), ConfigError> {
        let a = &self.analytics;
        if a.source != "postgres" && a.source != "clickhouse" {
            return Err(bad(
                "analytics.source",
                format!(
                    "`{}` is not supported; use \"postgres\" or \"clickhouse\"",
                    a.source
                ),
            ));
        }
        let parts: Vec<&str> = a.table.split('.').collect();
        if parts.len() > 2 || !parts.iter().all(|p| is_identifier(p)) {
            return Err(bad(
                "analytics.table",
                format!(
                    "`{}` is not a table name like events_v2 or analytics.events_v2 (letters, digits, _)",
                    a.table
                ),
            ));
        }
        if !a.database_url.trim().is_empty() {
            a.database_url
                .parse::<tokio_postgres::Config>()
                .map_err(|e| bad("analytics.database_url", format!("cannot be parsed ({e})")))?;
        }
        if a.query_timeout_ms < 100 {
            return Err(bad("analytics.query_timeout_ms", "must be at least 100"));
        }
        if a.source == "clickhouse" {
            a.clickhouse_target()?;
            if a.clickhouse_user.is_empty()
                || a.clickhouse_user
                    .chars()
                    .any(|c| c.is_control() || c == ':')
            {
                return Err(bad(
                    "analytics.clickhouse_user",
                    "must be a user name (no ':' or control characters)",
                ));
            }
            if !(100..=600_000).contains(&a.clickhouse_connect_timeout_ms) {
                return Err(bad(
                    "analytics.clickhouse_connect_timeout_ms",
                    "must be between 100 and 600000",
                ));
            }
            if let Some(p) = &a.clickhouse_ca_file {
                if !p.is_file() {
                    return Err(bad(
                        "analytics.clickhouse_ca_file",
                        format!("{} is not a readable file", p.display()),
                    ));
                }
            }
        }
        Ok(())
    }

    fn check_triggers(&self) -> Result<(), ConfigError> {
        let t = &self.triggers;
        if !(1..=86_400).contains(&t.evaluation_interval_secs) {
            return Err(bad(
                "triggers.evaluation_interval_secs",
                "must be between 1 and 86400",
            ));
        }
        if !(1..=10_000).contains(&t.evaluation_batch) {
            return Err(bad(
                "triggers.evaluation_batch",
                "must be between 1 and 10000",
            ));
        }
        if !(50..=3_600_000).contains(&t.goal_scan_interval_ms) {
            return Err(bad(
                "triggers.goal_scan_interval_ms",
                "must be between 50 and 3600000",
            ));
        }
        if t.goal_lateness_secs > 86_400 {
            return Err(bad("triggers.goal_lateness_secs", "must be at most 86400"));
        }
        if t.goal_max_catchup_secs < t.goal_lateness_secs.max(60) {
            return Err(bad(
                "triggers.goal_max_catchup_secs",
                "must be at least 60 and at least triggers.goal_lateness_secs",
            ));
        }
        // Completions are deduplicated by keys kept with the deliveries; a scan
        // reaching back past the retention period could find pruned ones again.
        if self.retention.days > 0
            && t.goal_max_catchup_secs + t.goal_lateness_secs
                >= u64::from(self.retention.days) * 86_400
        {
            return Err(bad(
                "triggers.goal_max_catchup_secs",
                "plus triggers.goal_lateness_secs must stay below retention.days",
            ));
        }
        Ok(())
    }

    fn check_plausible(&self) -> Result<(), ConfigError> {
        let b = self.plausible.base_url.trim();
        if !b.is_empty() {
            match url::Url::parse(b) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
                _ => {
                    return Err(bad(
                        "plausible.base_url",
                        format!("`{b}` is not an http(s) URL like https://plausible.example.com"),
                    ))
                }
            }
        }
        Ok(())
    }

    fn check_retention(&self) -> Result<(), ConfigError> {
        if self.retention.days == 0 || self.retention.prune_batch <= 0 {
            return Err(bad(
                "retention.days",
                "retention days and prune_batch must be positive",
            ));
        }
        Ok(())
    }

    /// The operator's allow-list for the address guard.
    pub fn allow_nets(&self) -> Result<Vec<ipnet::IpNet>, ConfigError> {
        self.delivery
            .allow_cidrs
            .iter()
            .map(|c| {
                c.parse::<ipnet::IpNet>().map_err(|_| {
                    bad(
                        "delivery.allow_cidrs",
                        format!("`{c}` is not a CIDR like 127.0.0.0/8"),
                    )
                })
            })
            .collect()
    }
}

/// A warning for each `PLAUSIBLE_WEBHOOKS_…` variable that sets nothing:
/// most often an override written with single underscores, which would
/// otherwise be ignored without a word.
fn unused_vars(env: &BTreeMap<String, String>) -> Vec<String> {
    const FAMILY: &str = "PLAUSIBLE_WEBHOOKS_";
    env.keys()
        .filter(|k| {
            k.starts_with(FAMILY) && !k.starts_with(ENV_PREFIX) && !OTHER_VARS.contains(&k.as_str())
        })
        .map(|k| {
            let rest = k[FAMILY.len()..].to_ascii_lowercase();
            let meant = SECTIONS.iter().find_map(|s| {
                let key = rest.strip_prefix(s)?.strip_prefix('_')?;
                Some(format!(
                    "{ENV_PREFIX}{}__{}",
                    s.to_ascii_uppercase(),
                    key.to_ascii_uppercase()
                ))
            });
            match meant {
                Some(m) => format!(
                    "the environment variable {k} sets nothing; did you mean {m}? (overrides are {ENV_PREFIX}<SECTION>__<KEY>, with double underscores)"
                ),
                None => format!(
                    "the environment variable {k} sets nothing (overrides are {ENV_PREFIX}<SECTION>__<KEY>, with double underscores)"
                ),
            }
        })
        .collect()
}

/// A secret from the environment variable `var`, else from the file `path`
/// (config key `key`), without the line end a file written with `echo` has.
fn secret(
    env: &BTreeMap<String, String>,
    var: &str,
    path: Option<&Path>,
    key: &str,
) -> Result<Option<Redacted>, ConfigError> {
    if let Some(v) = env.get(var).filter(|v| !v.is_empty()) {
        return Ok(Some(Redacted(v.clone())));
    }
    let Some(path) = path else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path).map_err(|e| {
        bad(
            key,
            format!(
                "cannot read {} ({e}); it must be readable by the daemon's user",
                path.display()
            ),
        )
    })?;
    Ok(Some(Redacted(
        text.trim_end_matches(['\n', '\r']).to_string(),
    )))
}

/// Plausible's SECRET_KEY_BASE: the environment variable, else the file.
fn secret_key_base(
    admin: &AdminConfig,
    env: &BTreeMap<String, String>,
) -> Result<Option<Redacted>, ConfigError> {
    const KEY: &str = "admin.secret_key_base_file";
    let found = secret(
        env,
        "SECRET_KEY_BASE",
        admin.secret_key_base_file.as_deref(),
        KEY,
    )?;
    if let (Some(Redacted(v)), Some(path)) = (&found, &admin.secret_key_base_file) {
        if v.is_empty() {
            return Err(bad(
                KEY,
                format!(
                    "{} is empty; put Plausible's SECRET_KEY_BASE in it",
                    path.display()
                ),
            ));
        }
    }
    Ok(found)
}

/// The ClickHouse password: the environment variable, else the file.
fn clickhouse_password(
    a: &AnalyticsConfig,
    env: &BTreeMap<String, String>,
) -> Result<Option<Redacted>, ConfigError> {
    secret(
        env,
        "CLICKHOUSE_PASSWORD",
        a.clickhouse_password_file.as_deref(),
        "analytics.clickhouse_password_file",
    )
}

/// A plain SQL identifier: letters, digits and `_`, not starting with a digit.
fn is_identifier(p: &str) -> bool {
    !p.is_empty()
        && !p.starts_with(|c: char| c.is_ascii_digit())
        && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// How a retry schedule breaks its limits. The one home of the rule the
/// `webhooks_retry_schedule_limits` constraint also enforces (sql/0001): the
/// configured default and a webhook's own schedule (`admin::validate`) are
/// both checked here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryScheduleError {
    TooMany { retries: usize },
    DelayOutOfRange { secs: i64 },
}

impl std::fmt::Display for RetryScheduleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RetryScheduleError::TooMany { retries } => {
                write!(f, "at most {MAX_RETRIES} retries, got {retries}")
            }
            RetryScheduleError::DelayOutOfRange { secs } => write!(
                f,
                "each delay must be 1 s..=24 h ({MAX_RETRY_DELAY_SECS} s), got {secs} s"
            ),
        }
    }
}

/// At most `MAX_RETRIES` delays, each 1 ..= `MAX_RETRY_DELAY_SECS` seconds.
pub fn check_retry_schedule(
    delays_secs: impl ExactSizeIterator<Item = i64>,
) -> Result<(), RetryScheduleError> {
    let retries = delays_secs.len();
    if retries > MAX_RETRIES {
        return Err(RetryScheduleError::TooMany { retries });
    }
    for secs in delays_secs {
        if secs < 1 || secs > i64::from(MAX_RETRY_DELAY_SECS) {
            return Err(RetryScheduleError::DelayOutOfRange { secs });
        }
    }
    Ok(())
}

fn validate_retry_schedule(key: &str, s: &[u32]) -> Result<(), ConfigError> {
    check_retry_schedule(s.iter().map(|&v| i64::from(v))).map_err(|e| bad(key, e.to_string()))
}

fn table_mut<'a>(
    root: &'a mut toml::Table,
    section: &str,
) -> Result<&'a mut toml::Table, ConfigError> {
    root.entry(section.to_string())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        .as_table_mut()
        .ok_or_else(|| bad(section, "must be a table"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_need_only_a_database_url() {
        let c = Config::from_parts("", &env(&[("DATABASE_URL", "postgres://u@h/db")])).unwrap();
        assert_eq!(c.delivery.retry_schedule_secs, vec![60, 300, 1800]);
        assert_eq!(c.delivery.request_timeout_ms, 10_000);
        assert_eq!(c.delivery.max_payload_bytes, 262_144);
        let e = Config::from_parts("", &env(&[])).unwrap_err();
        assert!(e.to_string().contains("database.url"), "{e}");
    }

    #[test]
    fn completion_writes_in_flight_leave_connections_for_the_rest() {
        let url = ("DATABASE_URL", "postgres://u@h/db");
        let c = Config::from_parts("", &env(&[url])).unwrap();
        assert_eq!(c.queue.complete_in_flight, DEFAULT_COMPLETE_IN_FLIGHT);
        assert!(c.database.synchronous_commit, "durable by default");
        for bad_value in ["0", "7", "8"] {
            let e = Config::from_parts(
                "",
                &env(&[
                    url,
                    ("PLAUSIBLE_WEBHOOKS__QUEUE__COMPLETE_IN_FLIGHT", bad_value),
                ]),
            )
            .unwrap_err();
            let text = e.to_string();
            assert!(
                text.contains("queue.complete_in_flight") && text.contains("database.pool_size"),
                "{bad_value}: {text}"
            );
        }
        let c = Config::from_parts(
            "[database]\npool_size = 12\nsynchronous_commit = false\n[queue]\ncomplete_in_flight = 8\n",
            &env(&[url]),
        )
        .unwrap();
        assert_eq!(c.queue.complete_in_flight, 8);
        assert!(!c.database.synchronous_commit);
    }

    #[test]
    fn env_overrides_any_key_with_typed_values() {
        let c = Config::from_parts(
            "[delivery]\nmax_in_flight = 3\n",
            &env(&[
                ("DATABASE_URL", "postgres://u@h/db"),
                ("PLAUSIBLE_WEBHOOKS__DELIVERY__MAX_IN_FLIGHT", "7"),
                (
                    "PLAUSIBLE_WEBHOOKS__DELIVERY__ALLOW_CIDRS",
                    "[\"127.0.0.0/8\"]",
                ),
                ("PLAUSIBLE_WEBHOOKS__LOG__FORMAT", "json"),
            ]),
        )
        .unwrap();
        assert_eq!(c.delivery.max_in_flight, 7);
        assert_eq!(c.delivery.allow_cidrs, vec!["127.0.0.0/8"]);
        assert_eq!(c.log.format, "json");
    }

    #[test]
    fn secret_key_base_from_env_or_file_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("skb");
        std::fs::write(&f, "from-file\n").unwrap();
        let toml = format!(
            "[admin]\nsecret_key_base_file = {:?}\n",
            f.to_str().unwrap()
        );
        let c = Config::from_parts(&toml, &env(&[("DATABASE_URL", "postgres://u@h/db")])).unwrap();
        assert_eq!(c.admin.secret_key_base, Some(Redacted("from-file".into())));
        assert!(!format!("{c:?}").contains("from-file"));
        let c = Config::from_parts(
            &toml,
            &env(&[
                ("DATABASE_URL", "postgres://u@h/db"),
                ("SECRET_KEY_BASE", "from-env"),
            ]),
        )
        .unwrap();
        assert_eq!(c.admin.secret_key_base, Some(Redacted("from-env".into())));
        let c = Config::from_parts(
            "[admin]\nlisten = \"127.0.0.1:8787\"\n",
            &env(&[("DATABASE_URL", "postgres://u@h/db")]),
        )
        .unwrap();
        assert_eq!(
            c.admin.listen_addr().unwrap(),
            Some("127.0.0.1:8787".parse().unwrap())
        );
    }

    #[test]
    fn clickhouse_target_password_and_refusals() {
        let e = env(&[("DATABASE_URL", "postgres://u@h/db")]);
        let ch = |extra: &str| format!("[analytics]\nsource = \"clickhouse\"\n{extra}");
        let c =
            Config::from_parts(&ch("clickhouse_url = \"http://127.0.0.1:8123\"\n"), &e).unwrap();
        let t = c.analytics.clickhouse_target().unwrap();
        assert_eq!(t.endpoint.as_str(), "http://127.0.0.1:8123/");
        assert_eq!(
            (t.database.as_str(), t.table.as_str()),
            ("plausible_events_db", "events_v2")
        );
        assert_eq!(c.analytics.clickhouse_password, None);
        let c = Config::from_parts(
            &ch("clickhouse_url = \"https://ch.internal:8443/events/\"\n"),
            &env(&[
                ("DATABASE_URL", "postgres://u@h/db"),
                ("CLICKHOUSE_PASSWORD", "pw-env"),
            ]),
        )
        .unwrap();
        let t = c.analytics.clickhouse_target().unwrap();
        assert_eq!(
            (t.endpoint.as_str(), t.database.as_str()),
            ("https://ch.internal:8443/", "events")
        );
        assert_eq!(
            c.analytics.clickhouse_password,
            Some(Redacted("pw-env".into()))
        );
        assert!(!format!("{c:?}").contains("pw-env"));
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("chpw");
        std::fs::write(&f, "pw-file\n").unwrap();
        let c = Config::from_parts(
            &ch(&format!(
                "clickhouse_url = \"http://h:8123\"\ntable = \"db2.ev\"\nclickhouse_password_file = {:?}\n",
                f.to_str().unwrap()
            )),
            &e,
        )
        .unwrap();
        let t = c.analytics.clickhouse_target().unwrap();
        assert_eq!((t.database.as_str(), t.table.as_str()), ("db2", "ev"));
        assert_eq!(
            c.analytics.clickhouse_password,
            Some(Redacted("pw-file".into()))
        );
        for (extra, key, words) in [
            ("", "analytics.clickhouse_url", "is not set"),
            ("clickhouse_url = \"tcp://h:9000\"\n", "analytics.clickhouse_url", "not http"),
            ("clickhouse_url = \"http://u:secret@h:8123\"\n", "analytics.clickhouse_url", "CLICKHOUSE_PASSWORD"),
            ("clickhouse_url = \"http://h:8123/a-b\"\n", "analytics.clickhouse_url", "is not a name"),
            ("clickhouse_url = \"http://h:8123/a\"\ntable = \"b.events_v2\"\n", "analytics.table", "name it once"),
            ("clickhouse_url = \"http://h:8123\"\nclickhouse_password = \"x\"\n", "clickhouse_password", "unknown"),
            ("clickhouse_url = \"http://h:8123\"\nclickhouse_user = \"a:b\"\n", "analytics.clickhouse_user", "':'"),
            ("clickhouse_url = \"http://h:8123\"\nclickhouse_password_file = \"/nonexistent/pw\"\n", "analytics.clickhouse_password_file", "readable"),
        ] {
            let err = Config::from_parts(&ch(extra), &e).unwrap_err();
            assert!(err.to_string().contains(key) && err.to_string().contains(words), "{extra}: {err}");
            assert!(!err.to_string().contains("secret"), "{err}");
        }
    }

    #[test]
    fn errors_name_the_key() {
        let e = env(&[("DATABASE_URL", "postgres://u@h/db")]);
        for (toml, key) in [
            ("[delivery]\nlease_secs = 5\n", "delivery.lease_secs"),
            (
                "[delivery]\nretry_schedule_secs = [0]\n",
                "delivery.retry_schedule_secs",
            ),
            (
                "[delivery]\nallow_cidrs = [\"nope\"]\n",
                "delivery.allow_cidrs",
            ),
            ("[delivery]\nbogus = 1\n", "bogus"),
            (
                "[delivery]\nmax_payload_bytes = 4095\n",
                "delivery.max_payload_bytes",
            ),
            (
                "[delivery]\nmax_payload_bytes = 16777217\n",
                "delivery.max_payload_bytes",
            ),
            (
                "[delivery]\nmax_bytes_in_flight = 1048575\n",
                "delivery.max_bytes_in_flight",
            ),
            (
                "[delivery]\nmax_payload_bytes = 1048576\nmax_bytes_in_flight = 1048576\n",
                "delivery.max_bytes_in_flight",
            ),
            ("[log]\nformat = \"xml\"\n", "log.format"),
            ("[admin]\nlisten = \"0.0.0.0:8787\"\n", "admin.listen"),
            ("[admin]\nlisten = \"localhost\"\n", "admin.listen"),
            (
                "[admin]\noperator_token_sha256 = [\"abc\"]\n",
                "admin.operator_token_sha256",
            ),
            (
                "[admin]\nsecret_key_base_file = \"/nonexistent/skb\"\n",
                "admin.secret_key_base_file",
            ),
            ("[admin]\nsecret_key_base = \"x\"\n", "secret_key_base"),
        ] {
            let err = Config::from_parts(toml, &e).unwrap_err();
            assert!(err.to_string().contains(key), "{toml}: {err}");
        }
    }

    /// Every error about one key names the key and where its value was set:
    /// the file's line, or the environment variable (issue 15 point 1).
    #[test]
    fn errors_name_the_key_and_where_it_was_set() {
        let env = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            let mut m: BTreeMap<String, String> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            m.insert("DATABASE_URL".into(), "postgres://u@h/db".into());
            m
        };
        let file = "# comment\n\n[delivery]\nmax_in_flight = \"abc\"\n";
        let e = Config::from_source(file, Some(Path::new("/etc/pw.toml")), &env(&[]))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "config key `delivery.max_in_flight` (/etc/pw.toml line 4): invalid type: string \"abc\", expected a whole number"
        );

        let e = Config::from_parts(
            "",
            &env(&[("PLAUSIBLE_WEBHOOKS__DELIVERY__ALLOW_CIDRS", "127.0.0.0/8")]),
        )
        .unwrap_err();
        assert_eq!(e.key(), Some("delivery.allow_cidrs"));
        let e = e.to_string();
        assert!(
            e.contains(
                "(set by the environment variable PLAUSIBLE_WEBHOOKS__DELIVERY__ALLOW_CIDRS)"
            ) && e.contains(r#"PLAUSIBLE_WEBHOOKS__DELIVERY__ALLOW_CIDRS='["127.0.0.0/8"]'"#),
            "{e}"
        );

        // A value of the right type that validation refuses, from either place.
        let e = Config::from_parts("[delivery]\nmax_in_flight = 0\n", &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(
                "config key `delivery.max_in_flight` (config file line 2): must be at least 1"
            ),
            "{e}"
        );
        let e = Config::from_parts(
            "[delivery]\nmax_in_flight = 5\n",
            &env(&[("PLAUSIBLE_WEBHOOKS__DELIVERY__MAX_IN_FLIGHT", "0")]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains(
                "(set by the environment variable PLAUSIBLE_WEBHOOKS__DELIVERY__MAX_IN_FLIGHT)"
            ),
            "the environment wins over the file, and the error says so: {e}"
        );

        let e = Config::from_parts("[delivery]\n\nmax_in_fligth = 5\n", &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(
                "config key `delivery.max_in_fligth` (config file line 3): unknown field"
            ) && e.contains("remove it or fix its name"),
            "{e}"
        );
    }

    /// `SECTIONS` is `Config`'s tables, no more, no fewer: serde lists the
    /// fields it expects when it meets an unknown one.
    #[test]
    fn the_sections_are_the_configs_tables() {
        let e = Config::from_parts("[nosuch]\n", &env(&[("DATABASE_URL", "postgres://u@h/db")]))
            .unwrap_err()
            .to_string();
        let expected = e
            .split("expected one of ")
            .nth(1)
            .unwrap_or_else(|| panic!("{e}"))
            .split(';')
            .next()
            .unwrap();
        let fields: Vec<&str> = expected
            .split(", ")
            .map(|f| f.trim().trim_matches('`'))
            .collect();
        assert_eq!(fields, SECTIONS, "{e}");
    }

    /// A variable of the family that sets nothing is warned about, with
    /// the override it most likely meant; the family's other variables and
    /// real overrides are not (issue 26).
    #[test]
    fn variables_that_set_nothing_are_warned_about() {
        let c = Config::from_parts(
            "",
            &env(&[
                ("DATABASE_URL", "postgres://u@h/db"),
                ("PLAUSIBLE_WEBHOOKS_DELIVERY_MAX_IN_FLIGHT", "7"),
                ("PLAUSIBLE_WEBHOOKS_NONSENSE", "1"),
                ("PLAUSIBLE_WEBHOOKS__DELIVERY__MAX_IN_FLIGHT", "8"),
                ("PLAUSIBLE_WEBHOOKS_CONFIG", "/etc/x.toml"),
                ("PLAUSIBLE_WEBHOOKS_TEST_PG_DIR", "/tmp/x"),
            ]),
        )
        .unwrap();
        assert_eq!(c.delivery.max_in_flight, 8);
        assert_eq!(
            c.warnings,
            [
                "the environment variable PLAUSIBLE_WEBHOOKS_DELIVERY_MAX_IN_FLIGHT sets nothing; \
                 did you mean PLAUSIBLE_WEBHOOKS__DELIVERY__MAX_IN_FLIGHT? (overrides are \
                 PLAUSIBLE_WEBHOOKS__<SECTION>__<KEY>, with double underscores)",
                "the environment variable PLAUSIBLE_WEBHOOKS_NONSENSE sets nothing (overrides are \
                 PLAUSIBLE_WEBHOOKS__<SECTION>__<KEY>, with double underscores)",
            ]
        );
        let clean = Config::from_parts("", &env(&[("DATABASE_URL", "postgres://u@h/db")])).unwrap();
        assert!(clean.warnings.is_empty(), "{:?}", clean.warnings);
    }

    /// A misspelled section or key set through the environment names the
    /// variable that set it (issue 26).
    #[test]
    fn a_misspelled_section_from_the_environment_names_the_variable() {
        let e = Config::from_parts(
            "",
            &env(&[
                ("DATABASE_URL", "postgres://u@h/db"),
                ("PLAUSIBLE_WEBHOOKS__DELIVERYY__MAX_IN_FLIGHT", "7"),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with(
                "config key `deliveryy` (set by the environment variable PLAUSIBLE_WEBHOOKS__DELIVERYY__MAX_IN_FLIGHT): unknown field `deliveryy`"
            ) && e.contains("remove it or fix its name"),
            "{e}"
        );
        let e = Config::from_parts(
            "",
            &env(&[
                ("DATABASE_URL", "postgres://u@h/db"),
                ("PLAUSIBLE_WEBHOOKS__DELIVERY__MAX_INFLIGHT", "7"),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains(
                "(set by the environment variable PLAUSIBLE_WEBHOOKS__DELIVERY__MAX_INFLIGHT)"
            ),
            "{e}"
        );
        // In a file: the line of the section's first key.
        let e = Config::from_parts(
            "\n[deliveryy]\nmax_in_flight = 7\n",
            &env(&[("DATABASE_URL", "postgres://u@h/db")]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("config key `deliveryy` (config file line 3)"),
            "{e}"
        );
    }

    /// A URL with another scheme says which, and what a PostgreSQL URL
    /// looks like; any other unreadable value shows both forms (issue 26).
    /// `[mail]` on: what it needs is named (host, sender, a password for a
    /// user, the TLS mode), the file wins over Plausible's variables, and
    /// off it needs nothing.
    #[test]
    fn mail_is_refused_without_what_it_needs_and_the_file_wins() {
        let db = ("DATABASE_URL", "postgres://u@h/db");
        let err = |toml: &str, vars: &[(&str, &str)]| {
            let mut all = vars.to_vec();
            all.push(db);
            Config::from_parts(toml, &env(&all))
                .unwrap_err()
                .to_string()
        };
        assert!(Config::from_parts("[mail]\nenabled = false\n", &env(&[db])).is_ok());
        let e = err("[mail]\nenabled = true\n", &[]);
        assert!(
            e.contains("mail.smtp_host") && e.contains("SMTP_HOST_ADDR"),
            "{e}"
        );
        let e = err(
            "[mail]\nenabled = true\n",
            &[("SMTP_HOST_ADDR", "smtp.example.com")],
        );
        assert!(
            e.contains("mail.sender") && e.contains("MAILER_EMAIL"),
            "{e}"
        );
        let e = err(
            "[mail]\nenabled = true\nsmtp_user = \"u\"\n",
            &[
                ("SMTP_HOST_ADDR", "smtp.example.com"),
                ("MAILER_EMAIL", "a@example.com"),
            ],
        );
        assert!(
            e.contains("mail.smtp_user") && e.contains("SMTP_USER_PWD"),
            "{e}"
        );
        let e = err(
            "[mail]\nenabled = true\ntls = \"none\"\n",
            &[
                ("SMTP_HOST_ADDR", "smtp.example.com"),
                ("MAILER_EMAIL", "a@example.com"),
            ],
        );
        assert!(e.contains("mail.tls"), "{e}");
        let c = Config::from_parts(
            "[mail]\nenabled = true\nsmtp_host = \"relay.example.com\"\nsender = \"w@example.com\"\n",
            &env(&[
                db,
                ("SMTP_HOST_ADDR", "smtp.example.com"),
                ("MAILER_EMAIL", "a@example.com"),
                ("SMTP_USER_NAME", "u"),
                ("SMTP_USER_PWD", "plausibles"),
                (SMTP_PASSWORD_VAR, "ours"),
            ]),
        )
        .unwrap();
        assert_eq!(c.mail.smtp_host, "relay.example.com");
        assert_eq!(c.mail.sender, "w@example.com");
        assert_eq!((c.mail.tls.as_str(), c.mail.smtp_port), ("starttls", 587));
        assert_eq!(c.mail.smtp_password.as_ref().unwrap().0, "ours");
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }

    #[test]
    fn a_database_url_that_cannot_be_read_says_what_it_should_be() {
        let e = Config::from_parts("", &env(&[("DATABASE_URL", "postgress://u@h/db")]))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("config key `database.url` (set by the environment variable DATABASE_URL): is a `postgress://` URL; a PostgreSQL URL starts with postgres:// or postgresql://"),
            "{e}"
        );
        let e = Config::from_parts("", &env(&[("DATABASE_URL", "host=h port=notanumber")]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("cannot be parsed (")
                && e.contains("postgres://user:password@host:5432/dbname, or key=value pairs"),
            "{e}"
        );
        for fine in [
            "postgresql://u@h/db",
            "host=/var/run/postgresql user=u dbname=db",
        ] {
            Config::from_parts("", &env(&[("DATABASE_URL", fine)])).unwrap();
        }
    }
}
