#!/usr/bin/env python3
"""Reads (or alters) a tradegate day archive with pyarrow, a Parquet reader that is not ours.

Usage:
  python3 scripts/parquet_rows.py read DIR
      prints {table: [[value, ...] per row, sorted by the first column]} as JSON: timestamps as
      microseconds since the epoch, dates as days since it, binary values as hex, lists as lists
  python3 scripts/parquet_rows.py alter DIR TABLE COLUMN VALUE
      sets COLUMN of the table's first row to VALUE (a string) in its file and writes the
      file's new SHA-256 into the manifest, as someone covering their tracks would
"""

import hashlib
import json
import os
import sys

import pyarrow as pa
import pyarrow.parquet as pq


def plain(value):
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def normalised(table):
    columns = []
    for name in table.column_names:
        column = table.column(name)
        if pa.types.is_timestamp(column.type):
            column = column.cast(pa.int64())
        elif pa.types.is_date32(column.type):
            column = column.cast(pa.int32())
        columns.append(column.to_pylist())
    return [[plain(c[i]) for c in columns] for i in range(table.num_rows)]


def read(directory):
    with open(os.path.join(directory, "manifest.json")) as f:
        manifest = json.load(f)
    out = {}
    for entry in manifest["tables"]:
        rows = []
        for file in entry["files"]:
            rows.extend(normalised(pq.ParquetFile(os.path.join(directory, file["path"])).read()))
        rows.sort(key=lambda r: json.dumps(r[0]))
        out[entry["table"]] = rows
    json.dump(out, sys.stdout)


def alter(directory, table_name, column, value):
    path = os.path.join(directory, "manifest.json")
    with open(path) as f:
        manifest = json.load(f)
    entry = next(t for t in manifest["tables"] if t["table"] == table_name)
    file = entry["files"][0]
    target = os.path.join(directory, file["path"])
    table = pq.ParquetFile(target).read()
    values = table.column(column).to_pylist()
    values[0] = value
    index = table.column_names.index(column)
    table = table.set_column(index, column, pa.array(values, table.schema.field(column).type))
    pq.write_table(table, target)
    with open(target, "rb") as f:
        file["sha256"] = hashlib.sha256(f.read()).hexdigest()
    with open(path, "w") as f:
        json.dump(manifest, f)
    json.dump({"altered": file["path"]}, sys.stdout)


if __name__ == "__main__":
    if sys.argv[1] == "read":
        read(sys.argv[2])
    else:
        alter(*sys.argv[2:6])
