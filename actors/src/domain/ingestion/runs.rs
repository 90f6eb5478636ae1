//! Ingestion runs and the records they touch: run status, counts, stored and new runs, record
//! operations, run records, batch outcomes.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::{Invalid, check_name};

/// Where a run is: running, then exactly one of completed or failed, and never anything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Started, not finished
    Running,
    /// Finished successfully (terminal)
    Completed,
    /// Finished with an error (terminal)
    Failed,
}

impl RunStatus {
    /// The SQL spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
        }
    }

    /// Parses the SQL spelling.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "running" => Some(Self::Running),
            "completed" => Some(Self::Completed),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }

    /// Whether `self -> next` is a transition of the state machine (the database's trigger
    /// enforces the same rule).
    pub fn can_become(self, next: Self) -> bool {
        matches!(
            (self, next),
            (Self::Running, Self::Completed) | (Self::Running, Self::Failed)
        )
    }

    /// Whether no transition leaves this status.
    pub fn is_terminal(self) -> bool {
        self != Self::Running
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The counts a finished run reports (the keys of a job's summary line).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunCounts {
    /// Records the job received from its source
    pub fetched: u32,
    /// Records it created
    pub created: u32,
    /// Records it updated
    pub updated: u32,
    /// Records it left alone
    pub skipped: u32,
}

impl RunCounts {
    /// Reads a job's summary line: one JSON object with the four counts as non-negative
    /// integers (other keys are ignored, a missing key is an error).
    pub fn from_summary_line(line: &str) -> Result<Self, Invalid> {
        let value: Value = serde_json::from_str(line.trim())
            .map_err(|e| Invalid(format!("the summary line is not JSON: {e}")))?;
        let Value::Object(map) = value else {
            return Err(Invalid("the summary line is not a JSON object".into()));
        };
        let count = |key: &str| -> Result<u32, Invalid> {
            let v = map
                .get(key)
                .ok_or_else(|| Invalid(format!("the summary line has no \"{key}\"")))?;
            v.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| {
                    Invalid(format!(
                        "\"{key}\" in the summary line must be a non-negative integer, got {v}"
                    ))
                })
        };
        Ok(Self {
            fetched: count("fetched")?,
            created: count("created")?,
            updated: count("updated")?,
            skipped: count("skipped")?,
        })
    }
}

/// A run as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IngestionRun {
    /// Surrogate key (what foreign keys hold)
    pub id: i64,
    /// The run's public id
    pub run_id: Uuid,
    /// The job, e.g. `congress.daily`
    pub task_name: String,
    /// Where its data came from, e.g. `quiverquant`
    pub data_source: String,
    /// running, completed or failed
    pub status: RunStatus,
    /// fetched/created/updated/skipped
    pub counts: RunCounts,
    /// When it started
    pub started_at: DateTime<Utc>,
    /// When it completed (the moment its data became available)
    pub completed_at: Option<DateTime<Utc>>,
    /// When it failed
    pub failed_at: Option<DateTime<Utc>>,
    /// Why it failed
    pub error_message: Option<String>,
    /// Structured failure context (exit status, stderr tail, ...)
    pub error_details: Option<Value>,
    /// Anything the job attached at start (host, command, arguments, ...)
    pub metadata: Value,
}

/// What starting a run takes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewRun {
    /// The job name
    pub task: String,
    /// The data source
    pub source: String,
    /// Free-form context stored with the run (must be a JSON object)
    #[serde(default)]
    pub metadata: Option<Value>,
}

impl NewRun {
    /// A run of `task` reading `source`.
    pub fn new(task: impl Into<String>, source: impl Into<String>) -> Self {
        Self {
            task: task.into(),
            source: source.into(),
            metadata: None,
        }
    }

    /// Checks the names and the metadata.
    pub fn validate(&self) -> Result<(), Invalid> {
        check_name("task", &self.task)?;
        check_name("source", &self.source)?;
        match &self.metadata {
            None | Some(Value::Object(_)) => Ok(()),
            Some(_) => Err(Invalid("metadata must be a JSON object".into())),
        }
    }
}

/// What a run did to one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordOperation {
    /// The run created it
    Created,
    /// The run changed it
    Updated,
    /// The run saw it and left it alone
    Skipped,
}

impl RecordOperation {
    /// The SQL spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Updated => "updated",
            Self::Skipped => "skipped",
        }
    }

    /// Parses the SQL spelling.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "created" => Some(Self::Created),
            "updated" => Some(Self::Updated),
            "skipped" => Some(Self::Skipped),
            _ => None,
        }
    }
}

/// One record a run touched (the junction row): a polymorphic reference, what was done, and
/// optionally the symbol and time it is about, so reports can find a symbol's data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunRecord {
    /// The kind of record, e.g. `QuiverTrade`
    pub record_type: String,
    /// Its id in its own table or system
    pub record_id: String,
    /// created, updated or skipped
    pub operation: RecordOperation,
    /// The instrument it concerns
    #[serde(default)]
    pub symbol: Option<String>,
    /// When the thing it records happened
    #[serde(default)]
    pub occurred_at: Option<DateTime<Utc>>,
}

impl RunRecord {
    /// A record without symbol or time.
    pub fn new(
        record_type: impl Into<String>,
        record_id: impl Into<String>,
        operation: RecordOperation,
    ) -> Self {
        Self {
            record_type: record_type.into(),
            record_id: record_id.into(),
            operation,
            symbol: None,
            occurred_at: None,
        }
    }

    /// Adds the symbol.
    pub fn with_symbol(mut self, symbol: impl Into<String>) -> Self {
        self.symbol = Some(symbol.into());
        self
    }

    /// Checks the reference and the symbol.
    pub fn validate(&self) -> Result<(), Invalid> {
        check_name("record_type", &self.record_type)?;
        check_name("record_id", &self.record_id)?;
        if let Some(symbol) = &self.symbol {
            check_name("symbol", symbol)?;
        }
        Ok(())
    }
}

/// How a batch of records landed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordsOutcome {
    /// Records in the batch
    pub received: u64,
    /// New junction rows
    pub inserted: u64,
    /// Records the run already had (or that appeared twice in the batch): kept once
    pub duplicates: u64,
}
