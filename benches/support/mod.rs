//! What the benchmarks share: a private, durable cluster (fsync and synchronous commit on, the
//! server's defaults unless `settings` say otherwise) with a migrated `bench` database, written
//! with the audit writer key (so every row is journaled for its seal, as in the gateway).

use std::path::PathBuf;
use std::time::Duration;

use tradegate::postgres::{ClusterOptions, EmbeddedCluster, ensure_database};

/// How long a benchmark waits for the database to answer.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A fresh cluster in `target/tmp/<name>/pg`, its `bench` database's connection string, a
/// connection to it with every migration applied, and the scratch folder `target/tmp/<name>`.
pub async fn bench_database(
    name: &str,
    settings: Vec<(String, String)>,
) -> (EmbeddedCluster, String, tokio_postgres::Client, PathBuf) {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut options = ClusterOptions::new(dir.join("pg"));
    options.settings = settings;
    // extra server settings for looking into a run, e.g.
    // TRADEGATE_BENCH_PG_SETTINGS="shared_preload_libraries=pg_stat_statements;..."
    if let Ok(extra) = std::env::var("TRADEGATE_BENCH_PG_SETTINGS") {
        for pair in extra.split(';').filter(|p| !p.trim().is_empty()) {
            let (key, value) = pair.split_once('=').expect("name=value");
            options
                .settings
                .push((key.trim().to_string(), value.trim().to_string()));
        }
    }
    let cluster = tokio::task::spawn_blocking(move || EmbeddedCluster::start(&options))
        .await
        .unwrap()
        .expect("start the benchmark cluster");
    ensure_database(&cluster.conninfo("postgres"), "bench", TIMEOUT)
        .await
        .unwrap();
    let conninfo = cluster.conninfo("bench");
    // every connection writes as the gateway does: with the audit writer key, journaled
    use tradegate_actors::store::audit::{WriterKey, writer};
    writer::install(WriterKey::random());
    let mut client = tradegate::postgres::connect(&conninfo, TIMEOUT)
        .await
        .unwrap();
    tradegate::migrate::run(&mut client).await.unwrap();
    writer::register(&mut client).await.unwrap();
    (cluster, conninfo, client, dir)
}
