"""`flashfeed import`: your own events and items, as two CSV files, into the raw lake.

    flashfeed import --events events.csv --items items.csv --lake DIR [--dt YYYY-MM-DD]

The daily model then runs on them like on any other lake (the summary prints the command).

Input files: comma-separated, UTF-8, header on the first line, columns in any order.

* ``events.csv``: ``member_id,item_id,event_type,occurred_at[,price][,event_id]``

  - ``member_id``, ``item_id``: 1 to 64 letters, digits or ``_ . : -`` (what the pipeline's
    cleaning accepts).
  - ``event_type``: one of config ``cleaning.event_types`` (pdp_view, add_to_cart,
    still_want_it, purchase).
  - ``occurred_at``: ISO-8601 (``2024-05-01T10:15:00+02:00``; no offset means UTC) or Unix
    seconds (``1714551300`` or ``1714551300.5``; digits only always mean Unix seconds).
  - ``price``: required for a purchase, optional otherwise; when given, a positive number.
  - ``event_id``: optional. When the column is absent or the value empty, the id is derived
    from the row's content (member, item, type, instant, price), so identical rows get the
    same id and the pipeline's cleaning keeps one of them and counts the rest as duplicates.

* ``items.csv``: ``item_id,brand,division,department,class,subclass[,list_price]``.
  The hierarchy is whatever your data holds (any number of divisions). An item listed again
  with other attributes is a bad row (the first listing wins); listed again identically, it
  is counted and ignored.

  ``division`` is any text; the import stores its **division key**
  (``flashfeed.core.divisions.division_key``): accents folded to ASCII, lower case, apostrophes
  dropped, every other run of non-letters and non-digits one ``_``, at most 64 characters. So
  "Women's Apparel" is stored as ``womens_apparel`` and "Home & Décor" as ``home_decor``: the
  fallbacks (``__fallback__#womens_apparel``), the config's ``features.division_codes`` and the
  read API's ``?division=`` use that key (the API also accepts the name). Two names with the same
  key ("Women's Apparel", "womens apparel") are one division: the summary and the report say so
  (``division_names``, ``merged_divisions``). A division without a letter or digit is a bad row.

What it writes under the lake root (DESIGN.md section 5; the Parquet schemas are
``flashfeed.core.schemas.SCHEMAS``), for model date D (default: the day after the last event's
UTC date; ``--dt`` sets it):

* ``raw/events/dt=E/`` for every UTC date E from the first event's date to D - 1 (and to the
  last event's date if that is later), holding the events of that date, ``style_id`` =
  ``item_id``. A date without events gets an empty partition: the day is complete, not late.
* ``raw/returns/dt=E/`` for the same dates, empty (the import has no returns or cancellations).
* ``raw/catalog/dt=D/``: every item; ``first_seen_date`` = the date of the item's first event
  (D for an item without events); ``list_price`` from items.csv or null.
* ``raw/sale_calendar/dt=D/``: the CSVs have no sale calendar, so every item counts as on sale
  with stock: one row per item, sale ``import``, from 00:00 UTC on D - 1 for
  ``import.sale_days`` days, with ``import.default_qty_on_hand`` on hand. That covers every
  launch window of day D.
* ``raw/import_report.json``: the counts, bad rows per reason, dates written and model date.

Each partition is written into a hidden sibling folder, sealed with ``_SUCCESS`` and renamed
into place, replacing the partition a previous import wrote (re-running is safe). Other
partitions already in the lake are left alone.

Event dates must lie in a sane window: an event more than ``import.max_days_after_import``
days after the import time, or more than ``import.max_history_days`` days before the model
date, is a bad row (a wrong date would otherwise make one raw partition per day up to it).

Bad rows: every row is checked, and a bad row is reported with its file, line number (the
header is line 1) and reason, e.g. ``events.csv line 17: price missing for a purchase``.
Counts are kept per reason, and the first ``import.show_bad_rows`` of each file are listed.
Both files are validated completely before anything is written: when more than
``import.max_bad_row_share`` of either file's rows are bad, the import fails and writes
nothing. Otherwise bad rows are skipped, and the counts are printed and stored in the report.
Settings: the ``import`` section of ``include/flashfeed.yaml``.

Memory: the CSVs are streamed, and the kept events are held as Arrow columns (roughly 100
bytes an event), so tens of millions of events fit on a laptop. The lake is a local folder or an
S3 prefix (`s3a://bucket/prefix`, reached with the AWS environment variables: see the README's
"An S3 lake").
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Iterator
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from flashfeed.core import calendar, lake
from flashfeed.core.config import load_config
from flashfeed.core.divisions import division_key
from flashfeed.core.schemas import SCHEMAS
from flashfeed.core.settings import ImportSettings

__all__ = ["import_csv", "ImportFailed", "main", "parse_instant", "derived_event_id"]

SETTINGS_SECTION = "import"                # include/flashfeed.yaml
REPORT_FILE = "import_report.json"         # under raw/ of the lake root

EVENT_COLUMNS = ("member_id", "item_id", "event_type", "occurred_at")
EVENT_OPTIONAL_COLUMNS = ("price", "event_id")
ITEM_ATTRIBUTES = ("brand", "division", "department", "class", "subclass")
DIVISION = ITEM_ATTRIBUTES.index("division")     # stored as its division key
ITEM_COLUMNS = ("item_id", *ITEM_ATTRIBUTES)
ITEM_OPTIONAL_COLUMNS = ("list_price",)

PURCHASE = "purchase"
# Events the pipeline's cleaning counts as one action (besides a shared event_id).
DUPLICATE_KEY = ("member_id", "style_id", "event_type", "occurred_at")
# Ids the pipeline accepts: the same pattern as spark_jobs/transforms/cleaning.py and the API.
ID_PATTERN = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
UNIX_SECONDS = re.compile(r"[+-]?\d+(\.\d+)?")
EVENT_ID_HEX_DIGITS = 20       # 80 bits of a sha1: no collision in any realistic import
SALE_ID = "import"             # the one sale every item is in when the CSVs have no calendar

UTC = timezone.utc
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROS_PER_SECOND = 1_000_000
MICROS_PER_DAY = 86_400 * MICROS_PER_SECOND
ARROW_CHUNK_ROWS = 100_000     # kept events move from Python lists into Arrow this often
LINE_COLUMN = "line"           # kept with each event until it is written: bad rows name their line
AFTER_IMPORT = "occurred_at after the import time"
BEFORE_WINDOW = "occurred_at before the history window"
# When flashfeed_daily_model runs for day D (DAILY_MODEL_CRON in plugins/flashfeed_airflow/
# schedules.py), for the next command the summary prints.
DAILY_MODEL_LOCAL_TIME = time(5, 0)


class ImportFailed(Exception):
    """The import was refused and nothing was written; `report` holds what was found."""

    def __init__(self, message: str, report: dict):
        super().__init__(message)
        self.report = report


class BadRow(ValueError):
    """One row's problem: `reason` is what is counted, `detail` what is shown with it."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


