//! The HTTPS receiver: Debian's nginx (installed with apt-get if missing),
//! else the in-process test receiver; what it logged, request by request.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use plausible_webhooks::testkit::receiver::{always, Receiver, TestTls};

use crate::daemon::{signal, wait_child};
use crate::report::unix_secs;

/// One request as the receiver logged it.
pub struct Arrival {
    /// Unix seconds.
    pub at: f64,
    /// The `webhook-id` header.
    pub id: String,
}

pub enum Sink {
    Nginx(Nginx),
    InProcess { receiver: Receiver, seen: usize },
}

impl Sink {
    /// nginx when it is installed or can be installed; else the in-process receiver.
    pub async fn start(tls: &TestTls) -> Result<Sink> {
        match ensure_nginx() {
            Some(bin) => match Nginx::start(bin, tls).await {
                Ok(n) => return Ok(Sink::Nginx(n)),
                Err(e) => println!("[setup] nginx would not start ({e:#}); falling back"),
            },
            None => println!("[setup] nginx is not available; falling back"),
        }
        println!("[setup] RECEIVER: in-process testkit::receiver::Receiver answering 200 (its CPU counts as the bench's)");
        Ok(Sink::InProcess {
            receiver: Receiver::start(tls, always(200)).await?,
            seen: 0,
        })
    }

    pub fn describe(&self) -> String {
        match self {
            Sink::Nginx(n) => format!(
                "nginx {} (1 worker, {} by ALPN, return 200)",
                n.version,
                if std::env::var_os("BENCH_HTTP1").is_some() {
                    "HTTP/1.1 only"
                } else {
                    "HTTP/2"
                }
            ),
            Sink::InProcess { .. } => {
                "in-process testkit Receiver (rustls + hyper), always(200)".into()
            }
        }
    }

    pub fn url(&self) -> String {
        match self {
            Sink::Nginx(n) => format!("https://127.0.0.1:{}/webhook", n.port),
            Sink::InProcess { receiver, .. } => receiver.url("/webhook"),
        }
    }

    /// The nginx master's pid (its worker is counted as its child).
    pub fn pid(&self) -> Option<i32> {
        match self {
            Sink::Nginx(n) => n.child.as_ref().map(|c| c.id() as i32),
            Sink::InProcess { .. } => None,
        }
    }

    /// Every request since the last call. nginx is stopped with SIGQUIT first,
    /// so its buffered access log is complete, and started again if `restart`.
    pub async fn arrivals(&mut self, restart: bool) -> Result<Vec<Arrival>> {
        match self {
            Sink::Nginx(n) => {
                let log = n.stop().await?;
                let text = std::fs::read_to_string(&log)
                    .with_context(|| format!("reading {}", log.display()))?;
                let mut out = Vec::new();
                let mut protocols: HashMap<String, usize> = HashMap::new();
                for line in text.lines() {
                    let mut f = line.split(' ');
                    let (Some(at), Some(id)) = (f.next(), f.next()) else {
                        continue;
                    };
                    let proto = format!("{} {}", f.next().unwrap_or("?"), f.next().unwrap_or("?"));
                    *protocols.entry(proto).or_default() += 1;
                    if let Ok(at) = at.parse::<f64>() {
                        out.push(Arrival {
                            at,
                            id: id.to_string(),
                        });
                    }
                }
                let mut protocols: Vec<_> = protocols.into_iter().collect();
                protocols.sort();
                println!(
                    "[nginx] stopped with SIGQUIT; access log: {} lines ({})",
                    out.len(),
                    protocols
                        .iter()
                        .map(|(p, c)| format!("{p}: {c}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                if restart {
                    n.launch().await?;
                }
                Ok(out)
            }
            Sink::InProcess { receiver, seen } => {
                let all = receiver.requests();
                let new = all[*seen..]
                    .iter()
                    .map(|r| Arrival {
                        at: unix_secs(r.at),
                        id: r.header("webhook-id").unwrap_or("").to_string(),
                    })
                    .collect();
                *seen = all.len();
                Ok(new)
            }
        }
    }

    pub async fn stop(&mut self) {
        match self {
            Sink::Nginx(n) => {
                if n.child.is_some() {
                    let _ = n.stop().await;
                }
                let errors =
                    std::fs::read_to_string(n.dir.path().join("error.log")).unwrap_or_default();
                let lines: Vec<&str> = errors.lines().collect();
                println!("[nginx] error.log: {} lines", lines.len());
                for l in lines.iter().take(10) {
                    println!("    {l}");
                }
            }
            Sink::InProcess { receiver, .. } => receiver.shutdown(),
        }
    }
}

/// /usr/sbin/nginx, installed with apt-get if it is missing.
pub fn ensure_nginx() -> Option<PathBuf> {
    let bin = PathBuf::from("/usr/sbin/nginx");
    if bin.exists() {
        return Some(bin);
    }
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends", "nginx"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .output()
    };
    println!("[setup] /usr/sbin/nginx is missing: running `apt-get install -y nginx`...");
    let mut out = install();
    if !matches!(&out, Ok(o) if o.status.success()) {
        println!("[setup] apt-get install failed; running `apt-get update` and trying again...");
        let _ = Command::new("apt-get").arg("update").output();
        out = install();
    }
    match out {
        Ok(o) if o.status.success() && bin.exists() => {
            println!("[setup] nginx installed");
            Some(bin)
        }
        Ok(o) => {
            let text = String::from_utf8_lossy(&o.stderr);
            let tail: Vec<&str> = text.lines().rev().take(5).collect();
            println!("[setup] apt-get install nginx failed: {}", tail.join(" | "));
            None
        }
        Err(e) => {
            println!("[setup] could not run apt-get: {e}");
            None
        }
    }
}

/// nginx from a temp dir: one worker, in the foreground as our child.
pub struct Nginx {
    pub bin: PathBuf,
    pub version: String,
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub child: Option<Child>,
    /// Each launch writes its own access log.
    pub launches: u32,
}

impl Nginx {
    pub async fn start(bin: PathBuf, tls: &TestTls) -> Result<Nginx> {
        let out = Command::new(&bin).arg("-v").output()?;
        let version = String::from_utf8_lossy(&out.stderr)
            .trim()
            .rsplit('/')
            .next()
            .unwrap_or("")
            .to_string();
        let dir = tempfile::Builder::new().prefix("bench-nginx-").tempdir()?;
        // nginx's worker runs as an unprivileged user when we are root.
        std::fs::set_permissions(
            dir.path(),
            <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755),
        )?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut n = Nginx {
            bin,
            version,
            dir,
            port,
            cert: tls.cert_file.clone(),
            key: tls.key_file.clone(),
            child: None,
            launches: 0,
        };
        n.launch().await?;
        Ok(n)
    }

