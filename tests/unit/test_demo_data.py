"""The demo-data generator honours the lake contract and makes a believable flash-sale world."""
from __future__ import annotations

import json
import logging
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flashfeed.demo import generator as demo_data

TZ = "America/New_York"
END = date(2026, 6, 15)
DAYS = 10
MEMBERS = 300
SEED = 11
LAUNCH_TIMES = {"11:00", "15:00", "20:00"}

UTC = pa.timestamp("us", tz="UTC")
EXPECTED_SCHEMAS = {   # written out here, not imported: the test pins the contract
    "events": pa.schema([("event_id", pa.string()), ("member_id", pa.string()),
                         ("style_id", pa.string()), ("event_type", pa.string()),
                         ("occurred_at", UTC), ("price", pa.float64())]),
    "returns": pa.schema([("member_id", pa.string()), ("style_id", pa.string()),
                          ("kind", pa.string()), ("occurred_at", UTC)]),
    "catalog": pa.schema([("style_id", pa.string()), ("brand", pa.string()),
                          ("division", pa.string()), ("department", pa.string()),
                          ("class", pa.string()), ("subclass", pa.string()),
                          ("list_price", pa.float64()), ("first_seen_date", pa.date32())]),
    "sale_calendar": pa.schema([("style_id", pa.string()), ("sale_id", pa.string()),
                                ("starts_at", UTC), ("ends_at", UTC),
                                ("qty_on_hand", pa.int64())]),
}
EVENT_TYPES = {"pdp_view", "add_to_cart", "still_want_it", "purchase"}


# ---------------------------------------------------------------------------------------------
def _partitions(root: Path, dataset: str) -> dict[date, Path]:
    folders = sorted((root / "raw" / dataset).glob("dt=*"))
    return {date.fromisoformat(f.name[3:]): f for f in folders}


def _read(folder: Path) -> pd.DataFrame:
    return pq.read_table(folder / demo_data.PART_FILE).to_pandas()


def _read_all(root: Path, dataset: str) -> pd.DataFrame:
    frames = [_read(f).assign(dt=d) for d, f in _partitions(root, dataset).items()]
    return pd.concat(frames, ignore_index=True)


def _history(end: date, days: int) -> list[date]:
    return [end - timedelta(days=k) for k in range(days, 0, -1)]


