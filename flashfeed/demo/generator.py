"""Deterministic demo data: a synthetic flash-sale retailer written into the raw lake.

Run it as ``python -m flashfeed.demo.generator --lake DIR --members N --days N --end-date
YYYY-MM-DD --seed N`` or call :func:`generate`. Same seed and parameters give the same
data (rows and values; Parquet bytes may differ between library versions).

The world (all of it invented, modelled on the reference retailer's published facts):

* **Hierarchy** — five divisions (women, men, kids, home, unisex) > departments > classes >
  subclasses (:data:`TAXONOMY`). Class and subclass names are unique across the whole tree,
  so ``subclass + brand`` alone identifies a subclass-brand.
* **Brands** — a few hundred invented names, each in a price tier (budget/mid/premium/
  luxury), a home division and a handful of subclasses (mostly in the home division).
  Popularity inside a division is Zipf-like.
* **Styles** (products) — list price lognormal around the class's base price times the
  brand tier's multiplier. A *back catalogue* of styles first sold before the history
  starts can come back in new sales.
* **Sales** (boutiques) — one brand each, launched at the configured launch times
  (11:00, 15:00, 20:00 America/New_York, via :mod:`flashfeed.core.calendar`, DST-correct),
  mostly lasting 72 hours; the 11:00 launch is the big one. Every day about a third of
  the live styles turn over, and about 35 % of the styles going live are new (first sale).
  A style is in at most one live sale at a time and rests a few days before returning.
* **Members** — a primary division (about 60 % women), a price tier, a Pareto activity
  level, a "taste" (a cluster of subclass-brands shared with other members of the same
  division and tier, which gives collaborative filtering real signal) and a few favourite
  subclass-brands drawn mostly from that taste and their primary division. A share of
  members joins during the history (brand-new members with little data).
* **Events** — sessions follow a local-time traffic curve peaking at the launches. Every
  view (``pdp_view``) is of a style on sale at that instant, either from a favourite
  subclass-brand or browsed by popularity; carts are a fraction of views and purchases a
  fraction of carts, both likelier when the price suits the member. Stock is finite: a
  purchase attempt on a sold-out style and some views of sold-out styles become
  ``still_want_it``. A few percent of purchases are returned or cancelled later.

Lake layout (DESIGN.md section 5), one Parquet file plus ``_SUCCESS`` per partition:

* ``raw/events/dt=E`` and ``raw/returns/dt=E`` for every UTC date E in
  [end_date - days, end_date - 1], holding the rows whose ``occurred_at`` falls on E.
* ``raw/catalog/dt=D`` and ``raw/sale_calendar/dt=D`` for every D in
  [end_date - days, end_date]: full snapshots as known on D, i.e. every style / sale row
  whose first sale / start is on or before local day D + 1, so day D's launch windows are
  covered. ``qty_on_hand`` is the stock left at the snapshot instant, 00:00 UTC on D (the
  moment the previous UTC day's events are complete); sales not yet started show their
  full stock.
* ``raw/_generator.json``: the parameters and the summary returned by :func:`generate`.

Partitions are written into a hidden sibling folder (``.dt=….tmp``, ignored by Spark and
pyarrow dataset discovery) with ``_SUCCESS`` last and then renamed into place, so a reader
never sees half a partition. The generator writes local folders only.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from flashfeed.core import calendar, lake
from flashfeed.core.config import lake_root as default_lake_root
from flashfeed.core.config import load_config
from flashfeed.core.schemas import EVENT_TYPES, RETURN_KINDS, SCHEMAS, UTC_TIMESTAMP

__all__ = ["generate", "main", "TAXONOMY", "EVENT_TYPES", "SCHEMAS"]

log = logging.getLogger("flashfeed.demo.generator")   # same name when run with -m

# --- bookkeeping -------------------------------------------------------------------------
GENERATOR_VERSION = 1            # bump when the generated data changes: invalidates old lakes
GENERATOR_FILE = "_generator.json"
PART_FILE = lake.PART_FILE
DEFAULT_MEMBERS = 2000
DEFAULT_DAYS = 30
DEFAULT_SEED = 7

# the lake contract's raw schemas: flashfeed/core/schemas.py

PDP_VIEW, ADD_TO_CART, STILL_WANT_IT, PURCHASE = range(len(EVENT_TYPES))
RETURN, CANCEL = range(len(RETURN_KINDS))

# --- independent random streams: SeedSequence(seed, spawn_key=(stream, date ordinal)) ---
STREAM_WORLD, STREAM_MEMBERS, STREAM_BACK_CATALOGUE, STREAM_SALES, STREAM_EVENTS = range(5)

# --- product hierarchy: division > department > class: (base price in $, subclasses) ----
TAXONOMY: dict[str, dict[str, dict[str, tuple[float, tuple[str, ...]]]]] = {
    "women": {
        "Clothing": {
            "Dresses": (95, ("Day Dresses", "Career Dresses", "Cocktail Dresses", "Maxi Dresses")),
            "Tops": (55, ("Blouses", "Knit Tops", "Sweaters", "Tunics")),
            "Bottoms": (65, ("Jeans", "Skirts", "Trousers", "Shorts")),
            "Outerwear": (160, ("Wool Coats", "Leather Jackets", "Puffer Jackets")),
            "Activewear": (45, ("Leggings", "Sports Bras", "Track Jackets")),
        },
        "Shoes": {
            "Heels": (110, ("Pumps", "Heeled Sandals", "Wedges")),
            "Flats": (80, ("Ballet Flats", "Loafers", "Flat Sandals")),
            "Boots": (150, ("Ankle Boots", "Tall Boots", "Rain Boots")),
            "Sneakers": (90, ("Fashion Sneakers", "Running Shoes")),
        },
        "Handbags & Accessories": {
            "Handbags": (180, ("Totes", "Crossbody Bags", "Satchels", "Clutches")),
            "Jewelry": (60, ("Necklaces", "Earrings", "Bracelets", "Rings")),
            "Scarves & Hats": (40, ("Scarves", "Sun Hats")),
        },
        "Beauty": {
            "Skincare": (45, ("Moisturizers", "Serums", "Cleansers")),
            "Fragrance": (65, ("Eau de Parfum", "Body Mists")),
        },
    },
    "men": {
        "Men's Clothing": {
            "Shirts": (60, ("Dress Shirts", "Casual Shirts", "Polos")),
            "Suits & Blazers": (350, ("Suits", "Blazers", "Dress Pants")),
            "Pants": (70, ("Chinos", "Men's Jeans", "Men's Shorts")),
            "Men's Outerwear": (180, ("Overcoats", "Bomber Jackets")),
            "Knitwear": (80, ("Crewnecks", "Cardigans", "Quarter Zips")),
        },
        "Men's Shoes": {
            "Dress Shoes": (160, ("Oxfords", "Men's Loafers", "Chelsea Boots")),
            "Men's Sneakers": (95, ("Court Sneakers", "Men's Running Shoes")),
        },
        "Men's Accessories": {
            "Watches": (300, ("Chronographs", "Dress Watches", "Dive Watches")),
            "Ties & Belts": (45, ("Ties", "Belts")),
            "Men's Bags": (150, ("Backpacks", "Briefcases", "Duffels")),
        },
    },
    "kids": {
        "Girls": {
            "Girls' Clothing": (30, ("Girls' Dresses", "Girls' Tops", "Girls' Leggings")),
            "Girls' Shoes": (40, ("Girls' Sneakers", "Girls' Sandals")),
        },
        "Boys": {
            "Boys' Clothing": (30, ("Boys' Tops", "Boys' Pants", "Boys' Outerwear")),
            "Boys' Shoes": (40, ("Boys' Sneakers", "Boys' Boots")),
        },
        "Baby": {
            "Baby Clothing": (25, ("Bodysuits", "Sleepers", "Baby Sets")),
            "Baby Gear": (180, ("Strollers", "Carriers", "Car Seats")),
        },
        "Toys": {
            "Toys & Games": (35, ("Building Sets", "Dolls", "Board Games")),
        },
    },
    "home": {
        "Bed & Bath": {
            "Bedding": (120, ("Sheet Sets", "Duvet Covers", "Quilts")),
            "Bath": (60, ("Bath Towels", "Bath Rugs", "Robes")),
        },
        "Kitchen": {
            "Cookware": (110, ("Pots & Pans", "Dutch Ovens", "Bakeware")),
            "Kitchen Gadgets": (50, ("Utensils", "Small Appliances", "Knives")),
            "Dining": (70, ("Dinnerware", "Glassware", "Flatware")),
        },
        "Furniture & Decor": {
            "Furniture": (350, ("Accent Chairs", "Side Tables", "Storage")),
            "Decor": (75, ("Wall Art", "Candles", "Vases", "Area Rugs")),
            "Lighting": (140, ("Table Lamps", "Floor Lamps")),
        },
    },
    "unisex": {
        "Travel": {
            "Luggage": (220, ("Carry-Ons", "Checked Luggage", "Weekenders")),
            "Travel Accessories": (30, ("Packing Cubes", "Travel Pillows")),
        },
        "Tech": {
            "Gadgets": (90, ("Headphones", "Speakers", "Chargers")),
            "Tech Accessories": (35, ("Phone Cases", "Laptop Sleeves")),
        },
        "Accessories": {
            "Sunglasses": (120, ("Aviators", "Wayfarers", "Sport Sunglasses")),
            "Wallets": (60, ("Bifold Wallets", "Card Cases")),
        },
    },
}
# Share of styles (sales) per division: an overwhelming majority of products target women.
DIVISION_PRODUCT_SHARE = {"women": 0.55, "men": 0.15, "kids": 0.10, "home": 0.12, "unisex": 0.08}
# Members' primary division: mostly women, a sizeable home-goods group.
MEMBER_PRIMARY_DIVISION_SHARE = {"women": 0.60, "men": 0.12, "kids": 0.08, "home": 0.13,
                                 "unisex": 0.07}

# --- brands --------------------------------------------------------------------------------
BRAND_COUNT = 300
BRAND_TIERS = ("budget", "mid", "premium", "luxury")
BRAND_TIER_SHARE = (0.30, 0.40, 0.20, 0.10)
TIER_PRICE_MULTIPLIER = (0.55, 1.0, 1.8, 3.5)     # times the class's base price
BRAND_POPULARITY_ZIPF = 1.1                        # within a division, weight = 1 / rank^s
BRAND_SUBCLASSES = (2, 6)                          # a brand sells in this many subclasses
BRAND_HOME_DIVISION_SHARE = 0.85                   # ... mostly in its home division
BRAND_NAME_STARTS = ("Gra", "Vel", "Mar", "Lu", "Sor", "Adri", "Bel", "Cor", "Del", "Fio",
                     "Kal", "Lor", "Nov", "Ros", "Sab", "Vin", "Zan", "Mir", "Pel", "Rin",
                     "Ela", "Oro", "Tes", "Cam", "Dor")
BRAND_NAME_ENDS = ("cia", "ora", "ella", "ano", "essa", "ina", "otti", "ville", "mont", "ra",
                   "enne", "eto", "via", "dora", "ley", "son")

# --- styles and sales ------------------------------------------------------------------------
STYLE_PRICE_SIGMA = 0.35           # lognormal spread of list prices inside a subclass and tier
MIN_LIST_PRICE = 9.99
STYLE_POPULARITY_SIGMA = 0.8       # lognormal spread of how much a style gets browsed
LIVE_STYLES_PER_MEMBER = 0.5       # styles on sale at once, per member ...
LIVE_STYLES_BOUNDS = (400, 60_000)  # ... within these bounds (60k: the reference's maximum)
BACK_CATALOGUE_PER_LIVE_STYLE = 3  # styles sold before the history, available to come back,
BACK_CATALOGUE_MIN_SALES = 2       # ... at least this many median sales' worth per brand
BACK_CATALOGUE_MAX_AGE_DAYS = 365
SALE_DURATION_HOURS = (48, 72, 96)
SALE_DURATION_SHARE = (0.10, 0.80, 0.10)  # "usually 72 hours"
FIRST_LAUNCH_SHARE = 0.5           # the first launch of the day brings half of the new styles
NEW_STYLE_SHARE = 0.35             # styles going live for the first time (cold start)
STYLE_REST_DAYS = 3                # a style comes back only this long after its last sale
TARGET_SALES_PER_DAY = 60          # "60+ boutiques each day" ...
SALE_SIZE_BOUNDS = (12, 300)       # ... so the median sale size is bounded by these
SALE_SIZE_SIGMA = 0.5
DAILY_VOLUME_SIGMA = 0.1           # day-to-day noise of the launched volume
SALE_DISCOUNT_RANGE = (0.30, 0.70)  # off list price, one discount per sale
DISCOUNT_STEP = 0.05
COUPON_DISCOUNTS = (0.0, 0.10, 0.20)  # purchases are paid near the sale price
COUPON_SHARE = (0.85, 0.10, 0.05)
STOCK_FLOOR = 10                   # mean initial stock of a style in a sale ...
STOCK_DEMAND_COVER = 2.0           # ... plus this many times its expected purchases
MEAN_CONVERSION = 0.03             # rough purchases per view, used to size stock

# --- members ---------------------------------------------------------------------------------
MEMBER_TIER_SHARE = (0.30, 0.40, 0.20, 0.10)
MEMBER_PRICE_SIGMA = 0.25          # lognormal spread of a member's preferred price level
ACTIVITY_PARETO_SHAPE = 2.0        # power-law activity: a few members do a lot
ACTIVITY_CAP = 40.0                # times the mean, so one member cannot dominate a day
SESSIONS_PER_MEMBER_DAY = 0.35
NEW_MEMBER_SHARE = 0.10            # members who join during the history
TASTES_PER_DIVISION = 6            # shared clusters of subclass-brands
TASTE_SIZE = 10
TIER_AFFINITY_DECAY = 1.0          # weight exp(-decay * tier gap) between member and brand
FAVOURITES_PER_MEMBER = (2, 8)
FAVOURITE_OUTSIDE_PRIMARY_SHARE = 0.15
FAVOURITE_FROM_TASTE_SHARE = 0.75  # of the favourites inside the primary division

# --- sessions and the funnel ---------------------------------------------------------------------
# Relative traffic per local hour (America/New_York), peaking at the 11/15/20 launches.
LOCAL_HOURLY_TRAFFIC = (1.0, 0.6, 0.4, 0.3, 0.3, 0.4, 0.8, 1.5, 2.0, 2.5, 3.0, 6.0,
                        5.0, 4.0, 3.5, 5.0, 4.0, 3.5, 4.0, 4.5, 7.0, 6.0, 4.0, 2.0)
VIEWS_PER_SESSION = 5              # mean of a geometric distribution
VIEW_GAP_SECONDS = (20, 120)       # time between two product views in a session
FAVOURITE_VIEW_SHARE = 0.6         # views that go to a favourite subclass-brand on sale
BROWSE_PRIMARY_SHARE = 0.7         # other views: in the primary division or anywhere
CART_RATE = 0.14                   # add-to-cart per in-stock view, at a perfect price match
PURCHASE_RATE = 0.50               # purchase per cart, at a perfect price match
CART_PRICE_WEIGHT = 0.6            # how much the price match matters for a cart ...
PURCHASE_PRICE_WEIGHT = 0.8        # ... and for a purchase
PRICE_MATCH_SIGMA = 0.5            # log-price distance at which the match falls to 0.61
CART_DELAY_SECONDS = 90            # mean delays (exponential) between funnel steps
PURCHASE_DELAY_SECONDS = 300
STILL_WANT_IT_DELAY_SECONDS = 30
STILL_WANT_IT_SHARE = 0.2          # views of a sold-out style that click "still want it"
RETURN_SHARE = 0.05
CANCEL_SHARE = 0.02
RETURN_DELAY_DAYS = (3, 21)
CANCEL_DELAY_HOURS = (0.1, 24)

MICROS_PER_SECOND = 1_000_000
MICROS_PER_HOUR = 3600 * MICROS_PER_SECOND
MICROS_PER_DAY = 24 * MICROS_PER_HOUR
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


# =============================================================================================
# Small helpers
# =============================================================================================
def _rng(seed: int, stream: int, key: int = 0) -> np.random.Generator:
    """An independent generator per purpose (and per day), whatever else was drawn."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(stream, key)))


