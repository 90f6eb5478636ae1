"""Drive an Alpaca-compatible venue with Alpaca's official Python SDK, alpaca-py (used by the
tests to prove the simulated venue is faithful enough for real clients).

Usage: python3 scripts/alpaca_py_orders.py BASE_URL STREAM_URL KEY_ID SECRET_KEY
Submits, gets, lists, replaces and cancels orders with TradingClient, listens to trade updates
with TradingStream, and prints one JSON object with what the SDK parsed.
"""
import json
import sys
import threading
import time
import urllib.request

from alpaca.common.exceptions import APIError
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide, QueryOrderStatus, TimeInForce
from alpaca.trading.requests import (
    GetOrdersRequest,
    LimitOrderRequest,
    MarketOrderRequest,
    ReplaceOrderRequest,
)
from alpaca.trading.stream import TradingStream


def wait_for(what, check, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError(f"timed out waiting for {what}")


def order_view(order):
    return {
        "id": str(order.id),
        "client_order_id": order.client_order_id,
        "symbol": order.symbol,
        "side": order.side.value,
        "type": order.type.value,
        "status": order.status.value,
        "qty": str(order.qty),
        "filled_qty": str(order.filled_qty),
        "filled_avg_price": None if order.filled_avg_price is None else str(order.filled_avg_price),
        "limit_price": None if order.limit_price is None else str(order.limit_price),
    }


def main() -> None:
    base_url, stream_url, key_id, secret_key = sys.argv[1:5]
    updates = []
    lock = threading.Lock()

    async def on_update(update):
        with lock:
            updates.append(
                {
                    "event": str(getattr(update.event, "value", update.event)),
                    "order_id": str(update.order.id),
                    "client_order_id": update.order.client_order_id,
                    "status": update.order.status.value,
                    "execution_id": None if update.execution_id is None else str(update.execution_id),
                    "qty": None if update.qty is None else str(update.qty),
                    "price": None if update.price is None else str(update.price),
                }
            )

    stream = TradingStream(key_id, secret_key, paper=True, url_override=stream_url)
    stream.subscribe_trade_updates(on_update)
    thread = threading.Thread(target=stream.run, daemon=True)
    thread.start()

    def listeners():
        with urllib.request.urlopen(base_url + "/sim/control", timeout=5) as r:
            return json.load(r)["stream_listeners"] > 0

    wait_for("the stream to listen", listeners)

    client = TradingClient(key_id, secret_key, paper=True, url_override=base_url)
    out = {"account_buying_power": str(client.get_account().buying_power)}

    market = client.submit_order(
        MarketOrderRequest(
            symbol="AAPL",
            qty=3,
            side=OrderSide.BUY,
            time_in_force=TimeInForce.DAY,
            client_order_id="sdk-market-1",
        )
    )
    out["market_submitted"] = order_view(market)
    out["market_by_id"] = order_view(client.get_order_by_id(market.id))
    out["market_by_client_id"] = order_view(client.get_order_by_client_id("sdk-market-1"))

    limit = client.submit_order(
        LimitOrderRequest(
            symbol="MSFT",
            qty=2,
            side=OrderSide.BUY,
            limit_price=1.25,
            time_in_force=TimeInForce.GTC,
            client_order_id="sdk-limit-1",
        )
    )
    out["limit_submitted"] = order_view(limit)
    open_orders = client.get_orders(GetOrdersRequest(status=QueryOrderStatus.OPEN))
    out["open_client_ids"] = sorted(o.client_order_id for o in open_orders)
    replaced = client.replace_order_by_id(limit.id, ReplaceOrderRequest(limit_price=1.5))
    out["replaced"] = order_view(replaced)
    client.cancel_order_by_id(replaced.id)
    out["after_cancel"] = order_view(client.get_order_by_id(replaced.id))
    all_orders = client.get_orders(GetOrdersRequest(status=QueryOrderStatus.ALL))
    out["all_client_ids"] = sorted(o.client_order_id for o in all_orders)

    try:
        client.submit_order(
            MarketOrderRequest(
                symbol="AAPL",
                qty=1_000_000,
                side=OrderSide.BUY,
                time_in_force=TimeInForce.DAY,
                client_order_id="sdk-too-big",
            )
        )
        out["too_big"] = "accepted"
    except APIError as e:
        out["too_big"] = {"status_code": e.status_code, "code": e.code, "message": str(e)}

    # the SDK's own Position model over GET /v2/positions: the 3 AAPL bought above
    out["positions"] = [
        {
            "symbol": p.symbol,
            "qty": str(p.qty),
            "side": str(p.side.value),
            "avg_entry_price": str(p.avg_entry_price),
        }
        for p in client.get_all_positions()
    ]

    try:
        client.get_order_by_client_id("no-such-order")
        out["unknown"] = "found"
    except APIError as e:
        out["unknown"] = {"status_code": e.status_code, "code": e.code}

    def seen_all():
        with lock:
            events = {(u["client_order_id"], u["event"]) for u in updates}
        return ("sdk-market-1", "fill") in events and any(
            e == "canceled" for _, e in events
        )

    wait_for("the trade updates", seen_all)
    stream.stop()
    with lock:
        out["updates"] = list(updates)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
