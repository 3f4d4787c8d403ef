"""`flashfeed import` (users' CSVs into the raw lake) and the UCI Online Retail converter."""
from __future__ import annotations

import csv
import json
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from flashfeed.core.config import load_config
from flashfeed.demo.generator import PART_FILE, SCHEMAS
from flashfeed.ingest import importer, uci
from tests.conftest import UCI_SAMPLE

UTC = timezone.utc
SETTINGS = load_config()["import"]
LENIENT = {"max_bad_row_share": 0.9}   # tiny files: a single bad row is a large share

ITEMS = """\
item_id,brand,division,department,class,subclass,list_price
s1,Gracia,women,Clothing,Dresses,Day Dresses,99.5
s2,Velora,home,Kitchen,Dining,Glassware,
s3,Velora,home,Kitchen,Dining,Glassware,12
s9,Lumen,home,Decor,Lighting,Table Lamps,40
"""
# UTC dates: line 2 -> 05-01 (08:00), line 3 -> 04-30 (22:30: the offset moves it a day back),
# line 4 -> 05-02 00:00 (Unix seconds), lines 5-6 -> 05-01 23:59:59.5 (fractional Unix
# seconds; the same row twice), line 7 -> 05-02 (naive means UTC), line 8 -> 05-02.
EVENTS = """\
member_id,item_id,event_type,occurred_at,price
m1,s1,pdp_view,2024-05-01T10:00:00+02:00,
m1,s1,add_to_cart,2024-05-01T01:30:00+03:00,
m2,s2,purchase,1714608000,19.99
m3,s3,still_want_it,1714607999.5,
m3,s3,still_want_it,1714607999.5,
m2,s1,pdp_view,2024-05-02 23:59:59,
m1,s1,purchase,2024-05-02T12:00:00Z,49.5
"""
FIRST_DAY, LAST_DAY = date(2024, 4, 30), date(2024, 5, 2)
MODEL_DAY = LAST_DAY + timedelta(days=1)


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def _import(tmp_path: Path, events: str = EVENTS, items: str = ITEMS, **kwargs) -> tuple[dict, Path]:
    lake = tmp_path / "lake"
    report = importer.import_csv(_write(tmp_path, "events.csv", events),
                                 _write(tmp_path, "items.csv", items), str(lake), **kwargs)
    return report, lake


def _partitions(lake: Path, dataset: str) -> dict[date, Path]:
    return {date.fromisoformat(f.name[3:]): f for f in sorted((lake / "raw" / dataset).glob("dt=*"))}


def _read(partition: Path) -> list[dict]:
    return pq.read_table(partition / PART_FILE).to_pylist()


