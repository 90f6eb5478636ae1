//! Spill files: batches that could not be written to PostgreSQL, appended as JSONL and fsynced
//! before the writer moves on, replayed oldest file first once the database is back.
//!
//! Each line is `<crc32 as 8 hex digits> <event JSON>\n`, so a flipped byte is detected rather
//! than replayed as a wrong value. A torn last line (a crash mid-append) is quarantined; a
//! corrupt line anywhere else quarantines the whole file (kept for inspection) while its intact
//! lines are still replayed. The directory is locked so that one writer owns it.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::domain::{TradeLogEvent, now_us};

const SPILL_PREFIX: &str = "spill-";
const SPILL_SUFFIX: &str = ".jsonl";

/// One spill file as read back.
#[derive(Debug, Default)]
pub struct SpillRead {
    /// Intact events, in file order
    pub events: Vec<TradeLogEvent>,
    /// The torn last line, if the file ended mid-line with a bad checksum
    pub torn: Option<String>,
    /// Corrupt complete lines: (1-based line number, text)
    pub corrupt: Vec<(usize, String)>,
}

/// A spill file read a few events at a time (a 64 MiB file is never held whole), sorting its
/// lines as [`SpillRead`] does; what was wrong is known once it is read to the end.
#[derive(Debug)]
pub struct SpillReader {
    reader: BufReader<File>,
    line: usize,
    finished: bool,
    /// The torn last line, if the file ended mid-line with a bad checksum
    pub torn: Option<String>,
    /// Corrupt complete lines: (1-based line number, text)
    pub corrupt: Vec<(usize, String)>,
    /// Intact events read so far
    pub intact: usize,
    /// Local timestamps of the first and the last intact event read so far
    pub first_local_ts_us: Option<i64>,
    /// See `first_local_ts_us`
    pub last_local_ts_us: Option<i64>,
}

impl SpillReader {
    /// Opens `path` for reading.
    pub fn open(path: &Path) -> Result<Self, SpillError> {
        let file = File::open(path).map_err(io_err(format!("opening {}", path.display())))?;
        if file.metadata().is_ok_and(|m| m.is_dir()) {
            return Err(SpillError::Io {
                context: format!("reading {}", path.display()),
                source: std::io::Error::other("is a directory"),
            });
        }
        Ok(Self {
            reader: BufReader::with_capacity(256 * 1024, file),
            line: 0,
            finished: false,
            torn: None,
            corrupt: Vec::new(),
            intact: 0,
            first_local_ts_us: None,
            last_local_ts_us: None,
        })
    }

    /// Whether the whole file has been read.
    pub fn finished(&self) -> bool {
        self.finished
    }

    /// Up to `max` more intact events; none once the file is read to the end.
    pub fn next_events(&mut self, max: usize) -> Result<Vec<TradeLogEvent>, SpillError> {
        let mut events = Vec::new();
        let mut line = Vec::new();
        while events.len() < max && !self.finished {
            line.clear();
            let n = self
                .reader
                .read_until(b'\n', &mut line)
                .map_err(io_err("reading a spill file"))?;
            if n == 0 {
                self.finished = true;
                break;
            }
            self.line += 1;
            let complete = line.last() == Some(&b'\n');
            let text = if complete { &line[..n - 1] } else { &line[..] };
            match decode_line(text) {
                Some(event) => {
                    self.intact += 1;
                    self.first_local_ts_us.get_or_insert(event.local_ts_us);
                    self.last_local_ts_us = Some(event.local_ts_us);
                    events.push(event);
                }
                None if complete => self
                    .corrupt
                    .push((self.line, String::from_utf8_lossy(text).into_owned())),
                None => self.torn = Some(String::from_utf8_lossy(text).into_owned()),
            }
            if !complete {
                self.finished = true;
            }
        }
        Ok(events)
    }
}

/// The spill directory owned by one writer.
#[derive(Debug)]
pub struct SpillStore {
    dir: PathBuf,
    max_file_bytes: u64,
    active: Option<(PathBuf, File, u64)>,
    seq: u64,
    /// Files that could not be read, quarantined or removed: skipped until the next start, so
    /// that one bad file neither holds back the newer ones nor keeps a flush spinning
    set_aside: HashSet<PathBuf>,
    _lock: File,
}

