//! PostgreSQL bootstrap: connect to `DATABASE_URL`/`[database] url`, or start a private cluster
//! from the server binaries on the machine (`initdb`, `pg_ctl`), as the `postgres` user when
//! this process is root (initdb refuses root).
//!
//! The private cluster listens only on a unix socket inside its own directory, so it never
//! races another server for a TCP port. Two lock files beside the data directory coordinate
//! several tradegate processes sharing one cluster: `<dir>.init.lock` is held exclusively while
//! the cluster is created, started or stopped, and every process that uses the cluster holds
//! `<dir>.users.lock` shared. The last user out stops the server.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use tokio_postgres::Client;
use tradegate_actors::store;

use crate::config::redact_conninfo;

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

/// A private PostgreSQL cluster this process uses. Dropping it releases this process's use and,
/// if it was the last user, stops the server (`pg_ctl stop -m fast`).
#[derive(Debug)]
pub struct EmbeddedCluster {
    data_dir: PathBuf,
    socket_dir: PathBuf,
    bin_dir: PathBuf,
    run_as_postgres: bool,
    users_lock: Option<File>,
    init_lock_path: PathBuf,
    stop_when_last_user_exits: bool,
    start: ClusterStart,
    relocated: Option<(PathBuf, String)>,
}

impl EmbeddedCluster {
    /// Creates (first time) and starts the cluster, or joins it when it already runs. Blocking:
    /// call it from `spawn_blocking` in async code.
    pub fn start(options: &ClusterOptions) -> Result<Self, BootstrapError> {
        let bin_dir = match &options.bin_dir {
            Some(dir) => {
                if !(dir.join("initdb").is_file() && dir.join("pg_ctl").is_file()) {
                    return Err(BootstrapError::BinariesNotFound {
                        searched: dir.display().to_string(),
                    });
                }
                dir.clone()
            }
            None => find_server_binaries(
                std::env::var_os("PATH").as_deref(),
                &[Path::new("/usr/lib/postgresql")],
            )?,
        };
        let run_as_postgres = is_root()?;
        let asked = absolute(&options.data_dir)?;
        let (data_dir, relocated) = place_data_dir(&asked, run_as_postgres)?;
        let parent = data_dir
            .parent()
            .ok_or_else(|| BootstrapError::DataDir("the data directory has no parent".into()))?
            .to_path_buf();
        std::fs::create_dir_all(&parent)
            .map_err(io_err(format!("creating {}", parent.display())))?;

        let init_lock_path = lock_path(&data_dir, "init");
        let init_lock = open_lock(&init_lock_path)?;
        init_lock
            .lock()
            .map_err(io_err(format!("locking {}", init_lock_path.display())))?;
        let users_lock_path = lock_path(&data_dir, "users");
        let users_lock = open_lock(&users_lock_path)?;
        users_lock
            .lock_shared()
            .map_err(io_err(format!("locking {}", users_lock_path.display())))?;

        let socket_dir = socket_dir_for(&data_dir);
        let mut cluster = Self {
            data_dir,
            socket_dir,
            bin_dir,
            run_as_postgres,
            users_lock: Some(users_lock),
            init_lock_path,
            stop_when_last_user_exits: options.stop_when_last_user_exits,
            start: ClusterStart::AlreadyRunning,
            relocated: relocated.map(|reason| (asked, reason)),
        };
        let started = (|| {
            let initialized = cluster.initialize_if_needed(&options.settings)?;
            Ok(if cluster.is_running()? {
                ClusterStart::AlreadyRunning
            } else {
                cluster.pg_ctl_start()?;
                if initialized {
                    ClusterStart::Initialized
                } else {
                    ClusterStart::Started
                }
            })
        })();
        // released before `cluster` can be dropped by an error: its Drop takes this same lock
        // to decide whether to stop the server, and waiting for it here would never end
        drop(init_lock);
        if started.is_err() && !cluster.data_dir.join("postmaster.pid").exists() {
            // no server came up: there is nothing to stop
            cluster.stop_when_last_user_exits = false;
        }
        cluster.start = started?;
        Ok(cluster)
    }

