//! A throwaway ClickHouse for the tests, in one of three engines:
//!
//! - [`ChEngine::Server`]: the installed `clickhouse-server` (Debian's 18.16
//!   here), the real HTTP layer, started on free loopback ports with its own
//!   config, users and data in a temp dir;
//! - [`ChEngine::Chdb24`]: ClickHouse 24.8.4.1, the 24.x line Plausible CE
//!   runs (PyPI `chdb==3.0.1`, ClickHouse's own engine in-process), and
//! - [`ChEngine::Chdb`]: a current ClickHouse engine (chDB 26.9, PyPI
//!   `chdb-core`), each behind `chdb_front.py`, a small HTTP front that speaks
//!   the part of ClickHouse's HTTP interface the daemon uses and runs its SQL
//!   unchanged.
//!
//! Each is killed on drop (and, through PR_SET_PDEATHSIG, when the test
//! process dies). Two users: `default` (no password, loopback only) sets up
//! tables and rows; `webhooks` is what the daemon uses, read-only
//! (`readonly = 1`, so it may not even change a setting) and limited to the
//! events database, as the README tells operators to set it up. Who holds
//! the reader to `readonly = 1`:
//!
//! - 18.16: the server, by the user's profile (`users.xml` below);
//! - 26.9: the engine, on the front's second session opened with `readonly=1`;
//! - 24.8: chdb before 4.x has one engine session per process (opening a
//!   second closes the first), so the front serves both users from one
//!   read-write session and holds the reader to it itself, on the engine's
//!   parse: exactly one statement; no write, `SET`, `SETTINGS` clause or
//!   `INTO OUTFILE` (refused with ClickHouse's READONLY errors); a read runs
//!   with `SETTINGS readonly = 1` appended, so the engine applies readonly
//!   to it too (`chdb_front.py`, `as_reader`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::pg::free_port;
use crate::triggers::source::clickhouse::http::{ChHttp, ChHttpConfig};
use crate::triggers::source::clickhouse::sql::string;

pub const READER_USER: &str = "webhooks";
pub const READER_PASSWORD: &str = "reader-pw-{'\\\"}";
pub const DATABASE: &str = "plausible_events_db";

/// Plausible's events_v2 (CE 3.x) as far as ClickHouse 18.x takes it: the
/// same columns, types, partitioning, keys and sampling, without the column
/// codecs (19.x+). LowCardinality needs `allow_experimental_low_cardinality_type`
/// on 18.x, which the `default` profile below turns on.
pub const EVENTS_V2: &str = "CREATE TABLE plausible_events_db.events_v2 (
    `timestamp` DateTime,
    name LowCardinality(String),
    site_id UInt64,
    user_id UInt64,
    session_id UInt64,
    hostname String,
    pathname String,
    referrer String,
    referrer_source String,
    country_code FixedString(2),
    screen_size LowCardinality(String),
    operating_system LowCardinality(String),
    browser LowCardinality(String),
    utm_medium String,
    utm_source String,
    utm_campaign String,
    `meta.key` Array(String),
    `meta.value` Array(String),
    browser_version LowCardinality(String),
    operating_system_version LowCardinality(String),
    subdivision1_code LowCardinality(String),
    subdivision2_code LowCardinality(String),
    city_geoname_id UInt32,
    utm_content String,
    utm_term String,
    revenue_reporting_amount Nullable(Decimal(18, 3)),
    revenue_reporting_currency FixedString(3),
    revenue_source_amount Nullable(Decimal(18, 3)),
    revenue_source_currency FixedString(3),
    channel LowCardinality(String),
    click_id_param LowCardinality(String),
    scroll_depth UInt8,
    engagement_time UInt32
) ENGINE = MergeTree
PARTITION BY toYYYYMM(`timestamp`)
PRIMARY KEY (site_id, toDate(`timestamp`), name, user_id)
ORDER BY (site_id, toDate(`timestamp`), name, user_id, `timestamp`)
SAMPLE BY user_id
SETTINGS index_granularity = 8192";