/// A spill directory that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SpillError {
    /// Another process holds the directory.
    #[error("spill directory {0} is in use by another tradegate process")]
    Locked(PathBuf),
    /// An I/O operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done
        context: String,
        /// Why
        source: std::io::Error,
    },
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> SpillError {
    let context = context.into();
    move |source| SpillError::Io { context, source }
}

impl SpillStore {
    /// Opens (creating) `dir` and takes its lock. Files found there are leftovers of an earlier
    /// run, to be replayed.
    pub fn open(dir: &Path, max_file_bytes: u64) -> Result<Self, SpillError> {
        std::fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
        let lock_path = dir.join(".lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(format!("opening {}", lock_path.display())))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(SpillError::Locked(dir.into())),
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(io_err(format!("locking {}", lock_path.display()))(e));
            }
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            max_file_bytes: max_file_bytes.max(1),
            active: None,
            seq: 0,
            set_aside: HashSet::new(),
            _lock: lock,
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where quarantined files and lines go.
    pub fn quarantine_dir(&self) -> PathBuf {
        self.dir.join("quarantine")
    }

    /// Where rows the database refused go.
    pub fn dead_letter_dir(&self) -> PathBuf {
        self.dir.join("dead-letter")
    }

    /// Appends `events` to the active spill file and fsyncs it. When this returns `Ok`, the
    /// events survive a crash.
    pub fn append(&mut self, events: &[TradeLogEvent]) -> Result<(), SpillError> {
        let mut buffer = Vec::with_capacity(events.len() * 640);
        for event in events {
            encode_line(event, &mut buffer);
        }
        if self.active.is_none() {
            self.seq += 1;
            let path = self.dir.join(format!(
                "{SPILL_PREFIX}{:020}-{:010}-{:06}{SPILL_SUFFIX}",
                now_us(),
                std::process::id(),
                self.seq
            ));
            let file = OpenOptions::new()
                .create_new(true)
                .append(true)
                .open(&path)
                .map_err(io_err(format!("creating {}", path.display())))?;
            // make the new directory entry durable too
            if let Ok(dir) = File::open(&self.dir) {
                let _ = dir.sync_all();
            }
            self.active = Some((path, file, 0));
        }
        let Some((path, file, bytes)) = self.active.as_mut() else {
            return Ok(());
        };
        let result = file
            .write_all(&buffer)
            .and_then(|()| file.sync_data())
            .map_err(io_err(format!("appending to {}", path.display())));
        if let Err(e) = result {
            // a failed append may have left a partial line; never append after it
            self.active = None;
            return Err(e);
        }
        *bytes += buffer.len() as u64;
        if *bytes >= self.max_file_bytes {
            self.active = None;
        }
        Ok(())
    }

    /// Closes the active file so that it can be replayed.
    pub fn close_active(&mut self) {
        self.active = None;
    }

    /// Spill files ready for replay (every file but the active one), oldest first.
    pub fn closed_files(&self) -> Result<Vec<PathBuf>, SpillError> {
        let active = self.active.as_ref().map(|(p, _, _)| p.clone());
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map_err(io_err(format!("reading {}", self.dir.display())))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(SPILL_PREFIX) && n.ends_with(SPILL_SUFFIX))
            })
            .filter(|p| Some(p) != active.as_ref() && !self.set_aside.contains(p))
            .collect();
        files.sort();
        Ok(files)
    }

    /// Skips `path` from now on (until the next start): it cannot be read, or it was replayed
    /// but cannot be removed.
    pub fn set_aside(&mut self, path: &Path) {
        self.set_aside.insert(path.to_path_buf());
    }

    /// How many files were set aside.
    pub fn set_aside_files(&self) -> usize {
        self.set_aside.len()
    }

    /// How many spill files (closed or active) wait for replay, not counting those set aside.
    pub fn pending_files(&self) -> usize {
        self.closed_files().map_or(0, |f| f.len()) + usize::from(self.active.is_some())
    }

    /// Age in seconds of the oldest spill file, if any.
    pub fn oldest_age_secs(&self) -> Option<f64> {
        let mut files = self.closed_files().ok()?;
        if let Some((p, _, _)) = &self.active {
            files.push(p.clone());
        }
        files
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok()?.modified().ok())
            .min()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .map(|d| d.as_secs_f64())
    }

    /// Reads a spill file, sorting its lines into intact events, a torn tail and corrupt lines.
    pub fn read(path: &Path) -> Result<SpillRead, SpillError> {
        let mut reader = SpillReader::open(path)?;
        let mut events = Vec::new();
        loop {
            let more = reader.next_events(usize::MAX)?;
            if more.is_empty() {
                break;
            }
            events.extend(more);
        }
        Ok(SpillRead {
            events,
            torn: reader.torn,
            corrupt: reader.corrupt,
        })
    }

    /// Puts what `reader` found wrong with `path` aside: a torn tail into `<name>.torn`; a file
    /// with corrupt lines is moved whole into the quarantine folder with a report beside it.
    /// Returns where the file went, if it moved.
    pub fn quarantine(
        &self,
        path: &Path,
        reader: &SpillReader,
    ) -> Result<Option<PathBuf>, SpillError> {
        let dir = self.quarantine_dir();
        std::fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "spill".into());
        if let Some(torn) = &reader.torn {
            let torn_path = dir.join(format!("{name}.torn"));
            write_synced(&torn_path, torn.as_bytes())?;
        }
        if reader.corrupt.is_empty() {
            return Ok(None);
        }
        let report = serde_json::json!({
            "file": name,
            "intact_events": reader.intact,
            "corrupt_lines": reader.corrupt.iter().map(|(n, text)| serde_json::json!({"line": n, "text": text})).collect::<Vec<_>>(),
        });
        write_synced(
            &dir.join(format!("{name}.report.json")),
            report.to_string().as_bytes(),
        )?;
        let target = dir.join(&name);
        std::fs::rename(path, &target)
            .map_err(io_err(format!("moving {} to quarantine", path.display())))?;
        Ok(Some(target))
    }

    /// Deletes a replayed file (only after its events are committed).
    pub fn remove(&self, path: &Path) -> Result<(), SpillError> {
        match std::fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(format!("removing {}", path.display()))(e)),
        }
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), SpillError> {
    let mut file = File::create(path).map_err(io_err(format!("creating {}", path.display())))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(io_err(format!("writing {}", path.display())))
}

