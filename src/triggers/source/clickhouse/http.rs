//! ClickHouse's HTTP interface over the daemon's own hyper stack: plain HTTP
//! or HTTPS (rustls, webpki roots plus `analytics.clickhouse_ca_file`), pooled
//! keep-alive connections, a connect timeout and a whole-request timeout.
//!
//! The address guard does not apply: the operator names this server, and it
//! is normally on a private network. No query settings are sent, so a user
//! with `readonly = 1` (which may not change any) works.
//!
//! Errors say which kind they are: `Unavailable` (cannot connect, no answer
//! in time, credentials refused, server overloaded), after which a trigger
//! round stops; anything else is this query's own failure.

use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use hyper::{Method, Request, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::sql::excerpt;
use crate::delivery::client::USER_AGENT_VALUE;
use crate::triggers::source::Unavailable;

/// An answer larger than this is refused (the questions asked return a few
/// rows per trigger; this bounds memory if one ever does not).
pub const MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;

pub struct ChHttpConfig {
    /// scheme://host:port
    pub endpoint: url::Url,
    pub database: String,
    pub user: String,
    pub password: Option<String>,
    pub ca_file: Option<std::path::PathBuf>,
    pub connect_timeout: Duration,
    pub query_timeout: Duration,
}

pub struct ChHttp {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    uri: Uri,
    auth: HeaderValue,
    timeout: Duration,
    /// For errors and logs: endpoint, database and user; never the password.
    described: String,
}

impl ChHttp {
    pub fn new(cfg: ChHttpConfig) -> Result<Self> {
        let tls = crate::delivery::client::tls_config(
            cfg.ca_file.as_deref(),
            "analytics.clickhouse_ca_file",
        )?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(cfg.connect_timeout));
        http.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(https);
        let mut url = cfg.endpoint.clone();
        url.set_path("/");
        url.query_pairs_mut().append_pair("database", &cfg.database);
        let uri: Uri = url
            .as_str()
            .parse()
            .context("analytics.clickhouse_url is not a usable URI")?;
        use base64::Engine as _;
        let token = base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            cfg.user,
            cfg.password.as_deref().unwrap_or("")
        ));
        let mut auth = HeaderValue::from_str(&format!("Basic {token}"))
            .context("the ClickHouse credentials do not fit an HTTP header")?;
        auth.set_sensitive(true);
        let described = format!(
            "clickhouse {} database {} user {}",
            cfg.endpoint.as_str().trim_end_matches('/'),
            cfg.database,
            cfg.user
        );
        Ok(Self {
            client,
            uri,
            auth,
            timeout: cfg.query_timeout,
            described,
        })
    }

    pub fn describe(&self) -> &str {
        &self.described
    }

    /// Runs `sql` (ending in its FORMAT clause) and returns the answer's body.
    pub async fn query(&self, sql: String) -> Result<Bytes> {
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(self.uri.clone())
            .body(Full::new(Bytes::from(sql)))
            .context("building a ClickHouse request")?;
        let h = req.headers_mut();
        h.insert(AUTHORIZATION, self.auth.clone());
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        h.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
        let work = async {
            let resp = self.client.request(req).await.map_err(|e| {
                anyhow::Error::new(Unavailable(format!(
                    "cannot reach {}: {}",
                    self.described,
                    cause(&e)
                )))
            })?;
            let status = resp.status().as_u16();
            let body = Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| {
                    anyhow::anyhow!(
                        "reading ClickHouse's answer ({}): {e}; an answer is capped at {} MiB",
                        self.described,
                        MAX_ANSWER_BYTES >> 20
                    )
                })?
                .to_bytes();
            anyhow::Ok((status, body))
        };
        let (status, body) = match tokio::time::timeout(self.timeout, work).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(Unavailable(format!(
                    "{} did not answer within {} ms (analytics.query_timeout_ms)",
                    self.described,
                    self.timeout.as_millis()
                ))
                .into())
            }
        };
        if status == 200 {
            return Ok(body);
        }
        let text = excerpt(&body);
        // 401/403 (and 516 on newer servers) or codes 192-195: the user or
        // password is wrong; every query would fail alike.
        let refused = matches!(status, 401 | 403 | 516)
            || ["Code: 192", "Code: 193", "Code: 194", "Code: 195"]
                .iter()
                .any(|c| text.starts_with(c));
        if refused {
            return Err(Unavailable(format!(
                "{} refused the credentials ({status}: {text}); check analytics.clickhouse_user and \
                 CLICKHOUSE_PASSWORD or analytics.clickhouse_password_file",
                self.described
            ))
            .into());
        }
        if status == 503 || status == 502 || status == 504 {
            return Err(Unavailable(format!(
                "{} is unavailable ({status}: {text})",
                self.described
            ))
            .into());
        }
        anyhow::bail!("{} answered {status}: {text}", self.described)
    }
}

/// hyper's error chain as one line (connection refused, DNS, TLS, ...).
fn cause(e: &hyper_util::client::legacy::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        let t = s.to_string();
        if !parts.iter().any(|p| p.contains(&t)) {
            parts.push(t);
        }
        src = s.source();
    }
    parts.join(": ")
}