def _micros(instant: datetime) -> int:
    return (instant - EPOCH) // timedelta(microseconds=1)


def _day_start(day: date) -> int:
    return _micros(datetime(day.year, day.month, day.day, tzinfo=timezone.utc))


def _price_99(prices: np.ndarray) -> np.ndarray:
    """Retail price points: whole dollars minus a cent (x.99)."""
    return np.floor(prices) + 0.99


def _shares(by_division: dict[str, float], divisions: list[str]) -> np.ndarray:
    weights = np.array([by_division[d] for d in divisions], dtype=float)
    return weights / weights.sum()


def _weighted_pick(rng: np.random.Generator, cumulative: np.ndarray, size: int) -> np.ndarray:
    """Indices drawn with probability proportional to the weights behind `cumulative`."""
    return _weighted_pick_u(cumulative, rng.random(size))


def _padded_ids(prefix: str, count: int) -> pa.Array:
    width = max(6, len(str(max(count - 1, 0))))
    numbers = pa.array(np.arange(count, dtype=np.int64)).cast(pa.string())
    return pc.binary_join_element_wise(prefix, pc.utf8_lpad(numbers, width, "0"), "")


def _timestamps(micros: np.ndarray) -> pa.Array:
    return pa.array(micros.astype(np.int64), type=UTC_TIMESTAMP)


