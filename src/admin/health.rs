//! Health, readiness and metrics: `/healthz`, `/readyz`, `/metrics`. Open
//! to anyone who can reach the listener (no token), as probes and scrapers
//! expect; they tell nothing about any site.

use std::sync::atomic::Ordering;

use anyhow::{Context, Result};
use axum::extract::State;
use axum::response::Response;
use deadpool_postgres::Pool;
use hyper::StatusCode;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::api::reply::json;
use super::state::{Shared, DB_CHECK_TIMEOUT};
use crate::triggers::source::SourceStatus;

pub fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
}

/// The process is up (it answers).
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "`{\"status\": \"ok\"}`")))]
async fn healthz() -> Response {
    json(StatusCode::OK, &json!({"status": "ok"}))
}

/// Prometheus metrics (text format).
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Prometheus' text exposition format", content_type = "text/plain")))]
async fn metrics(State(state): State<Shared>) -> Response {
    super::metrics::response(&state).await
}

#[utoipa::path(get, path = "/readyz", tag = "health",
    responses((status = 200, description = "Ready: every check passed (the body names each)"),
              (status = 503, description = "Not ready: the body names the failing check")))]
/// Ready = the database answers and takes writes, the schema is current, LISTEN is up, the
/// analytics source is not incompatible, and the daemon is not draining.
/// Each check is reported by name.
///
/// `analytics` is the daemon's last source check (it runs at start, soon
/// after a trigger query fails, and periodically). A source that refuses a
/// statement triggers send (`incompatible`) makes the daemon not ready: its
/// triggers cannot work until an operator fixes the source. One that merely
/// cannot be asked (`unavailable`: down, slow, refusing credentials) is
/// reported with `"ok": false` but does not: deliveries flow without
/// analytics and triggers resume by themselves once it answers, so taking
/// the instance out of service would stop deliveries and fix nothing.
async fn readyz(State(state): State<Shared>) -> Response {
    let listener = *state.listener_up.borrow();
    let stopping = state.stopping.load(Ordering::Relaxed);
    let (database, migrations) = match tokio::time::timeout(
        DB_CHECK_TIMEOUT,
        schema_version(state.pool()),
    )
    .await
    {
        Ok(Ok((v, writable))) => {
            let want = crate::db::migrate::latest_version();
            let m = if v >= want {
                Ok(format!("current (version {v})"))
            } else {
                Err(format!("database at version {v}, this build needs {want}: run `plausible-webhooks migrate`"))
            };
            let d = if writable {
                Ok("reachable".to_string())
            } else {
                Err(READ_ONLY.to_string())
            };
            (d, m)
        }
        Ok(Err(e)) => (
            Err(format!("{e:#}")),
            Err("unknown (database unreachable)".into()),
        ),
        Err(_) => (
            Err(format!("no answer within {}s", DB_CHECK_TIMEOUT.as_secs())),
            Err("unknown (database unreachable)".into()),
        ),
    };
    let analytics = state.analytics.as_ref().map(|rx| rx.borrow().clone());
    let analytics_ready = analytics.as_ref().is_none_or(SourceStatus::ready);
    let ready = database.is_ok() && migrations.is_ok() && listener && analytics_ready && !stopping;
    let show = |r: &Result<String, String>| match r {
        Ok(s) => json!({"ok": true, "detail": s}),
        Err(s) => json!({"ok": false, "detail": s}),
    };
    let body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "checks": {
            "database": show(&database),
            "migrations": show(&migrations),
            "listener": if listener { json!({"ok": true, "detail": "LISTEN connected"}) }
                        else { json!({"ok": false, "detail": "LISTEN connection down (reconnecting; polling meanwhile)"}) },
            "analytics": match &analytics {
                None => json!({"ok": true, "state": "off", "detail": "triggers are off"}),
                Some(SourceStatus::Compatible { version }) => json!({
                    "ok": true, "state": "compatible", "version": version,
                    "detail": format!("every statement answered (server version {version})"),
                }),
                Some(SourceStatus::Unavailable(e)) => json!({
                    "ok": false, "state": "unavailable", "blocks_readiness": false, "detail": e,
                }),
                Some(SourceStatus::Incompatible(e)) => json!({
                    "ok": false, "state": "incompatible", "blocks_readiness": true, "detail": e,
                }),
            },
            "draining": stopping,
        }
    });
    json(
        if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        &body,
    )
}

/// The database answers but takes no writes: no outcome can be recorded,
/// no claim made, no API change saved.
const READ_ONLY: &str =
    "reachable but refuses writes (read-only: a standby, or default_transaction_read_only): \
     deliveries wait, their outcomes are recorded once it accepts writes";

/// The schema's version, and whether a new transaction may write.
async fn schema_version(pool: &Pool) -> Result<(i32, bool)> {
    let client = pool.get().await.context("connecting to PostgreSQL")?;
    let version = crate::db::migrate::current_version(&client).await?;
    let read_only: bool = client
        .query_one(
            "SELECT pg_is_in_recovery() OR current_setting('transaction_read_only')::bool",
            &[],
        )
        .await
        .context("asking whether the database takes writes")?
        .get(0);
    Ok((version, !read_only))
}