/// Plausible's events_v2 as current Plausible creates it, with its column
/// codecs, for the chDB engines (24.8 and 26.9).
pub const EVENTS_V2_CURRENT: &str = "CREATE TABLE plausible_events_db.events_v2 (
    `timestamp` DateTime CODEC(Delta(4), LZ4),
    name LowCardinality(String),
    site_id UInt64,
    user_id UInt64,
    session_id UInt64,
    hostname String CODEC(ZSTD(3)),
    pathname String CODEC(ZSTD(3)),
    referrer String CODEC(ZSTD(3)),
    referrer_source String CODEC(ZSTD(3)),
    country_code FixedString(2),
    screen_size LowCardinality(String),
    operating_system LowCardinality(String),
    browser LowCardinality(String),
    utm_medium String CODEC(ZSTD(3)),
    utm_source String CODEC(ZSTD(3)),
    utm_campaign String CODEC(ZSTD(3)),
    `meta.key` Array(String) CODEC(ZSTD(3)),
    `meta.value` Array(String) CODEC(ZSTD(3)),
    browser_version LowCardinality(String),
    operating_system_version LowCardinality(String),
    subdivision1_code LowCardinality(String),
    subdivision2_code LowCardinality(String),
    city_geoname_id UInt32,
    utm_content String CODEC(ZSTD(3)),
    utm_term String CODEC(ZSTD(3)),
    revenue_reporting_amount Nullable(Decimal(18, 3)),
    revenue_reporting_currency FixedString(3),
    revenue_source_amount Nullable(Decimal(18, 3)),
    revenue_source_currency FixedString(3),
    channel LowCardinality(String),
    click_id_param LowCardinality(String),
    scroll_depth UInt8,
    engagement_time UInt32
) ENGINE = MergeTree
PARTITION BY toYYYYMM(`timestamp`)
PRIMARY KEY (site_id, toDate(`timestamp`), name, user_id)
ORDER BY (site_id, toDate(`timestamp`), name, user_id, `timestamp`)
SAMPLE BY user_id
SETTINGS index_granularity = 8192";

/// One analytics row, as Plausible writes it (the columns triggers read).
#[derive(Debug, Clone)]
pub struct ChEvent {
    pub site_id: i64,
    /// Unix seconds.
    pub timestamp: i64,
    pub name: Vec<u8>,
    pub pathname: Vec<u8>,
    pub user_id: u64,
    pub session_id: u64,
    pub referrer_source: Vec<u8>,
    pub meta: Vec<(Vec<u8>, Vec<u8>)>,
    pub scroll_depth: u8,
}

/// Which ClickHouse engine a test runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChEngine {
    /// The installed `clickhouse-server` (Debian's 18.16): the oldest version
    /// the daemon supports, and a real HTTP server (TLS, hangs, restarts).
    Server,
    /// ClickHouse 24.8 (PyPI `chdb==3.0.1`) behind `chdb_front.py`, one
    /// engine session for both users: the 24.x line Plausible CE runs (new
    /// analyzer, aliases required on joined subqueries).
    Chdb24,
    /// chDB's current engine (26.9, PyPI `chdb-core`) behind `chdb_front.py`:
    /// the versions after the ones Plausible CE ships.
    Chdb,
}

impl ChEngine {
    pub fn name(self) -> &'static str {
        match self {
            ChEngine::Server => "clickhouse-server",
            ChEngine::Chdb24 => "chdb 3.0.1 (ClickHouse 24.8)",
            ChEngine::Chdb => "chdb-core",
        }
    }

    /// An engine behind `chdb_front.py`.
    pub fn is_chdb(self) -> bool {
        self != ChEngine::Server
    }

    /// Where `.ci/run` puts this chDB engine's Python environment, under
    /// `$HOME`; the variable that overrides it; the package it holds.
    fn chdb_env(self) -> (&'static str, &'static str, &'static str) {
        match self {
            ChEngine::Chdb24 => (
                CHDB24_VENV,
                "PLAUSIBLE_WEBHOOKS_CHDB24_PYTHON",
                "chdb==3.0.1",
            ),
            _ => (
                CHDB_VENV,
                "PLAUSIBLE_WEBHOOKS_CHDB_PYTHON",
                "chdb-core==26.9.0",
            ),
        }
    }
}

