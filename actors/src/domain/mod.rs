//! Payloads shared by several actors.

pub mod broker;
pub mod decision;
pub mod ingestion;
pub mod operator;
pub mod order;
pub mod trade_log;

pub use broker::{
    BrokerFill, BrokerTrade, NewFill, ParentKey, RejectedExecution, SyncCounts, SyncReport,
    TradeFilter, TradeStatus,
};
pub use decision::{
    CreatedDecision, DecisionReject, LineagePolicy, LineageRun, NewDecision, OrderType,
    PrimarySignal, TimeInForce,
};
pub use ingestion::{
    ApiCall, ApiCallIds, ApiPayload, ApiPayloadKind, IngestionRun, NewRun, RecordOperation,
    RecordsOutcome, RunCounts, RunRecord, RunStatus,
};
pub use operator::{NewOperatorAction, Operator, OperatorAction};
pub use order::{
    KillSwitch, OrderOutcome, OrderReject, OrderRequest, PlacedOrder, PrepareRequest,
    PreparedRequest, RejectCode, ReplaceRequest, RoutedOrder, StrategyEvent,
};
pub use trade_log::{
    EventType, ExecutionFields, OrderIds, RawJson, Side, TradeLogEvent, encode_http_request,
    is_sensitive_key, now_us, redact_json,
};
