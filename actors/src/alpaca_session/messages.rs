//! Messages of an AlpacaSession: what the router and recovery ask of it.

use ractor::RpcReplyPort;

use crate::domain::PlacedOrder;
use crate::domain::{OrderReject, ReplaceRequest, RoutedOrder};

/// Messages of an AlpacaSession.
#[derive(Debug)]
pub enum AlpacaSessionMessage {
    /// Send committed decisions: in this order, each answered before the next, when
    /// `sequential` (a batch); otherwise all at once.
    Execute {
        /// The decisions, committed
        orders: Vec<RoutedOrder>,
        /// Whether to send one after another
        sequential: bool,
    },
    /// Cancel one order (the strategy asked).
    Cancel {
        /// The order
        order: PlacedOrder,
        /// Reply for RPC
        reply: RpcReplyPort<Result<(), OrderReject>>,
    },
    /// Replace one order.
    Replace {
        /// The order
        order: PlacedOrder,
        /// The new values
        changes: ReplaceRequest,
        /// Reply for RPC: the new broker order id
        reply: RpcReplyPort<Result<String, OrderReject>>,
    },
    /// Cancel every working order of one strategy.
    CancelAll {
        /// The strategy
        strategy: String,
        /// Reply for RPC: cancels sent
        reply: RpcReplyPort<Result<usize, OrderReject>>,
    },
    /// Run the start-up recovery again: an outbox write whose answer was lost may have
    /// committed decisions that were never routed, and they must not stay pending until the
    /// next restart. Each pending decision without an execution is looked up at the broker:
    /// found, recorded; not found after the grace period, failed as `not_received_by_broker`.
    /// Never sent. (The session asks itself the same when an outcome could not be stored.)
    Reconcile,
}
