//! PostgreSQL bootstrap: connect to `DATABASE_URL`/`[database] url`, or start a private cluster
//! from the server binaries on the machine (`initdb`, `pg_ctl`), as the `postgres` user when
//! this process is root (initdb refuses root).
//!
//! The private cluster listens only on a unix socket inside its own directory, so it never
//! races another server for a TCP port. Two lock files beside the data directory coordinate
//! several tradegate processes sharing one cluster: `<dir>.init.lock` is held exclusively while
//! the cluster is created, started or stopped, and every process that uses the cluster holds
//! `<dir>.users.lock` shared. The last user out stops the server.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio_postgres::Client;
use tradegate_actors::store;

use crate::config::redact_conninfo;

mod cluster;
mod placement;

pub use cluster::EmbeddedCluster;
pub use placement::place_data_dir;

/// The port number in the socket's file name (`.s.PGSQL.<port>`); no TCP port is opened.
const SOCKET_PORT: u16 = 5432;
/// Longest unix socket path the kernel accepts, less the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;
/// The cluster's superuser.
const SUPERUSER: &str = "postgres";

/// Why the database could not be reached or started.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// No `initdb`/`pg_ctl` on this machine.
    #[error(
        "no PostgreSQL server binaries (initdb, pg_ctl) found on PATH or under {searched}; install them (Debian/Ubuntu: `apt-get install postgresql`, Fedora: `dnf install postgresql-server`, macOS: `brew install postgresql`) or set DATABASE_URL to an existing server"
    )]
    BinariesNotFound {
        /// Where we looked
        searched: String,
    },
    /// A directory or file could not be prepared.
    #[error("{context}: {source}")]
    Io {
        /// What was being done
        context: String,
        /// Why it failed
        source: std::io::Error,
    },
    /// A server program failed.
    #[error("{program} failed ({status}): {output}")]
    Command {
        /// initdb or pg_ctl
        program: String,
        /// exit status
        status: String,
        /// its output (and the server log's tail)
        output: String,
    },
    /// The data directory cannot be used.
    #[error("{0}")]
    DataDir(String),
    /// The server did not answer in time or refused the connection.
    #[error("cannot connect to PostgreSQL at {target} within {timeout_secs}s: {reason}")]
    Connect {
        /// The connection string, password redacted
        target: String,
        /// The time allowed
        timeout_secs: u64,
        /// Why
        reason: String,
    },
    /// A statement of the bootstrap failed.
    #[error("{context}: {source}")]
    Sql {
        /// What was being done
        context: String,
        /// Why
        source: tokio_postgres::Error,
    },
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> BootstrapError {
    let context = context.into();
    move |source| BootstrapError::Io { context, source }
}

/// Finds a directory holding both `initdb` and `pg_ctl`: first on `path_var` (a `PATH`-style
/// list), then the newest `<root>/<version>/bin` under each of `roots`.
pub fn find_server_binaries(
    path_var: Option<&std::ffi::OsStr>,
    roots: &[&Path],
) -> Result<PathBuf, BootstrapError> {
    let has_both = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(path_var) = path_var
        && let Some(dir) = std::env::split_paths(path_var).find(|d| has_both(d))
    {
        return Ok(dir);
    }
    for root in roots {
        let Ok(entries) = std::fs::read_dir(root) else {
            continue;
        };
        let mut versions: Vec<(Vec<u32>, PathBuf)> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().to_string();
                let version: Option<Vec<u32>> =
                    name.split('.').map(|p| p.parse::<u32>().ok()).collect();
                Some((version?, e.path().join("bin")))
            })
            .filter(|(_, bin)| has_both(bin))
            .collect();
        versions.sort();
        if let Some((_, bin)) = versions.pop() {
            return Ok(bin);
        }
    }
    Err(BootstrapError::BinariesNotFound {
        searched: roots
            .iter()
            .map(|r| format!("{}/*/bin", r.display()))
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// How to run the private cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// The data directory (created if missing).
    pub data_dir: PathBuf,
    /// Where `initdb` and `pg_ctl` are; `None` searches for them.
    pub bin_dir: Option<PathBuf>,
    /// Extra `postgresql.conf` settings written when the cluster is created.
    pub settings: Vec<(String, String)>,
    /// Stop the server when the last user of the cluster drops its handle.
    pub stop_when_last_user_exits: bool,
}

impl ClusterOptions {
    /// Options for a data directory with the defaults: searched binaries, stop on exit.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            bin_dir: None,
            settings: Vec::new(),
            stop_when_last_user_exits: true,
        }
    }
}

/// What [`EmbeddedCluster::start`] had to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterStart {
    /// A new cluster was created with initdb and started.
    Initialized,
    /// An existing cluster was started.
    Started,
    /// The cluster was already running (another process uses it too).
    AlreadyRunning,
}

