//! An SMTP server on loopback for the owner-email tests: real SMTP over TLS
//! with the test CA's certificate ([`TestTls`]), STARTTLS (required: mail
//! and authentication are refused before it) or implicit TLS, `AUTH PLAIN`
//! and `AUTH LOGIN`, `MAIL`, `RCPT`, `DATA`. It records each message it
//! accepts. `Hang` accepts connections and never says a word, as a stuck
//! server does.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use base64::Engine;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::receiver::TestTls;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpMode {
    /// Plain text greeting, STARTTLS required before AUTH and MAIL.
    StartTls,
    /// TLS from the first byte (port 465's way).
    Implicit,
    /// Accepts the connection and never answers.
    Hang,
}

/// One accepted message.
#[derive(Debug, Clone)]
pub struct Mail {
    pub from: String,
    pub to: Vec<String>,
    /// The message as sent after DATA (headers and body, dot-unstuffed).
    pub data: String,
    /// (user, password) of AUTH, if any.
    pub auth: Option<(String, String)>,
    /// Whether the message came over TLS (always, as the server refuses
    /// MAIL before it; kept to say so in tests).
    pub tls: bool,
}

impl Mail {
    /// A header's value (unfolded), the first one of that name.
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next()?;
        let mut out: Option<String> = None;
        for line in head.split("\r\n") {
            if line.starts_with([' ', '\t']) {
                if let Some(v) = out.as_mut() {
                    v.push(' ');
                    v.push_str(line.trim());
                }
                continue;
            }
            if out.is_some() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case(name) {
                    out = Some(v.trim().to_string());
                }
            }
        }
        out
    }

    /// The body after the headers (plain text, quoted-printable decoded
    /// when the message says so, lines joined as written).
    pub fn body(&self) -> String {
        let body = self.data.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        let qp = self
            .header("Content-Transfer-Encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("quoted-printable"));
        if !qp {
            return body.replace("\r\n", "\n");
        }
        let mut out = Vec::new();
        let joined = body.replace("=\r\n", "");
        let b = joined.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'=' {
                if let Some(Ok(v)) = joined.get(i + 1..i + 3).map(|h| u8::from_str_radix(h, 16)) {
                    out.push(v);
                    i += 3;
                    continue;
                }
            }
            out.push(b[i]);
            i += 1;
        }
        String::from_utf8_lossy(&out).replace("\r\n", "\n")
    }
}

