"""The raw datasets' schemas: the lake contract of DESIGN.md section 5.

Every writer (the importer, the demo generator) writes them and every reader (the Spark jobs)
checks partitions against them (`lake.schema_problems`).
"""
from __future__ import annotations

import pyarrow as pa

UTC_TIMESTAMP = pa.timestamp("us", tz="UTC")
EVENT_TYPES = ("pdp_view", "add_to_cart", "still_want_it", "purchase")
RETURN_KINDS = ("return", "cancel")
SCHEMAS = {
    "events": pa.schema([
        ("event_id", pa.string()), ("member_id", pa.string()), ("style_id", pa.string()),
        ("event_type", pa.string()), ("occurred_at", UTC_TIMESTAMP), ("price", pa.float64()),
    ]),
    "returns": pa.schema([
        ("member_id", pa.string()), ("style_id", pa.string()), ("kind", pa.string()),
        ("occurred_at", UTC_TIMESTAMP),
    ]),
    "catalog": pa.schema([
        ("style_id", pa.string()), ("brand", pa.string()), ("division", pa.string()),
        ("department", pa.string()), ("class", pa.string()), ("subclass", pa.string()),
        ("list_price", pa.float64()), ("first_seen_date", pa.date32()),
    ]),
    "sale_calendar": pa.schema([
        ("style_id", pa.string()), ("sale_id", pa.string()), ("starts_at", UTC_TIMESTAMP),
        ("ends_at", UTC_TIMESTAMP), ("qty_on_hand", pa.int64()),
    ]),
}