# =============================================================================================
# The static world: hierarchy, brands, subclass-brands, members
# =============================================================================================
@dataclass(frozen=True)
class Hierarchy:
    divisions: list[str]
    subclass: list[str]
    subclass_class: list[str]
    subclass_department: list[str]
    subclass_division: np.ndarray     # division index per subclass
    subclass_base_price: np.ndarray   # the class's base price


def build_hierarchy(divisions: list[str]) -> Hierarchy:
    missing = [d for d in divisions if d not in TAXONOMY]
    if missing:
        raise ValueError(f"configured divisions {missing} have no demo taxonomy; "
                         f"known: {sorted(TAXONOMY)}")
    rows = [(sub, cls, dept, d, price)
            for d, division in enumerate(divisions)
            for dept, classes in TAXONOMY[division].items()
            for cls, (price, subclasses) in classes.items()
            for sub in subclasses]
    subclass, classes, departments, division_index, price = map(list, zip(*rows))
    if len(set(subclass)) != len(subclass):
        raise ValueError("subclass names must be unique across the demo taxonomy")
    return Hierarchy(divisions, subclass, classes, departments,
                     np.array(division_index), np.array(price, dtype=float))


@dataclass(frozen=True)
class Brands:
    names: list[str]
    tier: np.ndarray            # index into BRAND_TIERS
    division: np.ndarray        # home division index
    sale_weight: np.ndarray     # probability of running a given sale (sums to 1)
    subclasses: list[np.ndarray]


def build_brands(rng: np.random.Generator, hierarchy: Hierarchy) -> Brands:
    names = sorted({s + e for s in BRAND_NAME_STARTS for e in BRAND_NAME_ENDS})
    names = [names[i] for i in rng.permutation(len(names))[:BRAND_COUNT]]
    n_div = len(hierarchy.divisions)
    tier = rng.choice(len(BRAND_TIERS), size=BRAND_COUNT, p=BRAND_TIER_SHARE)
    division = rng.choice(n_div, size=BRAND_COUNT,
                          p=_shares(DIVISION_PRODUCT_SHARE, hierarchy.divisions))
    division[:n_div] = np.arange(n_div)           # every division has at least one brand
    # Zipf popularity inside each division, scaled so divisions keep their product share.
    sale_weight = np.zeros(BRAND_COUNT)
    division_share = _shares(DIVISION_PRODUCT_SHARE, hierarchy.divisions)
    for d in range(n_div):
        members = np.flatnonzero(division == d)
        ranks = rng.permutation(len(members)) + 1
        weights = 1.0 / ranks ** BRAND_POPULARITY_ZIPF
        sale_weight[members] = division_share[d] * weights / weights.sum()
    subclasses = []
    for b in range(BRAND_COUNT):
        home = np.flatnonzero(hierarchy.subclass_division == division[b])
        away = np.flatnonzero(hierarchy.subclass_division != division[b])
        count = rng.integers(BRAND_SUBCLASSES[0], BRAND_SUBCLASSES[1] + 1)
        n_home = min(len(home), max(1, rng.binomial(count, BRAND_HOME_DIVISION_SHARE)))
        picked = rng.choice(home, size=n_home, replace=False)
        if count > n_home:
            picked = np.concatenate([picked, rng.choice(away, size=count - n_home, replace=False)])
        subclasses.append(np.sort(picked))
    return Brands(names, tier, division, sale_weight / sale_weight.sum(), subclasses)


@dataclass(frozen=True)
class SubclassBrands:
    """The item of collaborative filtering: one (subclass, brand) pair per row."""
    subclass: np.ndarray
    brand: np.ndarray
    division: np.ndarray
    weight: np.ndarray          # how often members take to it (brand popularity)
    key: np.ndarray             # brand * n_subclasses + subclass, sorted: lookup by searchsorted
    n_subclasses: int

    def index(self, subclass: np.ndarray, brand: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.key, brand * self.n_subclasses + subclass)


def build_subclass_brands(hierarchy: Hierarchy, brands: Brands) -> SubclassBrands:
    n_sub = len(hierarchy.subclass)
    brand = np.concatenate([np.full(len(s), b) for b, s in enumerate(brands.subclasses)])
    subclass = np.concatenate(brands.subclasses)
    key = brand * n_sub + subclass
    order = np.argsort(key)
    brand, subclass, key = brand[order], subclass[order], key[order]
    per_brand = np.array([len(s) for s in brands.subclasses])
    weight = brands.sale_weight[brand] / per_brand[brand]
    return SubclassBrands(subclass, brand, hierarchy.subclass_division[subclass], weight, key,
                          n_sub)


@dataclass(frozen=True)
class Members:
    ids: pa.Array
    primary: np.ndarray           # primary division index
    tier: np.ndarray              # preferred price tier
    price_level: np.ndarray       # preferred price as a multiple of a class's base price
    daily_sessions: np.ndarray    # expected sessions per day (Pareto activity)
    joined_on: np.ndarray         # date ordinal from which the member is active
    favourites: np.ndarray        # (members, max favourites) subclass-brand indices
    favourite_count: np.ndarray

    def __len__(self) -> int:
        return len(self.primary)