@pytest.fixture(scope="module")
def lake(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("lake")
    summary = demo_data.generate(str(root), members=MEMBERS, days=DAYS, end_date=END, seed=SEED)
    return root, summary


@pytest.fixture(scope="module")
def events(lake) -> pd.DataFrame:
    return _read_all(lake[0], "events")


@pytest.fixture(scope="module")
def returns(lake) -> pd.DataFrame:
    return _read_all(lake[0], "returns")


@pytest.fixture(scope="module")
def catalog(lake) -> pd.DataFrame:
    return _read(_partitions(lake[0], "catalog")[END])


@pytest.fixture(scope="module")
def sale_calendar(lake) -> pd.DataFrame:
    """The last snapshot: every sale of the history, with today's stock."""
    cal = _read(_partitions(lake[0], "sale_calendar")[END])
    cal["local_start"] = cal.starts_at.dt.tz_convert(TZ)
    cal["launch_day"] = cal.local_start.dt.date
    return cal


# --- contract: layout, schemas, summary ----------------------------------------------------
def test_every_dataset_has_exactly_the_contracted_partitions(lake):
    root, _ = lake
    history = _history(END, DAYS)
    for dataset in ("events", "returns"):
        assert list(_partitions(root, dataset)) == history, dataset
    for dataset in ("catalog", "sale_calendar"):
        assert list(_partitions(root, dataset)) == history + [END], dataset


def test_every_partition_is_complete_and_nothing_is_left_half_written(lake):
    root, _ = lake
    for dataset in EXPECTED_SCHEMAS:
        for folder in _partitions(root, dataset).values():
            success = folder / "_SUCCESS"
            assert success.is_file() and success.stat().st_size == 0, folder
            assert sorted(p.name for p in folder.iterdir()) == ["_SUCCESS", demo_data.PART_FILE]
            # _SUCCESS is written last
            assert success.stat().st_mtime_ns >= (folder / demo_data.PART_FILE).stat().st_mtime_ns
        hidden = [p.name for p in (root / "raw" / dataset).iterdir() if p.name.startswith(".")]
        assert hidden == [], f"staging folders left behind in {dataset}: {hidden}"


@pytest.mark.parametrize("dataset", sorted(EXPECTED_SCHEMAS))
def test_schema_matches_the_contract_exactly(lake, dataset):
    root, _ = lake
    for folder in _partitions(root, dataset).values():
        schema = pq.read_schema(folder / demo_data.PART_FILE)
        assert schema.remove_metadata().equals(EXPECTED_SCHEMAS[dataset]), (folder, schema)


def test_summary_counts_match_the_data_and_are_stored_with_the_parameters(lake, events, returns):
    root, summary = lake
    assert summary["members"] == MEMBERS and summary["days"] == DAYS
    assert summary["rows"]["events"] == len(events)
    assert summary["rows"]["returns"] == len(returns)
    snapshot_rows = sum(len(_read(f)) for f in _partitions(root, "catalog").values())
    assert summary["rows"]["catalog"] == snapshot_rows
    assert summary["event_types"] == events.event_type.value_counts().to_dict()
    assert summary["styles"] >= events.style_id.nunique()
    stored = json.loads((root / "raw" / "_generator.json").read_text())
    assert stored == summary
    assert stored["parameters"] == {"generator_version": demo_data.GENERATOR_VERSION,
                                    "members": MEMBERS, "days": DAYS,
                                    "end_date": END.isoformat(), "seed": SEED}


# --- events and returns --------------------------------------------------------------------
def test_events_fall_on_their_partition_date_and_use_known_types(events):
    assert (events.occurred_at.dt.date == events.dt).all()
    assert set(events.event_type) == EVENT_TYPES
    assert events.event_id.is_unique
    assert events.notna().all().all()
    assert events.member_id.str.fullmatch(r"m-\d{6}").all()
    assert events.style_id.str.fullmatch(r"s-\d{6,}").all()


def test_purchases_are_priced_near_the_sale_price(events, catalog):
    purchases = events[events.event_type == "purchase"].merge(catalog, on="style_id")
    assert len(purchases) > 100
    assert (purchases.price > 0).all()
    # flash-sale discounts (30-70 % off list), never above list price
    share_of_list = purchases.price / purchases.list_price
    assert share_of_list.between(0.2, 0.8).all(), share_of_list.describe()
    assert 0.4 < share_of_list.median() < 0.6
    # paid near the sale price shown on the product page (the odd coupon at most 20 % off)
    views = events[events.event_type == "pdp_view"]
    assert (views.price > 0).all()
    shown = views.groupby(["member_id", "style_id", "dt"]).price.agg(["min", "max"])
    paid = purchases.join(shown, on=["member_id", "style_id", "dt"], how="inner")
    assert len(paid) > 0.9 * len(purchases), "a purchase follows a view of the product"
    assert (paid["min"] == paid["max"]).all(), "one sale price per sale"
    ratio = paid.price / paid["max"]
    assert ratio.between(0.79, 1.0).all() and (ratio == 1.0).mean() > 0.7


def test_funnel_narrows_from_views_to_purchases(events):
    counts = events.event_type.value_counts()
    assert counts["pdp_view"] > 5 * counts["add_to_cart"] > 0
    assert counts["add_to_cart"] > counts["purchase"] > 0
    assert counts["still_want_it"] > 0


def test_every_event_is_on_a_style_on_sale_at_that_instant(events, sale_calendar):
    joined = events.reset_index().merge(sale_calendar, on="style_id")
    live = joined[(joined.starts_at <= joined.occurred_at) & (joined.occurred_at < joined.ends_at)]
    assert live["index"].nunique() == len(events)
    assert not live["index"].duplicated().any(), "a style is in at most one live sale"


def test_still_want_it_only_on_sold_out_styles(events, sale_calendar):
    wanted = events[events.event_type == "still_want_it"].merge(sale_calendar, on="style_id")
    live = (wanted.starts_at <= wanted.occurred_at) & (wanted.occurred_at < wanted.ends_at)
    wanted = wanted[live]
    assert len(wanted) > 0
    # stock only goes down, so a style wanted while sold out is still at 0 in the last snapshot
    assert (wanted.qty_on_hand == 0).all()


def test_returns_follow_earlier_purchases(returns, events):
    assert len(returns) > 0
    assert set(returns.kind) <= {"return", "cancel"}
    assert (returns.occurred_at.dt.date == returns.dt).all()
    purchases = events[events.event_type == "purchase"]
    joined = returns.reset_index().merge(purchases, on=["member_id", "style_id"],
                                         suffixes=("", "_purchase"))
    earlier = joined[joined.occurred_at_purchase < joined.occurred_at]
    assert earlier["index"].nunique() == len(returns)
    assert len(returns) < 0.1 * len(purchases)


# --- the sale calendar ------------------------------------------------------------------------
def test_launches_start_at_the_local_launch_times(lake):
    root, _ = lake
    for folder in _partitions(root, "sale_calendar").values():
        starts = _read(folder).starts_at.dt.tz_convert(TZ)
        assert set(starts.dt.strftime("%H:%M")) == LAUNCH_TIMES, folder


def test_launch_times_stay_local_across_the_dst_change(tmp_path):
    end = date(2026, 11, 4)          # history spans Sunday 2026-11-01, when EDT becomes EST
    demo_data.generate(str(tmp_path), members=80, days=6, end_date=end, seed=3)
    cal = _read(_partitions(tmp_path, "sale_calendar")[end])
    local = cal.starts_at.dt.tz_convert(TZ)
    assert set(local.dt.strftime("%H:%M")) == LAUNCH_TIMES
    eleven = cal[local.dt.hour == 11]
    by_day = eleven.groupby(local[local.dt.hour == 11].dt.date).starts_at.first().dt.hour
    assert by_day[date(2026, 10, 31)] == 15      # 11:00 EDT = 15:00 UTC
    assert by_day[date(2026, 11, 2)] == 16       # 11:00 EST = 16:00 UTC
    for dt, folder in _partitions(tmp_path, "events").items():
        assert (_read(folder).occurred_at.dt.date == dt).all()


def test_most_sales_last_72_hours(sale_calendar):
    hours = (sale_calendar.ends_at - sale_calendar.starts_at).dt.total_seconds() / 3600
    per_sale = hours.groupby(sale_calendar.sale_id).agg(["min", "max"])
    assert (per_sale["min"] == per_sale["max"]).all(), "one window per sale"
    assert (per_sale["min"] == 72).mean() > 0.6
    assert set(per_sale["min"]) <= {48.0, 72.0, 96.0}


def test_a_style_is_never_in_two_sales_at_once(sale_calendar):
    rows = sale_calendar.sort_values(["style_id", "starts_at"])
    same_style = rows.style_id.eq(rows.style_id.shift())
    assert (rows.starts_at[same_style] >= rows.ends_at.shift()[same_style]).all()


def test_daily_turnover_of_live_styles_is_between_20_and_40_percent(sale_calendar):
    turnovers, previous = [], None
    for day in _history(END, DAYS):
        instant = pd.Timestamp(f"{day} 21:00", tz=TZ)       # after the day's last launch
        live = set(sale_calendar.style_id[(sale_calendar.starts_at <= instant)
                                          & (sale_calendar.ends_at > instant)])
        assert len(live) > 200
        if previous is not None:
            turnovers.append(len(live - previous) / len(live))
        previous = live
    assert 0.2 <= np.mean(turnovers) <= 0.4, turnovers


def test_a_large_share_of_launched_styles_are_never_seen_before(sale_calendar, catalog):
    rows = sale_calendar.merge(catalog[["style_id", "first_seen_date"]], on="style_id")
    first_sale = rows.groupby("style_id").starts_at.transform("min") == rows.starts_at
    rows["new"] = first_sale & (rows.first_seen_date == rows.launch_day)
    in_history = rows[rows.launch_day.between(END - timedelta(days=DAYS), END)]
    share = in_history.groupby("launch_day").new.mean()
    assert 0.25 <= share.mean() <= 0.5, share
    assert (~rows.new).any(), "some styles come back in a new sale"


def test_snapshots_cover_the_next_local_day(lake):
    root, _ = lake
    for day, folder in _partitions(root, "sale_calendar").items():
        launch_days = set(_read(folder).starts_at.dt.tz_convert(TZ).dt.date)
        assert max(launch_days) == day + timedelta(days=1), day
        first_seen = _read(_partitions(root, "catalog")[day]).first_seen_date
        assert first_seen.max() == day + timedelta(days=1), day
    # the last day's launches and tomorrow's 11:00 and 15:00 launches are all there
    cal = _read(_partitions(root, "sale_calendar")[END])
    local = cal.starts_at.dt.tz_convert(TZ)
    slots = set(zip(local.dt.date, local.dt.strftime("%H:%M")))
    for day in (END, END + timedelta(days=1)):
        assert {(day, t) for t in LAUNCH_TIMES} <= slots


def test_stock_only_goes_down_and_some_is_nearly_gone(lake, sale_calendar):
    root, _ = lake
    snapshots = [_read(f).set_index(["sale_id", "style_id"]).qty_on_hand
                 for f in _partitions(root, "sale_calendar").values()]
    for before, after in zip(snapshots, snapshots[1:]):
        common = before.index.intersection(after.index)
        assert len(common) == len(before), "snapshots only grow"
        assert (after[common] <= before[common]).all()
    instant = pd.Timestamp(f"{END} 12:00", tz=TZ)
    live = sale_calendar[(sale_calendar.starts_at <= instant) & (sale_calendar.ends_at > instant)]
    low = (live.qty_on_hand < 3).mean()
    assert 0.02 < low < 0.5, low
    assert (sale_calendar.qty_on_hand >= 0).all()


# --- catalog --------------------------------------------------------------------------------------
def test_catalog_covers_every_style_in_calendar_events_and_returns(lake, events, returns):
    root, _ = lake
    catalogs = {d: set(_read(f).style_id) for d, f in _partitions(root, "catalog").items()}
    for day, folder in _partitions(root, "sale_calendar").items():
        assert set(_read(folder).style_id) <= catalogs[day], day
    for day, styles in events.groupby("dt").style_id:
        assert set(styles) <= catalogs[day], day
    assert set(returns.style_id) <= catalogs[END]


def test_catalog_is_a_five_division_hierarchy_with_many_brands(catalog):
    assert catalog.style_id.is_unique
    assert set(catalog.division) == {"women", "men", "kids", "home", "unisex"}
    # class and subclass names are unique across the tree: each has exactly one parent path
    parents = catalog.groupby("subclass")[["class", "department", "division"]].nunique()
    assert (parents == 1).all().all()
    assert (catalog.groupby("class")[["department", "division"]].nunique() == 1).all().all()
    assert catalog.brand.nunique() >= 100
    assert catalog.division.value_counts().idxmax() == "women"
    assert (catalog.list_price > 0).all()
    # brand tiers and subclasses spread prices: expensive classes cost more than cheap ones
    by_class = catalog.groupby("class").list_price.median()
    assert by_class["Watches"] > 3 * by_class["Girls' Clothing"]
    assert {"Dresses", "Day Dresses", "Clothing"} <= set(catalog["class"]) | set(
        catalog.subclass) | set(catalog.department)


# --- members --------------------------------------------------------------------------------------
def test_primary_division_mix_is_mostly_women(events, catalog):
    joined = events.merge(catalog[["style_id", "division"]], on="style_id")
    per_member = joined.groupby(["member_id", "division"]).size().unstack(fill_value=0)
    primary = per_member.idxmax(axis=1).value_counts(normalize=True)
    assert primary.idxmax() == "women" and 0.45 < primary["women"] < 0.8, primary
    assert len(primary) == 5
    # some activity outside the primary division
    outside = 1 - per_member.max(axis=1) / per_member.sum(axis=1)
    assert 0.05 < outside.mean() < 0.5


def test_members_are_active_across_days_and_many_buy(events):
    members = events.groupby("member_id")
    assert members.ngroups > 0.8 * MEMBERS      # some join late or are barely active
    assert members.dt.nunique().median() >= 3
    buyers = events[events.event_type == "purchase"].member_id.nunique()
    assert buyers > 0.25 * MEMBERS             # in 10 days; over 30 days more than half buy
    # power-law activity: the busiest 10 % of members make a large share of the events
    sizes = members.size().sort_values(ascending=False)
    assert sizes.head(len(sizes) // 10).sum() > 0.25 * sizes.sum()


def test_members_keep_coming_back_to_their_own_subclass_brands(events, catalog):
    """Collaborative filtering needs taste that persists: what a member looked at early
    predicts what they look at later far better than a peer's early activity does."""
    joined = events.merge(catalog[["style_id", "subclass", "brand", "division"]], on="style_id")
    joined["item"] = joined.subclass + " " + joined.brand
    primary = joined.groupby(["member_id", "division"]).size().unstack(fill_value=0).idxmax(axis=1)
    middle = END - timedelta(days=DAYS // 2)
    early, late = joined[joined.dt < middle], joined[joined.dt >= middle]
    counts = early.groupby(["member_id", "item"]).size().rename("n").reset_index()
    top5 = (counts.sort_values(["member_id", "n"], ascending=[True, False])
            .groupby("member_id").head(5).groupby("member_id").item.apply(set))
    late_items = late.groupby("member_id").item.apply(list)
    members = sorted(set(top5.index) & set(late_items.index))
    assert len(members) > 100

    def hit_rate(member: str, favourites_of: str) -> float:
        return float(np.mean([item in top5[favourites_of] for item in late_items[member]]))

    rng = np.random.default_rng(0)
    own, peer = [], []
    for member in members:
        peers = [p for p in members if p != member and primary[p] == primary[member]]
        own.append(hit_rate(member, member))
        peer.append(np.mean([hit_rate(member, p) for p in rng.choice(peers, 5, replace=False)]))
    assert np.mean(own) > np.mean(peer) + 0.1, (np.mean(own), np.mean(peer))


# --- determinism and idempotency ----------------------------------------------------------------
def _tables(root: Path) -> dict[str, pd.DataFrame]:
    return {f"{ds}/{d}": _read(f)
            for ds in EXPECTED_SCHEMAS for d, f in _partitions(root, ds).items()}


def test_same_seed_and_parameters_give_identical_data(tmp_path):
    params = dict(members=120, days=4, end_date=date(2026, 3, 10), seed=5)
    first = demo_data.generate(str(tmp_path / "a"), **params)
    second = demo_data.generate(str(tmp_path / "b"), **params)
    assert first == second
    a, b = _tables(tmp_path / "a"), _tables(tmp_path / "b")
    assert a.keys() == b.keys() and len(a) == 4 * 2 + 5 * 2
    for key in a:
        pd.testing.assert_frame_equal(a[key], b[key], obj=key)
    other = _tables(_generate(tmp_path / "c", **{**params, "seed": 6}))
    assert not other["events/2026-03-09"].equals(a["events/2026-03-09"])


def _generate(root: Path, **params) -> Path:
    demo_data.generate(str(root), **params)
    return root


def test_second_call_with_same_parameters_does_nothing(tmp_path, caplog):
    params = dict(members=60, days=3, end_date=date(2026, 3, 10), seed=5)
    summary = demo_data.generate(str(tmp_path), **params)
    files = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    with caplog.at_level(logging.INFO, logger="flashfeed.demo.generator"):
        again = demo_data.generate(str(tmp_path), **params)
    assert again == summary
    assert "already generated" in caplog.text
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()} == files


def test_missing_marker_or_new_parameters_rewrite_the_lake(tmp_path):
    params = dict(members=60, days=3, end_date=date(2026, 3, 10), seed=5)
    demo_data.generate(str(tmp_path), **params)
    before = _tables(tmp_path)
    # an incomplete partition triggers a full rewrite that yields the same data
    (tmp_path / "raw/events/dt=2026-03-08/_SUCCESS").unlink()
    demo_data.generate(str(tmp_path), **params)
    assert (tmp_path / "raw/events/dt=2026-03-08/_SUCCESS").exists()
    after = _tables(tmp_path)
    for key in before:
        pd.testing.assert_frame_equal(before[key], after[key], obj=key)
    # fewer days: the partitions the old run owned and the new one does not are removed
    demo_data.generate(str(tmp_path), **{**params, "days": 2})
    assert list(_partitions(tmp_path, "events")) == _history(params["end_date"], 2)
    assert list(_partitions(tmp_path, "catalog")) == _history(params["end_date"], 2) + [
        params["end_date"]]
    stored = json.loads((tmp_path / "raw/_generator.json").read_text())
    assert stored["parameters"]["days"] == 2


def test_cli_writes_the_lake(tmp_path):
    code = demo_data.main(["--lake", str(tmp_path), "--members", "40", "--days", "2",
                           "--end-date", "2026-03-10", "--seed", "1"])
    assert code == 0
    stored = json.loads((tmp_path / "raw/_generator.json").read_text())
    assert stored["parameters"]["members"] == 40
    assert list(_partitions(tmp_path, "events")) == [date(2026, 3, 8), date(2026, 3, 9)]


def test_rejects_remote_lakes_and_bad_sizes(tmp_path):
    with pytest.raises(ValueError):
        demo_data.generate("s3a://bucket/lake", members=10, days=1, end_date=END)
    with pytest.raises(ValueError):
        demo_data.generate(str(tmp_path), members=0, days=1, end_date=END)
