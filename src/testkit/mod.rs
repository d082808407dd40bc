//! Real parts for the demo, the tests and the benchmark: a throwaway
//! PostgreSQL cluster, an HTTPS receiver and an SMTP server on loopback. Nothing here is used
//! by `run`.

pub mod clickhouse;
pub mod pg;
pub mod receiver;
pub mod smtp;

use std::collections::BTreeMap;

use crate::config::Config;

/// Adds a team and a site with `domain` to the Plausible fixture, with what
/// Plausible itself writes for a new user's first site: timestamps, the
/// site's timezone, and the user's implicit "My Team" (`setup_complete` false
/// until they turn it into a real team). Returns the site id.
pub async fn create_site(db: &tokio_postgres::Client, domain: &str) -> anyhow::Result<i64> {
    let row = db
        .query_one(
            "WITH t AS (
               INSERT INTO teams (name, inserted_at, updated_at)
               VALUES ('My Team', now(), now()) RETURNING id)
             INSERT INTO sites (domain, timezone, team_id, inserted_at, updated_at)
             SELECT $1, 'Etc/UTC', id, now(), now() FROM t RETURNING id",
            &[&domain],
        )
        .await?;
    Ok(row.get(0))
}

/// A config for a daemon talking to `database_url` and to receivers on
/// loopback that present certificates from `ca_file`.
pub fn loopback_config(database_url: &str, ca_file: &std::path::Path) -> Config {
    let toml = format!(
        "[delivery]\nallow_cidrs = [\"127.0.0.0/8\"]\nextra_ca_file = {:?}\n",
        ca_file.display().to_string()
    );
    let mut env = BTreeMap::new();
    env.insert("DATABASE_URL".to_string(), database_url.to_string());
    Config::from_parts(&toml, &env).expect("a valid loopback config")
}
