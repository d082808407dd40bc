//! Logs to stderr through tracing-subscriber. Under journald (JOURNAL_STREAM
//! set) lines carry no timestamp of their own: the journal adds one. Colour
//! only when stderr is a terminal: files, pipes and journald get plain text.
//! `error_line` is how every part writes an error into a log line.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

pub fn init(format: &str, level: &str) {
    // deadpool logs each lost pooled connection on its own (`Connection
    // error: db error` once per connection); `db::WatchedConnect` says it
    // once, with the server's reason.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{level},deadpool.postgres=off")))
        // tokio-postgres logs every statement's parameters at debug: the
        // webhooks' secrets and ed25519 private keys among them. Capped
        // whatever RUST_LOG asks.
        .add_directive("tokio_postgres::query=info".parse().expect("a directive"));
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = match (format, journald) {
        ("json", _) => builder.json().flatten_event(true).try_init(),
        (_, true) => builder.without_time().with_ansi(false).try_init(),
        _ => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
    };
}

/// One line for an error and its causes, each said once, with the server's
/// own words for a database error (tokio-postgres says only `db error` and
/// keeps the reason in its source): e.g. `terminating connection due to
/// administrator command (SQLSTATE 57P01)`.
pub fn error_line(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(e);
    while let Some(err) = next {
        next = err.source();
        if let Some(db) = err.downcast_ref::<tokio_postgres::error::DbError>() {
            let mut s = format!("{} (SQLSTATE {})", db.message(), db.code().code());
            if let Some(d) = db.detail() {
                s.push_str(&format!("; {d}"));
            }
            parts.push(s);
            break;
        }
        let pg_db_error = err
            .downcast_ref::<tokio_postgres::Error>()
            .is_some_and(|p| p.as_db_error().is_some());
        if pg_db_error {
            continue; // "db error": its source says what.
        }
        // deadpool's "Error occurred while creating a new object" is a
        // connection that could not be made: its source says why.
        let pool_backend = matches!(
            err.downcast_ref::<deadpool_postgres::PoolError>(),
            Some(deadpool_postgres::PoolError::Backend(_))
        );
        if pool_backend && next.is_some() {
            continue;
        }
        // Wrappers often repeat their cause's text in their own, at its end
        // (deadpool: "Error occurred while creating a new object: db error").
        let mut s = err.to_string();
        if let Some(cause) = next.map(|c| format!(": {c}")) {
            if let Some(own) = s.strip_suffix(&cause) {
                s = own.to_string();
            }
        }
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use crate::logging::error_line;

    #[test]
    fn an_error_line_says_each_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        let e = anyhow::Error::new(io)
            .context("error connecting to server")
            .context("error connecting to server")
            .context("claiming deliveries");
        assert_eq!(
            error_line(e.as_ref()),
            "claiming deliveries: error connecting to server: Connection refused"
        );
        #[derive(Debug)]
        struct Wrapper(std::io::Error);
        impl std::fmt::Display for Wrapper {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "Error occurred while creating a new object: {}", self.0)
            }
        }
        impl std::error::Error for Wrapper {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let inner = std::io::Error::other("the database system is shutting down");
        assert_eq!(
            error_line(&Wrapper(inner)),
            "Error occurred while creating a new object: the database system is shutting down"
        );
    }
}
