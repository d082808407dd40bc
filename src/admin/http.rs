//! The admin HTTP listener: one router (axum) for `/healthz`, `/readyz`,
//! `/metrics`, the REST API under `/api/` and its OpenAPI document, served
//! by an accept loop of our own so its protections hold whatever the routes
//! do: a cap on connections open at once, a time limit on a request's head,
//! bodies read only after authentication, bounded in size and time
//! (`super::body`). Off unless `admin.listen` is set; plain HTTP/1.1, meant
//! for loopback (or behind a TLS proxy).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::body::Body;
use axum::extract::OriginalUri;
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper::header::ALLOW;
use hyper::StatusCode;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower_service::Service as _;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;

use super::api::error::ApiError;
use super::api::reply::json;
use super::state::{AdminState, Peer, Shared};
use super::web_setup::Chrome;
use crate::config::Config;

/// A client must send its request head within this (slow clients hold a connection).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once at most; more wait in the kernel's backlog.
/// Bounds the descriptors the admin can take from deliveries and the
/// database (`connection_cap` lowers it where descriptors are scarce).
pub const MAX_CONNECTIONS: usize = 256;
/// The fewest connections served at once, however scarce descriptors are.
pub const MIN_CONNECTIONS: usize = 8;

/// How many connections the listener serves at once when the process may
/// open `open_files` descriptors and `reserved` of them are kept for
/// deliveries and the database.
pub fn connection_cap(open_files: u64, reserved: u64) -> usize {
    let room = usize::try_from(open_files.saturating_sub(reserved)).unwrap_or(usize::MAX);
    room.clamp(MIN_CONNECTIONS, MAX_CONNECTIONS)
}
/// How long connections get to finish when the daemon stops.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Where the OpenAPI document is served.
pub const OPENAPI_PATH: &str = "/api/openapi.json";

/// Every route the listener serves, with the OpenAPI document of them (the
/// web page's routes, under its base path, are not part of the API's
/// document).
pub fn router(web: Option<&Chrome>) -> (Router<Shared>, utoipa::openapi::OpenApi) {
    let (routes, doc) = OpenApiRouter::with_openapi(super::api::ApiDoc::openapi())
        .merge(super::health::routes())
        .merge(super::api::routes())
        .split_for_parts();
    let served = doc.to_json().expect("the OpenAPI document serializes");
    let router = routes
        .route(
            OPENAPI_PATH,
            axum::routing::get(move || async move {
                let mut r = Response::new(Body::from(served.clone()));
                r.headers_mut().insert(
                    hyper::header::CONTENT_TYPE,
                    hyper::header::HeaderValue::from_static("application/json"),
                );
                r
            }),
        )
        .fallback(not_found)
        .layer(axum::middleware::map_response(method_not_allowed));
    let router = match web {
        Some(chrome) => {
            let chrome = Arc::new(chrome.clone());
            let page = super::web::routes(&chrome.base).layer(axum::middleware::map_response(
                move |r: Response| super::web::error::render(chrome.clone(), r),
            ));
            router.merge(page)
        }
        None => router,
    };
    (router, doc)
}

async fn not_found(OriginalUri(uri): OriginalUri) -> Response {
    if uri.path() == "/api" || uri.path().starts_with("/api/") {
        return ApiError::no_endpoint().into_response();
    }
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint; see /healthz, /readyz, /metrics and /api/webhooks",
    )
    .into_response()
}

/// Axum answers a method a path does not take with a bare 405 and `Allow`:
/// give it the JSON body every refusal has.
async fn method_not_allowed(r: Response) -> Response {
    if r.status() != StatusCode::METHOD_NOT_ALLOWED {
        return r;
    }
    let allow = r
        .headers()
        .get(ALLOW)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let mut out = json(
        StatusCode::METHOD_NOT_ALLOWED,
        &crate::admin::error::ErrorBody::new(
            "method_not_allowed",
            &format!("this endpoint allows {allow}"),
            None,
        ),
    );
    if let Some(v) = r.headers().get(ALLOW) {
        out.headers_mut().insert(ALLOW, v.clone());
    }
    out
}

pub struct AdminServer {
    pub addr: SocketAddr,
    pub state: Shared,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl AdminServer {
    /// Binds `addr` and serves until `shutdown`, at most `max_connections`
    /// at once (`connection_cap`).
    pub async fn start(
        addr: SocketAddr,
        state: AdminState,
        max_connections: usize,
    ) -> Result<AdminServer> {
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
        let chrome = state.web.as_ref().map(|w| w.chrome());
        if let Some(c) = &chrome {
            tracing::info!(path = %c.base, "web page served");
        }
        let app = router(chrome.as_ref()).0.with_state(state.clone());
        let stop = CancellationToken::new();
        let task = tokio::spawn(serve(listener, app, stop.clone(), max_connections));
        tracing::info!(%addr, max_connections, "admin listener started");
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

async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    stop: CancellationToken,
    max_connections: usize,
) {
    let slots = Arc::new(Semaphore::new(max_connections));
    loop {
        // A slot first: beyond the cap, clients wait in the backlog instead
        // of taking descriptors.
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => s.expect("the semaphore is never closed"),
            _ = stop.cancelled() => return,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    // EMFILE and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "admin listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => return,
        };
        // Each request knows its connection's peer (the web page bounds
        // failed sign-ins per address).
        let app = app.clone();
        let svc =
            hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(Peer(peer));
                let mut app = app.clone();
                async move { app.call(req).await }
            });
        let stop = stop.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(SHUTDOWN_GRACE, conn).await;
                }
            }
        });
    }
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
    let web = if cfg.web.enabled {
        db.batch_execute(
            "SELECT 1 FROM user_sessions LIMIT 0; SELECT 1 FROM users LIMIT 0;
             SELECT 1 FROM webhook_portal_sessions LIMIT 0",
        )
        .await
        .context(
            "the web page is on (web.enabled) but Plausible's user_sessions or users cannot be read: \
             grant this role SELECT on them (its sign-in reads Plausible's sessions)",
        )?;
        format!(
            "web page: on at {} (Plausible sessions by cookie {})",
            cfg.web.base_path, cfg.web.session_cookie
        )
    } else {
        "web page: off (web.enabled)".to_string()
    };
    Ok(format!(
        "admin listener: http://{addr} (operator tokens: {}, Plausible API keys: {keys}); {web}",
        cfg.admin.operator_token_sha256.len()
    ))
}
