#!/usr/bin/env python3
"""An example data job for `tradegate ingest` (Python standard library only).

It pretends to fetch congressional trades from an API, logs that API call and every record it
touched to the run `tradegate ingest` started for it, and prints the summary line last.
Usage: example_ingest_job.py [COUNT] [--post-twice]
"""
import json
import os
import sys
import time
import urllib.request

RUN_URL = os.environ["TRADEGATE_INGESTION_URL"]  # .../api/v1/ingestion/runs/<run id>
TOKEN = os.environ["TRADEGATE_TOKEN"]  # writes to this run only


def post(path, body):
    request = urllib.request.Request(
        RUN_URL + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": "Bearer " + TOKEN},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)


count = int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].isdigit() else 100
started = time.monotonic()
trades = [{"id": f"qt-{i}", "ticker": ("AAPL", "MSFT", "NVDA")[i % 3]} for i in range(count)]
post("/api-calls", {
    "endpoint": "/beta/live/congresstrading",
    "method": "GET",
    "params": {"limit": count},
    "status_code": 200,
    "response_body": {"count": len(trades)},
    "duration_ms": int((time.monotonic() - started) * 1000),
})
records = [
    {"record_type": "QuiverTrade", "record_id": t["id"], "operation": "created", "symbol": t["ticker"]}
    for t in trades
]
for i in range(0, len(records), 5000):
    post("/records", {"records": records[i:i + 5000]})
if "--post-twice" in sys.argv:  # a retried upload: the run keeps each record once
    post("/records", {"records": records[:5000]})
print(json.dumps({"fetched": count, "created": count, "updated": 0, "skipped": 0}))
