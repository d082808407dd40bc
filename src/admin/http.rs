//! The admin HTTP listener: `/healthz`, `/readyz`, `/metrics` and the REST API
//! under `/api/`. Off unless `admin.listen` is set; plain HTTP/1.1, meant for
//! loopback (or behind a TLS proxy).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use deadpool_postgres::Pool;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::state::{error_response, json_response, AdminState, HttpResponse, DB_CHECK_TIMEOUT};
use crate::config::Config;
use crate::triggers::source::SourceStatus;

/// Largest request body the API reads.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// A client must send its request head within this (slow clients hold a connection).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

pub struct AdminServer {
    pub addr: SocketAddr,
    pub state: Arc<AdminState>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl AdminServer {
    /// Binds `addr` and serves until `stop`.
    pub async fn start(addr: SocketAddr, state: AdminState) -> Result<AdminServer> {
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
            format!(
                "admin.listen: cannot listen on {addr} (in use, or not an address of this host)"
            )
        })?;
        let addr = listener.local_addr()?;
        if state.auth.is_closed() {
            tracing::warn!(
                "admin API: no operator token and no SECRET_KEY_BASE configured; every /api request will be refused"
            );
        }
        let state = Arc::new(state);
        let stop = CancellationToken::new();
        let task = tokio::spawn(serve(listener, state.clone(), stop.clone()));
        tracing::info!(%addr, "admin listener started");
        Ok(AdminServer {
            addr,
            state,
            stop,
            task,
        })
    }

    /// `/readyz` answers 503 from now on (the daemon is draining).
    pub fn draining(&self) {
        self.state.stopping.store(true, Ordering::Relaxed);
    }

    pub async fn shutdown(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

async fn serve(listener: tokio::net::TcpListener, state: Arc<AdminState>, stop: CancellationToken) {
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    // EMFILE and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "admin listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => return,
        };
        let state = state.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(&state, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
                }
            }
        });
    }
}

async fn handle(state: &AdminState, req: Request<Incoming>) -> HttpResponse {
    let path = req.uri().path().to_string();
    match path.as_str() {
        "/healthz" => json_response(StatusCode::OK, &json!({"status": "ok"})),
        "/readyz" => readyz(state).await,
        "/metrics" => super::metrics::response(state).await,
        p if p == "/api" || p.starts_with("/api/") => {
            let (parts, body) = req.into_parts();
            let body = match Limited::new(body, MAX_BODY_BYTES).collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => {
                    return error_response(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "body_too_large",
                        &format!("the request body must be at most {MAX_BODY_BYTES} bytes"),
                    )
                }
            };
            super::api::handle(state, parts, body).await
        }
        _ => error_response(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such endpoint; see /healthz, /readyz, /metrics and /api/webhooks",
        ),
    }
}

/// Ready = the database answers, the schema is current, LISTEN is up, the
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
async fn readyz(state: &AdminState) -> HttpResponse {
    let listener = *state.listener_up.borrow();
    let stopping = state.stopping.load(Ordering::Relaxed);
    let (database, migrations) = match tokio::time::timeout(
        DB_CHECK_TIMEOUT,
        schema_version(&state.pool),
    )
    .await
    {
        Ok(Ok(v)) => {
            let want = crate::db::migrate::latest_version();
            let m = if v >= want {
                Ok(format!("current (version {v})"))
            } else {
                Err(format!("database at version {v}, this build needs {want}: run `plausible-webhooks migrate`"))
            };
            (Ok("reachable".to_string()), m)
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
    json_response(
        if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        &body,
    )
}

async fn schema_version(pool: &Pool) -> Result<i32> {
    let client = pool.get().await.context("connecting to PostgreSQL")?;
    crate::db::migrate::current_version(&client).await
}

/// For `check`: what the admin listener will serve, and, when Plausible API
/// keys are on, that this role can read the tables they are checked against.
pub async fn check(cfg: &Config, db: &tokio_postgres::Client) -> Result<String> {
    let Some(addr) = cfg.admin.listen_addr()? else {
        return Ok(
            "admin listener: off (set admin.listen to serve /healthz, /readyz, /metrics and /api)"
                .into(),
        );
    };
    let keys = if cfg.admin.secret_key_base.is_some() {
        db.batch_execute(
            "SELECT 1 FROM api_keys LIMIT 0; SELECT 1 FROM team_memberships LIMIT 0;
             SELECT 1 FROM guest_memberships LIMIT 0; SELECT 1 FROM sites LIMIT 0",
        )
        .await
        .context(
            "Plausible API keys are on (SECRET_KEY_BASE is set) but Plausible's api_keys, team_memberships, \
             guest_memberships or sites cannot be read: grant this role SELECT on them",
        )?;
        "on"
    } else {
        "off (no SECRET_KEY_BASE)"
    };
    Ok(format!(
        "admin listener: http://{addr} (operator tokens: {}, Plausible API keys: {keys})",
        cfg.admin.operator_token_sha256.len()
    ))
}
