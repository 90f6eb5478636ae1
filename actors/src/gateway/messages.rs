//! Messages of the Gateway supervisor and the status it reports.

use ractor::RpcReplyPort;
use serde::Serialize;

/// What the Gateway does.
#[derive(Debug)]
pub enum GatewayMessage {
    /// Report the state of every child.
    Status {
        /// Reply channel for RPC
        reply: RpcReplyPort<GatewayStatus>,
    },
    /// Restart a failed child once its backoff has elapsed (sent by the Gateway to itself).
    RestartChild {
        /// The child's registered name
        name: String,
    },
    /// Stop every child, last started first, waiting for each to drain, then stop the Gateway.
    Shutdown {
        /// Replied to once every child has stopped
        reply: RpcReplyPort<()>,
    },
}

/// The life state of one child.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChildState {
    /// Serving messages
    Running,
    /// Failed; a restart is scheduled
    Restarting,
    /// Stopped by a shutdown
    Stopped,
}

/// One child as the Gateway sees it.
#[derive(Debug, Clone, Serialize)]
pub struct ChildReport {
    /// Registered name
    pub name: String,
    /// Life state
    pub state: ChildState,
    /// Restarts since the gateway started
    pub restarts: u32,
    /// The last failure's message, if it ever failed
    pub last_error: Option<String>,
}

/// Every child's state.
#[derive(Debug, Clone, Serialize)]
pub struct GatewayStatus {
    /// In start order
    pub children: Vec<ChildReport>,
}

impl GatewayStatus {
    /// True when every child is running.
    pub fn all_running(&self) -> bool {
        self.children.iter().all(|c| c.state == ChildState::Running)
    }
}
