"""`flashfeed uci-to-csv`: the UCI Online Retail data set as the two CSVs `flashfeed import` reads.

    flashfeed uci-to-csv --csv online_retail.csv --out DIR
    flashfeed import --events DIR/events.csv --items DIR/items.csv --lake LAKE

Source: "Online Retail" (Daqing Chen, UCI Machine Learning Repository, 2015,
https://doi.org/10.24432/C5BW33), licence CC BY 4.0: the invoice lines of a UK online gift
retailer, December 2010 to December 2011. Columns ``InvoiceNo, StockCode, Description,
Quantity, InvoiceDate, UnitPrice, CustomerID, Country``, optionally after an unnamed
row-index column (the project's sample under /work/shared/data/uci-online-retail-sample/ has
one). Dates are read as ``2011-11-25 11:02:00`` or as the original ``12/1/2010 8:26``.

**Events.** An invoice line becomes one ``purchase`` when it passes these checks, in this
order; the first failing check names the reason a line is skipped, and skipped lines are
counted per reason and printed:

1. ``cancellation``: InvoiceNo starts with "C".
2. ``no_customer``: CustomerID is empty.
3. ``not_a_product``: the StockCode does not start with five digits (postage, fees and manual
   lines: POST, DOT, M, D, C2, BANK CHARGES, AMAZONFEE, S, PADS, B, CRUK, ...).
4. ``quantity_not_positive``: Quantity <= 0.
5. ``price_not_positive``: UnitPrice <= 0.
6. ``unreadable``: a number or date that does not parse.

The event: ``member_id`` = ``c<CustomerID as an integer>``, ``item_id`` = StockCode,
``occurred_at`` = InvoiceDate **treated as UTC** (the data set gives no time zone; it is UK
local time, which is UTC in winter and one hour ahead from April to October), ``price`` = UnitPrice, ``event_id`` =
``<InvoiceNo>-<row index>`` (the source's index column, else the line's 0-based position
among the data lines). Quantity is not kept: the pipeline's implicit ratings count events.

The same item on two lines of one invoice gives two events with the same member, item and
time: the pipeline's cleaning keeps one and counts the other as a duplicate (the converter
prints how many there are).

**Items**, one per StockCode with at least one event, by fixed rules (so the hierarchy is the
same on every run):

* description: the item's most frequent description among its events (ties: the
  alphabetically first), with runs of spaces collapsed;
* ``division`` (and ``department``, the same): the first rule of :data:`DIVISION_RULES` with a
  keyword among the description's words (a keyword also matches its plural in S or ES), else
  ``home_decor`` (the names are division keys, as `flashfeed import` stores them);
* ``class`` and ``subclass``: the product noun: the last word of the cleaned description
  (letters only, trailing colour, size and pattern words of :data:`QUALIFIER_WORDS` dropped:
  "LUNCH BAG RED RETROSPOT" -> ``bag``), lower-cased; ``other`` when no word is left;
* ``brand``: the product line, the stock code's first three digits (``line-228``);
* ``list_price``: the median UnitPrice of its events.
"""
from __future__ import annotations

import argparse
import csv
import math
import re
import statistics
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

__all__ = ["convert", "main", "division_of", "product_noun", "DIVISION_RULES", "QUALIFIER_WORDS"]

SOURCE_COLUMNS = ("InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate",
                  "UnitPrice", "CustomerID")
EVENTS_FILE, ITEMS_FILE = "events.csv", "items.csv"
EVENT_HEADER = ("member_id", "item_id", "event_type", "occurred_at", "price", "event_id")
ITEM_HEADER = ("item_id", "brand", "division", "department", "class", "subclass", "list_price")

CANCELLATION_PREFIX = "C"
PRODUCT_CODE = re.compile(r"\d{5}")                # products start with 5 digits; fees do not
PRODUCT_LINE_DIGITS = 3                            # brand = the stock code's first 3 digits
DATE_FORMATS = ("%m/%d/%Y %H:%M",)                 # the original file's format (ISO is tried first)
WORD = re.compile(r"[A-Z]+(?:['-][A-Z]+)*")        # CHILDREN'S and T-LIGHT are one word
OTHER_NOUN = "other"
DEFAULT_DIVISION = "home_decor"
PRICE_DECIMALS = 4                                 # medians of two prices need more than cents

# Skip reasons, in the order they are checked.
CANCELLATION, NO_CUSTOMER, NOT_A_PRODUCT = "cancellation", "no_customer", "not_a_product"
QUANTITY_NOT_POSITIVE, PRICE_NOT_POSITIVE, UNREADABLE = (
    "quantity_not_positive", "price_not_positive", "unreadable")
