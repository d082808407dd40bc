//! A real HTTPS receiver on loopback (rustls, HTTP/1.1 and HTTP/2), with a CA
//! and server certificate made at run time by rcgen. It records every request
//! and answers as the test (or the demo) tells it to: a status, a hang, a reset,
//! a huge body.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::header::HeaderMap;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// A CA and a server certificate for `localhost`, 127.0.0.1 and `*.example.test`
/// (names the tests resolve to loopback through a stub), signed by it.
pub struct TestTls {
    pub ca_pem: String,
    /// The CA as a PEM file, for `delivery.extra_ca_file`.
    pub ca_file: PathBuf,
    /// The server certificate (for `localhost` and 127.0.0.1) as a PEM file,
    /// for an external server such as nginx (`ssl_certificate`).
    pub cert_file: PathBuf,
    /// The server certificate's private key as a PEM file (`ssl_certificate_key`).
    pub key_file: PathBuf,
    server: Arc<rustls::ServerConfig>,
    /// The temp dir the files are in, removed on drop (None: a directory
    /// of the caller's, kept: `in_dir`).
    _dir: Option<tempfile::TempDir>,
}

impl TestTls {
    pub fn new() -> Result<TestTls> {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "plausible-webhooks test CA");
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate()?;
        let params = CertificateParams::new(vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "*.example.test".to_string(),
        ])?;
        let cert = params.signed_by(&key, &issuer)?;

        let dir = tempfile::tempdir()?;
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca_cert.pem())?;
        Self::serving(dir.path(), ca_file, ca_cert.pem(), &cert, &key)?.in_temp(dir)
    }

    /// A CA and a server certificate kept in `dir` (`ca.pem`,
    /// `server-cert.pem`, `server-key.pem`): made there by the first call,
    /// read back by the next, so a daemon configured to trust `ca.pem`
    /// keeps trusting the receiver across its restarts. The CA's key is
    /// not kept: nothing else can be signed by it.
    pub fn in_dir(dir: &Path) -> Result<TestTls> {
        use rustls_pki_types::pem::PemObject as _;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        let ca_file = dir.join("ca.pem");
        let (cert_file, key_file) = (dir.join("server-cert.pem"), dir.join("server-key.pem"));
        if !(ca_file.is_file() && cert_file.is_file() && key_file.is_file()) {
            let made = TestTls::new()?;
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            std::fs::write(&ca_file, &made.ca_pem)?;
            std::fs::copy(&made.cert_file, &cert_file)?;
            std::fs::copy(&made.key_file, &key_file)?;
        }
        let read = || -> Result<(String, CertificateDer<'static>, PrivateKeyDer<'static>)> {
            Ok((
                std::fs::read_to_string(&ca_file)?,
                CertificateDer::from_pem_file(&cert_file)?,
                PrivateKeyDer::from_pem_file(&key_file)?,
            ))
        };
        let (ca_pem, cert, key) = read().with_context(|| {
            format!(
                "reading the certificates in {} (remove the directory to make new ones)",
                dir.display()
            )
        })?;
        Ok(TestTls {
            server: server_config(cert, key)?,
            ca_pem,
            ca_file,
            cert_file,
            key_file,
            _dir: None,
        })
    }

    /// The server side's TLS config (for the test SMTP server too: its
    /// ALPN offers go unused by a client that asks for none).
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        self.server.clone()
    }

    fn in_temp(mut self, dir: tempfile::TempDir) -> Result<TestTls> {
        self._dir = Some(dir);
        Ok(self)
    }

    /// Writes the server certificate and key into `dir` and builds the
    /// receiver's TLS config (h2 and http/1.1 by ALPN).
    fn serving(
        dir: &Path,
        ca_file: PathBuf,
        ca_pem: String,
        cert: &rcgen::Certificate,
        key: &rcgen::KeyPair,
    ) -> Result<TestTls> {
        let cert_file = dir.join("server-cert.pem");
        std::fs::write(&cert_file, cert.pem())?;
        let key_file = dir.join("server-key.pem");
        std::fs::write(&key_file, key.serialize_pem())?;
        Ok(TestTls {
            server: server_config(
                cert.der().clone(),
                rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )?,
            ca_pem,
            ca_file,
            cert_file,
            key_file,
            _dir: None,
        })
    }

    /// A receiver certificate made the quick way (`openssl req -x509
    /// -addext subjectAltName=IP:127.0.0.1`): self-signed, CA:TRUE, its own
    /// issuer. `ca_file` and `cert_file` are the same certificate.
    pub fn self_signed_ca_as_leaf() -> Result<TestTls> {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        let key = KeyPair::generate()?;
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key)?;
        let dir = tempfile::tempdir()?;
        // Its own CA: the file a receiver's operator would put in extra_ca_file.
        let ca_file = dir.path().join("server-cert.pem");
        Self::serving(dir.path(), ca_file, cert.pem(), &cert, &key)?.in_temp(dir)
    }
}

/// The receiver's TLS config: h2 and http/1.1 by ALPN.
fn server_config(
    cert: rustls_pki_types::CertificateDer<'static>,
    key: rustls_pki_types::PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)?;
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(server))
}

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub at: SystemTime,
    pub path: String,
    pub version: hyper::Version,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// 1 for the first request carrying this `webhook-id`, 2 for its retry, ...
    pub nth: usize,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// How to answer.
