//! The private cluster: started, stopped and restarted under its lock files with initdb and
//! pg_ctl; its lock and socket paths.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::placement::{check_reachable_by_others, is_root, place_data_dir, postgres_ids};
use super::{
    BootstrapError, ClusterOptions, ClusterStart, MAX_SOCKET_PATH, SOCKET_PORT, SUPERUSER,
    find_server_binaries, io_err,
};

/// A private PostgreSQL cluster this process uses. Dropping it releases this process's use and,
/// if it was the last user, stops the server (`pg_ctl stop -m fast`).
#[derive(Debug)]
pub struct EmbeddedCluster {
    pub(super) data_dir: PathBuf,
    pub(super) socket_dir: PathBuf,
    pub(super) bin_dir: PathBuf,
    pub(super) run_as_postgres: bool,
    pub(super) users_lock: Option<File>,
    pub(super) init_lock_path: PathBuf,
    pub(super) stop_when_last_user_exits: bool,
    pub(super) start: ClusterStart,
    pub(super) relocated: Option<(PathBuf, String)>,
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

    pub(super) fn initialize_if_needed(
        &self,
        settings: &[(String, String)],
    ) -> Result<bool, BootstrapError> {
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

    pub(super) fn is_running(&self) -> Result<bool, BootstrapError> {
        let data_dir = self.data_dir.display().to_string();
        let output = self.command("pg_ctl", &["-D", &data_dir, "status"])?;
        // pg_ctl status: 0 running, 3 not running, 4 no accessible data directory
        match output.status.code() {
            Some(0) => Ok(true),
            Some(3) => Ok(false),
            _ => Err(command_error("pg_ctl status", &output, None)),
        }
    }

    pub(super) fn pg_ctl_start(&self) -> Result<(), BootstrapError> {
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

    pub(super) fn pg_ctl_stop(&self) -> Result<(), BootstrapError> {
        let data_dir = self.data_dir.display().to_string();
        self.run(
            "pg_ctl",
            &["-D", &data_dir, "-m", "fast", "-w", "-t", "60", "stop"],
        )
        .map(|_| ())
    }

    pub(super) fn run(&self, program: &str, args: &[&str]) -> Result<Output, BootstrapError> {
        let output = self.command(program, args)?;
        if !output.status.success() {
            return Err(command_error(program, &output, None));
        }
        Ok(output)
    }

    pub(super) fn command(&self, program: &str, args: &[&str]) -> Result<Output, BootstrapError> {
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

pub(super) fn command_error(program: &str, output: &Output, log: Option<&Path>) -> BootstrapError {
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

pub(super) fn tail_of(path: &Path, bytes: u64) -> Option<String> {
    let mut file = File::open(path).ok()?;
    let len = file.metadata().ok()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(bytes))).ok()?;
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    Some(text)
}

pub(super) fn lock_path(data_dir: &Path, which: &str) -> PathBuf {
    let name = data_dir
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "pg".into());
    data_dir.with_file_name(format!("{name}.{which}.lock"))
}

pub(super) fn open_lock(path: &Path) -> Result<File, BootstrapError> {
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

pub(super) fn absolute(path: &Path) -> Result<PathBuf, BootstrapError> {
    std::path::absolute(path).map_err(io_err(format!("resolving {}", path.display())))
}

/// The socket lives in the data directory unless that path is too long for a unix socket.
pub(super) fn socket_dir_for(data_dir: &Path) -> PathBuf {
    let socket_file = format!(".s.PGSQL.{SOCKET_PORT}");
    if data_dir.as_os_str().len() + 1 + socket_file.len() <= MAX_SOCKET_PATH {
        return data_dir.to_path_buf();
    }
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    data_dir.hash(&mut hasher);
    std::env::temp_dir().join(format!("tradegate-pg-{:016x}", hasher.finish()))
}
