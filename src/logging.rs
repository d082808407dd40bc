//! Logs to stderr through tracing-subscriber. Under journald (JOURNAL_STREAM
//! set) lines carry no timestamp of their own: the journal adds one. Colour
//! only when stderr is a terminal: files, pipes and journald get plain text.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

pub fn init(format: &str, level: &str) {
    // deadpool logs each lost pooled connection on its own (`Connection
    // error: db error` once per connection); `db::WatchedConnect` says it
    // once, with the server's reason.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{level},deadpool.postgres=off")));
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