# =============================================================================================
# Field parsers (one value each; they raise BadRow)
# =============================================================================================
def parse_instant(text: str, column: str = "occurred_at") -> int:
    """Microseconds since the Unix epoch (UTC) of an ISO-8601 instant or of Unix seconds."""
    value = text.strip()
    if not value:
        raise BadRow(f"{column} missing")
    if UNIX_SECONDS.fullmatch(value):
        # Decimal, not float: 1714551300.123456 must not become ...122999.
        micros = int((Decimal(value) * MICROS_PER_SECOND).to_integral_value())
    else:
        try:
            instant = datetime.fromisoformat(value)
        except ValueError:
            raise BadRow(f"bad {column}", f"{value!r} is neither ISO-8601 "
                         "(2024-05-01T10:15:00+02:00) nor Unix seconds (1714551300)") from None
        if instant.tzinfo is None:
            instant = instant.replace(tzinfo=UTC)       # documented: no offset means UTC
        micros = (instant - EPOCH) // timedelta(microseconds=1)
    try:
        _day_of(micros)                                 # must have a calendar date
    except (OverflowError, ValueError):
        raise BadRow(f"bad {column}", f"{value!r} is out of the calendar's range") from None
    return micros


def _day_of(micros: int) -> date:
    return (EPOCH + timedelta(microseconds=micros)).date()


def _identifier(row: dict[str, str], column: str) -> str:
    value = row[column].strip()
    if not value:
        raise BadRow(f"{column} missing")
    if not ID_PATTERN.fullmatch(value):
        raise BadRow(f"bad {column}",
                     f"{value!r}: use 1 to 64 letters, digits or the characters _ . : -")
    return value


def _positive_number(text: str, column: str) -> float | None:
    """A positive finite number, or None for an empty value."""
    value = text.strip()
    if not value:
        return None
    try:
        number = float(value)
    except ValueError:
        raise BadRow(f"bad {column}", f"{value!r} is not a number") from None
    if not math.isfinite(number) or number <= 0:
        raise BadRow(f"bad {column}", f"{value!r} is not a positive number")
    return number


def derived_event_id(member_id: str, item_id: str, event_type: str, micros: int,
                     price: float | None) -> str:
    """A deterministic id from the event's content: identical events get identical ids."""
    content = "\x1f".join([member_id, item_id, event_type, str(micros),
                           "" if price is None else repr(price)])
    return hashlib.sha1(content.encode("utf-8")).hexdigest()[:EVENT_ID_HEX_DIGITS]