def _tier_affinity(gap: np.ndarray) -> np.ndarray:
    return np.exp(-TIER_AFFINITY_DECAY * np.abs(gap))


def build_members(rng: np.random.Generator, count: int, hierarchy: Hierarchy,
                  brands: Brands, sbs: SubclassBrands, first_day: date, last_day: date) -> Members:
    n_div, n_tiers = len(hierarchy.divisions), len(BRAND_TIERS)
    primary = rng.choice(n_div, size=count,
                         p=_shares(MEMBER_PRIMARY_DIVISION_SHARE, hierarchy.divisions)
                         ).astype(np.int8)
    tier = rng.choice(n_tiers, size=count, p=MEMBER_TIER_SHARE).astype(np.int8)
    price_level = np.asarray(TIER_PRICE_MULTIPLIER)[tier] * rng.lognormal(0, MEMBER_PRICE_SIGMA,
                                                                          count)
    activity = rng.pareto(ACTIVITY_PARETO_SHAPE, count) + 1.0
    activity = np.minimum(activity / activity.mean(), ACTIVITY_CAP)
    joins = rng.random(count) < NEW_MEMBER_SHARE
    joined_on = np.where(
        joins, rng.integers(first_day.toordinal() + 1, max(last_day.toordinal(),
                                                           first_day.toordinal() + 1) + 1, count),
        0)

    # Cumulative subclass-brand weights per (division, member tier), for weighted picks.
    brand_tier = brands.tier[sbs.brand]
    pools = {}
    for d in range(n_div):
        in_division = np.flatnonzero(sbs.division == d)
        for t in range(n_tiers):
            weights = sbs.weight[in_division] * _tier_affinity(brand_tier[in_division] - t)
            pools[d, t] = (in_division, np.cumsum(weights))

    # Tastes: clusters of subclass-brands per division, each leaning to one price tier.
    taste_items = np.empty((n_div, TASTES_PER_DIVISION, TASTE_SIZE), dtype=np.int64)
    taste_tier = np.empty((n_div, TASTES_PER_DIVISION), dtype=np.int64)
    for d in range(n_div):
        for k in range(TASTES_PER_DIVISION):
            t = k % n_tiers
            items, cumulative = pools[d, t]
            weights = np.diff(cumulative, prepend=0.0)
            size = min(TASTE_SIZE, len(items))
            chosen = rng.choice(items, size=size, replace=False, p=weights / weights.sum())
            taste_items[d, k] = np.resize(chosen, TASTE_SIZE)
            taste_tier[d, k] = t
    taste = np.empty(count, dtype=np.int64)
    for d in range(n_div):
        for t in range(n_tiers):
            who = np.flatnonzero((primary == d) & (tier == t))
            weights = _tier_affinity(taste_tier[d] - t)
            taste[who] = rng.choice(TASTES_PER_DIVISION, size=len(who), p=weights / weights.sum())

    # Favourites: mostly from the member's taste, some elsewhere in the primary division,
    # a few in another division.
    # One slot per (member, possible favourite); narrow dtypes keep a million members small.
    max_fav = FAVOURITES_PER_MEMBER[1]
    favourite_count = rng.integers(FAVOURITES_PER_MEMBER[0], max_fav + 1, count)
    slot_member = np.repeat(np.arange(count, dtype=np.int32), max_fav)
    slot_primary = primary[slot_member]
    outside = rng.random(len(slot_member)) < FAVOURITE_OUTSIDE_PRIMARY_SHARE
    from_taste = ~outside & (rng.random(len(slot_member)) < FAVOURITE_FROM_TASTE_SHARE)
    slot_division = np.where(outside, _other_division(rng, slot_primary, hierarchy.divisions),
                             slot_primary)
    favourites = np.empty(len(slot_member), dtype=np.int32)
    taste_pick = rng.integers(0, TASTE_SIZE, len(slot_member), dtype=np.int16)
    chosen = np.flatnonzero(from_taste)
    favourites[chosen] = taste_items[slot_primary[chosen], taste[slot_member[chosen]],
                                     taste_pick[chosen]]
    del chosen, taste_pick, outside
    slot_tier = tier[slot_member]
    for (d, t), (items, cumulative) in pools.items():
        who = np.flatnonzero(~from_taste & (slot_division == d) & (slot_tier == t))
        favourites[who] = items[_weighted_pick(rng, cumulative, len(who))]
    return Members(
        ids=_padded_ids("m-", count), primary=primary, tier=tier, price_level=price_level,
        daily_sessions=SESSIONS_PER_MEMBER_DAY * activity, joined_on=joined_on,
        favourites=favourites.reshape(count, max_fav), favourite_count=favourite_count)


def _other_division(rng: np.random.Generator, primary: np.ndarray,
                    divisions: list[str]) -> np.ndarray:
    """A division other than `primary`, weighted by product share."""
    if len(divisions) == 1:
        return primary.copy()
    share = _shares(DIVISION_PRODUCT_SHARE, divisions)
    u = rng.random(len(primary))
    other = np.empty_like(primary)
    for d in range(len(divisions)):
        who = primary == d
        cumulative = np.cumsum(np.where(np.arange(len(divisions)) == d, 0.0, share))
        other[who] = _weighted_pick_u(cumulative, u[who])
    return other


def _weighted_pick_u(cumulative: np.ndarray, u: np.ndarray) -> np.ndarray:
    picks = np.searchsorted(cumulative, u * cumulative[-1], side="right")
    return np.minimum(picks, len(cumulative) - 1)


# =============================================================================================
# Sales plan: every sale (boutique) and style, decided up front (small next to events)
# =============================================================================================
@dataclass(frozen=True)
class Styles:
    brand: np.ndarray
    subclass: np.ndarray
    list_price: np.ndarray
    first_seen: np.ndarray      # date ordinal (local date of the first sale)
    popularity: np.ndarray

    def __len__(self) -> int:
        return len(self.brand)


@dataclass(frozen=True)
class SaleRows:
    """One row per style in a sale, in launch order."""
    sale: np.ndarray
    style: np.ndarray
    starts_at: np.ndarray       # UTC microseconds
    ends_at: np.ndarray
    launch_day: np.ndarray      # local date ordinal of the launch
    sale_price: np.ndarray
    initial_qty: np.ndarray
    sale_count: int

    def __len__(self) -> int:
        return len(self.style)


class _StyleBook:
    """Growing style table while sales are planned (numpy arrays with doubling capacity)."""

    FIELDS = ("brand", "subclass", "list_price", "first_seen", "popularity", "last_end")

    def __init__(self, capacity: int) -> None:
        self.size = 0
        self.data = {name: np.zeros(capacity, dtype=float if name in ("list_price", "popularity")
                                    else np.int64) for name in self.FIELDS}

    def add(self, **columns: np.ndarray) -> np.ndarray:
        count = len(columns["brand"])
        while self.size + count > len(self.data["brand"]):
            self.data = {k: np.concatenate([v, np.zeros_like(v)]) for k, v in self.data.items()}
        new = np.arange(self.size, self.size + count)
        for name, values in columns.items():
            self.data[name][new] = values
        self.size += count
        return new

    def freeze(self) -> Styles:
        d = {k: v[:self.size] for k, v in self.data.items()}
        return Styles(d["brand"], d["subclass"], d["list_price"], d["first_seen"], d["popularity"])


