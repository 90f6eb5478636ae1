//! Day archives of the audit trail: `tradegate audit export --day D` writes every covered
//! table's rows of one UTC day as Parquet (the trade log split by market and account), with
//! the journal entries and seals that cover the day and a manifest naming each file, its row
//! count and SHA-256, and the day seal's root. `tradegate audit import DIR` loads an archive
//! into the read-only `archive` schema after checking it (files against the manifest, the
//! journal against the seals, every row against its journaled hash); `audit verify --archive
//! DIR` does the same checks and keeps nothing.

pub mod columns;
pub mod export;
pub mod import;

use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

pub use columns::Column;
pub use export::{ExportError, export_day};
pub use import::{ImportError, ImportTarget, load_and_check};

/// The manifest's `format`.
pub const FORMAT: &str = "tradegate-audit-archive/1";
/// The manifest's file name in an archive directory.
pub const MANIFEST: &str = "manifest.json";

/// The tables an archive holds: the covered tables, then the journal and its seals.
pub fn archived_tables() -> impl Iterator<Item = &'static str> {
    super::COVERED
        .iter()
        .map(|c| c.table)
        .chain(["audit_journal", "audit_seals"])
}

/// The directory an archive of `day` is written to under `export_dir`.
pub fn day_dir(export_dir: &Path, day: NaiveDate) -> PathBuf {
    export_dir.join(format!("audit-{day}"))
}

/// What an archive holds (`manifest.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`FORMAT`]
    pub format: String,
    /// The UTC day
    pub day: NaiveDate,
    /// When it was written
    pub exported_at: DateTime<Utc>,
    /// The seal that closes the day: its day seal (whose root the day file in `seal_dir`
    /// keeps), or for a day that ended while nothing sealed days, the first seal after it
    pub day_seal: ManifestSeal,
    /// Each table, in [`archived_tables`]'s order
    pub tables: Vec<ManifestTable>,
}

/// The seal that closes an archived day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestSeal {
    /// Its id
    pub id: i64,
    /// Its root (hex)
    pub root: String,
}

/// One table of an archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestTable {
    /// The table
    pub table: String,
    /// Its columns, in order, as exported
    pub columns: Vec<Column>,
    /// Its rows, over all its files
    pub rows: u64,
    /// Its files (several for the trade log, one per market and account; none when the day
    /// has no rows)
    pub files: Vec<ManifestFile>,
}

/// One Parquet file of an archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    /// Its path inside the archive directory
    pub path: String,
    /// Its rows
    pub rows: u64,
    /// Its SHA-256 (hex)
    pub sha256: String,
}

/// The SHA-256 of a file (hex).
pub fn file_sha256(path: &Path) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut digest = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        digest.update(&buf[..n]);
    }
    Ok(super::hex(&digest.finalize()))
}

/// Reads `dir`'s manifest.
pub fn read_manifest(dir: &Path) -> Result<Manifest, String> {
    let path = dir.join(MANIFEST);
    let text =
        std::fs::read_to_string(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let manifest: Manifest =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    if manifest.format != FORMAT {
        return Err(format!(
            "{}: format {:?} is not {FORMAT:?}",
            path.display(),
            manifest.format
        ));
    }
    Ok(manifest)
}
