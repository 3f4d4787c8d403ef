"""The config file's schema: every key of `include/flashfeed.yaml`, its type and its range.

`config.load_config()` validates the file once against `Settings` and hands out the validated
values, already of their types (no `int(config[...])` where they are used). An unknown key, a
value of the wrong type or out of range fails at load with the key's dotted path, e.g.
`als.group_overrides.13.ranks: unknown key; known keys: alpha, checkpoint_interval, ...`.
"""
from __future__ import annotations

import re
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator
from pydantic.fields import FieldInfo

from flashfeed.core import experiments
from flashfeed.core.divisions import division_key, is_division_key

Count = Annotated[int, Field(ge=0)]                 # zero allowed
Positive = Annotated[int, Field(ge=1)]
Real = float                                        # a real number: 2 is read as 2.0
NonNegative = Annotated[Real, Field(ge=0)]
Share = Annotated[Real, Field(ge=0, le=1)]
OpenShare = Annotated[Real, Field(gt=0, le=1)]
MemorySize = Annotated[str, Field(pattern=r"^\d+[kmgtKMGT]?[bB]?$")]
LaunchTime = Annotated[str, Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")]
MAX_LEASE_SECONDS = 900                             # serving.lease_seconds: the control item's lease is short
GROUP_KEY = re.compile(r"^(\d+|global)$")           # division code + spend bucket ("13"), or the global ALS


class ConfigError(ValueError):
    """The config file is not valid: the message names each bad key by its dotted path."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CalendarSettings(Section):
    timezone: str
    launch_times: Annotated[list[LaunchTime], Field(min_length=1)]
    window_hours: Annotated[int, Field(ge=1, le=24 * 7)]

    @field_validator("timezone")
    @classmethod
    def known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (an IANA name such as America/New_York)") from None
        return value

    @field_validator("launch_times")
    @classmethod
    def distinct_launches(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"launch times repeat: {value}")
        return value


class CleaningSettings(Section):
    event_types: Annotated[list[str], Field(min_length=1)]
    max_reject_share: Share
    max_hierarchy_change_share: Share


class FeaturesSettings(Section):
    lookback_days: Positive
    event_weights: dict[str, Annotated[int | float, Field(gt=0)]]    # whole weights keep ratings whole
    spend_percentile: OpenShare
    spend_buckets: Positive
    min_group_members: Positive
    recent_days: Positive
    history_half_life_days: Annotated[Real, Field(gt=0)]
    division_codes: dict[str, Annotated[int, Field(ge=1, le=9)]]

    @field_validator("division_codes")
    @classmethod
    def keyed_by_division_keys(cls, codes: dict[str, int]) -> dict[str, int]:
        for name in codes:
            if not is_division_key(name):
                try:
                    hint = f"write it as its key {division_key(name)!r}"
                except ValueError:
                    hint = "a key has letters or digits"
                raise ValueError(f"{name!r} is not a division key (lower-case letters and digits joined by single "
                                 f"'_', as flashfeed import stores divisions): {hint}")
        return codes


class ALSSettings(Section):
    rank: Positive
    max_iter: Positive
    serve_iterations: Count
    reg_param: NonNegative
    alpha: Annotated[Real, Field(gt=0)]
    driver_fit_max_ratings: Count
    item_blocks: Positive
    user_blocks_threshold: Positive
    user_blocks_divisor_small: Positive
    user_blocks_divisor_large: Positive
    checkpoint_interval: Positive
    top_k: Positive
    top_k_products: Positive
    score_block_members: Positive
    seed: Count                                        # numpy's generators take no negative seed
    group_overrides: dict[str, Any] = {}

    @field_validator("group_overrides")
    @classmethod
    def known_groups_and_keys(cls, overrides: dict[str, Any]) -> dict[str, Any]:
        return validated_overrides(ALSSettings, overrides or {})


class CollectionsSettings(Section):
    boost_days: Count
    boost_top_subclasses: Count
    boost: NonNegative
    max_subclass_brands_per_class: Positive
    products_per_member: Positive
    card_groups: Positive
    card_products: Positive
    min_saleable_products: Positive
    subclass_brands_per_member: Positive
    full_share_warning: Share
    max_payload_bytes: Annotated[int, Field(ge=1024, le=400_000)]   # DynamoDB's item limit (400 KB) less the keys
    payloads_per_file: Positive


class RelatedSettings(Section):
    max_items_per_member: Positive
    min_members: Positive
    score: Literal["llr", "count", "jaccard"]
    per_item: Positive
    holdout_days: Positive
    session_gap_minutes: Positive
    basket_window_minutes: Positive
    max_basket_items: Annotated[int, Field(ge=2)]
    min_support: OpenShare
    min_baskets: Positive
    min_confidence: Share
    rules_per_item: Positive
    groups_per_style: Positive
    styles_per_group: Positive
    bought_together_styles: Positive


class BecauseSettings(Section):
    view_days: Positive
    event_types: Annotated[list[str], Field(min_length=1)]
    carousels: Count
    styles_per_carousel: Positive


class ExperimentsSettings(Section):
    name: str = ""
    salt: str = ""
    variants: dict[str, dict[str, Any]]

    @field_validator("variants")
    @classmethod
    def typed_collections(cls, variants: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """Each variant's `collections` settings: known keys, each of its setting's type and range."""
        checked = {}
        for name, spec in variants.items():
            spec = dict(spec or {})
            if spec.get("collections"):
                try:
                    spec["collections"] = partial_model(CollectionsSettings).model_validate(
                        spec["collections"]).model_dump(exclude_unset=True)
                except ValidationError as error:
                    raise ValueError(f"variant {name}: collections: "
                                     f"{describe(error, sorted(CollectionsSettings.model_fields))}") from None
            checked[name] = spec
        return checked


class ScoringWeights(Section):
    times_sold_before: Real
    days_on_site: Real
    brand_persistence: Real
    clicks: Real
    purchases: Real
    click_to_purchase: Real
    returns_and_cancels: Real
    first_day: Real
    first_72h: Real
    early_popularity: Real
    new_share: Real
    subclass_brand_conversion: Real


class ScoringSettings(Section):
    min_qty_on_hand: Count
    products_per_subclass_brand: Positive
    interaction_months: Positive
    brand_persistence_days: Positive
    weights: ScoringWeights


class ProvisionedCapacity(Section):
    read_capacity: Positive
    load_write_capacity: Positive
    serving_write_capacity: Positive                    # a served table's, after its load: the freshness refresh's

    @model_validator(mode="after")
    def _load_at_least_serving(self):
        if self.load_write_capacity < self.serving_write_capacity:
            raise ValueError(f"load_write_capacity ({self.load_write_capacity}) must be at least "
                             f"serving_write_capacity ({self.serving_write_capacity}): a load raises the table to it")
        return self


class ServingSettings(Section):
    table_prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{0,200}$")]
    region: Annotated[str, Field(min_length=1)]
    billing_mode: Literal["PAY_PER_REQUEST", "PROVISIONED"]
    provisioned: ProvisionedCapacity
    load_threads: Annotated[int, Field(ge=1, le=64)]
    verify_sample_members: Count
    retain_versions: Positive                           # the previous served version is kept besides, always
    lease_seconds: Annotated[Real, Field(gt=0, le=MAX_LEASE_SECONDS)]
    lease_wait_seconds: NonNegative                     # >= lease_seconds: a dead holder's lease expires meanwhile
    min_coverage_ratio: Share
    api_request_budget_ms: Annotated[Real, Field(gt=0, le=60_000)]
    api_pointer_cache_seconds: NonNegative
    api_pointer_max_stale_seconds: Annotated[Real, Field(gt=0)]
    api_workers: Positive
    api_access_log: bool
    api_docs: bool

    @model_validator(mode="after")
    def _stale_outlives_cache(self):
        if self.api_pointer_max_stale_seconds <= self.api_pointer_cache_seconds:
            raise ValueError(f"api_pointer_max_stale_seconds ({self.api_pointer_max_stale_seconds:g}) must be "
                             f"greater than api_pointer_cache_seconds ({self.api_pointer_cache_seconds:g})")
        return self

    @model_validator(mode="after")
    def _lease_wait_outlasts_lease(self):
        if self.lease_wait_seconds < self.lease_seconds:
            raise ValueError(f"lease_wait_seconds ({self.lease_wait_seconds:g}) must be at least lease_seconds "
                             f"({self.lease_seconds:g}), so that a contender outwaits the lease of a holder that died")
        return self


class TuneGrid(Section):
    rank: Annotated[list[Positive], Field(min_length=1)]
    reg_param: Annotated[list[NonNegative], Field(min_length=1)]
    alpha: Annotated[list[Annotated[Real, Field(gt=0)]], Field(min_length=1)]


class EvaluationSettings(Section):
    k: Positive
    holdout_days: Positive
    exclude_seen: bool
    stratified_ratio: Annotated[Real, Field(gt=0, lt=1)]
    seed: Count                                        # numpy's generators take no negative seed
    gate_holdout_days: Positive
    gate_validation_days: Positive
    gate_ndcg_margin: Annotated[Real, Field(ge=-1, le=1)]   # < 0: a model must beat popularity by that much
    gate_ndcg_tolerance: NonNegative
    blend_weights: Annotated[list[Annotated[Real, Field(gt=0, lt=1)]], Field(min_length=1)]
    tune_grid: TuneGrid


class ImportSettings(Section):
    max_bad_row_share: Share
    show_bad_rows: Count
    default_qty_on_hand: Positive
    sale_days: Positive
    max_days_after_import: Count
    max_history_days: Positive


class SparkSettings(Section):
    shuffle_partitions: Positive
    driver_memory: MemorySize
    executor_memory: MemorySize
    broadcast_join_mb: Count
    log_level: Literal["ALL", "DEBUG", "INFO", "WARN", "ERROR", "FATAL", "OFF"]


class AirflowSettings(Section):
    spark_pool_slots: Positive


class Settings(Section):
    calendar: CalendarSettings
    cleaning: CleaningSettings
    features: FeaturesSettings
    als: ALSSettings
    collections: CollectionsSettings
    related: RelatedSettings
    because: BecauseSettings
    experiments: ExperimentsSettings
    scoring: ScoringSettings
    serving: ServingSettings
    evaluation: EvaluationSettings
    import_: ImportSettings = Field(alias="import")
    spark: SparkSettings
    airflow: AirflowSettings

    @model_validator(mode="after")
    def consistent(self) -> Settings:
        known = set(self.cleaning.event_types)
        for where, types in (("features.event_weights", self.features.event_weights),
                             ("because.event_types", self.because.event_types)):
            if set(types) - known:
                raise ValueError(f"{where} names event types {sorted(set(types) - known)} that cleaning.event_types "
                                 f"does not keep ({sorted(known)})")
        # The experiment's own checks (they also run on the DAG's params).
        try:
            experiments.from_dict(self.experiments.model_dump(), set(CollectionsSettings.model_fields))
        except experiments.ExperimentConfigError as error:
            raise ValueError(str(error)) from None
        return self


def validated_overrides(section: type[Section], overrides: dict[str, Any]) -> dict[str, Any]:
    """Per-group overrides: known group keys, known setting names, each value of its setting's type and range."""
    partial = partial_model(section)
    fields = partial.model_fields
    checked = {}
    for group, values in overrides.items():
        if not GROUP_KEY.match(str(group)):
            raise ValueError(f"group {group!r}: a group key is a division code and spend bucket such as '13', "
                             "or 'global'")
        try:
            model = partial.model_validate(values or {})
        except ValidationError as error:
            raise ValueError(f"group {group}: {describe(error, sorted(fields))}") from None
        checked[str(group)] = model.model_dump(exclude_unset=True)
    return checked


def partial_model(section: type[Section]) -> type[BaseModel]:
    """`section` with every setting optional (same types and ranges): the shape of an override."""
    fields = {name: (info.annotation, FieldInfo.merge_field_infos(info, default=None))
              for name, info in section.model_fields.items() if name != "group_overrides"}
    return create_model(f"{section.__name__}Override", __config__=ConfigDict(extra="forbid"), **fields)


def describe(error: ValidationError, known: list[str] | None = None) -> str:
    """The problems of one validation, `dotted.path: what is wrong`, separated by "; "."""
    return "; ".join(describe_problem(problem, known) for problem in error.errors())


def describe_problem(problem: dict[str, Any], known: list[str] | None = None) -> str:
    where = ".".join(str(part) for part in problem["loc"]) or "(top level)"
    if problem["type"] == "extra_forbidden":
        message = "unknown key" + (f"; known keys: {', '.join(known)}" if known else "")
    elif problem["type"] == "missing":
        message = "missing (every key of include/flashfeed.yaml is required)"
    else:
        message = problem["msg"].removeprefix("Value error, ")
    return f"{where}: {message}"


def validate(raw: dict[str, Any], source: str) -> Settings:
    """The config file's values, checked; a ConfigError names every bad key of `source`."""
    try:
        return Settings.model_validate(raw)
    except ValidationError as error:
        problems = [describe_problem(problem, known_keys(problem["loc"][:-1]) if problem["type"] == "extra_forbidden"
                                     else None) for problem in error.errors()]
        raise ConfigError(f"{source} is not a valid flashfeed config:\n  " + "\n  ".join(problems)) from None


def known_keys(loc: tuple) -> list[str] | None:
    """The keys the section at `loc` (e.g. ("scoring", "weights")) accepts, as written in the file."""
    model: Any = Settings
    for part in loc:
        field = model.model_fields.get(str(part)) or next(
            (f for f in model.model_fields.values() if f.alias == part), None)
        model = field.annotation if field else None
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None
    return sorted(f.alias or name for name, f in model.model_fields.items())