def _new_style_columns(rng: np.random.Generator, brand: int, count: int, first_seen: int,
                       hierarchy: Hierarchy, brands: Brands, last_end: int) -> dict:
    subclass = rng.choice(brands.subclasses[brand], size=count)
    base = hierarchy.subclass_base_price[subclass] * TIER_PRICE_MULTIPLIER[brands.tier[brand]]
    list_price = np.maximum(_price_99(base * rng.lognormal(0, STYLE_PRICE_SIGMA, count)),
                            MIN_LIST_PRICE)
    return dict(brand=np.full(count, brand), subclass=subclass, list_price=list_price,
                first_seen=np.full(count, first_seen),
                popularity=rng.lognormal(0, STYLE_POPULARITY_SIGMA, count),
                last_end=np.full(count, last_end))


def live_style_target(members: int) -> int:
    low, high = LIVE_STYLES_BOUNDS
    return int(np.clip(round(members * LIVE_STYLES_PER_MEMBER), low, high))


class _SalePlanner:
    """Plans sales launch by launch, deciding which styles come back and which are new."""

    def __init__(self, seed: int, members: int, hierarchy: Hierarchy, brands: Brands,
                 config: dict) -> None:
        self.seed, self.hierarchy, self.brands, self.config = seed, hierarchy, brands, config
        live_target = live_style_target(members)
        mean_sale_days = float(np.dot(SALE_DURATION_HOURS, SALE_DURATION_SHARE)) / 24
        self.launched_per_day = live_target / mean_sale_days
        self.live_target = live_target
        self.median_sale_size = float(np.clip(self.launched_per_day / TARGET_SALES_PER_DAY,
                                              *SALE_SIZE_BOUNDS))
        # Stock: enough that most styles last, scarce enough that popular ones sell out.
        views_per_live_style_day = (members * SESSIONS_PER_MEMBER_DAY * VIEWS_PER_SESSION
                                    / live_target)
        self.stock_mean = STOCK_FLOOR + (STOCK_DEMAND_COVER * views_per_live_style_day
                                         * MEAN_CONVERSION * mean_sale_days)
        self.hhmms = calendar.launch_hhmms(config)
        rest = (1 - FIRST_LAUNCH_SHARE) / max(len(self.hhmms) - 1, 1)
        self.launch_share = [FIRST_LAUNCH_SHARE if len(self.hhmms) > 1 else 1.0] \
            + [rest] * (len(self.hhmms) - 1)
        self.division_share = _shares(DIVISION_PRODUCT_SHARE, hierarchy.divisions)
        self.book = _StyleBook(capacity=live_target * (BACK_CATALOGUE_PER_LIVE_STYLE + 2))
        self.pools: list[list[int]] = [[] for _ in range(len(brands.names))]  # styles per brand
        self.rows: dict[str, list[np.ndarray]] = {
            k: [] for k in SaleRows.__dataclass_fields__ if k != "sale_count"}
        self.sale_count = 0

    def add_back_catalogue(self, first_launch_day: date) -> None:
        """Styles first sold before the history, resting, ready to come back."""
        rng = _rng(self.seed, STREAM_BACK_CATALOGUE)
        counts = np.maximum(
            np.round(self.brands.sale_weight * self.live_target * BACK_CATALOGUE_PER_LIVE_STYLE),
            round(BACK_CATALOGUE_MIN_SALES * self.median_sale_size)).astype(np.int64)
        oldest = first_launch_day.toordinal() - BACK_CATALOGUE_MAX_AGE_DAYS
        rested = _day_start(first_launch_day) - STYLE_REST_DAYS * MICROS_PER_DAY
        for brand, count in enumerate(counts):
            first_seen = np.sort(rng.integers(oldest, first_launch_day.toordinal() - 1, count))
            columns = _new_style_columns(rng, brand, count, 0, self.hierarchy, self.brands, rested)
            columns["first_seen"] = first_seen
            self.pools[brand].extend(self.book.add(**columns).tolist())

    def launch_day(self, day: date) -> None:
        """All of one local day's launches, each bringing its share of the day's volume."""
        rng = _rng(self.seed, STREAM_SALES, day.toordinal())
        volume = self.launched_per_day * rng.lognormal(0, DAILY_VOLUME_SIGMA)
        for hhmm, share in zip(self.hhmms, self.launch_share):
            starts_at = _micros(calendar.slot(day, hhmm, self.config).starts_at)
            quota = int(round(volume * share))
            while quota > 0:
                size = int(min(quota, max(1, round(
                    rng.lognormal(np.log(self.median_sale_size), SALE_SIZE_SIGMA)))))
                self.launch_sale(rng, day, starts_at, size)
                quota -= size

    def launch_sale(self, rng: np.random.Generator, day: date, starts_at: int, size: int) -> None:
        """One boutique: one brand, `size` styles, some back from earlier sales, some new."""
        division = rng.choice(len(self.division_share), p=self.division_share)
        in_division = np.flatnonzero(self.brands.division == division)
        weights = self.brands.sale_weight[in_division]
        brand = int(rng.choice(in_division, p=weights / weights.sum()))
        hours = int(rng.choice(SALE_DURATION_HOURS, p=SALE_DURATION_SHARE))
        ends_at = starts_at + hours * MICROS_PER_HOUR
        last_end = self.book.data["last_end"]
        pool = np.asarray(self.pools[brand], dtype=np.int64)
        rested = pool[last_end[pool] + STYLE_REST_DAYS * MICROS_PER_DAY <= starts_at]
        wanted_back = size - rng.binomial(size, NEW_STYLE_SHARE)
        back = rng.choice(rested, size=min(wanted_back, len(rested)), replace=False)
        new = self.book.add(**_new_style_columns(rng, brand, size - len(back), day.toordinal(),
                                                 self.hierarchy, self.brands, ends_at))
        self.pools[brand].extend(new.tolist())
        self.book.data["last_end"][back] = ends_at
        style = np.concatenate([back, new])
        discount = np.round(rng.uniform(*SALE_DISCOUNT_RANGE) / DISCOUNT_STEP) * DISCOUNT_STEP
        for name, values in (
                ("sale", np.full(size, self.sale_count)),
                ("style", style),
                ("starts_at", np.full(size, starts_at)),
                ("ends_at", np.full(size, ends_at)),
                ("launch_day", np.full(size, day.toordinal())),
                ("sale_price", _price_99(self.book.data["list_price"][style] * (1 - discount))),
                ("initial_qty", rng.geometric(1 / self.stock_mean, size).astype(np.int64))):
            self.rows[name].append(values)
        self.sale_count += 1

    def result(self) -> tuple[Styles, SaleRows]:
        rows = {k: np.concatenate(v) for k, v in self.rows.items()}
        return self.book.freeze(), SaleRows(**rows, sale_count=self.sale_count)


def plan_sales(seed: int, members: int, hierarchy: Hierarchy, brands: Brands,
               first_launch_day: date, last_launch_day: date, config: dict
               ) -> tuple[Styles, SaleRows]:
    """Every style and sale from `first_launch_day` to `last_launch_day` (local dates)."""
    planner = _SalePlanner(seed, members, hierarchy, brands, config)
    planner.add_back_catalogue(first_launch_day)
    day = first_launch_day
    while day <= last_launch_day:
        planner.launch_day(day)
        day += timedelta(days=1)
    return planner.result()


# =============================================================================================
# Events: one UTC day at a time
# =============================================================================================
@dataclass(frozen=True)
class World:
    hierarchy: Hierarchy
    brands: Brands
    sbs: SubclassBrands
    members: Members
    styles: Styles
    sales: SaleRows
    style_sb: np.ndarray          # subclass-brand per style
    style_division: np.ndarray
    style_price_level: np.ndarray  # list price as a multiple of its class's base price
    tz: ZoneInfo


