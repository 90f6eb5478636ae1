//! Operators and what they did: every change made through the API or the CLI is kept, under
//! the name of the credential that made it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Who makes a change: the name of the credential used (an API token's `name`, or the CLI's
/// own), never a name the caller chooses, and where the request came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operator {
    /// The credential's name
    pub name: String,
    /// The peer address of the request (`None`: a command on this machine)
    pub peer: Option<String>,
}

impl Operator {
    /// An operator calling over the network from `peer`.
    pub fn remote(name: impl Into<String>, peer: impl ToString) -> Self {
        Self {
            name: name.into(),
            peer: Some(peer.to_string()),
        }
    }

    /// A command run on this machine (`tradegate purge`, ...), named after the OS user it runs
    /// as (its uid, not `$USER`, which the caller sets).
    pub fn local_command(command: &str) -> Self {
        let uid = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Uid:"))
                    .and_then(|v| v.split_whitespace().next().map(str::to_string))
            })
            .unwrap_or_else(|| "unknown".into());
        Self {
            name: format!("cli:uid-{uid}"),
            peer: Some(format!("local:{command}")),
        }
    }
}

/// One change, as kept in `operator_actions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorAction {
    /// Its id (ascending in time)
    pub id: i64,
    /// When
    pub at: DateTime<Utc>,
    /// Who: the credential's name
    pub actor: String,
    /// From which peer
    pub peer: Option<String>,
    /// What, e.g. `kill_switch.set`, `trades.sync`, `job.enqueue`, `payloads.purge`
    pub action: String,
    /// What it acted on, e.g. `kill_switch`, an account, a job id
    pub target: Option<String>,
    /// The value before
    pub previous: Option<Value>,
    /// The value after (or what was asked for)
    pub new: Option<Value>,
    /// The reason given
    pub reason: Option<String>,
}

/// A change to record.
#[derive(Debug, Clone)]
pub struct NewOperatorAction<'a> {
    /// Who
    pub by: &'a Operator,
    /// What
    pub action: &'a str,
    /// On what
    pub target: Option<&'a str>,
    /// The value before
    pub previous: Option<Value>,
    /// The value after
    pub new: Option<Value>,
    /// Why
    pub reason: Option<&'a str>,
}
