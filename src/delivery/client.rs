//! The HTTPS client: hyper over rustls (HTTP/1.1 and HTTP/2 by ALPN), pooled
//! keep-alive connections, the address guard in the resolver, connect and total
//! timeouts, a capped response read, and no redirects (hyper follows none).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderMap, HeaderValue, CONTENT_TYPE, USER_AGENT};
use hyper::{Method, Request, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::guard::{
    AddressGuard, DnsFailure, GuardedResolver, RefusedAddress, Resolve, SystemResolver,
};
use super::local::{is_shortage, DescriptorShortage};
use super::retry::parse_retry_after;
use crate::https::{tls_config, USER_AGENT_VALUE};
use crate::queue::FailureKind;

/// Past the request deadline, the outer timeout waits this much longer so a
/// response whose status arrived in time is still reported with its status.
const BODY_GRACE: Duration = Duration::from_millis(50);

#[derive(Clone)]
pub struct ClientConfig {
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub read_max_bytes: usize,
    pub extra_ca_file: Option<std::path::PathBuf>,
    pub guard: Arc<AddressGuard>,
    pub resolver: Arc<dyn Resolve>,
    pub max_idle_per_host: usize,
}

impl ClientConfig {
    /// The delivery client's settings, with the process's one address guard.
    pub fn new(cfg: &crate::config::Config, guard: Arc<AddressGuard>) -> Self {
        Self {
            connect_timeout: cfg.delivery.connect_timeout(),
            request_timeout: cfg.delivery.request_timeout(),
            read_max_bytes: cfg.delivery.response_read_max_bytes,
            extra_ca_file: cfg.delivery.extra_ca_file.clone(),
            guard,
            resolver: Arc::new(SystemResolver),
            max_idle_per_host: cfg.delivery.max_in_flight,
        }
    }

    /// For a client on its own (`plausible-webhooks check`), with a guard of
    /// its own; a process with several users of the guard builds it once
    /// (`AddressGuard::from_config`) and calls [`ClientConfig::new`].
    pub fn from_config(cfg: &crate::config::Config) -> Result<Self> {
        Ok(Self::new(cfg, Arc::new(AddressGuard::from_config(cfg)?)))
    }
}

/// What the receiver answered (the body cut at the read limit).
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub retry_after: Option<Duration>,
    pub body: Bytes,
    pub truncated: bool,
}

/// Why no answer came: its kind, for code, and words that name the cause
/// and, where useful, what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendError {
    pub kind: FailureKind,
    /// Retrying cannot change it (the guard refused an address written in
    /// the URL itself): the delivery fails at once.
    pub lasting: bool,
    message: String,
}

impl SendError {
    fn new(kind: FailureKind, message: String) -> Self {
        Self {
            kind,
            lasting: false,
            message,
        }
    }

    /// The guard's refusal of an address the URL names itself (an IP, or a
    /// name that always resolves to loopback): no later attempt can differ.
    fn refused_for_good(why: super::guard::Refusal) -> Self {
        let refused = RefusedAddress { host: None, why };
        Self {
            lasting: true,
            ..Self::new(FailureKind::RefusedAddress, refused.to_string())
        }
    }

    fn timeout(after: Duration) -> Self {
        Self::new(
            FailureKind::Timeout,
            format!("timed out after {} ms", after.as_millis()),
        )
    }
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}
impl std::error::Error for SendError {}

type Inner = Client<HttpsConnector<HttpConnector<GuardedResolver>>, Full<Bytes>>;

#[derive(Clone)]
pub struct HttpClient {
    inner: Inner,
    guard: Arc<AddressGuard>,
    request_timeout: Duration,
    read_max_bytes: usize,
}