@dataclass
class DayActivity:
    """Event and return columns of one UTC day (member and style as indices)."""
    member: np.ndarray
    style: np.ndarray
    event_type: np.ndarray
    occurred_at: np.ndarray
    price: np.ndarray


@dataclass
class Returns:
    member: np.ndarray
    style: np.ndarray
    kind: np.ndarray
    occurred_at: np.ndarray

    @staticmethod
    def concat(parts: list["Returns"]) -> "Returns":
        return Returns(*(np.concatenate([getattr(p, f) for p in parts]) if parts
                         else np.zeros(0, dtype=np.int64)
                         for f in ("member", "style", "kind", "occurred_at")))

    def select(self, mask: np.ndarray) -> "Returns":
        return Returns(self.member[mask], self.style[mask], self.kind[mask], self.occurred_at[mask])


def _utc_hour_weights(day: date, tz: ZoneInfo) -> np.ndarray:
    """Traffic per UTC hour of `day`, from the local-time curve (DST-correct)."""
    local_hours = [datetime(day.year, day.month, day.day, h, 30, tzinfo=timezone.utc)
                   .astimezone(tz).hour for h in range(24)]
    weights = np.asarray(LOCAL_HOURLY_TRAFFIC)[local_hours]
    return weights / weights.sum()


def _views(rng: np.random.Generator, world: World, day: date, day_start: int,
           day_end: int) -> tuple[np.ndarray, np.ndarray]:
    """(member, time) of every product view of the day, in sessions."""
    members = world.members
    active = members.joined_on <= day.toordinal()
    sessions = rng.poisson(members.daily_sessions * active)
    session_member = np.repeat(np.arange(len(members)), sessions)
    n_sessions = len(session_member)
    hour = rng.choice(24, size=n_sessions, p=_utc_hour_weights(day, world.tz))
    session_start = day_start + ((hour + rng.random(n_sessions)) * MICROS_PER_HOUR).astype(np.int64)
    per_session = rng.geometric(1 / VIEWS_PER_SESSION, n_sessions)
    gap = rng.uniform(*VIEW_GAP_SECONDS, n_sessions) * MICROS_PER_SECOND
    view_session = np.repeat(np.arange(n_sessions), per_session)
    step = np.arange(len(view_session)) - np.repeat(np.cumsum(per_session) - per_session,
                                                    per_session)
    time = session_start[view_session] + (step * gap[view_session]).astype(np.int64)
    inside = time < day_end
    return session_member[view_session][inside], time[inside]


def _pick_rows(rng: np.random.Generator, world: World, live: np.ndarray,
               member: np.ndarray) -> np.ndarray:
    """The sale row each view lands on: a favourite subclass-brand on sale, else browsing."""
    members, styles, sales = world.members, world.styles, world.sales
    n = len(member)
    live_style = sales.style[live]
    live_sb = world.style_sb[live_style]
    order = np.argsort(live_sb, kind="stable")
    sorted_sb = live_sb[order]
    # A random one of the member's favourites that has something on sale right now.
    wanted = members.favourites[member]                      # (views, max favourites)
    lo = np.searchsorted(sorted_sb, wanted, side="left")
    hi = np.searchsorted(sorted_sb, wanted, side="right")
    usable = (hi > lo) & (np.arange(wanted.shape[1]) < members.favourite_count[member][:, None])
    slot = np.argmax(usable * rng.random(wanted.shape), axis=1)
    favourite = (rng.random(n) < FAVOURITE_VIEW_SHARE) & usable.any(axis=1)
    lo, hi = lo[np.arange(n), slot], hi[np.arange(n), slot]
    pick = lo + (rng.random(n) * (hi - lo)).astype(np.int64)
    rows = np.empty(n, dtype=np.int64)
    rows[favourite] = live[order[pick[favourite]]]

    # Browsing: popular styles of the primary division, sometimes of another division.
    divisions = world.hierarchy.divisions
    stay = rng.random(n) < BROWSE_PRIMARY_SHARE
    division = np.where(stay, members.primary[member],
                        _other_division(rng, members.primary[member], divisions))
    live_division = world.style_division[live_style]
    for d in range(len(divisions)):
        who = np.flatnonzero(~favourite & (division == d))
        if len(who) == 0:
            continue
        candidates = live[live_division == d]
        if len(candidates) == 0:
            candidates = live
        cumulative = np.cumsum(styles.popularity[sales.style[candidates]])
        rows[who] = candidates[_weighted_pick(rng, cumulative, len(who))]
    return rows


def simulate_day(world: World, day: date, remaining: np.ndarray, seed: int
                 ) -> tuple[DayActivity, Returns]:
    """Events of UTC day `day`; consumes stock from `remaining` (sale rows) in place."""
    rng = _rng(seed, STREAM_EVENTS, day.toordinal())
    sales = world.sales
    day_start = _day_start(day)
    day_end = day_start + MICROS_PER_DAY
    view_member, view_time = _views(rng, world, day, day_start, day_end)

    # Between two consecutive sale starts/ends the set of live styles is constant.
    overlapping = np.flatnonzero((sales.starts_at < day_end) & (sales.ends_at > day_start))
    edges = np.concatenate([[day_start, day_end], sales.starts_at[overlapping],
                            sales.ends_at[overlapping]])
    edges = np.unique(edges[(edges >= day_start) & (edges <= day_end)])
    segment = np.searchsorted(edges, view_time, side="right") - 1

    parts: list[tuple[np.ndarray, ...]] = []
    returns: list[Returns] = []
    for s in range(len(edges) - 1):
        in_segment = segment == s
        live = overlapping[(sales.starts_at[overlapping] <= edges[s])
                           & (sales.ends_at[overlapping] >= edges[s + 1])]
        if not in_segment.any() or len(live) == 0:
            continue                      # nothing on sale: the views never happened
        member, time = view_member[in_segment], view_time[in_segment]
        row = _pick_rows(rng, world, live, member)
        segment_parts, segment_returns = _funnel(rng, world, member, time, row, remaining,
                                                 day_end)
        parts.extend(segment_parts)
        returns.append(segment_returns)

    if not parts:
        empty = np.zeros(0, dtype=np.int64)
        parts = [(empty, empty, empty, empty, np.zeros(0))]
    member, row, event_type, occurred_at, price = (np.concatenate(c) for c in zip(*parts))
    order = np.argsort(occurred_at, kind="stable")
    activity = DayActivity(member[order], sales.style[row[order]], event_type[order],
                           occurred_at[order], price[order])
    return activity, Returns.concat(returns)