# =============================================================================================
# Reading the CSVs
# =============================================================================================
@dataclass
class FileTally:
    """Rows read, kept and bad (per reason) of one input file, with the first bad rows."""
    name: str                      # as shown in messages, e.g. "events.csv"
    show_bad_rows: int
    read: int = 0
    kept: int = 0
    repeats: int = 0               # rows repeating an identical earlier row: ignored, not bad
    bad_by_reason: Counter = field(default_factory=Counter)
    first_bad_rows: list[str] = field(default_factory=list)

    @property
    def bad(self) -> int:
        return sum(self.bad_by_reason.values())

    @property
    def bad_share(self) -> float:
        return self.bad / self.read if self.read else 0.0

    def record_bad(self, line: int, problem: BadRow) -> None:
        self.bad_by_reason[problem.reason] += 1
        if len(self.first_bad_rows) < self.show_bad_rows:
            self.first_bad_rows.append(f"{self.name} line {line}: {problem}")

    def as_dict(self) -> dict:
        return {"read": self.read, "kept": self.kept, "bad": self.bad,
                "bad_share": round(self.bad_share, 6), "repeats_ignored": self.repeats,
                "bad_by_reason": dict(sorted(self.bad_by_reason.items())),
                "first_bad_rows": list(self.first_bad_rows)}