SKIP_REASONS = (CANCELLATION, NO_CUSTOMER, NOT_A_PRODUCT, QUANTITY_NOT_POSITIVE,
                PRICE_NOT_POSITIVE, UNREADABLE)

# Division keyword rules over the description's words; the first rule that matches wins, so
# a Christmas mug is "christmas" and a lunch bag is "bags".
DIVISION_RULES: tuple[tuple[str, frozenset[str]], ...] = (
    ("christmas", frozenset({"CHRISTMAS", "XMAS", "ADVENT", "SANTA", "REINDEER", "NATIVITY",
                             "BAUBLE", "SNOWFLAKE", "SNOWMAN"})),
    ("bags", frozenset({"BAG", "SHOPPER", "TOTE", "PURSE", "WALLET", "HANDBAG", "BACKPACK",
                        "RUCKSACK"})),
    ("kitchen_dining", frozenset({"MUG", "CUP", "SAUCER", "BOWL", "PLATE", "DISH", "CAKE",
                                  "CAKESTAND", "BAKING", "TEA", "TEACUP", "TEAPOT", "COFFEE",
                                  "KITCHEN", "JAR", "CUTLERY", "SPOON", "TRAY", "APRON",
                                  "NAPKIN", "JAM", "RECIPE", "BREAKFAST", "SNACK", "LUNCH",
                                  "TUMBLER", "EGG", "BISCUIT", "PANTRY", "CHOPSTICK", "OVEN",
                                  "PICNIC", "STRAW", "JUG", "BEAKER", "COASTER", "TEATOWEL",
                                  "PLACEMAT"})),
    ("stationery_cards", frozenset({"CARD", "PENCIL", "PEN", "NOTEBOOK", "SKETCHBOOK", "WRAP",
                                    "STICKER", "TAPE", "ENVELOPE", "PAPER", "STATIONERY",
                                    "ERASER", "RIBBON", "DIARY", "CALENDAR", "BOOK", "JOURNAL",
                                    "TAG", "STAMP", "NOTEPAD", "NOTELET"})),
    ("jewellery_accessories", frozenset({"NECKLACE", "BRACELET", "EARRING",
                                         "EARRINGS", "CHARM", "BROOCH", "HAIRCLIP", "HAIRBAND",
                                         "HAIR", "UMBRELLA", "SCARF", "RING", "DIAMANTE",
                                         "BEAD"})),
    ("toys_kids", frozenset({"TOY", "GAME", "JIGSAW", "DOLL", "DOLLY", "SPACEBOY", "CHILDRENS",
                             "CHILDREN'S", "CHILDS", "KIDS", "BABY", "BALLOON", "DINOSAUR",
                             "PUZZLE", "PLAYHOUSE", "SKIPPING", "DOMINOES", "MARBLES",
                             "TEDDY", "CRAYON", "COLOURING", "SOLDIER", "FELTCRAFT"})),
    ("garden", frozenset({"GARDEN", "GARDENERS", "PLANT", "PLANTER", "WATERING", "SEED", "HERB",
                          "BIRDHOUSE", "FEEDER", "OUTDOOR", "FLOWERPOT", "TRUG"})),
)
PLURAL_SUFFIXES = ("S", "ES")

# Words that say how a product looks, not what it is: dropped from the end of a description
# before its last word is taken as the product noun.
QUALIFIER_WORDS = frozenset({
    # colours
    "RED", "PINK", "BLUE", "GREEN", "WHITE", "BLACK", "CREAM", "IVORY", "GOLD", "SILVER",
    "PURPLE", "ORANGE", "YELLOW", "BROWN", "GREY", "TURQUOISE", "LILAC", "NATURAL", "PASTEL",
    "ASSORTED", "COLOUR", "COLOURS", "MULTICOLOUR", "PINKWHITE",
    # sizes
    "SMALL", "LARGE", "MEDIUM", "MINI", "JUMBO", "BIG", "GIANT", "TALL",
    # patterns, themes and finishes
    "DESIGN", "DESIGNS", "RETROSPOT", "POLKADOT", "PAISLEY", "VINTAGE", "FLORAL", "STRIPE",
    "STRIPES", "SPOTS", "SPOTTY", "GINGHAM", "ROSE", "ROSES", "SKULL", "SKULLS", "LONDON",
    "DOLLY", "GIRL", "SPACEBOY", "PARK", "CALM", "KEEP", "DOTCOM", "ANTIQUE", "ENAMEL",
    "GLASS", "WOODEN", "WOOD", "METAL", "ZINC", "WICKER", "FELT", "CERAMIC", "CHROME",
    "CHRISTMAS", "PAINTED", "HANGING", "CM",
    "LOVE", "SET", "OF", "AND", "THE", "IN", "WITH", "I",
})