/// The chDB front's source, written to each server's temp dir.
const CHDB_FRONT: &str = include_str!("chdb_front.py");

/// Where `scripts/test` puts the Python environment holding `chdb-core`; override
/// with `PLAUSIBLE_WEBHOOKS_CHDB_PYTHON` (an interpreter that imports chdb).
pub const CHDB_VENV: &str = ".cache/plausible-webhooks/chdb-venv";

/// Where `.ci/run` puts the Python environment holding `chdb==3.0.1`
/// (ClickHouse 24.8); override with `PLAUSIBLE_WEBHOOKS_CHDB24_PYTHON`.
pub const CHDB24_VENV: &str = ".cache/plausible-webhooks/chdb24-venv";

pub struct ChServer {
    engine: ChEngine,
    dir: tempfile::TempDir,
    binary: PathBuf,
    http_port: u16,
    https_port: Option<u16>,
    child: Option<Child>,
    admin: ChHttp,
}

/// TLS material for the HTTPS port: certificate and key PEM files.
pub struct ChTls<'a> {
    pub cert_file: &'a Path,
    pub key_file: &'a Path,
}

impl ChServer {
    /// The server binary: `clickhouse-server` on PATH or in /usr/sbin.
    pub fn binary() -> Option<PathBuf> {
        let on_path = std::env::var_os("PATH").and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("clickhouse-server"))
                .find(|f| f.is_file())
        });
        on_path.or_else(|| {
            let f = PathBuf::from("/usr/sbin/clickhouse-server");
            f.is_file().then_some(f)
        })
    }

    /// The Python interpreter with `engine`'s chDB package: its variable
    /// (`PLAUSIBLE_WEBHOOKS_CHDB_PYTHON`, `PLAUSIBLE_WEBHOOKS_CHDB24_PYTHON`),
    /// else the environment `scripts/test` makes under `$HOME`.
    pub fn chdb_python(engine: ChEngine) -> Result<PathBuf> {
        let (venv, var, package) = engine.chdb_env();
        if let Some(p) = std::env::var_os(var) {
            return Ok(PathBuf::from(p));
        }
        let home = std::env::var_os("HOME").context("HOME is not set")?;
        let p = PathBuf::from(home).join(venv).join("bin/python3");
        if p.is_file() {
            Ok(p)
        } else {
            bail!(
                "no Python with {package} at {}: run scripts/test --install-only (it makes it with \
                 `python3 -m venv ~/{venv} && ~/{venv}/bin/pip install {package}`), \
                 or set {var}",
                p.display()
            )
        }
    }

    /// Starts the installed clickhouse-server with an HTTP port (and an
    /// HTTPS one when `tls` is given).
    pub async fn start(tls: Option<ChTls<'_>>) -> Result<ChServer> {
        Self::start_engine(ChEngine::Server, tls).await
    }

    /// Starts `engine` (TLS only on [`ChEngine::Server`]).
    pub async fn start_engine(engine: ChEngine, tls: Option<ChTls<'_>>) -> Result<ChServer> {
        let binary = match engine {
            ChEngine::Server => Self::binary().context(
                "clickhouse-server is not installed; `apt-get install clickhouse-server` (scripts/test does)",
            )?,
            ChEngine::Chdb | ChEngine::Chdb24 => {
                if tls.is_some() {
                    bail!("the chDB front speaks plain HTTP only; use ChEngine::Server for TLS");
                }
                Self::chdb_python(engine)?
            }
        };
        let mut last = None;
        for _ in 0..5 {
            // The chDB front binds a free port itself and reports it.
            let http_port = match engine {
                ChEngine::Server => free_port()?,
                ChEngine::Chdb | ChEngine::Chdb24 => 0,
            };
            let https_port = if tls.is_some() {
                Some(free_port()?)
            } else {
                None
            };
            match Self::start_on(engine, &binary, tls.as_ref(), http_port, https_port).await {
                Ok(s) => return Ok(s),
                // Most likely a port taken since it was found free: try others.
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("tried at least once"))
    }

    /// Starts clickhouse-server on `http_port` (no retry on other ports):
    /// for the test kit's own tests.
    pub async fn start_on_port(http_port: u16) -> Result<ChServer> {
        let binary = Self::binary().context("clickhouse-server is not installed")?;
        Self::start_on(ChEngine::Server, &binary, None, http_port, None).await
    }

    async fn start_on(
        engine: ChEngine,
        binary: &Path,
        tls: Option<&ChTls<'_>>,
        http_port: u16,
        https_port: Option<u16>,
    ) -> Result<ChServer> {
        let dir = tempfile::Builder::new()
            .prefix("plausible-webhooks-ch-")
            .tempdir()
            .context("creating a temp dir for ClickHouse")?;
        match engine {
            ChEngine::Server => write_config(dir.path(), http_port, https_port, tls)?,
            ChEngine::Chdb | ChEngine::Chdb24 => {
                std::fs::write(dir.path().join("chdb_front.py"), CHDB_FRONT)?;
                std::fs::create_dir_all(dir.path().join("data"))?;
            }
        }
        let admin = admin_client(http_port)?;
        let mut s = ChServer {
            engine,
            dir,
            binary: binary.to_path_buf(),
            http_port,
            https_port,
            child: None,
            admin,
        };
        s.start_again().await?;
        Ok(s)
    }

    pub fn http_port(&self) -> u16 {
        self.http_port
    }

    pub fn engine(&self) -> ChEngine {
        self.engine
    }

    /// Starts the (stopped) server again, same ports and data.
    pub async fn start_again(&mut self) -> Result<()> {
        let d = self.dir.path();
        let port_file = d.join("port");
        let mut cmd = Command::new(&self.binary);
        match self.engine {
            ChEngine::Server => {
                cmd.arg(format!("--config-file={}", d.join("config.xml").display()));
            }
            ChEngine::Chdb | ChEngine::Chdb24 => {
                let _ = std::fs::remove_file(&port_file);
                let reader_sha = crate::admin::auth::operator_token_hash(READER_PASSWORD);
                cmd.arg(d.join("chdb_front.py"))
                    .arg("--data")
                    .arg(d.join("data"))
                    .arg("--port")
                    .arg(self.http_port.to_string())
                    .arg("--port-file")
                    .arg(&port_file)
                    .args(["--reader", READER_USER])
                    .args(["--reader-password-sha256", &reader_sha])
                    .args(["--reader-database", DATABASE])
                    .args((self.engine == ChEngine::Chdb24).then_some("--one-session"))
                    // A non-UTC server timezone, as for clickhouse-server below.
                    .env("TZ", "Europe/Berlin")
                    .stderr(std::fs::File::create(d.join("err.log"))?);
            }
        }
        cmd.current_dir(d)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        if self.engine == ChEngine::Server {
            cmd.stderr(Stdio::null());
        }
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            use std::os::unix::process::CommandExt as _;
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", self.engine.name()))?;
        self.child = Some(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(c) = self.child.as_mut() {
                if let Some(status) = c.try_wait()? {
                    let log = std::fs::read_to_string(d.join("err.log")).unwrap_or_default();
                    bail!(
                        "{} exited ({status}): {}",
                        self.engine.name(),
                        log.lines().rev().take(8).collect::<Vec<_>>().join("\n")
                    );
                }
            }
            if self.engine.is_chdb() && self.http_port == 0 {
                if let Ok(p) = std::fs::read_to_string(&port_file) {
                    self.http_port = p.trim().parse().context("the chDB front's port file")?;
                    self.admin = admin_client(self.http_port)?;
                }
            }
            if self.http_port != 0 {
                match self.engine {
                    ChEngine::Chdb | ChEngine::Chdb24 => {
                        if self.exec("SELECT 1").await.is_ok() {
                            return Ok(());
                        }
                    }
                    // Another test process may have been handed the same
                    // free port: its server answers there with the same
                    // users while ours is still starting (and will exit,
                    // failing the bind). Only our own answer will do.
                    ChEngine::Server => {
                        let me = instance_name(d);
                        if let Ok(answer) = self.exec(INSTANCE_SQL).await {
                            if answer.trim() == me {
                                return Ok(());
                            }
                            self.kill();
                            bail!(
                                "port {} is held by another ClickHouse server (it answers as {:?}, not {me:?})",
                                self.http_port,
                                answer.trim()
                            );
                        }
                    }
                }
            }
            if std::time::Instant::now() > deadline {
                bail!("{} did not answer within 60 s", self.engine.name());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills the server (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGSTOP: the server keeps its ports but answers nothing (a hung server).
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// SIGCONT after `pause`.
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            // SAFETY: signalling our own child process.
            unsafe {
                libc::kill(c.id() as i32, sig);
            }
        }
    }

    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}/{DATABASE}", self.http_port)
    }

    pub fn https_url(&self) -> Option<String> {
        self.https_port
            .map(|p| format!("https://localhost:{p}/{DATABASE}"))
    }

    /// Runs `sql` as the `default` user; returns the answer.
    pub async fn exec(&self, sql: &str) -> Result<String> {
        let body = self.admin.query(sql.to_string()).await?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    /// The events database and Plausible's events_v2 table in it.
    pub async fn create_events_table(&self) -> Result<()> {
        self.exec(&format!("CREATE DATABASE IF NOT EXISTS {DATABASE}"))
            .await?;
        self.exec(match self.engine {
            ChEngine::Server => EVENTS_V2,
            ChEngine::Chdb | ChEngine::Chdb24 => EVENTS_V2_CURRENT,
        })
        .await?;
        Ok(())
    }

    /// Inserts rows into events_v2 (every value written with the source's own literal escaping).
    pub async fn insert(&self, events: &[ChEvent]) -> Result<()> {
        for chunk in events.chunks(5_000) {
            let values: Vec<String> = chunk
                .iter()
                .map(|e| {
                    let keys: Vec<String> = e.meta.iter().map(|m| string(&m.0)).collect();
                    let vals: Vec<String> = e.meta.iter().map(|m| string(&m.1)).collect();
                    format!(
                        "(toDateTime({}), {}, {}, {}, {}, {}, {}, [{}], [{}], {})",
                        e.timestamp,
                        string(&e.name),
                        e.site_id,
                        e.user_id,
                        e.session_id,
                        string(&e.pathname),
                        string(&e.referrer_source),
                        keys.join(", "),
                        vals.join(", "),
                        e.scroll_depth
                    )
                })
                .collect();
            self.exec(&format!(
                "INSERT INTO {DATABASE}.events_v2 (`timestamp`, name, site_id, user_id, session_id, pathname, \
                 referrer_source, `meta.key`, `meta.value`, scroll_depth) VALUES {}",
                values.join(",\n")
            ))
            .await
            .context("inserting events into ClickHouse")?;
        }
        Ok(())
    }

    /// The `[analytics]` keys for the daemon's read-only user (its password
    /// goes in the file this returns, as an operator would keep it).
    pub fn analytics_toml(&self, url: &str) -> String {
        let pw = self.dir.path().join("reader-password");
        std::fs::write(&pw, format!("{READER_PASSWORD}\n")).expect("writing the password file");
        format!(
            "[analytics]\nsource = \"clickhouse\"\nclickhouse_url = {url:?}\nclickhouse_user = {READER_USER:?}\n\
             clickhouse_password_file = {:?}\n",
            pw.display().to_string()
        )
    }
}

impl Drop for ChServer {
    fn drop(&mut self) {
        self.resume();
        self.kill();
    }
}

fn admin_client(port: u16) -> Result<ChHttp> {
    ChHttp::new(ChHttpConfig {
        endpoint: url::Url::parse(&format!("http://127.0.0.1:{port}"))?,
        database: "default".into(),
        user: "default".into(),
        password: None,
        ca_file: None,
        connect_timeout: Duration::from_secs(2),
        query_timeout: Duration::from_secs(60),
    })
}

/// Which server answers on a port: each one's config names it after its
/// temp dir (unique while it exists).
const INSTANCE_SQL: &str =
    "SELECT substitution FROM system.macros WHERE macro = 'testkit_instance'";

fn instance_name(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn write_config(
    dir: &Path,
    http_port: u16,
    https_port: Option<u16>,
    tls: Option<&ChTls<'_>>,
) -> Result<()> {
    let d = dir.display();
    let https = match (https_port, tls) {
        (Some(p), Some(t)) => format!(
            "<https_port>{p}</https_port>
  <openSSL><server>
    <certificateFile>{}</certificateFile><privateKeyFile>{}</privateKeyFile>
    <verificationMode>none</verificationMode><loadDefaultCAFile>false</loadDefaultCAFile>
    <cacheSessions>true</cacheSessions><disableProtocols>sslv2,sslv3,tlsv1,tlsv1_1</disableProtocols>
    <preferServerCiphers>true</preferServerCiphers>
  </server></openSSL>",
            t.cert_file.display(),
            t.key_file.display()
        ),
        _ => String::new(),
    };
    // A non-UTC server timezone: the source's SQL must not depend on it.
    let config = format!(
        r#"<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>{d}/server.log</log><errorlog>{d}/err.log</errorlog><size>10M</size><count>1</count></logger>
  <http_port>{http_port}</http_port>
  {https}
  <listen_host>127.0.0.1</listen_host>
  <path>{d}/data/</path>
  <tmp_path>{d}/tmp/</tmp_path>
  <user_files_path>{d}/user_files/</user_files_path>
  <format_schema_path>{d}/format_schemas/</format_schema_path>
  <users_config>{d}/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <timezone>Europe/Berlin</timezone>
  <mark_cache_size>67108864</mark_cache_size>
  <uncompressed_cache_size>67108864</uncompressed_cache_size>
  <max_concurrent_queries>50</max_concurrent_queries>
  <macros><testkit_instance>{instance}</testkit_instance></macros>
</yandex>
"#,
        instance = instance_name(dir)
    );
    // The same lowercase hex SHA-256 as an operator token's.
    let reader_sha = crate::admin::auth::operator_token_hash(READER_PASSWORD);
    let users = format!(
        r#"<?xml version="1.0"?>
<yandex>
  <profiles>
    <default><max_memory_usage>2000000000</max_memory_usage><allow_experimental_low_cardinality_type>1</allow_experimental_low_cardinality_type></default>
    <webhooks_readonly><readonly>1</readonly><max_execution_time>60</max_execution_time></webhooks_readonly>
  </profiles>
  <users>
    <default><password></password><networks><ip>127.0.0.1</ip></networks><profile>default</profile><quota>default</quota></default>
    <{READER_USER}>
      <password_sha256_hex>{reader_sha}</password_sha256_hex>
      <networks><ip>127.0.0.1</ip></networks>
      <profile>webhooks_readonly</profile><quota>default</quota>
      <allow_databases><database>{DATABASE}</database></allow_databases>
    </{READER_USER}>
  </users>
  <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors><result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval></default></quotas>
</yandex>
"#
    );
    for sub in ["data", "tmp", "user_files", "format_schemas"] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    std::fs::write(dir.join("config.xml"), config)?;
    std::fs::write(dir.join("users.xml"), users)?;
    Ok(())
}