/// Appends `<crc32> <json>\n`.
pub fn encode_line(event: &TradeLogEvent, out: &mut Vec<u8>) {
    // Serializing an event cannot fail: every field is a plain value or validated JSON.
    let json = serde_json::to_vec(event).unwrap_or_default();
    let crc = crc32fast::hash(&json);
    out.extend_from_slice(format!("{crc:08x} ").as_bytes());
    out.extend_from_slice(&json);
    out.push(b'\n');
}

/// The event of an intact line; `None` if the checksum or the JSON is wrong.
pub fn decode_line(line: &[u8]) -> Option<TradeLogEvent> {
    let (crc_hex, json) = (line.get(..8)?, line.get(9..)?);
    if line.get(8) != Some(&b' ') {
        return None;
    }
    let expected = u32::from_str_radix(std::str::from_utf8(crc_hex).ok()?, 16).ok()?;
    if crc32fast::hash(json) != expected {
        return None;
    }
    serde_json::from_slice(json).ok()
}

/// Lines of a dead-letter file: the refused event with the database's reason.
pub fn append_dead_letter(
    dir: &Path,
    event: &TradeLogEvent,
    sqlstate: Option<&str>,
    error: &str,
) -> Result<PathBuf, SpillError> {
    std::fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
    let day = chrono::Utc::now().format("%Y%m%d");
    let path = dir.join(format!("dead-letter-{day}.jsonl"));
    let line = serde_json::json!({
        "sqlstate": sqlstate,
        "error": error,
        "dead_lettered_at_us": now_us(),
        "event": event,
    });
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(io_err(format!("opening {}", path.display())))?;
    file.write_all(format!("{line}\n").as_bytes())
        .and_then(|()| file.sync_data())
        .map_err(io_err(format!("appending to {}", path.display())))?;
    Ok(path)
}

/// Reads every dead-letter line in `dir` (for tests and operators).
pub fn read_dead_letters(dir: &Path) -> Vec<serde_json::Value> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    paths
        .iter()
        .filter_map(|p| File::open(p).ok())
        .flat_map(|f| {
            BufReader::new(f)
                .lines()
                .map_while(Result::ok)
                .collect::<Vec<_>>()
        })
        .filter_map(|l| serde_json::from_str(&l).ok())
        .collect()
}