    /// What starting it involved.
    pub fn start_kind(&self) -> ClusterStart {
        self.start
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// When the cluster is not where it was asked to be: the data directory asked for and why
    /// it could not be used (see [`place_data_dir`]).
    pub fn relocated(&self) -> Option<(&Path, &str)> {
        self.relocated
            .as_ref()
            .map(|(asked, why)| (asked.as_path(), why.as_str()))
    }

    /// A key=value connection string for `dbname` on this cluster.
    pub fn conninfo(&self, dbname: &str) -> String {
        format!(
            "host={} port={SOCKET_PORT} user={SUPERUSER} dbname={dbname}",
            self.socket_dir.display()
        )
    }

    /// Stops the server now if no other process uses it; returns whether it stopped it.
    pub fn stop(&mut self) -> Result<bool, BootstrapError> {
        let Some(users_lock) = self.users_lock.take() else {
            return Ok(false);
        };
        let init_lock = open_lock(&self.init_lock_path)?;
        init_lock
            .lock()
            .map_err(io_err(format!("locking {}", self.init_lock_path.display())))?;
        drop(users_lock);
        // Nobody can join while we hold the init lock; an exclusive users lock proves we were
        // the last user.
        let users_lock = open_lock(&lock_path(&self.data_dir, "users"))?;
        let last_user = users_lock.try_lock().is_ok();
        if last_user && self.is_running()? {
            self.pg_ctl_stop()?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Stops the server whether or not other processes use it (tests that need the database
    /// to go away, e.g. to exercise spill-to-disk).
    pub fn force_stop(&self) -> Result<(), BootstrapError> {
        if self.is_running()? {
            self.pg_ctl_stop()?;
        }
        Ok(())
    }

    /// Starts the server again after [`EmbeddedCluster::force_stop`].
    pub fn restart(&self) -> Result<(), BootstrapError> {
        if !self.is_running()? {
            self.pg_ctl_start()?;
        }
        Ok(())
    }

    fn initialize_if_needed(&self, settings: &[(String, String)]) -> Result<bool, BootstrapError> {
        if self.data_dir.join("PG_VERSION").is_file() {
            return Ok(false);
        }
        if self.data_dir.exists()
            && std::fs::read_dir(&self.data_dir)
                .map_err(io_err(format!("reading {}", self.data_dir.display())))?
                .next()
                .is_some()
        {
            return Err(BootstrapError::DataDir(format!(
                "{} exists, is not empty and is not a PostgreSQL data directory; move it away or set database.data_dir",
                self.data_dir.display()
            )));
        }
        std::fs::create_dir_all(&self.data_dir)
            .map_err(io_err(format!("creating {}", self.data_dir.display())))?;
        std::fs::set_permissions(&self.data_dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io_err(format!("chmod {}", self.data_dir.display())))?;
        if self.run_as_postgres {
            check_reachable_by_others(&self.data_dir)?;
            let (uid, gid) = postgres_ids()?;
            std::os::unix::fs::chown(&self.data_dir, Some(uid), Some(gid))
                .map_err(io_err(format!("chown {}", self.data_dir.display())))?;
        }
        let data_dir = self.data_dir.display().to_string();
        self.run(
            "initdb",
            &[
                "-D",
                &data_dir,
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
            ],
        )?;
        let mut conf = String::from("\n# written by tradegate: a private, socket-only cluster\n");
        conf.push_str("listen_addresses = ''\n");
        conf.push_str(&format!(
            "unix_socket_directories = '{}'\n",
            self.socket_dir.display().to_string().replace('\'', "''")
        ));
        conf.push_str("unix_socket_permissions = 0700\n");
        for (key, value) in settings {
            conf.push_str(&format!("{key} = {value}\n"));
        }
        let conf_path = self.data_dir.join("postgresql.conf");
        let mut existing = std::fs::read_to_string(&conf_path)
            .map_err(io_err(format!("reading {}", conf_path.display())))?;
        existing.push_str(&conf);
        std::fs::write(&conf_path, existing)
            .map_err(io_err(format!("writing {}", conf_path.display())))?;
        Ok(true)
    }

    fn is_running(&self) -> Result<bool, BootstrapError> {
        let data_dir = self.data_dir.display().to_string();
        let output = self.command("pg_ctl", &["-D", &data_dir, "status"])?;
        // pg_ctl status: 0 running, 3 not running, 4 no accessible data directory
        match output.status.code() {
            Some(0) => Ok(true),
            Some(3) => Ok(false),
            _ => Err(command_error("pg_ctl status", &output, None)),
        }
    }

    fn pg_ctl_start(&self) -> Result<(), BootstrapError> {
        if self.socket_dir != self.data_dir {
            std::fs::create_dir_all(&self.socket_dir)
                .map_err(io_err(format!("creating {}", self.socket_dir.display())))?;
            if self.run_as_postgres {
                let (uid, gid) = postgres_ids()?;
                std::os::unix::fs::chown(&self.socket_dir, Some(uid), Some(gid))
                    .map_err(io_err(format!("chown {}", self.socket_dir.display())))?;
            }
        }
        let data_dir = self.data_dir.display().to_string();
        let log = self.data_dir.join("server.log").display().to_string();
        let output = self.command(
            "pg_ctl",
            &["-D", &data_dir, "-l", &log, "-w", "-t", "60", "start"],
        )?;
        if !output.status.success() {
            return Err(command_error(
                "pg_ctl start",
                &output,
                Some(&self.data_dir.join("server.log")),
            ));
        }
        Ok(())
    }

    fn pg_ctl_stop(&self) -> Result<(), BootstrapError> {
        let data_dir = self.data_dir.display().to_string();
        self.run(
            "pg_ctl",
            &["-D", &data_dir, "-m", "fast", "-w", "-t", "60", "stop"],
        )
        .map(|_| ())
    }

    fn run(&self, program: &str, args: &[&str]) -> Result<Output, BootstrapError> {
        let output = self.command(program, args)?;
        if !output.status.success() {
            return Err(command_error(program, &output, None));
        }
        Ok(output)
    }

    fn command(&self, program: &str, args: &[&str]) -> Result<Output, BootstrapError> {
        let binary = self.bin_dir.join(program);
        let mut command = if self.run_as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", SUPERUSER, "--"]).arg(&binary);
            c
        } else {
            Command::new(&binary)
        };
        command
            .args(args)
            .current_dir("/")
            .env("LC_ALL", "C")
            .stdin(std::process::Stdio::null());
        command
            .output()
            .map_err(io_err(format!("running {}", binary.display())))
    }
}

impl Drop for EmbeddedCluster {
    fn drop(&mut self) {
        if !self.stop_when_last_user_exits {
            return;
        }
        match self.stop() {
            Ok(true) => {
                tracing::info!(data_dir = %self.data_dir.display(), "stopped the private PostgreSQL cluster")
            }
            Ok(false) => {}
            Err(e) => tracing::error!(error = %e, "could not stop the private PostgreSQL cluster"),
        }
    }
}

fn command_error(program: &str, output: &Output, log: Option<&Path>) -> BootstrapError {
    let mut text = String::from_utf8_lossy(&output.stderr).trim().to_string();
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !stdout.trim().is_empty() {
        text = format!("{text}\n{}", stdout.trim());
    }
    if let Some(tail) = log.and_then(|p| tail_of(p, 2_000)) {
        text = format!(
            "{text}\nserver log ({}):\n{tail}",
            log.unwrap_or(Path::new("")).display()
        );
    }
    BootstrapError::Command {
        program: program.into(),
        status: output.status.to_string(),
        output: text,
    }
}

fn tail_of(path: &Path, bytes: u64) -> Option<String> {
    let mut file = File::open(path).ok()?;
    let len = file.metadata().ok()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(bytes))).ok()?;
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    Some(text)
}

fn lock_path(data_dir: &Path, which: &str) -> PathBuf {
    let name = data_dir
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "pg".into());
    data_dir.with_file_name(format!("{name}.{which}.lock"))
}