def _rows(path: Path, tally: FileTally, required: tuple[str, ...],
          optional: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, {column: value}) of every data row; rows with a wrong number of fields
    are recorded as bad here. Header problems and unreadable files raise ImportFailed."""
    line = 0
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = [name.strip() for name in next(reader, [])]
            columns = _check_header(header, tally.name, required, optional)
            line = reader.line_num
            for fields in reader:
                # A record starts on the line after the previous one ended (quoted fields
                # may span lines); line numbers are 1-based with the header on line 1.
                start, line = line + 1, reader.line_num
                if not fields:
                    continue                            # a blank line is not a row
                tally.read += 1
                if len(fields) != len(columns):
                    tally.record_bad(start, BadRow(
                        "wrong number of fields",
                        f"{len(fields)} fields, the header has {len(columns)}"))
                    continue
                yield start, dict(zip(columns, fields))
    except FileNotFoundError:
        raise ImportFailed(f"{path} not found: check the path given to flashfeed import",
                           _failed_report(f"{path} not found")) from None
    except (UnicodeDecodeError, csv.Error) as error:
        message = (f"{tally.name} cannot be read as UTF-8 CSV after line {line} "
                   f"({error}); save it as UTF-8 comma-separated text and import it again")
        raise ImportFailed(message, _failed_report(message)) from None


def _check_header(header: list[str], name: str, required: tuple[str, ...],
                  optional: tuple[str, ...]) -> list[str]:
    expected = ",".join(required) + "".join(f"[,{c}]" for c in optional)
    problems = []
    missing = [c for c in required if c not in header]
    extra = [c for c in header if c not in required + optional]
    repeated = sorted({c for c in header if header.count(c) > 1})
    if not header or header == [""]:
        problems.append("the file is empty")
    else:
        if missing:
            problems.append(f"missing column(s) {', '.join(missing)}")
        if extra:
            problems.append(f"unexpected column(s) {', '.join(extra)}")
        if repeated:
            problems.append(f"repeated column(s) {', '.join(repeated)}")
    if problems:
        message = (f"{name}: {'; '.join(problems)}. Its first line must be the header "
                   f"{expected} (any order); rename or remove columns and import again.")
        raise ImportFailed(message, _failed_report(message))
    return header


@dataclass(frozen=True)
class Item:
    attributes: tuple[str, ...]    # ITEM_ATTRIBUTES, in that order; the division as its key
    list_price: float | None
    line: int
    division_name: str = ""        # the division as items.csv wrote it


def _division(name: str) -> str:
    try:
        return division_key(name)
    except ValueError:
        raise BadRow("bad division", f"{name!r} has no letter or digit, so it has no division key (e.g. "
                                     "\"Women's Apparel\" -> womens_apparel)") from None


def read_items(path: Path, tally: FileTally) -> dict[str, Item]:
    """The valid items of items.csv by item_id (bad rows go to the tally)."""
    items: dict[str, Item] = {}
    for line, row in _rows(path, tally, ITEM_COLUMNS, ITEM_OPTIONAL_COLUMNS):
        try:
            item_id = _identifier(row, "item_id")
            attributes = tuple(row[c].strip() for c in ITEM_ATTRIBUTES)
            for column, value in zip(ITEM_ATTRIBUTES, attributes):
                if not value:
                    raise BadRow(f"{column} missing")
            division_name = attributes[DIVISION]
            attributes = (*attributes[:DIVISION], _division(division_name), *attributes[DIVISION + 1:])
            list_price = _positive_number(row.get("list_price", ""), "list_price")
            first = items.get(item_id)
            if first is not None:
                if (first.attributes, first.list_price) != (attributes, list_price):
                    raise BadRow("item listed again with other attributes",
                                 f"{item_id!r} (first listed on line {first.line})")
                tally.repeats += 1
                continue
        except BadRow as problem:
            tally.record_bad(line, problem)
            continue
        items[item_id] = Item(attributes, list_price, line, division_name)
        tally.kept += 1
    return items


class KeptEvents:
    """The valid events with their line numbers, gathered in small Python lists and moved into
    Arrow in chunks."""

    def __init__(self) -> None:
        self.schema = SCHEMAS["events"].append(pa.field(LINE_COLUMN, pa.int64()))
        self._pending: dict[str, list] = {name: [] for name in self.schema.names}
        self._batches: list[pa.RecordBatch] = []

    def add(self, event_id: str, member_id: str, item_id: str, event_type: str, micros: int,
            price: float | None, line: int) -> None:
        for name, value in zip(self.schema.names,
                               (event_id, member_id, item_id, event_type, micros, price, line)):
            self._pending[name].append(value)
        if len(self._pending["event_id"]) >= ARROW_CHUNK_ROWS:
            self._flush()

    def _flush(self) -> None:
        if self._pending["event_id"]:
            self._batches.append(pa.RecordBatch.from_pydict(self._pending, schema=self.schema))
            self._pending = {name: [] for name in self.schema.names}

    def table(self) -> pa.Table:
        """All events with their line, sorted by instant then id (so the output does not depend
        on row order)."""
        self._flush()
        table = pa.Table.from_batches(self._batches, schema=self.schema)
        return table.sort_by([("occurred_at", "ascending"), ("event_id", "ascending")])


def read_events(path: Path, tally: FileTally, items: dict[str, Item],
                event_types: list[str], latest_micros: int, latest_why: str) -> pa.Table:
    """The valid events of events.csv with their line numbers, sorted by instant (bad rows go to
    the tally). An event after `latest_micros` is bad: `latest_why` says why."""
    kept = KeptEvents()
    known_types = set(event_types)
    for line, row in _rows(path, tally, EVENT_COLUMNS, EVENT_OPTIONAL_COLUMNS):
        try:
            # Checked in this order; the first failing check names the row's reason.
            member_id = _identifier(row, "member_id")
            item_id = _identifier(row, "item_id")
            event_type = row["event_type"].strip()
            if event_type not in known_types:
                raise BadRow("unknown event_type",
                             f"{event_type!r} (expected one of {', '.join(event_types)})")
            micros = parse_instant(row["occurred_at"])
            if micros > latest_micros:
                raise BadRow(AFTER_IMPORT, f"{row['occurred_at'].strip()!r} is "
                             + latest_why)
            price = _positive_number(row.get("price", ""), "price")
            if price is None and event_type == PURCHASE:
                raise BadRow("price missing for a purchase")
            if item_id not in items:
                raise BadRow("unknown item", f"{item_id!r} has no valid row in items.csv")
        except BadRow as problem:
            tally.record_bad(line, problem)
            continue
        event_id = (row.get("event_id") or "").strip() or derived_event_id(
            member_id, item_id, event_type, micros, price)
        kept.add(event_id, member_id, item_id, event_type, micros, price, line)
        tally.kept += 1
    return kept.table()


def drop_before(events: pa.Table, earliest_day: date, tally: FileTally, why: str) -> pa.Table:
    """`events` (sorted by instant) without those before `earliest_day`, each recorded as a bad
    row of the tally with its line; `why` ends the row's detail."""
    start = int(np.searchsorted(_event_days(events), _ordinal_days(earliest_day)))
    if start == 0:
        return events
    before = events.slice(0, start)
    tally.bad_by_reason[BEFORE_WINDOW] += start
    room = max(0, tally.show_bad_rows - len(tally.first_bad_rows))
    # Listed in file order, like the other bad rows; only as many as the report shows.
    shown = before.take(np.argsort(before[LINE_COLUMN].to_numpy(), kind="stable")[:room])
    for line, instant in zip(shown[LINE_COLUMN].to_pylist(), shown["occurred_at"].to_pylist()):
        tally.first_bad_rows.append(f"{tally.name} line {line}: {BEFORE_WINDOW}: "
                                    f"{instant:%Y-%m-%dT%H:%M:%SZ} is {why}")
    tally.kept -= start
    return events.slice(start)


def _event_days(events: pa.Table) -> np.ndarray:
    """Days since 1970-01-01 of every event (floor division: also right before 1970)."""
    return events["occurred_at"].cast(pa.int64()).to_numpy() // MICROS_PER_DAY


