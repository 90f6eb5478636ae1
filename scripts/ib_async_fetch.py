"""Fetch executions and commission reports from a TWS with the ib_async client (used by the
tests to prove the simulated TWS speaks the protocol real clients speak).

Usage: python3 scripts/ib_async_fetch.py HOST PORT CLIENT_ID
Prints one JSON object: the managed accounts, every fill with its commission report, and the
positions (reqPositions).
"""
import json
import sys

from ib_async import IB, ExecutionFilter


def main() -> None:
    host, port, client_id = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    ib = IB()
    ib.connect(host, port, clientId=client_id, timeout=10)
    try:
        ib.reqExecutions(ExecutionFilter())
        ib.sleep(0.5)  # commission reports trail the executions
        fills = ib.fills()
        positions = ib.reqPositions()
        out = {
            "positions": sorted(
                [
                    {
                        "account": p.account,
                        "symbol": p.contract.symbol,
                        "sec_type": p.contract.secType,
                        "con_id": p.contract.conId,
                        "position": str(p.position),
                        "avg_cost": str(p.avgCost),
                    }
                    for p in positions
                ],
                key=lambda p: (p["account"], p["symbol"]),
            ),
            "accounts": ib.managedAccounts(),
            "fills": [
                {
                    "exec_id": f.execution.execId,
                    "account": f.execution.acctNumber,
                    "symbol": f.contract.symbol,
                    "side": f.execution.side,
                    "shares": str(f.execution.shares),
                    "price": str(f.execution.price),
                    "perm_id": f.execution.permId,
                    "order_ref": f.execution.orderRef,
                    # as text: the value exactly as the client parsed it
                    "commission": repr(f.commissionReport.commission),
                    "commission_currency": f.commissionReport.currency,
                }
                for f in fills
            ],
        }
        print(json.dumps(out))
    finally:
        ib.disconnect()


if __name__ == "__main__":
    main()
