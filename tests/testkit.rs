//! The test kit's shared PostgreSQL cluster stops by itself once no test
//! process uses it (and not while one does).

use std::io::Read as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use plausible_webhooks::testkit::pg::{reaper_checks, PgCluster};

const IDLE_SECS: u64 = 5;

/// Run by the test below in a child process: takes the shared cluster at
/// `PLAUSIBLE_WEBHOOKS_TEST_PG_DIR` and holds it until its stdin closes.
#[test]
#[ignore = "a child process of the_shared_cluster_stops_after_its_last_user"]
fn shared_cluster_user() {
    let c = PgCluster::shared().unwrap();
    println!("port {}", c.port());
    let mut rest = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut rest);
}

fn running(dir: &Path) -> bool {
    dir.join("data").join("postmaster.pid").exists()
}

#[test]
fn the_shared_cluster_stops_after_its_last_user() {
    let dir = std::env::temp_dir().join(format!(
        "plausible-webhooks-reaper-test-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["shared_cluster_user", "--exact", "--ignored", "--nocapture"])
        .env("PLAUSIBLE_WEBHOOKS_TEST_PG_DIR", &dir)
        .env(
            "PLAUSIBLE_WEBHOOKS_TEST_PG_IDLE_SECS",
            IDLE_SECS.to_string(),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // The child prints its port once the cluster is up.
    let mut out = child.stdout.take().unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 256];
    while !seen.contains("port ") {
        let n = out.read(&mut buf).unwrap();
        assert!(n > 0, "the child ended before starting the cluster: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(running(&dir));

    // While a user holds it, it runs on past several idle periods: the
    // reaper checks it three times (each check comes an idle period after
    // the one before, and would stop an idle cluster), finding it in use.
    let held = Instant::now();
    loop {
        let checks = reaper_checks(&dir);
        assert!(running(&dir), "stopped while a test process held it");
        if let Some((n, idle)) = checks {
            assert_eq!(idle, 0, "check {n} found no user while one held it");
            if n >= 3 {
                break;
            }
        }
        assert!(
            held.elapsed() < Duration::from_secs(60),
            "waited {:?} for the reaper's third check; its last: {checks:?}",
            held.elapsed()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // The last user ends: the cluster stops within the idle period (plus the
    // reaper's 5 s tick and a margin for this busy machine).
    drop(child.stdin.take());
    child.wait().unwrap();
    let ended = Instant::now();
    while running(&dir) {
        assert!(
            ended.elapsed() < Duration::from_secs(IDLE_SECS + 60),
            "still running {:?} after its last user ended",
            ended.elapsed()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The reaper stopped it, having found no user for an idle period.
    let last = reaper_checks(&dir);
    assert!(
        last.is_some_and(|(_, idle)| idle >= IDLE_SECS as u32),
        "stopped, but not by the reaper: its last check {last:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    for ext in ["lock", "users"] {
        let _ = std::fs::remove_file(dir.with_extension(ext));
    }
}