# =============================================================================================
# The import
# =============================================================================================
def import_csv(events_path: str | Path, items_path: str | Path, lake_root: str,
               dt: date | str | None = None, settings: dict | None = None,
               now: datetime | None = None) -> dict:
    """Validate both CSVs, then write the raw partitions for model date `dt`; the report.

    `settings` overrides keys of the config's `import` section (tests use it); `now` is the
    import time (default: the clock). Raises ImportFailed, with nothing written, when the
    input is unusable.
    """
    config = load_config()
    # A caller's overrides are checked as the file's values are (type and range).
    settings = ImportSettings.model_validate({**config[SETTINGS_SECTION], **(settings or {})}).model_dump()
    root = _lake_root(lake_root)
    model_date = date.fromisoformat(dt) if isinstance(dt, str) else dt
    now = now or datetime.now(UTC)
    # 1. Validate everything (nothing is written yet).
    items, events, report = _read_valid_input(Path(events_path), Path(items_path), model_date, now, root,
                                              settings, config)
    # 2. Write: daily history, then the model date's snapshots, then the report.
    raw = _raw_partitions(items, events, model_date, settings, report)
    _write_raw_partitions(raw, root, settings["default_qty_on_hand"], report)
    report.update(_summary(raw, root, settings, config))
    _write_report(root, report)
    return report


@dataclass
class RawPartitions:
    """What an import writes: each history day's events, and the model date's catalogue and sale."""
    model_date: date
    history: list[date]                  # every day from the first event to the day before the model date
    events: pa.Table                     # sorted by time, without the line-number column
    event_days: np.ndarray               # each event's day (ordinal), ascending
    day_bounds: np.ndarray               # events of history[i]: rows day_bounds[i] to day_bounds[i + 1]
    items: dict
    item_first_micros: dict[str, int]    # each item's first event (microseconds): its first_seen_date
    sale_starts: datetime
    sale_ends: datetime


def _read_valid_input(events_path: Path, items_path: Path, model_date: date | None, now: datetime, root: str,
                      settings: dict, config: dict) -> tuple[dict, pa.Table, dict]:
    """Both files read and checked: the items, the events inside the sane window of dates, the report so far.

    The window: a wrong date would otherwise make one raw partition per day up to it (2999-01-01:
    hundreds of thousands of folders). Fails (ImportFailed, nothing written) above the bad-row limit.
    """
    max_share, show = settings["max_bad_row_share"], settings["show_bad_rows"]
    days_ahead, history_days = settings["max_days_after_import"], settings["max_history_days"]
    latest = now + timedelta(days=days_ahead)
    failed = {"status": "failed", "lake": root}
    if model_date and model_date > latest.date() + timedelta(days=1):
        _fail(failed, f"the model date {model_date} is more than {days_ahead} day(s) after the import "
                      f"time {now:%Y-%m-%d %H:%M} UTC (import.max_days_after_import); nothing was "
                      "written. Pass a --dt up to the day after your newest events.")
    items_tally = FileTally(items_path.name, show)
    items = read_items(items_path, items_tally)
    events_tally = FileTally(events_path.name, show)
    events = read_events(events_path, events_tally, items, list(config["cleaning"]["event_types"]),
                         (latest - EPOCH) // timedelta(microseconds=1),
                         f"more than {days_ahead} day(s) after the import time {now:%Y-%m-%d %H:%M} UTC "
                         "(import.max_days_after_import)")
    if events.num_rows:
        newest = _date_of(int(_event_days(events)[-1]))
        window_end = model_date or newest + timedelta(days=1)
        events = drop_before(events, window_end - timedelta(days=history_days), events_tally,
                             f"more than {history_days:,} days before the model date {window_end} "
                             "(import.max_history_days)")
    report = {
        **failed,
        "status": "ok",
        "events_file": str(events_path.resolve()),
        "items_file": str(items_path.resolve()),
        "max_bad_row_share": max_share,
        "files": {"events": events_tally.as_dict(), "items": items_tally.as_dict()},
    }
    _refuse_bad_input(report, [items_tally, events_tally], max_share)
    return items, events, report


def _raw_partitions(items: dict, events: pa.Table, model_date: date | None, settings: dict,
                    report: dict) -> RawPartitions:
    """The model date (default: the day after the last event), its history days and their events."""
    event_days = _event_days(events)
    first_day, last_day = _date_of(int(event_days[0])), _date_of(int(event_days[-1]))
    model_date = model_date or last_day + timedelta(days=1)
    if model_date <= first_day:
        _fail(report, f"the model date {model_date} is not after the first event's date "
                      f"{first_day}, so the model would have no history. Pass a --dt after "
                      f"{first_day} (the default is the day after the last event: "
                      f"{last_day + timedelta(days=1)}).")
    history = _dates(first_day, max(last_day, model_date - timedelta(days=1)))
    # `event_days` is sorted (the table is), so each date's events are one contiguous slice.
    edges = [_ordinal_days(d) for d in history] + [_ordinal_days(history[-1]) + 1]
    firsts = pa.table({"style_id": events["style_id"], "micros": events["occurred_at"].cast(pa.int64())}
                      ).group_by("style_id").aggregate([("micros", "min")])
    sale_starts = datetime.combine(model_date - timedelta(days=1), time(0), UTC)
    return RawPartitions(
        model_date=model_date, history=history, events=events.drop_columns([LINE_COLUMN]), event_days=event_days,
        day_bounds=np.searchsorted(event_days, edges), items=items,
        item_first_micros=dict(zip(firsts["style_id"].to_pylist(), firsts["micros_min"].to_pylist())),
        sale_starts=sale_starts, sale_ends=sale_starts + timedelta(days=settings["sale_days"]))


