//! A throwaway PostgreSQL cluster (initdb in a temp dir, as the `postgres` user
//! when running as root, since initdb refuses root), for the demo, the tests
//! and the benchmark. Loopback TCP only, on a free port.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

#[derive(Debug, Clone)]
pub struct PgOptions {
    /// fsync and synchronous_commit on (the benchmark); off for tests and the demo.
    pub durable: bool,
    pub max_connections: u32,
}

impl Default for PgOptions {
    fn default() -> Self {
        Self {
            durable: false,
            max_connections: 300,
        }
    }
}

pub struct PgCluster {
    root: PathBuf,
    data: PathBuf,
    port: u16,
    /// Stop and remove on drop (false for the shared test cluster).
    owned: bool,
    _tmp: Option<tempfile::TempDir>,
}

impl PgCluster {
    /// initdb + start in a new temp dir; stopped and removed on drop.
    pub fn start(opts: &PgOptions) -> Result<PgCluster> {
        let tmp = tempfile::Builder::new()
            .prefix("plausible-webhooks-pg-")
            .tempdir()
            .context("creating a temp dir for PostgreSQL")?;
        let root = tmp.path().to_path_buf();
        let mut c = Self::init(&root, opts)?;
        c.owned = true;
        c._tmp = Some(tmp);
        Ok(c)
    }

