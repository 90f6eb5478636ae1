//! Sealing the audit journal on a schedule: each run first closes the UTC days that ended since
//! the newest day seal (a week back at most) with a day seal each, writing each day's root to a
//! small file that can be kept off the machine, then seals what was written since the last seal.

use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{Days, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::store::audit::seals::{self, Seal, SealKind};
use crate::store::audit::verify::KeptRoot;

/// `[audit]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// How often the journal is sealed, in seconds
    pub seal_interval_secs: u64,
    /// Where each UTC day's root is written (`seal-YYYY-MM-DD.json`), for copying off the
    /// machine; `audit verify` compares the files it finds here with the database
    pub seal_dir: PathBuf,
    /// The writer key's file (created, mode 0600, when missing) unless TRADEGATE_AUDIT_KEY
    /// holds the key
    pub writer_key_file: PathBuf,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            seal_interval_secs: 60,
            seal_dir: PathBuf::from(".tradegate/seals"),
            writer_key_file: PathBuf::from(".tradegate/audit.key"),
        }
    }
}

impl AuditConfig {
    /// Checks values that parse but cannot work; the error names the key.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.seal_interval_secs == 0 {
            return Err(("audit.seal_interval_secs", "must be at least 1".into()));
        }
        if self.writer_key_file.as_os_str().is_empty() {
            return Err(("audit.writer_key_file", "must be set".into()));
        }
        Ok(())
    }
}

/// Days closed when the gateway was down longer than this are left without a day seal (their
/// rows are in the interval seals and the chain all the same).
const DAYS_BACK: u64 = 7;

/// One sealing run (see the module): the seals written, oldest first.
pub async fn run(
    client: &impl tokio_postgres::GenericClient,
    config: &AuditConfig,
    kind: SealKind,
) -> Result<Vec<Seal>, crate::store::StoreError> {
    let today = Utc::now().date_naive();
    let mut written = Vec::new();
    let first = match seals::newest_day(client).await? {
        Some(day) => day + Days::new(1),
        None => seals::first_journal_day(client).await?.unwrap_or(today),
    }
    .max(today - Days::new(DAYS_BACK));
    let mut day = first;
    while day < today {
        if let Some(seal) = seals::seal(client, SealKind::Day, Some(day)).await? {
            keep_root(&config.seal_dir, &seal);
            written.push(seal);
        }
        day = day + Days::new(1);
    }
    // a day file that could not be written before (or whose run was cut short) is written now
    for back in 1..=DAYS_BACK {
        let Some(day) = today.checked_sub_days(Days::new(back)) else {
            break;
        };
        if !day_file(&config.seal_dir, day).exists()
            && let Some(seal) = seals::day_seal(client, day).await?
        {
            keep_root(&config.seal_dir, &seal);
        }
    }
    if let Some(seal) = seals::seal(client, kind, None).await? {
        written.push(seal);
    }
    Ok(written)
}

/// The file holding `day`'s root.
pub fn day_file(dir: &Path, day: NaiveDate) -> PathBuf {
    dir.join(format!("seal-{}.json", day.format("%Y-%m-%d")))
}

/// What a day file holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayRoot {
    /// The UTC day
    pub day: NaiveDate,
    /// The day seal's id
    pub seal_id: i64,
    /// Its root (hex): the chain's head at the end of the day
    pub root: String,
    /// When it was sealed
    pub sealed_at: chrono::DateTime<Utc>,
}

/// Writes a day seal's root to its file (best effort: a failure is logged and retried next run).
fn keep_root(dir: &Path, seal: &Seal) {
    let Some(day) = seal.day else { return };
    let root = DayRoot {
        day,
        seal_id: seal.id,
        root: seal.root.clone(),
        sealed_at: seal.sealed_at,
    };
    let path = day_file(dir, day);
    let written = (|| -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let aside = path.with_extension("json.partial");
        let mut file = std::fs::File::create(&aside)?;
        serde_json::to_writer_pretty(&mut file, &root)?;
        file.write_all(b"\n")?;
        file.sync_all()?;
        std::fs::rename(&aside, &path)
    })();
    match written {
        Ok(()) => {
            tracing::info!(day = %day, seal = seal.id, file = %path.display(), "sealed the day; its root is kept in the file")
        }
        Err(e) => {
            tracing::warn!(day = %day, error = %e, file = %path.display(), "could not write the day's root file; tried again at the next seal")
        }
    }
}

/// The roots kept in `dir`'s day files (none when it does not exist); a file that cannot be
/// read is an error, naming it.
pub fn kept_roots(dir: &Path) -> Result<Vec<KeptRoot>, String> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot read {}: {e}", dir.display())),
    };
    let mut roots = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
            .path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if !(name.starts_with("seal-") && name.ends_with(".json")) {
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let root: DayRoot = serde_json::from_str(&text)
            .map_err(|e| format!("{} is not a day root file: {e}", path.display()))?;
        roots.push(KeptRoot {
            source: path.display().to_string(),
            seal_id: root.seal_id,
            root: root.root,
        });
    }
    roots.sort_by_key(|r| r.seal_id);
    Ok(roots)
}