def _write_raw_partitions(raw: RawPartitions, root: str, qty_on_hand: int, report: dict) -> None:
    item_ids = sorted(raw.items)
    try:
        for day, start, end in zip(raw.history, raw.day_bounds[:-1], raw.day_bounds[1:]):
            lake.write_partition(lake.raw("events", day, root), raw.events.slice(start, end - start))
            lake.write_partition(lake.raw("returns", day, root), SCHEMAS["returns"].empty_table())
        lake.write_partition(lake.raw("catalog", raw.model_date, root),
                             _catalog_table(item_ids, raw.items, raw.item_first_micros, raw.model_date))
        lake.write_partition(lake.raw("sale_calendar", raw.model_date, root), _sale_calendar_table(
            item_ids, raw.sale_starts, raw.sale_ends, qty_on_hand))
    except OSError as error:
        _fail(report, f"import failed while writing the lake {root}: {error}. Each partition is written aside "
                      "and renamed into place when complete, so the ones written before it are whole and the one "
                      "being written was not sealed. Next step: free space (or fix the permissions) there, then "
                      "import again: it replaces what it wrote.")


def _summary(raw: RawPartitions, root: str, settings: dict, config: dict) -> dict:
    """The report's account of what was written and what the pipeline will make of it."""
    events, items, model_date = raw.events, raw.items, raw.model_date
    names: dict[str, set[str]] = {}                   # division key -> the names items.csv gave it
    for item in items.values():
        names.setdefault(item.attributes[DIVISION], set()).add(item.division_name)
    written = {"events": raw.history, "returns": raw.history,
               "catalog": [model_date], "sale_calendar": [model_date]}
    return {
        "model_date": model_date.isoformat(),
        "first_event_date": _date_of(int(raw.event_days[0])).isoformat(),
        "last_event_date": _date_of(int(raw.event_days[-1])).isoformat(),
        "members": pc.count_distinct(events["member_id"]).as_py(),
        "items": len(items),
        "items_with_events": len(raw.item_first_micros),
        "divisions": sorted(names),
        "division_names": {key: sorted(names[key]) for key in sorted(names)},
        "merged_divisions": {key: sorted(names[key]) for key in sorted(names) if len(names[key]) > 1},
        "event_types": dict(sorted(zip(*events.group_by("event_type").aggregate(
            [("event_type", "count")]).to_pydict().values()))),
        # What the pipeline's cleaning will drop as duplicates (it keeps one of each).
        "repeated_event_ids": len(events) - pc.count_distinct(events["event_id"]).as_py(),
        "repeated_actions": len(events) - events.group_by(list(DUPLICATE_KEY)).aggregate(
            []).num_rows,
        "max_reject_share": config["cleaning"]["max_reject_share"],
        "events_on_or_after_model_date": int(np.count_nonzero(
            raw.event_days >= _ordinal_days(model_date))),
        "dates_written": {ds: [d.isoformat() for d in days] for ds, days in written.items()},
        "empty_event_dates": len(raw.history) - len(np.unique(raw.event_days)),
        "sale": {"sale_id": SALE_ID, "starts_at": raw.sale_starts.isoformat(),
                 "ends_at": raw.sale_ends.isoformat(),
                 "qty_on_hand": settings["default_qty_on_hand"]},
        "other_partitions": _other_partitions(root, written),
        "next_steps": _next_steps(root, model_date, config),
    }


def _refuse_bad_input(report: dict, tallies: list[FileTally], max_share: float) -> None:
    """Fail (nothing written) above the bad-row limit of either file, or with no usable rows."""
    too_many = [t for t in tallies if t.bad_share > max_share]
    if too_many:
        lines = [f"import failed: nothing was written to the lake {report['lake']}."]
        for tally in too_many:
            lines.append(f"{tally.name}: {tally.bad:,} of {tally.read:,} rows are bad "
                         f"({tally.bad_share:.1%}; the limit is {max_share:.1%}): "
                         + _reasons(tally.bad_by_reason))
        lines.append("first bad rows:")
        lines += [f"  {row}" for t in tallies for row in t.first_bad_rows]
        lines.append("next step: fix or remove these rows and import again. The limit is "
                     "import.max_bad_row_share in include/flashfeed.yaml.")
        _fail(report, "\n".join(lines))
    for tally in tallies:
        if tally.kept == 0:
            _fail(report, f"import failed: {tally.name} has no usable rows ({tally.read:,} read, "
                          f"{tally.bad:,} bad: {_reasons(tally.bad_by_reason)}); "
                          "nothing was written. Check that it is the right file.")