pub struct SmtpServer {
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<Mail>>>,
    arrived: Arc<Notify>,
    connections: Arc<Mutex<usize>>,
    stop: CancellationToken,
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

impl SmtpServer {
    pub async fn start(tls: &TestTls, mode: SmtpMode) -> Result<SmtpServer> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.server_config());
        let log = Arc::new(Mutex::new(Vec::new()));
        let arrived = Arc::new(Notify::new());
        let connections = Arc::new(Mutex::new(0));
        let stop = CancellationToken::new();
        let (l, a, c, s) = (
            log.clone(),
            arrived.clone(),
            connections.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            loop {
                let (sock, _) = tokio::select! {
                    _ = s.cancelled() => return,
                    r = listener.accept() => match r { Ok(x) => x, Err(_) => continue },
                };
                *c.lock().unwrap() += 1;
                let (l, a, acc, s) = (l.clone(), a.clone(), acceptor.clone(), s.clone());
                tokio::spawn(async move {
                    let session = async {
                        match mode {
                            SmtpMode::Hang => {
                                s.cancelled().await;
                                drop(sock);
                            }
                            SmtpMode::StartTls => {
                                let _ = session(Box::new(sock), false, &acc, &l, &a).await;
                            }
                            SmtpMode::Implicit => {
                                if let Ok(t) = acc.accept(sock).await {
                                    let _ = session(Box::new(t), true, &acc, &l, &a).await;
                                }
                            }
                        }
                    };
                    tokio::select! {
                        _ = s.cancelled() => {}
                        _ = session => {}
                    }
                });
            }
        });
        Ok(SmtpServer {
            addr,
            log,
            arrived,
            connections,
            stop,
        })
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn mails(&self) -> Vec<Mail> {
        self.log.lock().unwrap().clone()
    }

    /// Connections accepted (a hung server's count shows it was tried).
    pub fn connections(&self) -> usize {
        *self.connections.lock().unwrap()
    }

    /// Waits until at least `n` messages were accepted.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Result<Vec<Mail>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.arrived.notified();
            if self.mails().len() >= n {
                return Ok(self.mails());
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                anyhow::bail!(
                    "SMTP server accepted {} messages, expected {n}, within {timeout:?}",
                    self.mails().len()
                );
            }
        }
    }

    pub fn shutdown(&self) {
        self.stop.cancel();
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn session(
    io: Box<dyn Io>,
    mut tls: bool,
    acceptor: &tokio_rustls::TlsAcceptor,
    log: &Mutex<Vec<Mail>>,
    arrived: &Notify,
) -> Result<()> {
    let mut r = BufReader::new(io);
    r.get_mut()
        .write_all(b"220 localhost ESMTP plausible-webhooks test\r\n")
        .await?;
    let mut auth = None;
    let mut from: Option<String> = None;
    let mut to = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let cmd = line.trim_end().to_string();
        let upper = cmd.to_ascii_uppercase();
        let reply: String = if upper.starts_with("EHLO") || upper.starts_with("HELO") {
            if tls {
                "250-localhost\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME\r\n".into()
            } else {
                "250-localhost\r\n250-STARTTLS\r\n250 8BITMIME\r\n".into()
            }
        } else if upper == "STARTTLS" && !tls {
            r.get_mut().write_all(b"220 ready to start TLS\r\n").await?;
            let plain = r.into_inner();
            let t = acceptor.accept(plain).await?;
            r = BufReader::new(Box::new(t) as Box<dyn Io>);
            tls = true;
            continue;
        } else if !tls && (upper.starts_with("AUTH") || upper.starts_with("MAIL")) {
            "530 Must issue a STARTTLS command first\r\n".into()
        } else if let Some(rest) = upper.strip_prefix("AUTH PLAIN") {
            let mut b64 = cmd[cmd.len() - rest.len()..].trim().to_string();
            if b64.is_empty() {
                r.get_mut().write_all(b"334 \r\n").await?;
                line.clear();
                r.read_line(&mut line).await?;
                b64 = line.trim().to_string();
            }
            let raw = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap_or_default();
            let parts: Vec<String> = raw
                .split(|b| *b == 0)
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .collect();
            auth = parts
                .get(1)
                .zip(parts.get(2))
                .map(|(u, p)| (u.clone(), p.clone()));
            "235 2.7.0 Authentication successful\r\n".into()
        } else if upper.starts_with("AUTH LOGIN") {
            let b = base64::engine::general_purpose::STANDARD;
            let mut got = Vec::new();
            for prompt in ["VXNlcm5hbWU6", "UGFzc3dvcmQ6"] {
                r.get_mut()
                    .write_all(format!("334 {prompt}\r\n").as_bytes())
                    .await?;
                line.clear();
                r.read_line(&mut line).await?;
                got.push(
                    String::from_utf8_lossy(&b.decode(line.trim()).unwrap_or_default())
                        .into_owned(),
                );
            }
            auth = Some((got[0].clone(), got[1].clone()));
            "235 2.7.0 Authentication successful\r\n".into()
        } else if upper.starts_with("MAIL FROM:") {
            from = Some(addr_of(&cmd[10..]));
            to.clear();
            "250 2.1.0 Ok\r\n".into()
        } else if upper.starts_with("RCPT TO:") {
            to.push(addr_of(&cmd[8..]));
            "250 2.1.5 Ok\r\n".into()
        } else if upper == "DATA" {
            r.get_mut()
                .write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                .await?;
            let mut data = String::new();
            loop {
                line.clear();
                if r.read_line(&mut line).await? == 0 {
                    return Ok(());
                }
                if line == ".\r\n" || line == ".\n" {
                    break;
                }
                data.push_str(
                    line.strip_prefix('.')
                        .filter(|_| line.starts_with(".."))
                        .unwrap_or(&line),
                );
            }
            log.lock().unwrap().push(Mail {
                from: from.take().unwrap_or_default(),
                to: std::mem::take(&mut to),
                data,
                auth: auth.clone(),
                tls,
            });
            arrived.notify_waiters();
            "250 2.0.0 Ok: queued\r\n".into()
        } else if upper == "QUIT" {
            r.get_mut().write_all(b"221 2.0.0 Bye\r\n").await?;
            return Ok(());
        } else if upper == "RSET" || upper == "NOOP" {
            "250 2.0.0 Ok\r\n".into()
        } else {
            "502 5.5.2 Command not recognized\r\n".into()
        };
        r.get_mut().write_all(reply.as_bytes()).await?;
    }
}

/// `<a@b>` (with any parameters after it) as `a@b`.
fn addr_of(s: &str) -> String {
    let s = s.trim();
    match (s.find('<'), s.find('>')) {
        (Some(a), Some(b)) if a < b => s[a + 1..b].to_string(),
        _ => s.split_whitespace().next().unwrap_or("").to_string(),
    }
}