def _snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` with its bytes (hidden staging folders included)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _dates(first: date, last: date) -> list[date]:
    return [first + timedelta(days=k) for k in range((last - first).days + 1)]


# --- layout, schemas, timestamps, ids ---------------------------------------------------------
def test_partitions_are_complete_and_have_the_contract_schemas(tmp_path):
    report, lake = _import(tmp_path)
    history = _dates(FIRST_DAY, LAST_DAY)
    assert list(_partitions(lake, "events")) == history
    assert list(_partitions(lake, "returns")) == history
    assert list(_partitions(lake, "catalog")) == [MODEL_DAY]
    assert list(_partitions(lake, "sale_calendar")) == [MODEL_DAY]
    for dataset in SCHEMAS:
        for folder in _partitions(lake, dataset).values():
            assert sorted(p.name for p in folder.iterdir()) == ["_SUCCESS", PART_FILE], folder
            assert pq.read_schema(folder / PART_FILE).remove_metadata().equals(SCHEMAS[dataset])
        assert not [p for p in (lake / "raw" / dataset).iterdir() if p.name.startswith(".")]
    assert report["model_date"] == MODEL_DAY.isoformat()
    assert report["dates_written"]["events"] == [d.isoformat() for d in history]
    assert json.loads((lake / "raw" / "import_report.json").read_text()) == report


def test_iso_and_unix_timestamps_land_on_their_utc_date(tmp_path):
    _, lake = _import(tmp_path)
    by_day = {day: [(e["member_id"], e["event_type"], e["occurred_at"]) for e in _read(folder)]
              for day, folder in _partitions(lake, "events").items()}
    assert by_day == {
        date(2024, 4, 30): [("m1", "add_to_cart", datetime(2024, 4, 30, 22, 30, tzinfo=UTC))],
        date(2024, 5, 1): [
            ("m1", "pdp_view", datetime(2024, 5, 1, 8, 0, tzinfo=UTC)),
            ("m3", "still_want_it", datetime(2024, 5, 1, 23, 59, 59, 500000, tzinfo=UTC)),
            ("m3", "still_want_it", datetime(2024, 5, 1, 23, 59, 59, 500000, tzinfo=UTC)),
        ],
        date(2024, 5, 2): [
            ("m2", "purchase", datetime(2024, 5, 2, 0, 0, tzinfo=UTC)),
            ("m1", "purchase", datetime(2024, 5, 2, 12, 0, tzinfo=UTC)),
            ("m2", "pdp_view", datetime(2024, 5, 2, 23, 59, 59, tzinfo=UTC)),
        ],
    }


def test_event_ids_are_derived_from_the_content_so_identical_rows_share_one(tmp_path):
    report, lake = _import(tmp_path)
    events = [e for folder in _partitions(lake, "events").values() for e in _read(folder)]
    twins = [e for e in events if e["member_id"] == "m3"]
    assert len(twins) == 2 and twins[0]["event_id"] == twins[1]["event_id"]
    assert len({e["event_id"] for e in events}) == len(events) - 1
    assert report["repeated_event_ids"] == report["repeated_actions"] == 1
    assert "about 1 events (14.3%) repeat another event's id" in importer.format_summary(report)
    purchase = next(e for e in events if e["event_type"] == "purchase" and e["member_id"] == "m2")
    assert purchase["style_id"] == "s2" and purchase["price"] == 19.99
    assert purchase["event_id"] == importer.derived_event_id(
        "m2", "s2", "purchase", 1714608000 * 1_000_000, 19.99)
    # Another import of the same rows, in another order, gives the same ids.
    (tmp_path / "again").mkdir()
    header, *rows = EVENTS.splitlines()
    _, other_lake = _import(tmp_path / "again", "\n".join([header, *reversed(rows)]) + "\n")
    again = [e for folder in _partitions(other_lake, "events").values() for e in _read(folder)]
    assert sorted(e["event_id"] for e in again) == sorted(e["event_id"] for e in events)


def test_given_event_ids_are_kept(tmp_path):
    events = ("member_id,item_id,event_type,occurred_at,event_id,price\n"
              "m1,s1,pdp_view,2024-05-01T10:00:00Z,ev-1,\n"
              "m1,s1,pdp_view,2024-05-01T11:00:00Z,,\n")
    _, lake = _import(tmp_path, events)
    ids = [e["event_id"] for e in _read(_partitions(lake, "events")[date(2024, 5, 1)])]
    assert ids[0] == "ev-1"
    assert len(ids[1]) == importer.EVENT_ID_HEX_DIGITS     # empty value: derived


def test_catalog_and_sale_calendar_of_the_model_date_use_the_documented_defaults(tmp_path):
    _, lake = _import(tmp_path)
    catalog = {row["style_id"]: row for row in _read(_partitions(lake, "catalog")[MODEL_DAY])}
    assert sorted(catalog) == ["s1", "s2", "s3", "s9"]
    assert catalog["s1"] == {"style_id": "s1", "brand": "Gracia", "division": "women",
                             "department": "Clothing", "class": "Dresses",
                             "subclass": "Day Dresses", "list_price": 99.5,
                             "first_seen_date": date(2024, 4, 30)}   # its add_to_cart
    assert catalog["s2"]["list_price"] is None
    assert catalog["s2"]["first_seen_date"] == date(2024, 5, 2)
    assert catalog["s9"]["first_seen_date"] == MODEL_DAY            # no events
    sales = _read(_partitions(lake, "sale_calendar")[MODEL_DAY])
    starts = datetime(2024, 5, 2, tzinfo=UTC)                       # midnight UTC of D - 1
    assert sorted(s["style_id"] for s in sales) == sorted(catalog)
    for sale in sales:
        assert sale["sale_id"] == importer.SALE_ID
        assert sale["starts_at"] == starts
        assert sale["ends_at"] == starts + timedelta(days=SETTINGS["sale_days"])
        assert sale["qty_on_hand"] == SETTINGS["default_qty_on_hand"]


def test_returns_partitions_are_present_and_empty(tmp_path):
    _, lake = _import(tmp_path)
    returns = _partitions(lake, "returns")
    assert list(returns) == _dates(FIRST_DAY, LAST_DAY)
    assert all(pq.read_table(folder / PART_FILE).num_rows == 0 for folder in returns.values())


def test_a_later_model_date_gets_empty_event_partitions_up_to_the_day_before(tmp_path):
    model_day = date(2024, 5, 6)
    report, lake = _import(tmp_path, dt=model_day)
    history = _dates(FIRST_DAY, model_day - timedelta(days=1))
    assert list(_partitions(lake, "events")) == history             # D - 1 exists: the sensor waits for it
    assert list(_partitions(lake, "returns")) == history
    assert pq.read_table(_partitions(lake, "events")[date(2024, 5, 5)] / PART_FILE).num_rows == 0
    assert list(_partitions(lake, "catalog")) == [model_day]
    assert report["empty_event_dates"] == 3
    assert "flashfeed_daily_model 2024-05-06T05:00:00-04:00" in report["next_steps"][0]


def test_a_model_date_not_after_the_first_event_is_refused(tmp_path):
    with pytest.raises(importer.ImportFailed, match="not after the first event's date"):
        _import(tmp_path, dt="2024-04-30")
    assert not (tmp_path / "lake").exists()


# --- bad rows --------------------------------------------------------------------------------
BAD_EVENTS = """\
member_id,item_id,event_type,occurred_at,price
m1,s1,pdp_view,2024-05-01T10:00:00Z,
m1,s1,click,2024-05-01T10:00:00Z,
m1,s1,pdp_view,yesterday,
m1,s1,purchase,2024-05-01T11:00:00Z,
m1,s404,pdp_view,2024-05-01T12:00:00Z,
,s1,pdp_view,2024-05-01T12:00:00Z,
m2,s2,purchase,2024-05-01T13:00:00Z,20
m1,s1,pdp_view
m2,s3,purchase,2024-05-01T14:00:00Z,-5
"""
BAD_EVENT_ROWS = [
    "events.csv line 3: unknown event_type: 'click' (expected one of pdp_view, add_to_cart, "
    "still_want_it, purchase)",
    "events.csv line 4: bad occurred_at: 'yesterday' is neither ISO-8601 "
    "(2024-05-01T10:15:00+02:00) nor Unix seconds (1714551300)",
    "events.csv line 5: price missing for a purchase",
    "events.csv line 6: unknown item: 's404' has no valid row in items.csv",
    "events.csv line 7: member_id missing",
    "events.csv line 9: wrong number of fields: 3 fields, the header has 5",
    "events.csv line 10: bad price: '-5' is not a positive number",
]
BAD_ITEMS = ITEMS + """\
s3,Velora,home,Kitchen,Dining,Dinnerware,12
s4,Velora,home,,Dining,Dinnerware,
s5,Velora,home,Kitchen,Dining,Dinnerware,cheap
s1,Gracia,women,Clothing,Dresses,Day Dresses,99.5
"""


def test_bad_rows_below_the_threshold_are_skipped_and_reported_with_line_and_reason(tmp_path, capsys):
    report, lake = _import(tmp_path, BAD_EVENTS, BAD_ITEMS, settings=LENIENT)
    events, items = report["files"]["events"], report["files"]["items"]
    assert events["first_bad_rows"] == BAD_EVENT_ROWS
    assert (events["read"], events["kept"], events["bad"]) == (9, 2, 7)
    assert events["bad_by_reason"] == {
        "bad occurred_at": 1, "bad price": 1, "member_id missing": 1,
        "price missing for a purchase": 1, "unknown event_type": 1, "unknown item": 1,
        "wrong number of fields": 1}
    assert items["first_bad_rows"] == [
        "items.csv line 6: item listed again with other attributes: 's3' (first listed on line 4)",
        "items.csv line 7: department missing",
        "items.csv line 8: bad list_price: 'cheap' is not a number",
    ]
    assert (items["read"], items["kept"], items["bad"], items["repeats_ignored"]) == (8, 4, 3, 1)
    kept = _read(_partitions(lake, "events")[date(2024, 5, 1)])
    assert [(e["member_id"], e["style_id"], e["event_type"]) for e in kept] == [
        ("m1", "s1", "pdp_view"), ("m2", "s2", "purchase")]
    stored = json.loads((lake / "raw" / "import_report.json").read_text())
    assert stored["files"]["events"]["bad_by_reason"] == events["bad_by_reason"]

    summary = importer.format_summary(report)       # what the command prints: never a silent drop
    assert "9 rows read, 2 kept, 7 bad" in summary
    assert BAD_EVENT_ROWS[2] in summary


def test_the_report_lists_only_the_first_show_bad_rows(tmp_path):
    report, _ = _import(tmp_path, BAD_EVENTS, settings={**LENIENT, "show_bad_rows": 2})
    assert report["files"]["events"]["first_bad_rows"] == BAD_EVENT_ROWS[:2]
    assert report["files"]["events"]["bad"] == 7


def test_too_many_bad_rows_fail_the_import_and_write_nothing(tmp_path):
    lake = tmp_path / "lake"
    with pytest.raises(importer.ImportFailed) as failure:
        _import(tmp_path, BAD_EVENTS)
    assert not lake.exists()
    message = str(failure.value)
    assert "events.csv: 7 of 9 rows are bad (77.8%; the limit is 1.0%)" in message
    assert BAD_EVENT_ROWS[0] in message and "next step" in message
    assert failure.value.report["status"] == "failed"
    assert failure.value.report["files"]["events"]["bad_by_reason"]["unknown item"] == 1

    # A lake holding an earlier import is left exactly as it was.
    _import(tmp_path)
    before = _snapshot(lake)
    with pytest.raises(importer.ImportFailed):
        _import(tmp_path, BAD_EVENTS)
    assert _snapshot(lake) == before


# --- the window of event dates: nothing is written for a date outside it ---------------------
IMPORT_TIME = datetime(2024, 5, 3, 12, 0, tzinfo=timezone.utc)


def test_an_event_far_in_the_future_or_past_is_a_bad_row_named_by_its_line(tmp_path):
    # line 9: one day and one second after the import time; line 10: Unix second 0
    events = EVENTS + "m1,s1,pdp_view,2024-05-04T12:00:01Z,\nm2,s2,pdp_view,0,\n"
    with pytest.raises(importer.ImportFailed) as failure:          # 2 of 9 rows: over the 1 % limit
        _import(tmp_path, events, now=IMPORT_TIME)
    assert not (tmp_path / "lake").exists()
    assert failure.value.report["files"]["events"]["first_bad_rows"] == [
        "events.csv line 9: occurred_at after the import time: '2024-05-04T12:00:01Z' is more than 1 "
        "day(s) after the import time 2024-05-03 12:00 UTC (import.max_days_after_import)",
        "events.csv line 10: occurred_at before the history window: 1970-01-01T00:00:00Z is more than "
        "3,650 days before the model date 2024-05-03 (import.max_history_days)",
    ]
    # Under a lenient limit both are skipped: the raw days are those of the other events only.
    report, lake = _import(tmp_path, events, now=IMPORT_TIME, settings=LENIENT)
    assert list(_partitions(lake, "events")) == _dates(FIRST_DAY, LAST_DAY)
    assert report["files"]["events"]["bad_by_reason"] == {
        "occurred_at after the import time": 1, "occurred_at before the history window": 1}
    assert (report["files"]["events"]["read"], report["files"]["events"]["kept"]) == (9, 7)


def test_the_window_edges_are_kept_and_the_history_limit_counts_back_from_the_model_date(tmp_path):
    on_the_edge = EVENTS + "m1,s1,pdp_view,2024-05-04T12:00:00Z,\n"   # exactly one day after: kept
    report, lake = _import(tmp_path, on_the_edge, now=IMPORT_TIME, dt="2024-05-05")
    assert report["files"]["events"]["bad"] == 0
    # 2 days back from the model date 2024-05-03 is 2024-05-01: line 3 (2024-04-30 22:30 UTC) is out
    report, lake = _import(tmp_path, now=IMPORT_TIME, settings={**LENIENT, "max_history_days": 2})
    assert report["files"]["events"]["first_bad_rows"] == [
        "events.csv line 3: occurred_at before the history window: 2024-04-30T22:30:00Z is more than 2 days "
        "before the model date 2024-05-03 (import.max_history_days)"]
    assert report["first_event_date"] == "2024-05-01"


def test_a_model_date_beyond_the_window_is_refused_before_reading(tmp_path):
    with pytest.raises(importer.ImportFailed, match=r"the model date 2999-01-01 is more than 1 day\(s\) after the "
                                                    r"import time 2024-05-03 12:00 UTC"):
        _import(tmp_path, now=IMPORT_TIME, dt="2999-01-01")
    assert not (tmp_path / "lake").exists()


@pytest.mark.parametrize("header, problem", [
    ("member_id,item_id,event_type,occurred_at,price,channel", "unexpected column(s) channel"),
    ("member_id,item_id,occurred_at", "missing column(s) event_type"),
    ("member_id,item_id,event_type,occurred_at,price,price", "repeated column(s) price"),
])
def test_a_wrong_header_fails_naming_the_columns(tmp_path, header, problem):
    with pytest.raises(importer.ImportFailed, match=problem.replace("(", r"\(").replace(")", r"\)")):
        _import(tmp_path, header + "\nm1,s1,pdp_view,2024-05-01T10:00:00Z,,x\n")
    assert not (tmp_path / "lake").exists()


def test_lakes_other_than_a_folder_or_s3_are_refused(tmp_path):
    with pytest.raises(importer.ImportFailed, match="writes to a local folder or to S3"):
        importer.import_csv(_write(tmp_path, "events.csv", EVENTS),
                            _write(tmp_path, "items.csv", ITEMS), "gs://bucket/lake")


def test_id_rules_are_the_pipelines(tmp_path):
    from spark_jobs.transforms import cleaning

    assert f"^{importer.ID_PATTERN.pattern}$" == cleaning.ID_PATTERN


# --- re-runs and the command line -----------------------------------------------------------
def test_re_running_the_import_replaces_its_partitions_with_the_same_content(tmp_path):
    _, lake = _import(tmp_path)
    first = _snapshot(lake / "raw")
    folders = {d: f.stat().st_ino for d, f in _partitions(lake, "events").items()}
    _import(tmp_path)
    assert _snapshot(lake / "raw") == first      # same files, same bytes
    rewritten = {d: f.stat().st_ino for d, f in _partitions(lake, "events").items()}
    assert all(rewritten[d] != inode for d, inode in folders.items())   # renamed into place again


def test_command_line_prints_the_summary_and_the_next_command(tmp_path, capsys):
    events, items = _write(tmp_path, "events.csv", EVENTS), _write(tmp_path, "items.csv", ITEMS)
    lake = tmp_path / "lake"
    assert importer.main(["--events", str(events), "--items", str(items), "--lake", str(lake)]) == 0
    out = capsys.readouterr().out
    assert "members 3, items 4 (3 with events), divisions 2 (home, women)" in out
    assert (f"FLASHFEED_LAKE={lake} flashfeed airflow dags test flashfeed_daily_model "
            "2024-05-03T05:00:00-04:00") in out
    bad = _write(tmp_path, "bad.csv", BAD_EVENTS)
    assert importer.main(["--events", str(bad), "--items", str(items), "--lake", str(lake)]) == 1
    assert "import failed" in capsys.readouterr().err


# --- UCI Online Retail -----------------------------------------------------------------------
def test_uci_rules_on_typical_descriptions():
    assert uci.division_of("PAPER CHAIN KIT 50'S CHRISTMAS ") == "christmas"
    assert uci.division_of("LUNCH BAG RED RETROSPOT") == "bags"
    assert uci.division_of("SET OF 3 CAKE TINS PANTRY DESIGN") == "kitchen_dining"
    assert uci.division_of("SILVER FABRIC MIRROR") == uci.DEFAULT_DIVISION
    assert uci.product_noun("LUNCH BAG RED RETROSPOT") == "bag"
    assert uci.product_noun("NATURAL SLATE HEART CHALKBOARD ") == "chalkboard"
    assert uci.product_noun("DECORATIVE WICKER HEART LARGE") == "heart"
    assert uci.product_noun("") == uci.OTHER_NOUN
    assert uci.product_line("85123A") == "line-851"


@pytest.mark.skipif(not UCI_SAMPLE.is_file(), reason="the UCI Online Retail sample is not here")
def test_uci_sample_converts_and_imports_with_the_expected_counts(tmp_path):
    # Expected figures from an independent pandas pass over the source.
    source = pd.read_csv(UCI_SAMPLE, dtype={"InvoiceNo": str, "StockCode": str}, index_col=0)
    rest = pd.Series(True, index=source.index)
    expected_skips = {}
    for reason, failing in [
        ("cancellation", source.InvoiceNo.str.startswith("C")),
        ("no_customer", source.CustomerID.isna()),
        ("not_a_product", ~source.StockCode.str.match(r"^\d{5}")),
        ("quantity_not_positive", source.Quantity <= 0),
        ("price_not_positive", source.UnitPrice <= 0),
    ]:
        skipped = rest & failing
        if skipped.any():
            expected_skips[reason] = int(skipped.sum())
        rest &= ~failing
    kept = source[rest]
    days = pd.to_datetime(kept.InvoiceDate).dt.date

    out = tmp_path / "uci"
    counts = uci.convert(UCI_SAMPLE, out)
    assert counts["rows_read"] == len(source)
    assert counts["events"] == len(kept)
    assert counts["skipped"] == expected_skips
    assert counts["members"] == kept.CustomerID.nunique()
    assert counts["items"] == kept.StockCode.nunique()
    assert counts["repeated_purchases"] == kept.duplicated(
        ["CustomerID", "StockCode", "InvoiceDate"]).sum()
    assert len(counts["divisions"]) >= 4 and sum(counts["divisions"].values()) == counts["items"]

    with open(out / "events.csv", newline="") as handle:
        events = list(csv.DictReader(handle))
    assert {e["event_id"] for e in events} == {f"{i}-{n}" for n, i in kept.InvoiceNo.items()}
    assert {e["event_type"] for e in events} == {"purchase"}
    items = pd.read_csv(out / "items.csv", dtype={"item_id": str}).set_index("item_id")
    medians = kept.groupby("StockCode").UnitPrice.median()
    assert (items.list_price - medians.reindex(items.index)).abs().max() < 1e-9
    assert (items.brand == "line-" + items.index.str[:3]).all()
    assert (items.department == items.division).all() and (items["class"] == items.subclass).all()

    report = importer.import_csv(out / "events.csv", out / "items.csv", str(tmp_path / "lake"))
    assert report["files"]["events"] == {**report["files"]["events"], "read": len(kept),
                                         "kept": len(kept), "bad": 0}
    assert report["repeated_actions"] == counts["repeated_purchases"]
    assert report["members"] == kept.CustomerID.nunique()
    assert report["items"] == kept.StockCode.nunique()
    assert len(report["divisions"]) == len(counts["divisions"])
    assert report["first_event_date"] == min(days).isoformat()
    assert report["model_date"] == (max(days) + timedelta(days=1)).isoformat()
    written = _partitions(tmp_path / "lake", "events")
    assert list(written) == _dates(min(days), max(days))
    per_day = {d: pq.read_table(f / PART_FILE).num_rows for d, f in written.items()}
    assert per_day == {d: int((days == d).sum()) for d in written}
