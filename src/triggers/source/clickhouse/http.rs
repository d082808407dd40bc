//! ClickHouse's HTTP interface over the daemon's own hyper stack: plain HTTP
//! or HTTPS (rustls, webpki roots plus `analytics.clickhouse_ca_file`), pooled
//! keep-alive connections, a connect timeout and a whole-request timeout.
//!
//! The address guard does not apply: the operator names this server, and it
//! is normally on a private network. No query settings are sent, so a user
//! with `readonly = 1` (which may not change any) works.
//!
//! Errors say which kind they are: `Unavailable` (cannot connect, no answer
//! in time from a server that does not answer a trivial query either,
//! credentials refused, server overloaded), after which a trigger round
//! stops; anything else (a query error, a query too slow for a server that
//! answers) is this query's own failure.

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
use crate::https::{tls_config, USER_AGENT_VALUE};
use crate::logging::error_line;
use crate::triggers::source::types::Unavailable;

/// After a query timed out, a trivial query must be answered within this for
/// the server to count as up.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Idle keep-alive connections are dropped after this: below ClickHouse's own
/// `keep_alive_timeout` (3 s by default on 18.x, 10 s on current versions),
/// so a request is never sent on a connection the server is closing.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(2);

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
        let tls = tls_config(cfg.ca_file.as_deref(), "analytics.clickhouse_ca_file")?;
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
            .pool_idle_timeout(IDLE_TIMEOUT)
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
        let (status, body) = match self.send(sql, self.timeout).await? {
            Some(answer) => answer,
            // No answer in time. A server that still answers a trivial query
            // is up, and this query is too slow (that batch fails alone, as a
            // PostgreSQL statement_timeout does); one that does not is down.
            None => {
                let probe = self
                    .send("SELECT 1 FORMAT TabSeparated".into(), PROBE_TIMEOUT)
                    .await;
                if matches!(probe, Ok(Some((200, _)))) {
                    anyhow::bail!(
                        "a query to {} did not finish within {} ms (analytics.query_timeout_ms) though the server \
                         answers: raise analytics.query_timeout_ms (and the user's max_execution_time)",
                        self.described,
                        self.timeout.as_millis()
                    );
                }
                return Err(Unavailable(format!(
                    "{} did not answer within {} ms (analytics.query_timeout_ms)",
                    self.described,
                    self.timeout.as_millis()
                ))
                .into());
            }
        };
        if status == 200 {
            return Ok(body);
        }
        let text = excerpt(&body);
        // The user or password is wrong (401/403, or codes 192-195 and 516
        // in the text): every query would fail alike.
        let code = error_code(&text);
        let refused = matches!(status, 401 | 403) || matches!(code, Some(192..=195) | Some(516));
        if refused {
            return Err(Unavailable(format!(
                "{} refused the credentials ({status}: {text}); check analytics.clickhouse_user and \
                 CLICKHOUSE_PASSWORD or analytics.clickhouse_password_file",
                self.described
            ))
            .into());
        }
        // Overloaded (too many simultaneous queries: code 202) or a proxy
        // in front reporting the server gone: every query would fail alike.
        if matches!(status, 502..=504) || code == Some(202) {
            return Err(Unavailable(format!(
                "{} is unavailable ({status}: {text})",
                self.described
            ))
            .into());
        }
        anyhow::bail!("{} answered {status}: {text}", self.described)
    }

    /// One request; `Ok(None)` when no whole answer came within `timeout`.
    async fn send(&self, sql: String, timeout: Duration) -> Result<Option<(u16, Bytes)>> {
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
                    error_line(&e)
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
        match tokio::time::timeout(timeout, work).await {
            Ok(r) => r.map(Some),
            Err(_) => Ok(None),
        }
    }
}

/// ClickHouse's error code from an error text: "Code: 60, e.displayText() …"
/// (18.x) or "Code: 60. DB::Exception: …" (current versions).
fn error_code(text: &str) -> Option<u32> {
    let rest = text.strip_prefix("Code: ")?;
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn error_codes_of_old_and_new_servers() {
        use super::error_code;
        assert_eq!(
            error_code("Code: 193, e.displayText() = DB::Exception: Wrong password"),
            Some(193)
        );
        assert_eq!(
            error_code("Code: 516. DB::Exception: default: Authentication failed"),
            Some(516)
        );
        assert_eq!(error_code("Ok."), None);
    }
}
