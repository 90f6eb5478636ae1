//! Messages of the OrderRouter: orders, cancels and replaces from strategies, the kill switch.

use ractor::RpcReplyPort;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::domain::{
    KillSwitch, OrderOutcome, OrderReject, OrderRequest, ReplaceRequest, StrategyEvent,
};

/// Messages of the OrderRouter.
#[derive(Debug)]
pub enum OrderRouterMessage {
    /// Orders of one strategy: one (`submit_order`) or a batch (`submit_batch`: all decisions
    /// committed before the first is sent, then sent strongest signal first).
    Submit {
        /// The strategy the connection is authenticated as
        strategy: String,
        /// The strategy's request id (echoed in acks and rejects)
        request_id: String,
        /// The orders
        orders: Vec<OrderRequest>,
        /// Whether this is a batch
        batch: bool,
        /// Where acks and rejects are pushed, ahead of any result of the order (optional)
        events: Option<mpsc::UnboundedSender<StrategyEvent>>,
        /// Reply: one outcome per order, in the order given
        reply: Option<oneshot::Sender<Vec<OrderOutcome>>>,
    },
    /// Cancel the order of a decision of this strategy.
    Cancel {
        /// The strategy asking
        strategy: String,
        /// The decision
        decision_id: Uuid,
        /// Reply for RPC
        reply: RpcReplyPort<Result<(), OrderReject>>,
    },
    /// Replace (amend) the order of a decision of this strategy.
    Replace {
        /// The strategy asking
        strategy: String,
        /// The decision
        decision_id: Uuid,
        /// The new values
        changes: ReplaceRequest,
        /// Reply for RPC: the new broker order id
        reply: RpcReplyPort<Result<String, OrderReject>>,
    },
    /// Cancel every working order of this strategy.
    CancelAll {
        /// The strategy asking
        strategy: String,
        /// Reply for RPC: how many cancels were sent
        reply: RpcReplyPort<Result<usize, OrderReject>>,
    },
    /// Switch the kill switch (persisted first).
    SetKillSwitch {
        /// The new state
        state: KillSwitch,
        /// Why
        reason: Option<String>,
        /// Who: the credential that asked
        by: crate::domain::Operator,
        /// Reply for RPC
        reply: RpcReplyPort<Result<(), OrderReject>>,
    },
    /// The kill switch's state.
    GetKillSwitch {
        /// Reply for RPC
        reply: RpcReplyPort<KillSwitch>,
    },
}