def _funnel(rng: np.random.Generator, world: World, member: np.ndarray, view_time: np.ndarray,
            row: np.ndarray, remaining: np.ndarray, day_end: int
            ) -> tuple[list[tuple[np.ndarray, ...]], Returns]:
    """Views -> carts -> purchases (or still-want-it when sold out) for one segment."""
    sales, members = world.sales, world.members
    n = len(member)
    style = sales.style[row]
    shown = sales.sale_price[row]
    # Price match in log space: 1 at the member's level, falling off either side.
    gap = np.log(world.style_price_level[style] / members.price_level[member])
    match = np.exp(-0.5 * (gap / PRICE_MATCH_SIGMA) ** 2)
    deadline = np.minimum(sales.ends_at[row], day_end)   # the sale (or the day) ends
    sold_out = remaining[row] == 0
    draws = rng.random((3, n))
    want_it_time = view_time + (rng.exponential(STILL_WANT_IT_DELAY_SECONDS, n)
                                * MICROS_PER_SECOND).astype(np.int64)
    cart_time = view_time + (rng.exponential(CART_DELAY_SECONDS, n)
                             * MICROS_PER_SECOND).astype(np.int64)
    buy_time = cart_time + (rng.exponential(PURCHASE_DELAY_SECONDS, n)
                            * MICROS_PER_SECOND).astype(np.int64)
    want_it = sold_out & (draws[0] < STILL_WANT_IT_SHARE) & (want_it_time < deadline)
    cart = ~sold_out & (cart_time < deadline) & (
        draws[1] < CART_RATE * (1 - CART_PRICE_WEIGHT + CART_PRICE_WEIGHT * match))
    attempt = cart & (buy_time < deadline) & (
        draws[2] < PURCHASE_RATE * (1 - PURCHASE_PRICE_WEIGHT + PURCHASE_PRICE_WEIGHT * match))

    # Stock: first come, first served within each sale row; the rest find it sold out.
    tried = np.flatnonzero(attempt)
    order = tried[np.lexsort((buy_time[tried], row[tried]))]
    first_of_row = np.searchsorted(row[order], row[order], side="left")
    served = order[np.arange(len(order)) - first_of_row < remaining[row[order]]]
    bought = np.zeros(n, dtype=bool)
    bought[served] = True
    turned_away = attempt & ~bought
    sold_rows, sold = np.unique(row[bought], return_counts=True)
    remaining[sold_rows] -= sold
    coupon = rng.choice(COUPON_DISCOUNTS, size=n, p=COUPON_SHARE)
    paid = np.round(shown * (1 - coupon), 2)

    def part(mask: np.ndarray, kind: int, time: np.ndarray, price: np.ndarray):
        return (member[mask], row[mask], np.full(int(mask.sum()), kind), time[mask], price[mask])

    parts = [part(np.ones(n, dtype=bool), PDP_VIEW, view_time, shown),
             part(want_it, STILL_WANT_IT, want_it_time, shown),
             part(cart, ADD_TO_CART, cart_time, shown),
             part(bought, PURCHASE, buy_time, paid),
             part(turned_away, STILL_WANT_IT, buy_time, shown)]

    # Returns and cancellations of a few percent of purchases, dated later.
    u = rng.random(n)
    returned = bought & (u < RETURN_SHARE)
    cancelled = bought & (u >= RETURN_SHARE) & (u < RETURN_SHARE + CANCEL_SHARE)
    return_delay = rng.uniform(*RETURN_DELAY_DAYS, n) * MICROS_PER_DAY
    cancel_delay = rng.uniform(*CANCEL_DELAY_HOURS, n) * MICROS_PER_HOUR
    later = returned | cancelled
    kind = np.where(returned, RETURN, CANCEL)
    delay = np.where(returned, return_delay, cancel_delay).astype(np.int64)
    return parts, Returns(member[later], style[later], kind[later], (buy_time + delay)[later])


# =============================================================================================
# Tables and atomic partition writes
# =============================================================================================
def _events_table(day: date, activity: DayActivity, world: World, style_ids: pa.Array) -> pa.Table:
    numbers = pa.array(np.arange(len(activity.member), dtype=np.int64)).cast(pa.string())
    event_id = pc.binary_join_element_wise(f"e-{day:%Y%m%d}-", pc.utf8_lpad(numbers, 9, "0"), "")
    return pa.Table.from_arrays([
        event_id,
        world.members.ids.take(activity.member),
        style_ids.take(activity.style),
        pa.array(EVENT_TYPES).take(activity.event_type),
        _timestamps(activity.occurred_at),
        pa.array(activity.price, type=pa.float64()),
    ], schema=SCHEMAS["events"])


def _returns_table(returns: Returns, world: World, style_ids: pa.Array) -> pa.Table:
    order = np.argsort(returns.occurred_at, kind="stable")
    return pa.Table.from_arrays([
        world.members.ids.take(returns.member[order]),
        style_ids.take(returns.style[order]),
        pa.array(RETURN_KINDS).take(returns.kind[order]),
        _timestamps(returns.occurred_at[order]),
    ], schema=SCHEMAS["returns"])


def _catalog_table(world: World, style_ids: pa.Array) -> pa.Table:
    """Every style; snapshots are prefixes (styles are numbered in first-seen order)."""
    h, styles = world.hierarchy, world.styles
    return pa.Table.from_arrays([
        style_ids,
        pa.array(world.brands.names).take(styles.brand),
        pa.array(h.divisions).take(h.subclass_division[styles.subclass]),
        pa.array(h.subclass_department).take(styles.subclass),
        pa.array(h.subclass_class).take(styles.subclass),
        pa.array(h.subclass).take(styles.subclass),
        pa.array(styles.list_price, type=pa.float64()),
        pa.array((styles.first_seen - EPOCH_ORDINAL).astype(np.int32)).cast(pa.date32()),
    ], schema=SCHEMAS["catalog"])


def _sale_calendar_columns(world: World, style_ids: pa.Array) -> list[pa.Array]:
    """Sale rows without stock; snapshots are prefixes (rows are in launch order)."""
    sales = world.sales
    return [style_ids.take(sales.style), _padded_ids("sale-", sales.sale_count).take(sales.sale),
            _timestamps(sales.starts_at), _timestamps(sales.ends_at)]


def _local_root(root: str) -> str:
    if root.startswith("file://"):
        root = root[len("file://"):]
    if "://" in root:
        raise ValueError(f"the demo generator writes local folders only, not {root!r}")
    return str(Path(root).resolve())


def _owned_partitions(root: str, parameters: dict) -> list[str]:
    end = date.fromisoformat(parameters["end_date"])
    history = [end - timedelta(days=k) for k in range(parameters["days"], 0, -1)]
    return ([lake.raw(ds, d, root) for ds in ("events", "returns") for d in history]
            + [lake.raw(ds, d, root) for ds in ("catalog", "sale_calendar")
               for d in history + [end]])


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


# =============================================================================================
# Public API
# =============================================================================================
def build_world(*, members: int, days: int, end_date: date, seed: int, config: dict) -> World:
    """The static world and the whole sales plan (events are streamed later)."""
    first_day = end_date - timedelta(days=days)
    hierarchy = build_hierarchy(list(config["features"]["division_codes"]))
    brands = build_brands(_rng(seed, STREAM_WORLD), hierarchy)
    sbs = build_subclass_brands(hierarchy, brands)
    member_table = build_members(_rng(seed, STREAM_MEMBERS), members, hierarchy, brands, sbs,
                                 first_day, end_date - timedelta(days=1))
    # Launch from far enough back that the first history day already has live sales.
    warmup_days = int(np.ceil(max(SALE_DURATION_HOURS) / 24))
    styles, sales = plan_sales(seed, members, hierarchy, brands,
                               first_day - timedelta(days=warmup_days),
                               end_date + timedelta(days=1), config)
    style_sb = sbs.index(styles.subclass, styles.brand)
    return World(hierarchy, brands, sbs, member_table, styles, sales, style_sb,
                 hierarchy.subclass_division[styles.subclass],
                 styles.list_price / hierarchy.subclass_base_price[styles.subclass],
                 ZoneInfo(config["calendar"]["timezone"]))