#[derive(Debug, Clone)]
pub enum Reply {
    Status(u16),
    Full {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// Answer with this status after a pause.
    Delayed(Duration, u16),
    /// 200 at once, then a body that never ends (a byte per 100 ms).
    Trickle,
    /// Never answer.
    Hang,
    /// 200 with a body of this many bytes, streamed.
    Huge(usize),
    /// Drop the connection without an answer.
    Reset,
}

pub type Behavior = Arc<dyn Fn(&Recorded) -> Reply + Send + Sync>;

pub fn always(status: u16) -> Behavior {
    Arc::new(move |_| Reply::Status(status))
}

type Body = BoxBody<Bytes, std::io::Error>;

#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<Recorded>>>,
    arrived: Arc<Notify>,
    stop: CancellationToken,
}

impl Receiver {
    pub async fn start(tls: &TestTls, behavior: Behavior) -> Result<Receiver> {
        Self::start_on(tls, "127.0.0.1:0".parse().expect("static"), behavior).await
    }

    /// `start` on a chosen address (port 0: a free one).
    pub async fn start_on(tls: &TestTls, at: SocketAddr, behavior: Behavior) -> Result<Receiver> {
        let listener = tokio::net::TcpListener::bind(at)
            .await
            .with_context(|| format!("binding the receiver to {at}"))?;
        let addr = listener.local_addr()?;
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.server.clone());
        let log = Arc::new(Mutex::new(Vec::new()));
        let seen: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let arrived = Arc::new(Notify::new());
        let stop = CancellationToken::new();
        let r = Receiver {
            addr,
            log: log.clone(),
            arrived: arrived.clone(),
            stop: stop.clone(),
        };
        tokio::spawn(async move {
            loop {
                let (tcp, _) = tokio::select! {
                    a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
                    _ = stop.cancelled() => return,
                };
                let acceptor = acceptor.clone();
                let (log, seen, arrived, behavior) =
                    (log.clone(), seen.clone(), arrived.clone(), behavior.clone());
                let stop = stop.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc =
                        hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                            let (log, seen, arrived, behavior) =
                                (log.clone(), seen.clone(), arrived.clone(), behavior.clone());
                            async move {
                                let at = SystemTime::now();
                                let (parts, body) = req.into_parts();
                                let body = body
                                    .collect()
                                    .await
                                    .map(|b| b.to_bytes())
                                    .unwrap_or_default();
                                let id = parts
                                    .headers
                                    .get("webhook-id")
                                    .and_then(|v| v.to_str().ok())
                                    .unwrap_or("")
                                    .to_string();
                                let nth = {
                                    let mut s = seen.lock().unwrap();
                                    let n = s.entry(id).or_insert(0);
                                    *n += 1;
                                    *n
                                };
                                let rec = Recorded {
                                    at,
                                    path: parts.uri.path().to_string(),
                                    version: parts.version,
                                    headers: parts.headers,
                                    body,
                                    nth,
                                };
                                let reply = behavior(&rec);
                                log.lock().unwrap().push(rec);
                                arrived.notify_waiters();
                                respond(reply).await
                            }
                        });
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let conn = builder.serve_connection(TokioIo::new(tls), svc);
                    tokio::select! {
                        _ = conn => {}
                        _ = stop.cancelled() => {}
                    }
                });
            }
        });
        Ok(r)
    }

    /// `https://127.0.0.1:<port><path>`
    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.addr.port())
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.log.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.log.lock().unwrap().len()
    }

    /// Waits until at least `n` requests have arrived.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Result<Vec<Recorded>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.arrived.notified();
            if self.count() >= n {
                return Ok(self.requests());
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                anyhow::bail!(
                    "receiver saw {} requests, expected {n}, within {timeout:?}",
                    self.count()
                );
            }
        }
    }

    pub fn shutdown(&self) {
        self.stop.cancel();
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if Arc::strong_count(&self.log) == 1 {
            self.stop.cancel();
        }
    }
}

async fn respond(reply: Reply) -> Result<Response<Body>, std::io::Error> {
    let full = |b: Vec<u8>| {
        Full::new(Bytes::from(b))
            .map_err(|e: Infallible| match e {})
            .boxed()
    };
    match reply {
        Reply::Status(s) => Ok(Response::builder()
            .status(s)
            .body(full(b"ok".to_vec()))
            .unwrap()),
        Reply::Full {
            status,
            headers,
            body,
        } => {
            let mut b = Response::builder().status(status);
            for (k, v) in headers {
                b = b.header(k, v);
            }
            Ok(b.body(full(body)).unwrap())
        }
        Reply::Delayed(d, s) => {
            tokio::time::sleep(d).await;
            Ok(Response::builder()
                .status(s)
                .body(full(b"ok".to_vec()))
                .unwrap())
        }
        Reply::Trickle => {
            let frames = futures_util::stream::unfold((), |()| async {
                tokio::time::sleep(Duration::from_millis(100)).await;
                Some((
                    Ok::<_, std::io::Error>(Frame::data(Bytes::from_static(b"."))),
                    (),
                ))
            });
            Ok(Response::builder()
                .status(200)
                .body(BodyExt::boxed(StreamBody::new(frames)))
                .unwrap())
        }
        Reply::Hang => {
            std::future::pending::<()>().await;
            unreachable!()
        }
        Reply::Huge(n) => {
            const CHUNK: usize = 64 * 1024;
            let chunk = Bytes::from(vec![b'x'; CHUNK]);
            let frames = futures_util::stream::iter((0..n.div_ceil(CHUNK)).map(move |i| {
                let len = CHUNK.min(n - i * CHUNK);
                Ok::<_, std::io::Error>(Frame::data(chunk.slice(..len)))
            }));
            Ok(Response::builder()
                .status(200)
                .body(BodyExt::boxed(StreamBody::new(frames)))
                .unwrap())
        }
        Reply::Reset => Err(std::io::Error::other("reset by test receiver")),
    }
}