def _fail(report: dict, message: str) -> None:
    report.update(status="failed", error=message)
    raise ImportFailed(message, report)


def _failed_report(message: str) -> dict:
    return {"status": "failed", "error": message}


def _reasons(by_reason: Counter) -> str:
    return ", ".join(f"{reason} {count:,}" for reason, count in by_reason.most_common()) or "none"


def _lake_root(root: str) -> str:
    """A local folder (absolute) or an S3 prefix, as the pipeline names it (`s3a://`)."""
    if root.startswith(lake.S3_SCHEMES):
        return "s3a://" + root.split("://", 1)[1].rstrip("/")
    if root.startswith("file://"):
        root = root[len("file://"):]
    if "://" in root:
        message = f"lake {root!r}: flashfeed import writes to a local folder or to S3 (s3a://bucket/prefix) only"
        raise ImportFailed(message, _failed_report(message))
    return str(Path(root).expanduser().resolve())


def _ordinal_days(day: date) -> int:
    """Days since 1970-01-01: the unit `occurred_at // MICROS_PER_DAY` is in."""
    return (day - EPOCH.date()).days


def _date_of(ordinal_days: int) -> date:
    return EPOCH.date() + timedelta(days=ordinal_days)


def _dates(first: date, last: date) -> list[date]:
    return [first + timedelta(days=k) for k in range((last - first).days + 1)]


def _catalog_table(item_ids: list[str], items: dict[str, Item],
                   first_micros: dict[str, int], model_date: date) -> pa.Table:
    columns = {"style_id": item_ids}
    for k, name in enumerate(ITEM_ATTRIBUTES):
        columns[name] = [items[i].attributes[k] for i in item_ids]
    columns["list_price"] = [items[i].list_price for i in item_ids]
    columns["first_seen_date"] = [
        _day_of(first_micros[i]) if i in first_micros else model_date for i in item_ids]
    return pa.Table.from_pydict(columns, schema=SCHEMAS["catalog"])


def _sale_calendar_table(item_ids: list[str], starts_at: datetime, ends_at: datetime,
                         qty_on_hand: int) -> pa.Table:
    count = len(item_ids)
    return pa.Table.from_pydict({
        "style_id": item_ids, "sale_id": [SALE_ID] * count, "starts_at": [starts_at] * count,
        "ends_at": [ends_at] * count, "qty_on_hand": [qty_on_hand] * count,
    }, schema=SCHEMAS["sale_calendar"])


def _other_partitions(root: str, written: dict[str, list[date]]) -> list[str]:
    """Raw partitions already in the lake that this import did not write (left alone)."""
    ours = {lake.raw(ds, d, root).split("://", 1)[-1] for ds, days in written.items() for d in days}
    fs, base = lake.filesystem(root)
    found = sorted(p for ds in lake.RAW_DATASETS for p in fs.glob(f"{base}/raw/{ds}/dt=*"))
    return [p[len(base) + 1:] for p in found if p not in ours]


def _next_steps(root: str, model_date: date, config: dict) -> list[str]:
    """The commands that run the pipeline on the imported day."""
    tz = ZoneInfo(config["calendar"]["timezone"])
    model_run = datetime.combine(model_date, DAILY_MODEL_LOCAL_TIME, tz)
    # A feeds run prepares the first launch at or after its logical date: the day's first.
    first_launch = calendar.slot(model_date, calendar.launch_hhmms(config)[0], config)
    return [
        f"FLASHFEED_LAKE={root} flashfeed airflow dags test flashfeed_daily_model "
        f"{model_run.isoformat()}",
        f"FLASHFEED_LAKE={root} flashfeed airflow dags test flashfeed_launch_feeds "
        f"{first_launch.starts_at.astimezone(tz).isoformat()}",
    ]


def _write_report(root: str, report: dict) -> None:
    """raw/import_report.json, written last and whole (a temporary file renamed, or one S3 PUT)."""
    data = (json.dumps(report, indent=2) + "\n").encode("utf-8")
    if root.startswith(lake.S3_SCHEMES):
        lake.write_bytes(f"{root}/raw/{REPORT_FILE}", data)
        return
    final = Path(root) / "raw" / REPORT_FILE
    staging = final.with_name(f".{REPORT_FILE}.tmp")
    staging.write_bytes(data)
    staging.replace(final)


