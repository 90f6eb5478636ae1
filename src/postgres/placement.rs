//! Where the data directory lives and whether `postgres` can reach it: root detection, the
//! postgres user's ids, the fallback under /var/lib/tradegate.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{BootstrapError, SUPERUSER, io_err};

/// Whether this process runs as root. `/proc/self` is owned by the effective user; reading it
/// avoids an `unsafe` call to `geteuid`.
pub(super) fn is_root() -> Result<bool, BootstrapError> {
    match std::fs::metadata("/proc/self") {
        Ok(meta) => Ok(meta.uid() == 0),
        // Not Linux: only Linux runs as root in our deployments; run the binaries directly.
        Err(_) => Ok(false),
    }
}

pub(super) fn postgres_ids() -> Result<(u32, u32), BootstrapError> {
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
pub(super) const FALLBACK_ROOT: &str = "/var/lib/tradegate";

/// The first ancestor of `data_dir` that others cannot search, if any.
pub(super) fn unsearchable_ancestor(data_dir: &Path) -> Option<PathBuf> {
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
pub(super) fn fallback_home(asked: &Path) -> PathBuf {
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
pub(super) fn secure_dir(dir: &Path) -> Result<(), BootstrapError> {
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
pub(super) fn check_reachable_by_others(data_dir: &Path) -> Result<(), BootstrapError> {
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