    /// Creates a cluster in `root` (which must exist) and starts it.
    fn init(root: &Path, opts: &PgOptions) -> Result<PgCluster> {
        give_to_postgres(root)?;
        let data = root.join("data");
        let out = pg_cmd("initdb")?
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ])
            .output()
            .context("running initdb")?;
        if !out.status.success() {
            bail!(
                "initdb failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let mut last_err = None;
        for _ in 0..5 {
            let port = free_port()?;
            let mut conf = OpenOptions::new()
                .append(true)
                .open(data.join("postgresql.conf"))
                .context("opening postgresql.conf")?;
            let durability = if opts.durable {
                "fsync = on\nsynchronous_commit = on\nfull_page_writes = on\n"
            } else {
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
            };
            writeln!(
                conf,
                "\n# plausible-webhooks throwaway cluster\nport = {port}\nlisten_addresses = '127.0.0.1'\n\
                 unix_socket_directories = ''\nmax_connections = {}\nshared_buffers = 128MB\n{durability}",
                opts.max_connections
            )?;
            let c = PgCluster {
                root: root.to_path_buf(),
                data: data.clone(),
                port,
                owned: false,
                _tmp: None,
            };
            match c.start_again() {
                Ok(()) => return Ok(c),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.expect("tried at least once"))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Stops the server (fast shutdown: clients are disconnected).
    pub fn stop(&self) -> Result<()> {
        let out = pg_cmd("pg_ctl")?
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "fast", "-w", "stop"])
            .output()
            .context("running pg_ctl stop")?;
        if !out.status.success() {
            bail!(
                "pg_ctl stop failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// Starts the (stopped) server again on the same port.
    pub fn start_again(&self) -> Result<()> {
        let out = pg_cmd("pg_ctl")?
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(self.root.join("server.log"))
            .args(["-w", "-t", "60", "start"])
            .output()
            .context("running pg_ctl start")?;
        if !out.status.success() {
            let log = std::fs::read_to_string(self.root.join("server.log")).unwrap_or_default();
            bail!(
                "pg_ctl start failed: {}\n{}",
                String::from_utf8_lossy(&out.stderr),
                log.lines().rev().take(10).collect::<Vec<_>>().join("\n")
            );
        }
        Ok(())
    }

    fn is_running(&self) -> bool {
        pg_cmd("pg_ctl")
            .and_then(|mut c| Ok(c.arg("-D").arg(&self.data).arg("status").output()?))
            .map(|o| o.status.success())
            .unwrap_or(false)
    }

    /// The cluster shared by the test processes of this checkout: started by
    /// the first test that needs it (under a file lock), reused by the rest,
    /// and stopped by itself once no test process has used it for
    /// `SHARED_IDLE_STOP_SECS` (each process holds a shared lock on a `.users`
    /// file while it lives; a reaper started with the cluster stops it when
    /// it can take that lock exclusively for long enough).
    ///
    /// One per checkout: its directory is named after this checkout's path
    /// (`shared_dir`), so two checkouts testing at once never share or stop
    /// each other's cluster. `PLAUSIBLE_WEBHOOKS_TEST_PG_DIR` moves it.
    pub fn shared() -> Result<PgCluster> {
        let root = shared_dir();
        // Before the startup lock, so a reaper stopping the cluster (it holds
        // the users lock exclusively) finishes first and the check below sees
        // the cluster stopped.
        hold_users_lock(&root)?;
        let lock = File::create(root.with_extension("lock"))
            .context("creating the test cluster lock file")?;
        lock.lock().context("locking the test cluster lock file")?;
        let state = root.join("port");
        if let Ok(Ok(port)) = std::fs::read_to_string(&state).map(|s| s.trim().parse::<u16>()) {
            let c = PgCluster {
                data: root.join("data"),
                root: root.clone(),
                port,
                owned: false,
                _tmp: None,
            };
            if c.is_running() {
                return Ok(c);
            }
        }
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).context("creating the test cluster dir")?;
        let c = Self::init(&root, &PgOptions::default())?;
        std::fs::write(&state, c.port.to_string())?;
        spawn_reaper(&root, &c.data)?;
        Ok(c)
    }

    /// Creates an empty database and returns its URL.
    pub async fn create_database(&self, name: &str) -> Result<String> {
        let admin = crate::db::connect(&self.url("postgres")).await?;
        admin
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .with_context(|| format!("creating database {name}"))?;
        Ok(self.url(name))
    }

    /// Creates a database holding the Plausible fixture and the migrated schema,
    /// copied from a template made once per schema version (fast for many tests).
    pub async fn create_migrated_database(&self, name: &str) -> Result<String> {
        let template = format!("pw_tmpl_{:016x}", schema_hash());
        let admin = crate::db::connect(&self.url("postgres")).await?;
        // Serialise template creation across processes with an advisory lock.
        admin.execute("SELECT pg_advisory_lock(7177)", &[]).await?;
        let exists = admin
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&template])
            .await?
            .is_some();
        if !exists {
            admin
                .batch_execute(&format!("CREATE DATABASE \"{template}_wip\""))
                .await?;
            {
                let mut c = crate::db::connect(&self.url(&format!("{template}_wip"))).await?;
                crate::db::migrate::load_fixture(&c).await?;
                crate::db::migrate::migrate(&mut c).await?;
            }
            // The backend of the connection just closed may still be exiting;
            // a rename needs the database to itself, so retry briefly.
            let rename = format!("ALTER DATABASE \"{template}_wip\" RENAME TO \"{template}\"");
            let mut tries = 0;
            while let Err(e) = admin.batch_execute(&rename).await {
                tries += 1;
                if tries >= 100 {
                    return Err(e).context("renaming the template database");
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
        admin
            .execute("SELECT pg_advisory_unlock(7177)", &[])
            .await?;
        admin
            .batch_execute(&format!(
                "CREATE DATABASE \"{name}\" TEMPLATE \"{template}\""
            ))
            .await
            .with_context(|| format!("creating database {name}"))?;
        Ok(self.url(name))
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.owned {
            if let Ok(mut c) = pg_cmd("pg_ctl") {
                let _ = c
                    .arg("-D")
                    .arg(&self.data)
                    .args(["-m", "immediate", "stop"])
                    .output();
            }
        }
    }
}

fn schema_hash() -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    crate::db::migrate::PLAUSIBLE_FIXTURE.hash(&mut h);
    for m in crate::db::migrate::MIGRATIONS {
        m.2.hash(&mut h);
    }
    h.finish()
}

/// How long the shared test cluster runs on after its last test process
/// ended (`PLAUSIBLE_WEBHOOKS_TEST_PG_IDLE_SECS` changes it).
pub const SHARED_IDLE_STOP_SECS: u32 = 60;

/// The shared test cluster's directory: `PLAUSIBLE_WEBHOOKS_TEST_PG_DIR`, else
/// one under the temp dir named after this checkout's path (in `/tmp`, not
/// the checkout, because the `postgres` user must reach it).
pub fn shared_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("PLAUSIBLE_WEBHOOKS_TEST_PG_DIR") {
        return PathBuf::from(d);
    }
    let checkout: String = env!("CARGO_MANIFEST_DIR")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    std::env::temp_dir().join(format!("plausible-webhooks-test-pg{checkout}"))
}

/// Holds a shared lock on `<root>.users` until this process exits (the OS
/// drops it then, however the process ends): the reaper's sign of life.
fn hold_users_lock(root: &Path) -> Result<()> {
    static USERS: std::sync::OnceLock<File> = std::sync::OnceLock::new();
    if USERS.get().is_some() {
        return Ok(());
    }
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(root.with_extension("users"))
        .context("creating the test cluster's users file")?;
    f.lock_shared()
        .context("locking the test cluster's users file")?;
    let _ = USERS.set(f);
    Ok(())
}

/// The reaper's last check of a shared cluster in `root` (`shared_dir`):
/// how many checks it has made, and for how many seconds it has found no
/// user. None before its first check.
///
/// The reaper writes it after each check so that a test can wait for checks
/// to go by (tests/testkit.rs: the cluster runs on while a user holds it)
/// instead of sleeping for as long as it guesses they take.
pub fn reaper_checks(root: &Path) -> Option<(u32, u32)> {
    let text = std::fs::read_to_string(root.join("reaper")).ok()?;
    let (checks, idle) = text.trim().split_once(' ')?;
    Some((checks.parse().ok()?, idle.parse().ok()?))
}

/// Starts a detached reaper that stops the cluster at `data` once no test
/// process has held the users lock for `SHARED_IDLE_STOP_SECS`, and ends
/// when the cluster is gone. A shell loop over flock(1): it must outlive the
/// test process that started it, whatever the test runner does to its group.
/// After each check it writes `reaper_checks`' file (renamed into place, so
/// it is never read half written).
fn spawn_reaper(root: &Path, data: &Path) -> Result<()> {
    const SCRIPT: &str = r#"users=$1; pid=$2/postmaster.pid; limit=$3; state=$4; shift 4; idle=0; n=0
while [ -e "$pid" ]; do
  sleep 5
  if flock -n -x "$users" true; then idle=$((idle + 5)); else idle=0; fi
  n=$((n + 1)); echo "$n $idle" > "$state.new" && mv "$state.new" "$state"
  if [ "$idle" -ge "$limit" ]; then exec flock -n -x "$users" "$@"; fi
done"#;
    let pg_ctl = bin_dir()?.join("pg_ctl");
    let mut c = Command::new("setsid");
    c.args(["sh", "-c", SCRIPT, "reaper"])
        .arg(root.with_extension("users"))
        .arg(data)
        .arg(
            std::env::var("PLAUSIBLE_WEBHOOKS_TEST_PG_IDLE_SECS")
                .ok()
                .and_then(|s| s.parse::<u32>().ok())
                .unwrap_or(SHARED_IDLE_STOP_SECS)
                .to_string(),
        )
        .arg(root.join("reaper"));
    if is_root() {
        c.args(["runuser", "-u", "postgres", "--"]);
    }
    c.arg(pg_ctl)
        .arg("-D")
        .arg(data)
        .args(["-m", "fast", "stop"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    c.spawn()
        .context("starting the test cluster's reaper (setsid, sh and flock from util-linux)")?;
    Ok(())
}

/// A command for a PostgreSQL server binary, run as `postgres` when we are root.
pub fn pg_cmd(program: &str) -> Result<Command> {
    let path = bin_dir()?.join(program);
    Ok(if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(path);
        c
    } else {
        Command::new(path)
    })
}

/// `PG_BINDIR`, else the newest /usr/lib/postgresql/*/bin, else `pg_config --bindir`.
pub fn bin_dir() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("PG_BINDIR") {
        return Ok(PathBuf::from(d));
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    found.sort();
    if let Some((_, bin)) = found.pop() {
        return Ok(bin);
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").exists() {
            return Ok(dir);
        }
    }
    bail!("PostgreSQL server binaries (initdb, pg_ctl) not found: install them (apt-get install -y postgresql) or set PG_BINDIR")
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// As root, hand `dir` to the postgres user (initdb refuses to run as root).
fn give_to_postgres(dir: &Path) -> Result<()> {
    if !is_root() {
        return Ok(());
    }
    let name = std::ffi::CString::new("postgres").expect("static");
    // SAFETY: getpwnam with a valid C string; the result is read at once.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        bail!("running as root needs a `postgres` user to run initdb (apt-get install -y postgresql creates it)");
    }
    let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
    std::os::unix::fs::chown(dir, Some(uid), Some(gid))
        .with_context(|| format!("giving {} to the postgres user", dir.display()))?;
    Ok(())
}

pub(crate) fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}