# =============================================================================================
# Command line
# =============================================================================================
def format_summary(report: dict) -> str:
    """What `flashfeed import` prints after a successful import."""
    lines = [f"flashfeed import into {report['lake']}"]
    for dataset in ("events", "items"):
        tally, name = report["files"][dataset], Path(report[f"{dataset}_file"]).name
        lines.append(f"  {name}: {tally['read']:,} rows read, {tally['kept']:,} kept, "
                     f"{tally['bad']:,} bad ({tally['bad_share']:.2%}; limit "
                     f"{report['max_bad_row_share']:.2%})"
                     + (f": {_reasons(Counter(tally['bad_by_reason']))}" if tally["bad"] else "")
                     + (f"; {tally['repeats_ignored']:,} repeated an identical earlier row "
                        "(ignored)" if tally["repeats_ignored"] else ""))
    bad_rows = report["files"]["items"]["first_bad_rows"] + report["files"]["events"][
        "first_bad_rows"]
    if bad_rows:
        lines.append("  bad rows skipped (first ones):")
        lines += [f"    {row}" for row in bad_rows]
    history = report["dates_written"]["events"]
    lines += [
        f"  members {report['members']:,}, items {report['items']:,} "
        f"({report['items_with_events']:,} with events), divisions "
        f"{len(report['divisions'])} ({_division_list(report['division_names'])})",
        f"  events by type: {', '.join(f'{k} {v:,}' for k, v in report['event_types'].items())}",
        f"  raw/events and raw/returns: {len(history)} dates, {history[0]} .. {history[-1]} "
        f"({report['empty_event_dates']} without events; returns are empty)",
        f"  raw/catalog and raw/sale_calendar: {report['model_date']} (every item on sale "
        f"{report['sale']['starts_at']} .. {report['sale']['ends_at']}, "
        f"{report['sale']['qty_on_hand']:,} on hand)",
        f"  model date: {report['model_date']}",
        f"  report: {report['lake']}/raw/{REPORT_FILE}",
    ]
    repeats = max(report["repeated_event_ids"], report["repeated_actions"])
    if repeats:
        share = repeats / report["files"]["events"]["kept"]
        lines.append(
            f"  {'WARNING' if share > report['max_reject_share'] else 'note'}: about "
            f"{repeats:,} events ({share:.1%}) repeat another event's id, or its member, item, "
            "type and time; the daily model keeps one of each and rejects the rest as "
            "duplicates (it fails above cleaning.max_reject_share, "
            f"{report['max_reject_share']:.0%}).")
    for key, merged in report["merged_divisions"].items():
        lines.append(f"  note: the division names {_quoted(merged)} have the same key {key}: they were merged into "
                     "one division.")
    if report["events_on_or_after_model_date"]:
        lines.append(f"  note: {report['events_on_or_after_model_date']:,} events are on or "
                     f"after the model date {report['model_date']}: written, but not read by "
                     "that day's model.")
    if report["other_partitions"]:
        lines.append(f"  note: the lake also holds {len(report['other_partitions'])} raw "
                     f"partitions this import did not write (e.g. "
                     f"{report['other_partitions'][0]}); they were left alone. Import into an "
                     "empty folder to model only your data.")
    lines.append("next: run the pipeline on it")
    lines += [f"  {command}" for command in report["next_steps"]]
    return "\n".join(lines)


def _quoted(names: list[str]) -> str:
    return ", ".join(json.dumps(name, ensure_ascii=False) for name in names)


def _division_list(division_names: dict[str, list[str]]) -> str:
    """`home, womens_apparel <- "Women's Apparel"`: each key, with the names it came from when
    they differ from it."""
    return ", ".join(key if names == [key] else f"{key} <- {_quoted(names)}" for key, names in division_names.items())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flashfeed import",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Import your own events and items (two CSV files) into the raw lake, "
                    "ready for flashfeed_daily_model.",
        epilog="""\
events.csv header: member_id,item_id,event_type,occurred_at[,price][,event_id]
  event_type   pdp_view | add_to_cart | still_want_it | purchase
  occurred_at  ISO-8601 (2024-05-01T10:15:00+02:00; no offset = UTC) or Unix seconds
  price        required (> 0) for a purchase, optional otherwise
  event_id     optional; derived from the row's content when absent
items.csv header: item_id,brand,division,department,class,subclass[,list_price]

Writes raw/events and raw/returns (empty) for every date up to the day before the model
date, raw/catalog and raw/sale_calendar for the model date (every item on sale with stock),
and raw/import_report.json. Bad rows are reported with their line numbers and skipped; above
import.max_bad_row_share (include/flashfeed.yaml) of either file, nothing is written.

example:
  flashfeed import --events events.csv --items items.csv --lake /tmp/mylake
""")
    parser.add_argument("--events", required=True, type=Path, metavar="CSV",
                        help="events file (see the header below)")
    parser.add_argument("--items", required=True, type=Path, metavar="CSV",
                        help="items file (see the header below)")
    parser.add_argument("--lake", required=True, metavar="URI",
                        help="lake root: a local folder (created if missing) or s3a://bucket/prefix")
    parser.add_argument("--dt", type=date.fromisoformat, default=None, metavar="YYYY-MM-DD",
                        help="model date (default: the day after the last event's UTC date)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        report = import_csv(args.events, args.items, args.lake, dt=args.dt)
    except ImportFailed as failure:
        print(failure, file=sys.stderr)
        return 1
    print(format_summary(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