fn open_lock(path: &Path) -> Result<File, BootstrapError> {
    use std::os::unix::fs::OpenOptionsExt;
    // nobody else may open it (a lock held by another user would stop every start)
    File::options()
        .mode(0o600)
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io_err(format!("opening {}", path.display())))
}

fn absolute(path: &Path) -> Result<PathBuf, BootstrapError> {
    std::path::absolute(path).map_err(io_err(format!("resolving {}", path.display())))
}

/// The socket lives in the data directory unless that path is too long for a unix socket.
fn socket_dir_for(data_dir: &Path) -> PathBuf {
    let socket_file = format!(".s.PGSQL.{SOCKET_PORT}");
    if data_dir.as_os_str().len() + 1 + socket_file.len() <= MAX_SOCKET_PATH {
        return data_dir.to_path_buf();
    }
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    data_dir.hash(&mut hasher);
    std::env::temp_dir().join(format!("tradegate-pg-{:016x}", hasher.finish()))
}

/// Whether this process runs as root. `/proc/self` is owned by the effective user; reading it
/// avoids an `unsafe` call to `geteuid`.
fn is_root() -> Result<bool, BootstrapError> {
    match std::fs::metadata("/proc/self") {
        Ok(meta) => Ok(meta.uid() == 0),
        // Not Linux: only Linux runs as root in our deployments; run the binaries directly.
        Err(_) => Ok(false),
    }
}

