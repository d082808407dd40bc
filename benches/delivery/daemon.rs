//! The daemon under test: `plausible-webhooks run` as a child process,
//! configured only through its environment, as systemd would run it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};

use crate::procfs::vm_hwm_kib;

/// `plausible-webhooks run` as a child process, configured by environment only.
pub struct DaemonProc {
    pub n: u32,
    pub child: Child,
    pub stderr: PathBuf,
    pub spawned: SystemTime,
    pub spawned_at: Instant,
}

impl DaemonProc {
    pub fn spawn(n: u32, url: &str, ca_file: &Path, dir: &Path) -> Result<DaemonProc> {
        // An empty config file, so a /etc/plausible-webhooks/config.toml on this
        // machine cannot change what is measured: every key comes from below.
        let config = dir.join("empty-config.toml");
        std::fs::write(&config, "")?;
        let stdout = dir.join(format!("daemon-{n}.stdout"));
        let stderr = dir.join(format!("daemon-{n}.stderr"));
        let bin = daemon_binary();
        let mut cmd = Command::new(&bin);
        cmd.arg("run");
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy().into_owned();
            if k.starts_with("PLAUSIBLE_WEBHOOKS") || k == "DATABASE_URL" || k == "RUST_LOG" {
                cmd.env_remove(k);
            }
        }
        cmd.env("PLAUSIBLE_WEBHOOKS_CONFIG", &config)
            .env("DATABASE_URL", url)
            .env(
                "PLAUSIBLE_WEBHOOKS__DELIVERY__ALLOW_CIDRS",
                r#"["127.0.0.0/8"]"#,
            )
            .env("PLAUSIBLE_WEBHOOKS__DELIVERY__EXTRA_CA_FILE", ca_file)
            // The bench's webhook has no limits of its own (setup.rs).
            .env(
                "PLAUSIBLE_WEBHOOKS__DELIVERY__DEFAULT_MAX_CONCURRENCY",
                "1000",
            )
            .env("PLAUSIBLE_WEBHOOKS__LOG__LEVEL", "warn");
        // Tuning experiments: BENCH_PLAUSIBLE_WEBHOOKS__<SECTION>__<KEY> is
        // passed to the daemon as PLAUSIBLE_WEBHOOKS__<SECTION>__<KEY>.
        for (k, v) in std::env::vars() {
            if let Some(rest) = k.strip_prefix("BENCH_PLAUSIBLE_WEBHOOKS__") {
                println!("[daemon #{n}] PLAUSIBLE_WEBHOOKS__{rest}={v}");
                cmd.env(format!("PLAUSIBLE_WEBHOOKS__{rest}"), v);
            }
        }
        cmd.stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout)?)
            .stderr(std::fs::File::create(&stderr)?);
        let spawned = SystemTime::now();
        let spawned_at = Instant::now();
        let child = cmd.spawn().context("starting the daemon binary")?;
        println!(
            "[daemon #{n}] started pid {} ({} run)",
            child.id(),
            bin.display()
        );
        Ok(DaemonProc {
            n,
            child,
            stderr,
            spawned,
            spawned_at,
        })
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn stderr_lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.stderr)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "daemon #{} exited early ({status}); stderr:\n{}",
                self.n,
                self.stderr_lines().join("\n")
            );
        }
        Ok(())
    }

    pub fn vm_hwm_kib(&self) -> Option<u64> {
        vm_hwm_kib(self.pid())
    }

    /// SIGTERM, then waits for the exit (SIGKILL after 60 s); prints how it
    /// ended and its stderr.
    pub async fn stop(mut self) -> Result<()> {
        let t = Instant::now();
        signal(self.pid(), libc::SIGTERM);
        let status = match wait_child(&mut self.child, Duration::from_secs(60)).await? {
            Some(s) => s,
            None => {
                println!(
                    "[daemon #{}] still running 60 s after SIGTERM: SIGKILL",
                    self.n
                );
                self.child.kill()?;
                self.child.wait()?
            }
        };
        println!(
            "[daemon #{}] stopped by SIGTERM: {status} after {:.2?}",
            self.n,
            t.elapsed()
        );
        let lines = self.stderr_lines();
        if lines.is_empty() {
            println!("[daemon #{}] stderr: empty (log level warn)", self.n);
        } else {
            println!(
                "[daemon #{}] stderr ({} lines, log level warn; first 30):",
                self.n,
                lines.len()
            );
            for l in lines.iter().take(30) {
                println!("    {l}");
            }
        }
        Ok(())
    }
}

impl Drop for DaemonProc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The daemon binary: this build's, or `BENCH_DAEMON_BIN` (a copy of
/// another commit's release binary), so two commits can be measured
/// alternately with the same bench.
pub fn daemon_binary() -> PathBuf {
    std::env::var_os("BENCH_DAEMON_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_plausible-webhooks")))
}

pub async fn wait_child(child: &mut Child, timeout: Duration) -> Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(s) = child.try_wait()? {
            return Ok(Some(s));
        }
        if Instant::now() > deadline {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn signal(pid: i32, sig: libc::c_int) {
    // SAFETY: kill(2) on a pid of a child we started and have not reaped.
    unsafe {
        libc::kill(pid, sig);
    }
}
