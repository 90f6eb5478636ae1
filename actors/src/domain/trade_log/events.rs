//! Constructors of trade-log events, one per mapping of the spec, and the builders they share.

use super::columns::{EventType, ExecutionFields, OrderIds, RawJson, Side};
use super::{TradeLogEvent, now_us};
use rust_decimal::Decimal;
use uuid::Uuid;

impl TradeLogEvent {
    /// An event of `event_type` happening now, with a fresh time-ordered id.
    pub fn new(event_type: EventType, body: RawJson) -> Self {
        Self {
            event_id: Uuid::now_v7(),
            local_ts_us: now_us(),
            exchange_ts_us: None,
            event_type,
            req_id: None,
            cl_ord_id: None,
            native_ord_id: None,
            market_id: None,
            account_id: None,
            symbol: None,
            exec_type: None,
            ord_status: None,
            side: None,
            is_taker: None,
            last_px: None,
            last_qty: None,
            leaves_qty: None,
            ord_px: None,
            ord_qty: None,
            fee: None,
            response_status: None,
            error_code: None,
            error_message: None,
            source: None,
            body,
            response_meta: None,
        }
    }

    /// Sets what an HTTP exchange carried around a response's body.
    pub fn with_response_meta(mut self, meta: RawJson) -> Self {
        self.response_meta = Some(meta);
        self
    }

    /// Sets the origin.
    pub fn with_source(mut self, source: impl Into<String>) -> Self {
        self.source = Some(source.into());
        self
    }

    pub(super) fn with_ids(mut self, ids: &OrderIds) -> Self {
        self.req_id = ids.req_id;
        self.cl_ord_id.clone_from(&ids.cl_ord_id);
        self.native_ord_id.clone_from(&ids.native_ord_id);
        self.market_id = ids.market_id;
        self.account_id.clone_from(&ids.account_id);
        self.symbol.clone_from(&ids.symbol);
        self
    }

    pub(super) fn with_execution(mut self, exec: &ExecutionFields) -> Self {
        self.exec_type = exec.exec_type;
        self.ord_status = exec.ord_status;
        self.side = exec.side;
        self.is_taker = exec.is_taker;
        self.last_px = exec.last_px;
        self.last_qty = exec.last_qty;
        self.leaves_qty = exec.leaves_qty;
        self.ord_px = exec.ord_px;
        self.ord_qty = exec.ord_qty;
        self.fee = exec.fee;
        self.exchange_ts_us = exec.exchange_ts_us;
        self
    }

    /// 10: a new order as sent (`body`: the native request, HTTP requests encoded with
    /// [`encode_http_request`]).
    pub fn request_order_new(
        ids: &OrderIds,
        side: Option<Side>,
        ord_qty: Option<Decimal>,
        ord_px: Option<Decimal>,
        body: RawJson,
    ) -> Self {
        let mut e = Self::new(EventType::RequestOrderNew, body).with_ids(ids);
        e.side = side;
        e.ord_qty = ord_qty;
        e.ord_px = ord_px;
        e
    }

    /// 11: a cancel request.
    pub fn request_order_cancel(ids: &OrderIds, body: RawJson) -> Self {
        Self::new(EventType::RequestOrderCancel, body).with_ids(ids)
    }

    /// 12: an amend request with the new price and quantity, when given.
    pub fn request_order_amend(
        ids: &OrderIds,
        ord_px: Option<Decimal>,
        ord_qty: Option<Decimal>,
        body: RawJson,
    ) -> Self {
        let mut e = Self::new(EventType::RequestOrderAmend, body).with_ids(ids);
        e.ord_px = ord_px;
        e.ord_qty = ord_qty;
        e
    }

    /// 13: a cancel-all request.
    pub fn request_cancel_all(
        account_id: Option<String>,
        market_id: Option<i64>,
        req_id: Option<i64>,
        body: RawJson,
    ) -> Self {
        let ids = OrderIds {
            req_id,
            market_id,
            account_id,
            ..OrderIds::default()
        };
        Self::new(EventType::RequestCancelAll, body).with_ids(&ids)
    }

    /// 20, and 30 when the response carries an execution: a response yields both an
    /// `api_response` and an `api_event_execution` (spec: answer YES), sharing `body`.
    pub fn api_response(
        ids: &OrderIds,
        response_status: Option<i16>,
        error_code: Option<String>,
        error_message: Option<String>,
        execution: Option<&ExecutionFields>,
        body: RawJson,
    ) -> Vec<Self> {
        let mut response = Self::new(EventType::ApiResponse, body.clone()).with_ids(ids);
        response.response_status = response_status;
        response.error_code = error_code;
        response.error_message = error_message;
        let Some(exec) = execution else {
            return vec![response];
        };
        response = response.with_execution(exec);
        let mut execution = Self::new(EventType::ApiEventExecution, body)
            .with_ids(ids)
            .with_execution(exec);
        execution.local_ts_us = response.local_ts_us;
        vec![response, execution]
    }

    /// 30: an execution report pushed by the venue.
    pub fn api_event_execution(ids: &OrderIds, exec: &ExecutionFields, body: RawJson) -> Self {
        Self::new(EventType::ApiEventExecution, body)
            .with_ids(ids)
            .with_execution(exec)
    }

    /// 31: an order status change without a trade.
    pub fn api_event_order_update(
        ids: &OrderIds,
        ord_status: Option<i16>,
        exchange_ts_us: Option<i64>,
        body: RawJson,
    ) -> Self {
        let mut e = Self::new(EventType::ApiEventOrderUpdate, body).with_ids(ids);
        e.ord_status = ord_status;
        e.exchange_ts_us = exchange_ts_us;
        e
    }

    /// 32: a lightweight fill.
    pub fn api_event_trade_lite(ids: &OrderIds, exec: &ExecutionFields, body: RawJson) -> Self {
        Self::new(EventType::ApiEventTradeLite, body)
            .with_ids(ids)
            .with_execution(exec)
    }

    /// 90: a disconnect, reconnect or resubscribe of `source`.
    pub fn connectivity(source: &str, account_id: Option<String>, body: RawJson) -> Self {
        let mut e = Self::new(EventType::ConnectivityInfo, body).with_source(source);
        e.account_id = account_id;
        e
    }

    /// 90: a hole in the trade log itself: `count` events between `first_local_ts_us` and
    /// `last_local_ts_us` were lost for `reason`, so the gap is visible in the table.
    pub fn gap(count: u64, first_local_ts_us: i64, last_local_ts_us: i64, reason: &str) -> Self {
        let body = serde_json::json!({
            "gap": {
                "dropped": count,
                "first_local_ts_us": first_local_ts_us,
                "last_local_ts_us": last_local_ts_us,
                "reason": reason,
            }
        });
        let mut e = Self::new(EventType::ConnectivityInfo, RawJson::from_value(&body))
            .with_source("tradelog");
        e.error_code = Some("tradelog.gap".into());
        e.error_message = Some(format!("{count} trade-log events lost ({reason})"));
        e
    }
}