fn postgres_ids() -> Result<(u32, u32), BootstrapError> {
    let id = |flag: &str| -> Result<u32, BootstrapError> {
        let output = Command::new("id")
            .args([flag, SUPERUSER])
            .output()
            .map_err(io_err("running id"))?;
        if !output.status.success() {
            return Err(BootstrapError::DataDir(format!(
                "running as root, but there is no '{SUPERUSER}' user to run the private cluster (initdb refuses root); create it or run tradegate as a normal user"
            )));
        }
        String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .map_err(|_| BootstrapError::DataDir(format!("unexpected output of id {flag}")))
    };
    Ok((id("-u")?, id("-g")?))
}

/// Where private clusters go when the folder asked for cannot be entered by `postgres`.
const FALLBACK_ROOT: &str = "/var/lib/tradegate";

/// The first ancestor of `data_dir` that others cannot search, if any.
fn unsearchable_ancestor(data_dir: &Path) -> Option<PathBuf> {
    data_dir
        .ancestors()
        .skip(1)
        .filter(|a| !a.as_os_str().is_empty())
        .find(|a| std::fs::metadata(a).is_ok_and(|m| m.mode() & 0o001 == 0))
        .map(Path::to_path_buf)
}

/// Where the cluster asked for at `asked` lives. As root it runs as `postgres` (initdb refuses
/// root), which must be able to enter every folder above it; a folder it cannot enter (a home
/// directory, a `mktemp -d` folder, mode 0700) would make the cluster unstartable. Rather than
/// change that folder's permissions, the cluster is then placed under `/var/lib/tradegate`,
/// one per folder asked for: named by a SHA-256 of its path (stable across builds), with the
/// path written beside it (`origin`) so the same folder finds the same cluster again and no
/// other folder's is ever taken. A cluster already placed there for this folder is used even
/// once the folder becomes reachable; one initialized where asked stays there.
pub fn place_data_dir(
    asked: &Path,
    run_as_postgres: bool,
) -> Result<(PathBuf, Option<String>), BootstrapError> {
    if !run_as_postgres || asked.join("PG_VERSION").is_file() {
        return Ok((asked.to_path_buf(), None));
    }
    let home = fallback_home(asked);
    let placed = home.join("pg");
    let blocked = unsearchable_ancestor(asked);
    if blocked.is_none() && !placed.join("PG_VERSION").is_file() {
        return Ok((asked.to_path_buf(), None));
    }
    let why = match &blocked {
        Some(b) => format!(
            "running as root, the cluster runs as '{SUPERUSER}', which cannot enter {} (not \
             searchable by others)",
            b.display()
        ),
        None => "it was placed there when that folder could not be entered".to_string(),
    };
    // each level is created here, owned by root and writable by root only, or checked to be
    // so: nobody else can put a symbolic link or a folder of their own in its place
    let root = Path::new(FALLBACK_ROOT);
    for dir in [root, home.as_path()] {
        secure_dir(dir)?;
    }
    let origin = home.join("origin");
    let asked_text = asked.to_string_lossy().to_string();
    match std::fs::read_to_string(&origin) {
        Ok(recorded) if recorded == asked_text => {}
        Ok(recorded) => {
            return Err(BootstrapError::DataDir(format!(
                "{} holds the private cluster of {recorded}, not of {}; set database.data_dir \
                 or DATABASE_URL",
                home.display(),
                asked.display()
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::write(&origin, &asked_text)
                .map_err(io_err(format!("writing {}", origin.display())))?;
        }
        Err(e) => return Err(io_err(format!("reading {}", origin.display()))(e)),
    }
    if let Some(still) = unsearchable_ancestor(&placed) {
        return Err(BootstrapError::DataDir(format!(
            "running as root, the private cluster runs as '{SUPERUSER}', which cannot reach {} \
             ({why}), nor {} ({} is not searchable by others); choose another database.data_dir \
             or set DATABASE_URL",
            asked.display(),
            placed.display(),
            still.display()
        )));
    }
    Ok((placed, Some(why)))
}

/// The folder under [`FALLBACK_ROOT`] of the cluster asked for at `asked`: the path's last 40
/// characters (letters and digits, others as dashes) and 16 hex digits of its SHA-256.
fn fallback_home(asked: &Path) -> PathBuf {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(asked.as_os_str().as_encoded_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    let text: Vec<char> = asked
        .to_string_lossy()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let label: String = text[text.len().saturating_sub(40)..].iter().collect();
    Path::new(FALLBACK_ROOT).join(format!("{}-{hex}", label.trim_matches('-')))
}

/// Creates `dir` (its parent exists) as root's, mode 0711 (others may pass through, not list),
/// or checks that the one there is a real directory owned by root that only root can write.
fn secure_dir(dir: &Path) -> Result<(), BootstrapError> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new().mode(0o711).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io_err(format!("creating {}", dir.display()))(e)),
    }
    let meta =
        std::fs::symlink_metadata(dir).map_err(io_err(format!("reading {}", dir.display())))?;
    if !meta.file_type().is_dir() || meta.uid() != 0 || meta.mode() & 0o022 != 0 {
        return Err(BootstrapError::DataDir(format!(
            "{} is not a directory owned by root and writable by root only; remove it or set \
             database.data_dir",
            dir.display()
        )));
    }
    Ok(())
}

/// As root the cluster runs as `postgres`, which must be able to reach the data directory.
fn check_reachable_by_others(data_dir: &Path) -> Result<(), BootstrapError> {
    for ancestor in data_dir.ancestors().skip(1) {
        if ancestor.as_os_str().is_empty() {
            continue;
        }
        let meta = std::fs::metadata(ancestor)
            .map_err(io_err(format!("reading {}", ancestor.display())))?;
        if meta.mode() & 0o001 == 0 {
            return Err(BootstrapError::DataDir(format!(
                "running as root, the private cluster runs as '{SUPERUSER}', which cannot reach {} ({} is not searchable by others); choose another database.data_dir or set DATABASE_URL",
                data_dir.display(),
                ancestor.display()
            )));
        }
    }
    Ok(())
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