def generate(lake_root: str, *, members: int = DEFAULT_MEMBERS, days: int = DEFAULT_DAYS,
             end_date: date, seed: int = DEFAULT_SEED) -> dict:
    """Write the demo world's raw history into `lake_root` and return a summary.

    Idempotent: with the same parameters and every `_SUCCESS` present it does nothing and
    returns the stored summary; otherwise it rewrites every partition it owns (and removes
    those a previous run with other parameters owned).
    """
    if isinstance(end_date, str):
        end_date = date.fromisoformat(end_date)
    if members < 1 or days < 1:
        raise ValueError("members and days must be at least 1")
    config = load_config()
    unknown = set(EVENT_TYPES) - set(config["cleaning"]["event_types"])
    if unknown:
        raise ValueError(f"config cleaning.event_types lacks generated types {sorted(unknown)}")
    root = _local_root(lake_root)
    parameters = {"generator_version": GENERATOR_VERSION, "members": members, "days": days,
                  "end_date": end_date.isoformat(), "seed": seed}
    marker = Path(root) / "raw" / GENERATOR_FILE
    previous = _complete_or_cleared(root, parameters, marker)
    if previous:
        return previous

    first_day = end_date - timedelta(days=days)
    log.info("generating %d members x %d days ending %s (seed %d) into %s",
             members, days, end_date, seed, root)
    world = build_world(members=members, days=days, end_date=end_date, seed=seed, config=config)
    log.info("world: %d brands, %d subclass-brands, %d styles, %d sales (%d sale rows)",
             len(world.brands.names), len(world.sbs.brand), len(world.styles),
             world.sales.sale_count, len(world.sales))
    writer = _LakeWriter(root, world)
    _simulate_days(world, writer, first_day, end_date, seed)

    summary = {
        "parameters": parameters,
        "members": members,
        "days": days,
        "first_date": first_day.isoformat(),
        "end_date": end_date.isoformat(),
        "styles": len(world.styles),
        "sales": world.sales.sale_count,
        "brands": len(world.brands.names),
        "subclass_brands": len(world.sbs.brand),
        "partitions": {"events": days, "returns": days, "catalog": days + 1,
                       "sale_calendar": days + 1},
        **writer.tally(),
    }
    staging = marker.with_name(f".{GENERATOR_FILE}.tmp")
    staging.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    staging.rename(marker)                        # written last: the lake is complete
    log.info("done: %s", json.dumps(summary["rows"], sort_keys=True))
    return json.loads(marker.read_text(encoding="utf-8"))


def _complete_or_cleared(root: str, parameters: dict, marker: Path) -> dict | None:
    """The stored summary when these parameters' world is complete; else None, with the partitions only a
    previous run with other parameters owned removed and the marker gone."""
    previous = _read_json(marker)
    owned = _owned_partitions(root, parameters)
    if previous and previous.get("parameters") == parameters \
            and all(Path(lake.success(p)).exists() for p in owned):
        log.info("already generated: %s (%s)", marker, parameters)
        return previous
    if previous and isinstance(previous.get("parameters"), dict):
        try:
            stale = set(_owned_partitions(root, previous["parameters"])) - set(owned)
        except (KeyError, TypeError, ValueError):
            stale = set()
        for partition in sorted(stale):
            shutil.rmtree(partition, ignore_errors=True)
    marker.unlink(missing_ok=True)   # an interrupted rewrite must not look complete
    return None


def _simulate_days(world: World, writer: _LakeWriter, first_day: date, end_date: date, seed: int) -> None:
    """Each day's catalogue and sale snapshots; before the end date, its events and the returns due."""
    remaining = world.sales.initial_qty.copy()    # stock per sale row, consumed day by day
    pending = Returns.concat([])                  # returns dated after the day they arise
    day = first_day
    while day <= end_date:
        writer.snapshots(day, remaining)
        if day < end_date:
            activity, returns = simulate_day(world, day, remaining, seed)
            pending = Returns.concat([pending, returns])
            due = pending.occurred_at < _day_start(day) + MICROS_PER_DAY
            writer.history(day, activity, pending.select(due))
            pending = pending.select(~due)        # later than the history: never written
        day += timedelta(days=1)


class _LakeWriter:
    """Writes one day's partitions and keeps the counts for the summary."""

    def __init__(self, root: str, world: World) -> None:
        self.root, self.world = root, world
        self.style_ids = _padded_ids("s-", len(world.styles))
        self.catalog = _catalog_table(world, self.style_ids)
        self.calendar_columns = _sale_calendar_columns(world, self.style_ids)
        self.rows = dict.fromkeys(SCHEMAS, 0)
        self.event_types = dict.fromkeys(EVENT_TYPES, 0)
        self.return_kinds = dict.fromkeys(RETURN_KINDS, 0)
        self.members_seen = np.zeros(len(world.members), dtype=bool)
        self.members_buying = np.zeros(len(world.members), dtype=bool)

    def snapshots(self, day: date, remaining: np.ndarray) -> None:
        """Catalog and sale calendar as known on `day`: all that starts by local day + 1."""
        horizon = (day + timedelta(days=1)).toordinal()
        # Both are prefixes: back-catalogue styles are older than the history and new styles
        # are numbered in launch order; sale rows are in launch order.
        known_styles = int(np.count_nonzero(self.world.styles.first_seen <= horizon))
        known_rows = int(np.searchsorted(self.world.sales.launch_day, horizon, side="right"))
        lake.write_partition(lake.raw("catalog", day, self.root), self.catalog.slice(0, known_styles))
        lake.write_partition(lake.raw("sale_calendar", day, self.root), pa.Table.from_arrays(
            [c.slice(0, known_rows) for c in self.calendar_columns]
            + [pa.array(remaining[:known_rows], type=pa.int64())],
            schema=SCHEMAS["sale_calendar"]))
        self.rows["catalog"] += known_styles
        self.rows["sale_calendar"] += known_rows

    def history(self, day: date, activity: DayActivity, returns: Returns) -> None:
        """Events and returns of UTC day `day`."""
        lake.write_partition(lake.raw("events", day, self.root),
                         _events_table(day, activity, self.world, self.style_ids))
        lake.write_partition(lake.raw("returns", day, self.root),
                         _returns_table(returns, self.world, self.style_ids))
        by_type = np.bincount(activity.event_type, minlength=len(EVENT_TYPES))
        by_kind = np.bincount(returns.kind.astype(np.int64), minlength=len(RETURN_KINDS))
        for name, count in zip(EVENT_TYPES, by_type):
            self.event_types[name] += int(count)
        for name, count in zip(RETURN_KINDS, by_kind):
            self.return_kinds[name] += int(count)
        self.rows["events"] += len(activity.member)
        self.rows["returns"] += len(returns.member)
        self.members_seen[activity.member] = True
        self.members_buying[activity.member[activity.event_type == PURCHASE]] = True
        log.info("dt=%s: %d events (%d purchases), %d returns/cancels, %d styles live",
                 day, len(activity.member), by_type[PURCHASE], len(returns.member),
                 _live_count(self.world.sales, _day_start(day)))

    def tally(self) -> dict:
        return {"rows": self.rows, "event_types": self.event_types,
                "returns": self.return_kinds,
                "members_with_events": int(self.members_seen.sum()),
                "members_with_purchases": int(self.members_buying.sum())}


def _live_count(sales: SaleRows, instant: int) -> int:
    return int(((sales.starts_at <= instant) & (sales.ends_at > instant)).sum())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m flashfeed.demo.generator",
        description="Write a deterministic synthetic flash-sale history into the raw lake.")
    parser.add_argument("--lake", default=None,
                        help="lake root folder (default: flashfeed.core.config.lake_root())")
    parser.add_argument("--members", type=int, default=DEFAULT_MEMBERS)
    parser.add_argument("--days", type=int, default=DEFAULT_DAYS,
                        help="days of events before --end-date")
    parser.add_argument("--end-date", type=date.fromisoformat, default=None,
                        help="first day without events, whose sale calendar is the live one "
                             "(default: today in the retailer's time zone)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    end_date = args.end_date or datetime.now(
        ZoneInfo(load_config()["calendar"]["timezone"])).date()
    generate(args.lake or default_lake_root(), members=args.members, days=args.days,
             end_date=end_date, seed=args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
