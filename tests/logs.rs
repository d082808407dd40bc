//! What an operator reads in the journal when PostgreSQL restarts under a
//! running daemon: each part that lost its connection says so once, with
//! the server's reason, never a bare `db error`.

mod common;

use std::time::Duration;

use common::Env;
use plausible_webhooks::testkit::pg::{PgCluster, PgOptions};
use plausible_webhooks::testkit::receiver::always;

const T: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_is_logged_once_per_part_with_the_servers_reason() {
    // Its own cluster: this test stops the server.
    let cluster = tokio::task::spawn_blocking(|| PgCluster::start(&PgOptions::default()))
        .await
        .unwrap()
        .unwrap();
    let url = cluster.create_migrated_database("logs").await.unwrap();
    let env = Env::on(cluster, url).await;
    let rx = env.receiver(always(200)).await;
    let wh = env.webhook(&rx.url("/")).await;
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut daemon = env.spawn_daemon_logging(&[], Some(log.path()));
    env.enqueue(wh, 5).await;
    rx.wait_for(5, T).await.unwrap();

    // A fast shutdown: the server tells every client "terminating connection
    // due to administrator command" before it goes.
    let c = &env.cluster;
    tokio::task::block_in_place(|| c.stop()).unwrap();
    tokio::task::block_in_place(|| c.start_again()).unwrap();
    let db = plausible_webhooks::db::connect(&env.url).await.unwrap();
    db.execute(
        "INSERT INTO webhook_deliveries (webhook_id, event_type, payload) SELECT $1, 'goal_completion', '{}' FROM generate_series(1, 5)",
        &[&wh],
    )
    .await
    .unwrap();
    rx.wait_for(10, T).await.unwrap();
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait_exit(T).await.success());

    let text = std::fs::read_to_string(log.path()).unwrap();
    let lost: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("database connection lost"))
        .collect();
    assert!(
        lost.iter().any(|l| l.contains("part=\"listener\"")),
        "the listener's loss is logged:\n{text}"
    );
    for part in ["\"listener\"", "\"the delivery engine\""] {
        let n = lost
            .iter()
            .filter(|l| l.contains(&format!("part={part}")))
            .count();
        assert!(n <= 1, "{part} logged its loss {n} times:\n{text}");
    }
    for l in &lost {
        assert!(
            l.contains("terminating connection due to administrator command"),
            "the server's reason is named: {l}"
        );
    }
    for bad in ["db error", "Connection error", "could not be recycled"] {
        assert!(
            !text.contains(bad),
            "`{bad}` in the log (the reason must be named instead):\n{text}"
        );
    }
}
