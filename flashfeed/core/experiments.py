"""A/B experiments between variants of the six member collections.

Config `experiments` names one experiment, a salt and its variants, each with a share of the
members and the `collections` settings it changes (`control`, the pipeline as configured, is
always one of them). A member's variant is a stable function of the salt and her id:

    bucket = int(sha256("<salt>:<member_id>").hexdigest()[:8], 16) / 2**32      # in [0, 1)

and the variants take consecutive ranges of buckets in config order, so anyone can recompute
every member's assignment offline (`assignment`, or the same expression in Spark:
`variant_column`). The launch builds control payloads for every member and each other variant's
payloads for its members, in the same versioned table under the range key
`<feed>#<variant>@<experiment variant>`; the read API serves a member her variant's payload and
names it in `X-Feed-Experiment`. A variant stopped in the control item is served as control at
once, without a reload.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

CONTROL = "control"
NAME_PATTERN = re.compile(r"^[a-z0-9_-]{1,40}$")
VARIANT_PATTERN = re.compile(r"^[a-z0-9_]{1,32}$")
BUCKETS = 2 ** 32
HASH_HEX_DIGITS = 8          # 32 bits of the sha256


class ExperimentConfigError(ValueError):
    pass


@dataclass(frozen=True)
class Variant:
    name: str
    share: float
    collections: dict = field(default_factory=dict)   # the `collections` settings it overrides


@dataclass(frozen=True)
class Experiment:
    name: str
    salt: str
    variants: tuple[Variant, ...]

    def variant(self, member_id: str) -> str:
        """The member's variant (see the module docstring)."""
        return variant_of(bucket(member_id, self.salt), self.variants)

    def as_dict(self) -> dict:
        """What the manifest and the served pointer carry, enough for the API to assign members;
        variants as a list, so that their order (the ranges of buckets) survives sorted JSON."""
        return {"name": self.name, "salt": self.salt,
                "variants": [{"name": v.name, "share": v.share, "collections": v.collections} for v in self.variants]}

    @property
    def treatments(self) -> tuple[Variant, ...]:
        """The variants other than control: the ones with payloads of their own."""
        return tuple(v for v in self.variants if v.name != CONTROL)


def bucket(member_id: str, salt: str) -> float:
    return int(hashlib.sha256(f"{salt}:{member_id}".encode("utf-8")).hexdigest()[:HASH_HEX_DIGITS], 16) / BUCKETS


def variant_of(point: float, variants: tuple[Variant, ...]) -> str:
    upper = 0.0
    for variant in variants:
        upper += variant.share
        if point < upper:
            return variant.name
    return variants[-1].name       # shares add up to 1 within rounding: the last range ends at 1


def from_dict(settings: dict | None, collections_keys: set[str] | None = None) -> Experiment | None:
    """The experiment of config `experiments` (or of a manifest), checked; None when `name` is
    empty. Raises ExperimentConfigError naming the first problem."""
    if not settings or not settings.get("name"):
        return None
    where = "config experiments"
    name, salt = str(settings["name"]), str(settings.get("salt") or "")
    if not NAME_PATTERN.fullmatch(name):
        raise ExperimentConfigError(f"{where}.name {name!r}: use 1 to 40 lowercase letters, digits, '_' or '-'")
    if not salt:
        raise ExperimentConfigError(f"{where}.salt is empty: set a salt (a new one reshuffles every member)")
    raw = settings.get("variants") or {}
    if isinstance(raw, list):      # as_dict's form (manifest, control item): the order is the config's
        raw = {v.get("name"): {k: x for k, x in v.items() if k != "name"} for v in raw}
    variants = []
    for variant_name, spec in raw.items():
        spec = spec or {}
        if not VARIANT_PATTERN.fullmatch(str(variant_name)):
            raise ExperimentConfigError(f"{where}.variants: name {variant_name!r}: use 1 to 32 lowercase letters, "
                                        "digits or '_'")
        share = spec.get("share")
        if not isinstance(share, (int, float)) or not 0 < share <= 1:
            raise ExperimentConfigError(f"{where}.variants.{variant_name}.share is {share!r}: a number in (0, 1]")
        overrides = dict(spec.get("collections") or {})
        unknown = set(spec) - {"share", "collections"}
        if unknown:
            raise ExperimentConfigError(f"{where}.variants.{variant_name} has unknown keys {sorted(unknown)}; "
                                        "a variant sets `share` and `collections` (settings it changes)")
        if collections_keys is not None and set(overrides) - collections_keys:
            raise ExperimentConfigError(f"{where}.variants.{variant_name}.collections sets unknown keys "
                                        f"{sorted(set(overrides) - collections_keys)}")
        if variant_name == CONTROL and overrides:
            raise ExperimentConfigError(f"{where}.variants.control changes {sorted(overrides)}: control is the "
                                        "pipeline as configured; change the other variant instead")
        variants.append(Variant(str(variant_name), float(share), overrides))
    if CONTROL not in {v.name for v in variants} or len(variants) < 2:
        raise ExperimentConfigError(f"{where}.variants must hold `control` and at least one other variant")
    total = sum(v.share for v in variants)
    if abs(total - 1.0) > 1e-9:
        raise ExperimentConfigError(f"{where}.variants' shares add up to {total}, not 1")
    return Experiment(name, salt, tuple(variants))


def from_config(config: dict) -> Experiment | None:
    return from_dict(config.get("experiments"), set(config["collections"]))


def variant_column(member_id, experiment: Experiment):
    """A Spark column with each member's variant: the same function as `Experiment.variant`."""
    from pyspark.sql import functions as F

    digest = F.sha2(F.concat(F.lit(f"{experiment.salt}:"), member_id), 256)
    point = F.conv(F.substring(digest, 1, HASH_HEX_DIGITS), 16, 10).cast("double") / F.lit(float(BUCKETS))
    upper, column = 0.0, None
    for variant in experiment.variants[:-1]:
        upper += variant.share
        condition = point < F.lit(upper)
        name = F.lit(variant.name)
        column = F.when(condition, name) if column is None else column.when(condition, name)
    return column.otherwise(F.lit(experiment.variants[-1].name))


def assignment(member_ids, experiment: Experiment) -> dict[str, str]:
    """{member_id: variant} for offline analysis (e.g. joining orders to variants)."""
    return {member_id: experiment.variant(member_id) for member_id in member_ids}