impl HttpClient {
    pub fn new(cfg: ClientConfig) -> Result<Self> {
        let tls = tls_config(cfg.extra_ca_file.as_deref(), "delivery.extra_ca_file")?;
        let mut http = HttpConnector::new_with_resolver(GuardedResolver::new(
            cfg.guard.clone(),
            cfg.resolver.clone(),
        ));
        http.enforce_http(false);
        http.set_connect_timeout(Some(cfg.connect_timeout));
        http.set_nodelay(true);
        http.set_keepalive(Some(Duration::from_secs(60)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_all_versions()
            .wrap_connector(http);
        let inner = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(cfg.max_idle_per_host.max(1))
            .build(https);
        Ok(Self {
            inner,
            guard: cfg.guard,
            request_timeout: cfg.request_timeout,
            read_max_bytes: cfg.read_max_bytes,
        })
    }

    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// POSTs `body` with `headers` (Content-Type and User-Agent are set here),
    /// within the total timeout. An IP-literal host is checked by the guard here;
    /// a name is checked by the resolver after DNS, before any connect.
    pub async fn post(
        &self,
        uri: &Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<HttpResponse, SendError> {
        if let Some(host) = uri.host() {
            let bare = host.trim_start_matches('[').trim_end_matches(']');
            // Names other than loopback ones pass here: the resolver judges
            // their addresses.
            let named = match bare.parse::<std::net::IpAddr>() {
                Ok(std::net::IpAddr::V4(v4)) => url::Host::Ipv4(v4),
                Ok(std::net::IpAddr::V6(v6)) => url::Host::Ipv6(v6),
                Err(_) => url::Host::Domain(bare),
            };
            self.guard
                .check_host(&named)
                .map_err(SendError::refused_for_good)?;
        }
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(uri.clone())
            .body(Full::new(body))
            .map_err(|e| {
                SendError::new(
                    FailureKind::Request,
                    format!("cannot build the request: {e}"),
                )
            })?;
        *req.headers_mut() = headers;
        req.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        req.headers_mut()
            .insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
        let timeout = self.request_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let work = async {
            let resp = self.inner.request(req).await.map_err(classify)?;
            let status = resp.status().as_u16();
            let retry_after = resp
                .headers()
                .get(hyper::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, std::time::SystemTime::now()));
            // The status is the receiver's answer: a body that trickles past the
            // deadline is cut, not turned into a failure (which would resend).
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let (body, truncated) = match tokio::time::timeout(
                left,
                read_capped(resp.into_body(), self.read_max_bytes),
            )
            .await
            {
                Ok(read) => read,
                Err(_) => (Bytes::new(), true),
            };
            Ok(HttpResponse {
                status,
                retry_after,
                body,
                truncated,
            })
        };
        match tokio::time::timeout_at(deadline + BODY_GRACE, work).await {
            Ok(r) => r,
            Err(_) => Err(SendError::timeout(timeout)),
        }
    }
}

/// Reads at most `max` bytes; a longer body is cut (its connection is dropped,
/// not reused). A body that fails midway keeps what arrived: the status is what counts.
async fn read_capped(mut body: hyper::body::Incoming, max: usize) -> (Bytes, bool) {
    let mut buf = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { break };
        if let Ok(data) = frame.into_data() {
            let room = max - buf.len();
            if data.len() >= room {
                buf.extend_from_slice(&data[..room]);
                return (
                    Bytes::from(buf),
                    data.len() > room || !hyper::body::Body::is_end_stream(&body),
                );
            }
            buf.extend_from_slice(&data);
        }
    }
    (Bytes::from(buf), false)
}

/// Names a failed request's kind from the types in hyper's error chain, and
/// flattens the chain into one line that names the cause (a refusal by the
/// guard is its own words alone).
fn classify(e: hyper_util::client::legacy::Error) -> SendError {
    let found = Found::in_chain(&e);
    if let Some(refused) = found.refused {
        return SendError::new(FailureKind::RefusedAddress, refused);
    }
    let line = crate::logging::error_line(&e);
    if found.ca_as_leaf {
        return SendError::new(
            FailureKind::Tls,
            format!(
                "{line}: the receiver presents a CA certificate as its own (basicConstraints CA:TRUE, \
                 what a plain `openssl req -x509` makes), which is refused even when it is in \
                 delivery.extra_ca_file; make a CA and a certificate it signs for the receiver \
                 (docs/operating.md#a-receiver-with-a-private-ca), put the CA in delivery.extra_ca_file \
                 and the signed certificate on the receiver"
            ),
        );
    }
    SendError::new(found.kind(e.is_connect()), line)
}

/// What the error chain of one failed request holds.
#[derive(Default)]
struct Found {
    refused: Option<String>,
    dns: bool,
    tls: bool,
    /// The peer's certificate is a CA's (webpki's CaUsedAsEndEntity).
    ca_as_leaf: bool,
    /// This host had no file descriptor for the socket or the lookup.
    local: bool,
    closed: bool,
    io: Vec<std::io::ErrorKind>,
}

impl Found {
    fn in_chain(e: &(dyn std::error::Error + 'static)) -> Self {
        let mut found = Found::default();
        let mut src = Some(e);
        while let Some(s) = src {
            found.note(s);
            src = s.source();
        }
        found
    }

    /// Looks at one error of the chain, and inside the `io::Error`s that
    /// wrap another error (whose `source()` skips the wrapped one).
    fn note(&mut self, e: &(dyn std::error::Error + 'static)) {
        if let Some(r) = e.downcast_ref::<RefusedAddress>() {
            self.refused.get_or_insert_with(|| r.to_string());
        }
        self.dns |= e.is::<DnsFailure>();
        self.local |= e.is::<DescriptorShortage>();
        if let Some(t) = e.downcast_ref::<rustls::Error>() {
            self.tls = true;
            if let rustls::Error::InvalidCertificate(rustls::CertificateError::Other(o)) = t {
                self.ca_as_leaf |= matches!(
                    o.0.downcast_ref::<webpki::Error>(),
                    Some(webpki::Error::CaUsedAsEndEntity)
                );
            }
        }
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            self.closed |= h.is_incomplete_message() || h.is_canceled() || h.is_closed();
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            self.io.push(io.kind());
            self.local |= is_shortage(io);
            if let Some(inner) = io.get_ref() {
                self.note(inner);
            }
        }
    }

    /// The kind, the most telling first. `connecting`: the request failed
    /// before it was sent (TCP connect or TLS handshake).
    fn kind(&self, connecting: bool) -> FailureKind {
        use std::io::ErrorKind as Io;
        if self.local {
            FailureKind::LocalResources
        } else if self.dns {
            FailureKind::Dns
        } else if self.tls {
            FailureKind::Tls
        } else if self.io.contains(&Io::ConnectionRefused) {
            FailureKind::ConnectionRefused
        } else if self.io.contains(&Io::TimedOut) {
            FailureKind::ConnectTimeout
        } else if connecting && self.io.contains(&Io::UnexpectedEof) {
            // A TCP connect reads nothing: an end of stream while connecting
            // is the peer hanging up in the TLS handshake.
            FailureKind::Tls
        } else if self.closed {
            FailureKind::ConnectionClosed
        } else {
            FailureKind::Connection
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error that names its step and wraps the cause, as hyper's
    /// connector does.
    #[derive(Debug)]
    struct Step(&'static str, Box<dyn std::error::Error + Send + Sync>);
    impl std::fmt::Display for Step {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl std::error::Error for Step {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&*self.1)
        }
    }

    fn kind(e: impl std::error::Error + 'static, connecting: bool) -> FailureKind {
        Found::in_chain(&e).kind(connecting)
    }

    /// Each failure is known by the types in its chain, the way hyper,
    /// hyper-rustls and our resolver build them.
    #[test]
    fn failure_kinds_come_from_the_error_types() {
        use std::io::{Error as IoError, ErrorKind as Io};
        let dns = DnsFailure {
            host: "nope.example".into(),
            cause: Some("no such host".into()),
        };
        assert_eq!(
            kind(
                Step("dns error", IoError::new(Io::NotFound, dns).into()),
                true
            ),
            FailureKind::Dns
        );
        let refused = Step(
            "tcp connect error",
            IoError::from(Io::ConnectionRefused).into(),
        );
        assert_eq!(kind(refused, true), FailureKind::ConnectionRefused);
        let slow = Step("tcp connect error", IoError::new(Io::TimedOut, "x").into());
        assert_eq!(kind(slow, true), FailureKind::ConnectTimeout);
        let cert = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let tls = IoError::other(IoError::new(Io::InvalidData, cert));
        assert_eq!(kind(tls, true), FailureKind::Tls);
        let hangup = || IoError::other(IoError::new(Io::UnexpectedEof, "eof"));
        assert_eq!(kind(hangup(), true), FailureKind::Tls);
        assert_eq!(kind(hangup(), false), FailureKind::Connection);

        let guard = AddressGuard::default();
        let why = guard.check("10.0.0.1".parse().unwrap()).unwrap_err();
        let refused = RefusedAddress {
            host: Some("private.example".into()),
            why,
        };
        let chain = Step(
            "dns error",
            IoError::new(Io::PermissionDenied, refused).into(),
        );
        let found = Found::in_chain(&chain);
        let words = found.refused.expect("a refusal");
        assert!(
            words.starts_with("refused address: private.example resolves to 10.0.0.1"),
            "{words}"
        );
    }

    /// The CA-as-leaf refusal reaches us untyped (rustls wraps webpki's
    /// `CaUsedAsEndEntity` in `CertificateError::Other`) and is found by
    /// downcasting to webpki's own error type, which matches only while the
    /// rustls-webpki this crate names is the one rustls uses. A real
    /// handshake with a receiver presenting its CA certificate as its own
    /// must be named for what it is: were the versions to drift apart, the
    /// downcast would find nothing and this would fail.
    #[tokio::test]
    async fn a_ca_certificate_presented_as_the_receivers_own_is_named() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, cert.pem()).unwrap();
        let server = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                // The client refuses the certificate: the handshake fails here too.
                let _ = acceptor.accept(tcp).await;
            }
        });
        let client = HttpClient::new(ClientConfig {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            read_max_bytes: 1024,
            extra_ca_file: Some(ca),
            guard: Arc::new(AddressGuard::new(vec!["127.0.0.0/8".parse().unwrap()])),
            resolver: Arc::new(SystemResolver),
            max_idle_per_host: 1,
        })
        .unwrap();
        let uri: Uri = format!("https://127.0.0.1:{port}/").parse().unwrap();
        let err = client
            .post(&uri, HeaderMap::new(), Bytes::new())
            .await
            .expect_err("a CA certificate as the receiver's own is refused");
        assert_eq!(err.kind, FailureKind::Tls);
        assert!(
            err.to_string()
                .contains("presents a CA certificate as its own"),
            "{err}"
        );
    }
}