# =============================================================================================
# Rules
# =============================================================================================
def _words(description: str) -> list[str]:
    return WORD.findall(description.upper())


def division_of(description: str) -> str:
    """The division of a description: the first matching rule of DIVISION_RULES."""
    words = set(_words(description))
    for division, keywords in DIVISION_RULES:
        if any(k in words or any(k + s in words for s in PLURAL_SUFFIXES) for k in keywords):
            return division
    return DEFAULT_DIVISION


def product_noun(description: str) -> str:
    """The product noun: the last word after trailing qualifiers are dropped, lower-cased."""
    words = _words(description)
    while words and words[-1] in QUALIFIER_WORDS:
        words.pop()
    return words[-1].lower() if words else OTHER_NOUN


def product_line(stock_code: str) -> str:
    return f"line-{stock_code[:PRODUCT_LINE_DIGITS]}"


class Skip(ValueError):
    """An invoice line that does not become an event; the message is the reason."""


def _parse_date(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        pass
    for layout in DATE_FORMATS:
        try:
            return datetime.strptime(text, layout)
        except ValueError:
            continue
    raise Skip(UNREADABLE)


def _field(row: dict[str, str | None], column: str) -> str:
    """A stripped value; a short line's missing fields are empty."""
    return (row.get(column) or "").strip()


def invoice_line_event(row: dict[str, str], position: int) -> dict[str, str]:
    """The purchase event of one source line (the events.csv columns); raises Skip."""
    invoice, stock_code, customer = (_field(row, c) for c in ("InvoiceNo", "StockCode",
                                                              "CustomerID"))
    if invoice.startswith(CANCELLATION_PREFIX):
        raise Skip(CANCELLATION)
    if not customer:
        raise Skip(NO_CUSTOMER)
    if not PRODUCT_CODE.match(stock_code):
        raise Skip(NOT_A_PRODUCT)
    try:
        quantity, price = float(_field(row, "Quantity")), float(_field(row, "UnitPrice"))
        member = f"c{int(float(customer))}"           # 17385.0 -> c17385
    except ValueError:
        raise Skip(UNREADABLE) from None
    if not (math.isfinite(quantity) and math.isfinite(price)):
        raise Skip(UNREADABLE)
    if quantity <= 0:
        raise Skip(QUANTITY_NOT_POSITIVE)
    if price <= 0:
        raise Skip(PRICE_NOT_POSITIVE)
    occurred_at = _parse_date(_field(row, "InvoiceDate"))
    row_index = _field(row, "") or str(position)
    return {"member_id": member, "item_id": stock_code, "event_type": "purchase",
            # The data set has no time zone: documented as UTC, written with the offset.
            "occurred_at": occurred_at.strftime("%Y-%m-%dT%H:%M:%S+00:00"),
            "price": repr(price), "event_id": f"{invoice}-{row_index}"}


# =============================================================================================
# Conversion
# =============================================================================================
def convert(csv_path: str | Path, out_dir: str | Path) -> dict:
    """Write `out_dir`/events.csv and items.csv from the UCI file; return the counts."""
    csv_path, out = Path(csv_path), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tally = _write_events(csv_path, out / EVENTS_FILE)
    divisions = _write_items(tally, out / ITEMS_FILE)
    return {
        "source": str(csv_path.resolve()),
        "events_csv": str((out / EVENTS_FILE).resolve()),
        "items_csv": str((out / ITEMS_FILE).resolve()),
        "rows_read": tally.read,
        "events": tally.read - sum(tally.skipped.values()),
        "skipped": {reason: tally.skipped[reason] for reason in SKIP_REASONS if tally.skipped[reason]},
        # The same item on two lines of one invoice: the pipeline keeps one of these events.
        "repeated_purchases": tally.repeated,
        "members": len(tally.members),
        "items": len(tally.descriptions),
        "divisions": dict(sorted(divisions.items())),
        "first_event": tally.first_event,
        "last_event": tally.last_event,
    }


@dataclass
class EventsTally:
    """What converting the invoice lines saw: counts, and each item's descriptions and prices."""
    read: int = 0
    skipped: Counter = field(default_factory=Counter)
    descriptions: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    prices: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    members: set[str] = field(default_factory=set)
    purchases_seen: set[tuple[str, str, str]] = field(default_factory=set)   # (member, item, time)
    repeated: int = 0
    first_event: str | None = None
    last_event: str | None = None

    def add(self, event: dict, row: dict) -> None:
        item = event["item_id"]
        self.descriptions[item][" ".join(_field(row, "Description").split())] += 1
        self.prices[item].append(float(event["price"]))
        self.members.add(event["member_id"])
        purchase = (event["member_id"], item, event["occurred_at"])
        self.repeated += purchase in self.purchases_seen
        self.purchases_seen.add(purchase)
        self.first_event = min(self.first_event or event["occurred_at"], event["occurred_at"])
        self.last_event = max(self.last_event or event["occurred_at"], event["occurred_at"])


def _write_events(csv_path: Path, events_path: Path) -> EventsTally:
    """One purchase event per usable invoice line (written aside, renamed when complete)."""
    tally = EventsTally()
    events_tmp = events_path.with_name(f".{events_path.name}.tmp")
    with open(csv_path, newline="", encoding="utf-8-sig") as source, \
            open(events_tmp, "w", newline="", encoding="utf-8") as sink:
        reader = csv.DictReader(source)
        missing = [c for c in SOURCE_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{csv_path} lacks the UCI Online Retail column(s) "
                             f"{', '.join(missing)}; is it the Online Retail CSV? Its header "
                             f"must hold {','.join(SOURCE_COLUMNS)}")
        writer = csv.DictWriter(sink, fieldnames=EVENT_HEADER, lineterminator="\n")
        writer.writeheader()
        for position, row in enumerate(reader):
            tally.read += 1
            try:
                event = invoice_line_event(row, position)
            except Skip as reason:
                tally.skipped[str(reason)] += 1
                continue
            writer.writerow(event)
            tally.add(event, row)
    events_tmp.replace(events_path)
    return tally


def _write_items(tally: EventsTally, items_path: Path) -> Counter:
    """One item per stock code: its most frequent description, division and median price; items per division."""
    divisions: Counter = Counter()
    items_tmp = items_path.with_name(f".{items_path.name}.tmp")
    with open(items_tmp, "w", newline="", encoding="utf-8") as sink:
        writer = csv.writer(sink, lineterminator="\n")
        writer.writerow(ITEM_HEADER)
        for item in sorted(tally.descriptions):
            # Most frequent description; ties go to the alphabetically first.
            description = min(tally.descriptions[item].items(), key=lambda kv: (-kv[1], kv[0]))[0]
            division, noun = division_of(description), product_noun(description)
            divisions[division] += 1
            list_price = round(statistics.median(tally.prices[item]), PRICE_DECIMALS)
            writer.writerow([item, product_line(item), division, division, noun, noun,
                             repr(list_price)])
    items_tmp.replace(items_path)
    return divisions


def format_summary(counts: dict) -> str:
    skipped = sum(counts["skipped"].values())
    lines = [
        f"flashfeed uci-to-csv: {counts['source']}",
        f"  invoice lines read {counts['rows_read']:,}; purchase events {counts['events']:,}; "
        f"skipped {skipped:,}"
        + (": " + ", ".join(f"{r} {n:,}" for r, n in counts["skipped"].items()) if skipped else ""),
        f"  members {counts['members']:,}, items {counts['items']:,}, divisions "
        f"{len(counts['divisions'])}: "
        + ", ".join(f"{d} {n:,}" for d, n in counts["divisions"].items()),
        f"  events from {counts['first_event']} to {counts['last_event']} (UTC)",
        f"  note: {counts['repeated_purchases']:,} events repeat an earlier one's customer, item "
        "and time (mostly an item on two lines of one invoice); the daily model keeps one of each.",
        f"  wrote {counts['events_csv']}",
        f"  wrote {counts['items_csv']}",
        "next: import them into a lake",
        f"  flashfeed import --events {counts['events_csv']} --items {counts['items_csv']} "
        "--lake LAKE_DIR",
    ]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flashfeed uci-to-csv",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Convert the UCI Online Retail data set (CC BY 4.0) into events.csv and "
                    "items.csv for `flashfeed import`.",
        epilog="""\
Every invoice line with a customer, a product stock code (five leading digits), a positive
quantity and price, and no cancellation ("C" invoice) becomes one purchase event; InvoiceDate
is read as UTC. Skipped lines are counted per reason. Items get a rule-based hierarchy:
division from keywords of the description, class/subclass = the product noun, brand = the
product line (first three digits of the stock code), list_price = the median price.
See the docstring of flashfeed/ingest/uci.py for the exact rules.

example:
  flashfeed uci-to-csv --csv online_retail.csv --out /tmp/uci
  flashfeed import --events /tmp/uci/events.csv --items /tmp/uci/items.csv --lake /tmp/ucilake
""")
    parser.add_argument("--csv", required=True, type=Path, metavar="FILE",
                        help="the Online Retail CSV (with or without a leading index column)")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR",
                        help="folder for events.csv and items.csv (created if missing)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.csv.is_file():
        print(f"{args.csv} not found: pass the Online Retail CSV with --csv", file=sys.stderr)
        return 1
    try:
        counts = convert(args.csv, args.out)
    except ValueError as error:
        print(error, file=sys.stderr)
        return 1
    print(format_summary(counts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