/// Connects within `timeout` or fails with an error naming the (redacted) target and the
/// server's reason.
pub async fn connect(conninfo: &str, timeout: Duration) -> Result<Client, BootstrapError> {
    let connect_error = |reason: String| BootstrapError::Connect {
        target: redact_conninfo(conninfo),
        timeout_secs: timeout.as_secs(),
        reason,
    };
    let started = Instant::now();
    // tokio-postgres's own connect timeout covers each address; this bounds the whole attempt
    match tokio::time::timeout(timeout, store::connect(conninfo, timeout)).await {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(e)) => Err(connect_error(store::describe(&e))),
        Err(_) => Err(connect_error(format!(
            "no answer after {}s",
            started.elapsed().as_secs()
        ))),
    }
}

/// Creates database `name` on the server `admin_conninfo` points at, unless it exists.
pub async fn ensure_database(
    admin_conninfo: &str,
    name: &str,
    timeout: Duration,
) -> Result<(), BootstrapError> {
    let client = connect(admin_conninfo, timeout).await?;
    let exists = store::setup::database_exists(&client, name)
        .await
        .map_err(|e| BootstrapError::Sql {
            context: format!("looking up database {name}"),
            source: e.into_inner(),
        })?;
    if !exists && let Err(e) = store::setup::create_database(&client, name).await {
        // another process may have created it in the meantime
        let e = e.into_inner();
        let raced = e
            .as_db_error()
            .is_some_and(|db| db.code() == &tokio_postgres::error::SqlState::DUPLICATE_DATABASE);
        if !raced {
            return Err(BootstrapError::Sql {
                context: format!("creating database {name}"),
                source: e,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::cluster::*;
    use super::placement::*;
    use super::*;

    #[test]
    fn a_relocated_cluster_is_named_by_a_stable_digest_of_its_folder() {
        assert_eq!(
            fallback_home(Path::new("/tmp/example/.tradegate/pg")),
            Path::new("/var/lib/tradegate/tmp-example--tradegate-pg-59153b8d0e00c816")
        );
        assert_ne!(
            fallback_home(Path::new("/tmp/a/pg")),
            fallback_home(Path::new("/tmp/b/pg"))
        );
    }

    #[test]
    fn a_folder_that_is_a_link_or_writable_by_others_is_not_trusted() {
        use std::os::unix::fs::PermissionsExt;
        if !is_root().unwrap() {
            return;
        }
        let dir = std::env::temp_dir().join(format!("tg-secure-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let made = dir.join("made");
        secure_dir(&made).unwrap();
        let mode = std::fs::metadata(&made).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o022, 0, "{mode:o}");
        let open = dir.join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(secure_dir(&open).is_err());
        assert_eq!(
            std::fs::metadata(&open).unwrap().permissions().mode() & 0o777,
            0o777,
            "an existing folder is not changed"
        );
        let link = dir.join("link");
        std::os::unix::fs::symlink(&made, &link).unwrap();
        assert!(secure_dir(&link).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn finds_the_newest_version_under_a_root() {
        let root = std::env::temp_dir().join(format!("tg-bins-{}", uuid::Uuid::new_v4()));
        for version in ["9.6", "15", "13"] {
            let bin = root.join(version).join("bin");
            std::fs::create_dir_all(&bin).unwrap();
            std::fs::write(bin.join("initdb"), "").unwrap();
            std::fs::write(bin.join("pg_ctl"), "").unwrap();
        }
        // a version directory without pg_ctl does not count
        std::fs::create_dir_all(root.join("17/bin")).unwrap();
        std::fs::write(root.join("17/bin/initdb"), "").unwrap();
        let found = find_server_binaries(None, &[&root]).unwrap();
        assert_eq!(found, root.join("15/bin"));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn no_binaries_names_the_package_to_install() {
        let err = find_server_binaries(
            Some(std::ffi::OsStr::new("/nonexistent/bin")),
            &[Path::new("/nonexistent/postgresql")],
        )
        .unwrap_err();
        let message = err.to_string();
        assert!(message.contains("apt-get install postgresql"), "{message}");
        assert!(
            message.contains("/nonexistent/postgresql/*/bin"),
            "{message}"
        );
    }

    #[test]
    fn long_data_dirs_get_a_short_socket_dir() {
        let short = Path::new("/srv/tg/pg");
        assert_eq!(socket_dir_for(short), short);
        let long = PathBuf::from(format!("/srv/{}/pg", "x".repeat(120)));
        let socket = socket_dir_for(&long);
        assert_ne!(socket, long);
        assert!(socket.as_os_str().len() + 15 <= MAX_SOCKET_PATH);
    }

    #[test]
    fn quotes_identifiers() {
        assert_eq!(store::setup::quote_ident("tg"), "\"tg\"");
        assert_eq!(store::setup::quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