    /// `listen ... ssl http2;` before 1.25.1, `http2 on;` from then on.
    pub fn http2_on_directive(&self) -> bool {
        let v: Vec<u32> = self
            .version
            .split('.')
            .map(|p| p.parse().unwrap_or(0))
            .collect();
        v >= vec![1, 25, 1]
    }

    pub fn access_log(&self) -> PathBuf {
        self.dir
            .path()
            .join(format!("access-{}.log", self.launches))
    }

    pub async fn launch(&mut self) -> Result<()> {
        self.launches += 1;
        let d = self.dir.path().display();
        // BENCH_HTTP1=1: nginx offers only HTTP/1.1 by ALPN, so the daemon
        // keeps a pool of keep-alive connections instead of one multiplexed
        // HTTP/2 connection (issue 27, point 5).
        let (listen, http2) = if std::env::var_os("BENCH_HTTP1").is_some() {
            ("ssl", "")
        } else if self.http2_on_directive() {
            ("ssl", "http2 on;")
        } else {
            ("ssl http2", "")
        };
        let conf = format!(
            "worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    log_format webhook '$msec $http_webhook_id $server_protocol $status';
    server {{
        listen 127.0.0.1:{port} {listen};
        {http2}
        ssl_certificate {cert};
        ssl_certificate_key {key};
        keepalive_requests 1000000;
        keepalive_timeout 300s;
        access_log {log} webhook buffer=256k flush=1s;
        location / {{ return 200 \"ok\"; }}
    }}
}}
",
            port = self.port,
            cert = self.cert.display(),
            key = self.key.display(),
            log = self.access_log().display(),
        );
        let conf_path = self.dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf)?;
        let child = Command::new(&self.bin)
            .arg("-p")
            .arg(self.dir.path())
            .arg("-c")
            .arg(&conf_path)
            .arg("-e")
            .arg(self.dir.path().join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.path().join("stderr.log"))?)
            .spawn()
            .context("starting nginx")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(s) = self.child.as_mut().expect("just set").try_wait()? {
                self.child = None;
                bail!(
                    "nginx exited ({s}): {}{}",
                    std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default(),
                    std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
                );
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "nginx did not listen on 127.0.0.1:{} within 10 s",
                    self.port
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Graceful stop (SIGQUIT: the worker flushes its log buffer and finishes
    /// open requests); returns the complete access log of this launch.
    async fn stop(&mut self) -> Result<PathBuf> {
        let Some(mut child) = self.child.take() else {
            bail!("nginx is not running");
        };
        signal(child.id() as i32, libc::SIGQUIT);
        if wait_child(&mut child, Duration::from_secs(30))
            .await?
            .is_none()
        {
            println!("[nginx] still running 30 s after SIGQUIT: SIGKILL");
            child.kill()?;
            child.wait()?;
        }
        Ok(self.access_log())
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(c.id() as i32, libc::SIGTERM);
            let _ = c.wait();
        }
    }
}
