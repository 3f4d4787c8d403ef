"""Read API: one member's payload for one feed, or one product's related products, in a single request.

    python -m flashfeed.serving.api            # http://127.0.0.1:8088 (FLASHFEED_API_PORT), /docs, /openapi.json

- `GET /v1/members/{member_id}/feeds/{feed}?variant=card|full&division=<division>`: feed one of
  products, brands, categories (variant `card`, the default, or `full`) or because (`card`
  only). Returns the stored payload string verbatim (no re-serialisation) with headers
  `X-Feed-Version` (the served version) and `X-Feed-Source` (`member`, or `fallback` when the
  member is unknown to this version). An unknown member gets the fallback of the division
  given as `division` (a hint from the caller, its key or its name: flashfeed.core.divisions),
  else, or when that division has no fallback, the global one; `X-Feed-Fallback` names it.
  While an experiment runs (config `experiments`), the six collections answer with the
  member's variant (a stable salted hash of her id, flashfeed.core.experiments) and name it in
  `X-Feed-Experiment: <experiment>:<variant>`; a stopped variant's members get control.
- `GET /v1/styles/{style_id}/related` and `/bought-together`: one GetItem each; 404 when the
  product is not on sale in the served version.
- `GET /v1/live`: liveness, touches nothing. `GET /v1/ready`: readiness, the served version
  through the pointer cache (503 when nothing is served or it cannot be read); no table names.

**Budget.** Every request has `serving.api_request_budget_ms` (default 100 ms) for all its
DynamoDB reads, retries included (`dynamodb_reader.deadline`); past it the answer is 503 at once.
The served version comes from the control item, cached for `serving.api_pointer_cache_seconds`
and refreshed in the background by one thread at a time (`ServedPointer`), so a flip reaches
every API process within about that time and a slow control table delays no request; when it
cannot be read the last good pointer is served for `serving.api_pointer_max_stale_seconds`.
Then one GetItem in the served table; a member unknown to it gets her division's fallback,
read once per table and cached (`FallbackCache`).

**Access.** An internal service: no key by default. With FLASHFEED_API_KEYS or
FLASHFEED_API_KEYS_FILE set, the feed routes need one of the keys in `X-API-Key` (compared in
constant time; 401 otherwise). `serving.api_docs: false` removes /docs and /openapi.json.

Errors are JSON `{"error": ..., "detail": ...}`: 400 bad member id, style id, variant or
division, 401 missing key, 404 unknown feed, a variant the feed lacks or no payload, 405 (with
`Allow`) another method, 422 malformed request, 503 nothing served, store unreachable, slow or
failing in any way. Every parameter (typed: patterns, enums), response and header is declared in
the OpenAPI document (`/openapi.json`).
"""
from __future__ import annotations

import argparse
import hmac
import logging
import os
import threading
import time
from contextlib import contextmanager
from typing import Annotated, Callable, Iterator, Literal

from fastapi import Depends, FastAPI, Path, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from flashfeed.core import experiments
from flashfeed.core.config import load_config
from flashfeed.core.divisions import division_key
from flashfeed.core.lake import BOUGHT_TOGETHER, FALLBACK_MEMBER_PREFIX, FEEDS, MEMBER_FEEDS, RELATED
from flashfeed.serving import control, dynamodb_reader, payloads, tables
from flashfeed.serving.errors import ServingStoreError

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
DEFAULT_PORT = 8088
PORT_ENV = "FLASHFEED_API_PORT"
DEFAULT_VARIANT = "card"
ID_REGEX = r"^[A-Za-z0-9_.:-]{1,64}$"        # the lake's id rule (spark_jobs/transforms/cleaning.py)
# A division key or name (flashfeed.core.divisions.division_key): an ASCII letter or digit first, so
# its key is never empty; accented letters after it fold to ASCII.
DIVISION_REGEX = r"^[A-Za-z0-9][\w '’&.,-]{0,63}$"
API_KEY_HEADER = "X-API-Key"
API_KEYS_ENV = "FLASHFEED_API_KEYS"
API_KEYS_FILE_ENV = "FLASHFEED_API_KEYS_FILE"
MIN_API_KEY_CHARS = 16
GLOBAL_FALLBACK = "all"
ID_RULE = "1 to 64 characters of letters, digits, '_', '.', ':' or '-'"

# Typed parameters: the OpenAPI document declares them, FastAPI checks them, and
# `PARAMETER_ERRORS` answers a bad one with the API's own error (a 422 for anything else).
MemberId = Annotated[str, Path(pattern=ID_REGEX, description="the member's id", examples=["m-000123"])]
StyleId = Annotated[str, Path(pattern=ID_REGEX, description="a product (style) id", examples=["s-1"])]
FeedName = Literal["products", "brands", "categories", "because"]
VariantName = Literal["card", "full"]
PARAMETER_ERRORS = {
    ("path", "member_id"): (400, "invalid member id", f"member_id must be {ID_RULE}"),
    ("path", "style_id"): (400, "invalid style id", f"style_id must be {ID_RULE}"),
    ("path", "feed"): (404, "unknown feed", f"use one of {', '.join(MEMBER_FEEDS)}"),
    ("query", "variant"): (400, "invalid variant", "use card or full"),
    ("query", "division"): (400, "invalid division",
                            "division must be a division key or name of 1 to 64 letters, digits, spaces or "
                            "_ - ' & . , starting with a letter or digit, e.g. women or Women's Apparel"),
}
SOURCE_MEMBER = "member"
SOURCE_FALLBACK = "fallback"


# --- the OpenAPI document: what every response looks like ------------------------------------

class ErrorBody(BaseModel):
    error: str = Field(description="what went wrong, short")
    detail: str = Field(description="the cause and what to do")


class Group(BaseModel):
    key: str = Field(description="subclass-brand id, brand, subclass key, or (because) the product viewed")
    name: str | None = Field(None, description="display name, e.g. 'Gracia Day Dresses', 'Because you viewed …'")
    affinity: float | None = Field(None, description="the member's affinity (products, brands, categories)")
    boost: float | None = Field(None, description="recent-activity boost applied to the affinity")
    score: float | None = Field(None, description="related: the relatedness score (log-likelihood ratio by default)")
    styles: list[str] = Field(description="product ids, best first, all on sale in the version's window")


class MemberPayload(BaseModel):
    member_id: str = Field(description="the member, or `__fallback__#<division>` for a fallback payload")
    feed: str = Field(description="products | brands | categories | because")
    variant: str = Field(description="card | full")
    version: str = Field(description="the launch version, YYYYMMDDtHHMM")
    groups: list[Group]


class RelatedPayload(BaseModel):
    style_id: str
    feed: str = Field(description="related")
    version: str
    groups: list[Group] = Field(description="related subclass-brands with products on sale, most related first")


class BoughtTogetherPayload(BaseModel):
    style_id: str
    feed: str = Field(description="bought_together")
    version: str
    styles: list[str] = Field(description="products bought with it (the best of each subclass-brand first)")


class Liveness(BaseModel):
    status: str = Field(description="`alive`")


class Readiness(BaseModel):
    status: str = Field(description="`ready` or `not ready`")
    served_version: str | None = Field(description="the served version, YYYYMMDDtHHMM")
    pointer_age_seconds: float | None = Field(None, description="seconds since the served version was read")
    error: str | None = None
    detail: str | None = None


def _header(description: str) -> dict:
    return {"description": description, "schema": {"type": "string"}}


VERSION_HEADER = {"X-Feed-Version": _header("the served version the payload comes from, YYYYMMDDtHHMM")}
ERRORS = {
    400: {"model": ErrorBody, "description": "invalid id, variant or division"},
    401: {"model": ErrorBody, "description": "API keys are set and the request has none or a wrong one"},
    404: {"model": ErrorBody, "description": "unknown feed, or no payload in the served version"},
    422: {"model": ErrorBody, "description": "malformed request"},
    503: {"model": ErrorBody, "description": "nothing served yet, or the store cannot be read; retry shortly"},
}


class ApiError(Exception):
    def __init__(self, status: int, error: str, detail: str):
        super().__init__(error)
        self.status, self.error, self.detail = status, error, detail


class ServedPointer:
    """The served version, read from the control item at most every `ttl` seconds, with its
    experiment parsed once per read.

    No lock is held across the read: the lock only guards these fields. One refresh at a time;
    while it runs, other requests use the cached pointer. A cached pointer older than `ttl` is
    returned at once and refreshed in the background (`read` has its own deadline). When a refresh
    fails, the last good pointer is served for up to `max_stale` seconds after it was read, and the
    failure is logged; after that (or before any good read) a request waits for a refresh only
    until its own deadline, then `ServedPointerUnavailable` (503). A failed refresh is not tried
    again for `RETRY_SECONDS`, so a down store sees one pointer read per interval, not one per request.
    """

    RETRY_SECONDS = 0.25

    def __init__(self, read: Callable[[], dict | None], ttl: float, max_stale: float, read_budget: float):
        self._read, self._ttl, self._max_stale, self._read_budget = read, ttl, max_stale, read_budget
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._value: dict | None = None
        self._read_at = float("-inf")          # monotonic time of the last good read
        self._next_try = float("-inf")         # no refresh before this (after a failure)
        self._refreshing = False
        self._failures = 0
        self._last_error = "not read yet"

    def age(self) -> float:
        """Seconds since the last good read (inf before the first)."""
        return time.monotonic() - self._read_at

    def get(self, until: float) -> dict | None:
        """The served pointer (None: nothing served); `until` is the caller's deadline (monotonic)."""
        with self._lock:
            now = time.monotonic()
            usable = now - self._read_at < self._max_stale
            if now - self._read_at < self._ttl:
                return self._value
            start = not self._refreshing and now >= self._next_try
            if start:
                self._refreshing = True
            value = self._value
        if start and usable:
            threading.Thread(target=self._refresh, name="served-pointer-refresh", daemon=True).start()
        if usable:
            return value
        if start:
            self._refresh(max(0.0, until - time.monotonic()))
        return self._wait_for_good_read(until)

    def _wait_for_good_read(self, until: float) -> dict | None:
        with self._lock:
            while time.monotonic() - self._read_at >= self._max_stale:
                left = until - time.monotonic()
                if not self._refreshing or left <= 0:
                    raise ServedPointerUnavailable(
                        f"the served version could not be read ({self._last_error}); "
                        + (f"the last good read was {self.age():.0f} s ago, more than "
                           f"serving.api_pointer_max_stale_seconds ({self._max_stale:g} s)"
                           if self._read_at > float("-inf") else "it has not been read since the API started"))
                self._changed.wait(left)
            return self._value

    def _refresh(self, budget: float | None = None) -> None:
        """One read of the control item within `budget` seconds (default: a request's budget)."""
        try:
            with dynamodb_reader.deadline(self._read_budget if budget is None else budget):
                value = self._read()
        except Exception as error:      # any failure keeps the last good pointer; logged below
            self._failed(error)
            return
        with self._lock:
            recovered, self._failures = self._failures, 0
            self._value, self._read_at, self._refreshing = value, time.monotonic(), False
            self._changed.notify_all()
        if recovered:
            logger.info("Served-pointer read works again after %d failed refreshes; serving %s", recovered,
                        value and value["version"])

    def _failed(self, error: Exception) -> None:
        with self._lock:
            self._failures += 1
            self._last_error = f"{type(error).__name__}: {error}"
            self._next_try = time.monotonic() + self.RETRY_SECONDS
            self._refreshing = False
            self._changed.notify_all()
            age, value, failures = self.age(), self._value, self._failures
        if age < self._max_stale:
            logger.warning("Served-pointer refresh failed (%s, %d in a row); still serving %s, read %.1f s ago "
                           "(for at most serving.api_pointer_max_stale_seconds = %g s)", self._last_error, failures,
                           value and value["version"], age, self._max_stale)
        else:
            logger.error("Served-pointer refresh failed (%s, %d in a row) and no good read for %.0f s: answering "
                         "503 until the control table can be read. Next step: check DynamoDB and the API's IAM "
                         "role (GetItem on the control table)", self._last_error, failures, age)


class ServedPointerUnavailable(ServingStoreError):
    """The served version is unknown: the control item cannot be read and no recent good read exists."""


def read_served_pointer(client, prefix: str | None) -> dict | None:
    """The control item's served pointer with its experiment parsed; ServingStoreError when malformed."""
    served = control.served_version(client, prefix)
    if served is None:
        return None
    try:
        return {**served, "experiment": experiments.from_dict(served.get("experiment"))}
    except (ValueError, TypeError, KeyError) as error:
        raise ServingStoreError(f"the control item's experiment of {served['version']} is malformed ({error}); "
                                "fix it with the flashfeed_experiment DAG or flip again") from None


@contextmanager
def store_errors_as_503() -> Iterator[None]:
    """DynamoDB unreachable, slow past the budget, throttled, a table deleted under us, or the
    reader not set up: 503 at once, with the cause in the body and the log."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (BotoCoreError, ClientError, ServingStoreError) as error:
        logger.warning("serving store request failed: %s: %s", type(error).__name__, error)
        raise ApiError(503, "serving store unavailable",
                       f"the feed store could not be read ({type(error).__name__}: {error}); retry shortly") from None


def _error(status: int, error: str, detail: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": error, "detail": detail})


class FallbackCache:
    """Fallback payloads by (table, feed key, division), kept while their table is served: every
    unknown member of a division gets the same one, so it is read once, not per request."""

    MAX_ENTRIES = 4096        # divisions x feeds x variants x versions: far more than a retailer has

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, str, str], tuple[str, str]] = {}

    def get(self, table: str, key: str, division: str) -> tuple[str, str] | None:
        with self._lock:
            return self._entries.get((table, key, division))

    def put(self, table: str, key: str, division: str, payload: str, fallback: str) -> None:
        with self._lock:
            if len(self._entries) >= self.MAX_ENTRIES:
                self._entries = {k: v for k, v in self._entries.items() if k[0] == table}
            self._entries[(table, key, division)] = (payload, fallback)


class FeedStore:
    """What the routes read: the served version (cached pointer) and payloads of its table, every
    read of one request within `budget_seconds`."""

    def __init__(self, client, table_prefix: str, settings: dict):
        self._client = client
        self._client_lock = threading.Lock()
        self.budget_seconds = settings["api_request_budget_ms"] / 1000.0
        self.pointer = ServedPointer(lambda: read_served_pointer(self.client(), table_prefix),
                                     ttl=settings["api_pointer_cache_seconds"],
                                     max_stale=settings["api_pointer_max_stale_seconds"],
                                     read_budget=self.budget_seconds)
        self.fallbacks = FallbackCache()
        self._warm_client()

    def client(self):
        """The DynamoDB client. A `DynamoDBReader` is made when the store is (credentials may be
        looked up on the network: never inside a request's budget when it can be helped); if that
        failed, on first use, by one thread at a time while the others get 503 at once."""
        if self._client is not None:
            return self._client
        if not self._client_lock.acquire(blocking=False):
            raise ServingStoreError("the DynamoDB client is being set up by another request; retry shortly")
        try:
            if self._client is None:
                self._client = dynamodb_reader.from_settings()
            return self._client
        finally:
            self._client_lock.release()

    def _warm_client(self) -> None:
        try:
            self.client()
        except Exception as error:     # logged; every request retries until it works (and answers 503)
            logger.error("The read API cannot reach DynamoDB yet (%s: %s); requests answer 503 until it can. Next "
                         "step: check the endpoint, region and credentials (docs/serving.md)",
                         type(error).__name__, error)

    @contextmanager
    def request(self) -> Iterator[float]:
        """One request's scope: its deadline (yielded) bounds every read; store failures are 503."""
        with dynamodb_reader.deadline(self.budget_seconds) as until, store_errors_as_503():
            yield until

    def served_or_503(self, until: float) -> dict:
        served = self.pointer.get(until)
        if served is None:
            raise ApiError(503, "nothing served yet",
                           "no feed version has been flipped to serving; run the launch feeds DAG")
        return served

    def member_feed(self, member_id: str, feed: str, variant: str, division: str | None) -> tuple[str, dict]:
        """The member's payload (her experiment variant's while one runs), else a fallback; with its headers."""
        if variant not in MEMBER_FEEDS[feed]:
            raise ApiError(404, "no such variant",
                           f"feed {feed} has no {variant} variant; use {' or '.join(MEMBER_FEEDS[feed])}")
        with self.request() as until:
            served = self.served_or_503(until)
            headers = {"X-Feed-Version": served["version"], "X-Feed-Source": SOURCE_MEMBER}
            experiment_variant = None
            experiment = served["experiment"]
            if experiment is not None and feed in FEEDS:
                assigned = experiment.variant(member_id)
                if f"{experiment.name}:{assigned}" in served.get("stopped", ()):
                    assigned = experiments.CONTROL          # stopped: its members see control again
                experiment_variant = None if assigned == experiments.CONTROL else assigned
                headers["X-Feed-Experiment"] = f"{experiment.name}:{assigned}"
            payload = payloads.get_item_payload(self.client(), served["table"], member_id,
                                                payloads.feed_key(feed, variant, experiment_variant))
            if payload is None:
                payload, fallback = self.fallback(served["table"], feed, variant, division)
                headers.update({"X-Feed-Source": SOURCE_FALLBACK, "X-Feed-Fallback": fallback})
        if payload is None:
            raise ApiError(404, "no feed for member",
                           f"member {member_id} has no {feed} {variant} feed in version "
                           f"{served['version']} and there is no fallback payload")
        return payload, headers

    def fallback(self, table: str, feed: str, variant: str, division: str | None) -> tuple[str | None, str]:
        """The division's fallback payload when the hint is given and it exists, else the global one;
        from the cache when this API read it before for the same table."""
        key = payloads.feed_key(feed, variant)
        wanted = division or GLOBAL_FALLBACK
        cached = self.fallbacks.get(table, key, wanted)
        if cached is not None:
            return cached
        if wanted == GLOBAL_FALLBACK:
            found = {payloads.GLOBAL_FALLBACK_MEMBER: payloads.get_item_payload(
                self.client(), table, payloads.GLOBAL_FALLBACK_MEMBER, key)}
        else:
            found = payloads.get_payloads(self.client(), table, [
                (FALLBACK_MEMBER_PREFIX + wanted, key), (payloads.GLOBAL_FALLBACK_MEMBER, key)])
        if found.get(FALLBACK_MEMBER_PREFIX + wanted) is not None:
            payload, fallback = found[FALLBACK_MEMBER_PREFIX + wanted], wanted
        else:
            payload, fallback = found.get(payloads.GLOBAL_FALLBACK_MEMBER), GLOBAL_FALLBACK
        if payload is not None:
            self.fallbacks.put(table, key, wanted, payload, fallback)
        return payload, fallback

    def product_feed(self, style_id: str, feed: str) -> Response:
        with self.request() as until:
            served = self.served_or_503(until)
            payload = payloads.get_product_payload(self.client(), served["table"], style_id, feed)
        if payload is None:
            raise ApiError(404, "no products for style",
                           f"style {style_id} is not on sale in version {served['version']} (or nothing on sale "
                           f"relates to it): there is no {feed} payload for it")
        return Response(content=payload, media_type="application/json", headers={"X-Feed-Version": served["version"]})

    def readiness(self) -> JSONResponse:
        """Ready when the served version is known (through the pointer cache: no extra read per
        probe when it is fresh); names the version only, never a table."""
        try:
            with self.request() as until:
                served = self.served_or_503(until)
        except ApiError as error:
            return JSONResponse(status_code=503, content={"status": "not ready", "served_version": None,
                                                          "error": error.error, "detail": error.detail})
        return JSONResponse({"status": "ready", "served_version": served["version"],
                             "pointer_age_seconds": round(self.pointer.age(), 3)})


class ApiKeys:
    """Optional access keys: FLASHFEED_API_KEYS (comma-separated) and/or the file named by
    FLASHFEED_API_KEYS_FILE (one key per line, `#` comments). With none, the API is open (an
    internal service behind the site's backend); with any, the feed routes need `X-API-Key`."""

    def __init__(self, keys: list[str]):
        self._keys = [key.encode("utf-8") for key in keys]

    @classmethod
    def from_environment(cls, environ=os.environ) -> ApiKeys:
        keys = [key.strip() for key in environ.get(API_KEYS_ENV, "").split(",")]
        path = environ.get(API_KEYS_FILE_ENV)
        if path:
            try:
                text = open(path, encoding="utf-8").read()
            except OSError as error:
                raise SystemExit(f"{API_KEYS_FILE_ENV}={path} cannot be read ({error}); fix the path or unset it") \
                    from None
            keys += [line.strip() for line in text.splitlines() if not line.strip().startswith("#")]
        keys = [key for key in keys if key]
        short = [key for key in keys if len(key) < MIN_API_KEY_CHARS]
        if short:
            raise SystemExit(f"{len(short)} API key(s) shorter than {MIN_API_KEY_CHARS} characters in "
                             f"{API_KEYS_ENV}/{API_KEYS_FILE_ENV}: use long random keys (e.g. openssl rand -hex 32)")
        return cls(keys)

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def allows(self, given: str | None) -> bool:
        """Constant time for a key of any content: every configured key is compared."""
        candidate = (given or "").encode("utf-8")
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(candidate, key)
        return matched


def add_error_handlers(app: FastAPI) -> None:
    """Every error is `{"error", "detail"}`; a bad id, feed or variant names the rule it breaks."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, error: ApiError) -> JSONResponse:
        return _error(error.status, error.error, error.detail)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, error: StarletteHTTPException) -> JSONResponse:
        if error.status_code == 404:
            return _error(404, "not found", "no such endpoint; try GET /v1/members/{member_id}/feeds/{feed}")
        response = _error(error.status_code, "request failed", str(error.detail))
        response.headers.update(error.headers or {})          # a 405 keeps its Allow header
        return response

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, error: RequestValidationError) -> JSONResponse:
        errors = error.errors()
        known = PARAMETER_ERRORS.get(tuple(errors[0].get("loc", ())[:2])) if errors else None
        if known:
            status, title, rule = known
            return _error(status, title, f"{errors[0].get('input')!r} is not valid: {rule}")
        problems = "; ".join(f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg')}" for e in errors)
        return _error(422, "invalid request", problems)


def api_key_dependencies(keys: ApiKeys) -> list:
    """The feed routes' dependencies: none when no keys are set (and the OpenAPI document declares
    no security), else a check of `X-API-Key` (401 unless it is one of `keys`)."""
    if not keys.enabled:
        return []
    header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False, description="one of the deployment's API keys")

    def check(given: str | None = Security(header)) -> None:   # `header` is local: not in an annotation
        if not keys.allows(given):
            raise ApiError(401, "missing or invalid API key",
                           f"send a valid key in the {API_KEY_HEADER} header; ask the team that runs the API")
    return [Depends(check)]


def create_app(client=None, prefix: str | None = None, api_keys: ApiKeys | None = None) -> FastAPI:
    """The read API over `client`: a `DynamoDBReader` (the default, `dynamodb_reader.from_settings()`,
    created lazily) or a boto3 DynamoDB client (tests: its calls are not bounded by the budget).
    `api_keys`: default from the environment (`ApiKeys.from_environment`)."""
    settings = load_config()["serving"]
    store = FeedStore(client, settings["table_prefix"] if prefix is None else prefix, settings)
    keys = ApiKeys.from_environment() if api_keys is None else api_keys
    docs = settings["api_docs"]
    app = FastAPI(title="flashfeed read API", version="1",
                  description="Personalised flash-sale feeds: one member's payload per request.",
                  docs_url="/docs" if docs else None, redoc_url="/redoc" if docs else None,
                  openapi_url="/openapi.json" if docs else None)
    app.state.store = store
    add_error_handlers(app)
    feed_route = {"dependencies": api_key_dependencies(keys)}

    @app.get("/v1/members/{member_id}/feeds/{feed}", response_class=Response, responses={
        200: {"model": MemberPayload, "description": "the member's payload, or a fallback payload, verbatim",
              "headers": {**VERSION_HEADER,
                          "X-Feed-Source": _header("`member`, or `fallback` when the member is unknown to this "
                                                   "version"),
                          "X-Feed-Fallback": _header("with `fallback`: the division key whose fallback it is, "
                                                     "or `all`"),
                          "X-Feed-Experiment": _header("while an experiment runs (products, brands, categories): "
                                                       "`<experiment>:<variant>` served to this member")}},
        **ERRORS}, **feed_route)
    def member_feed(
        member_id: MemberId, feed: Annotated[FeedName, Path(description="the collection")],
        variant: Annotated[VariantName, Query(description="card (a few groups, a carousel) or full (a long "
                                                          "list); because has card only")] = DEFAULT_VARIANT,
        division: Annotated[str | None, Query(pattern=DIVISION_REGEX, description=(
            "the member's division, a hint for an unknown member: she gets that division's fallback (`all`: "
            "the global one). Its key or its name: `womens_apparel` and `Women's Apparel` are the same "
            "division (flashfeed.core.divisions)"))] = None,
    ) -> Response:
        payload, headers = store.member_feed(member_id, feed, variant, division_hint(division))
        return Response(content=payload, media_type="application/json", headers=headers)

    @app.get("/v1/styles/{style_id}/related", response_class=Response, responses={
        200: {"model": RelatedPayload, "description": "products related to this one, verbatim",
              "headers": VERSION_HEADER}, **ERRORS}, **feed_route)
    def related(style_id: StyleId) -> Response:
        """Products of the subclass-brands most related to this product's (member co-occurrence)."""
        return store.product_feed(style_id, RELATED)

    @app.get("/v1/styles/{style_id}/bought-together", response_class=Response, responses={
        200: {"model": BoughtTogetherPayload, "description": "products bought with this one, verbatim",
              "headers": VERSION_HEADER}, **ERRORS}, **feed_route)
    def bought_together(style_id: StyleId) -> Response:
        """Products of the subclass-brands bought with this product's (FP-Growth association rules)."""
        return store.product_feed(style_id, BOUGHT_TOGETHER)

    @app.get("/v1/live", response_model=Liveness)
    def live() -> dict:
        """Liveness: the process answers. Touches nothing else (restart the process only when this fails)."""
        return {"status": "alive"}

    @app.get("/v1/ready", response_model=Readiness, responses={
        503: {"model": Readiness, "description": "nothing served, or the served version cannot be read"}})
    def ready() -> JSONResponse:
        """Readiness: the served version is known (the pointer cache; at most one control-table read per
        `serving.api_pointer_cache_seconds`). Take the process out of the load balancer when 503."""
        return store.readiness()

    return app


def division_hint(division: str | None) -> str | None:
    """The division key of the `division` query (its name or key), else None (global fallback)."""
    if division is None:
        return None
    try:
        return division_key(division)
    except ValueError as error:
        raise ApiError(400, "invalid division", f"{error}; give the member's division key, e.g. women") from None


def app_from_environment() -> FastAPI:
    """What each uvicorn worker process serves: the API over FLASHFEED_DYNAMODB_ENDPOINT (else AWS)."""
    return create_app()


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    settings = load_config()["serving"]
    parser = argparse.ArgumentParser(prog="python -m flashfeed.serving.api", description="Run the flashfeed read API.")
    parser.add_argument("--host", default=HOST, help=f"listen address (default {HOST})")
    parser.add_argument("--port", type=int, default=int(os.environ.get(PORT_ENV) or DEFAULT_PORT),
                        help=f"port (default: {PORT_ENV} or {DEFAULT_PORT})")
    parser.add_argument("--endpoint", default=None,
                        help=f"DynamoDB endpoint (default: {tables.ENDPOINT_ENV}, else AWS)")
    parser.add_argument("--workers", type=int, default=settings["api_workers"],
                        help="worker processes (default: serving.api_workers)")
    args = parser.parse_args(argv)
    keys = ApiKeys.from_environment()           # a bad key file fails here, before any worker starts
    logger.info("read API: %s", f"{API_KEY_HEADER} required ({API_KEYS_ENV}/{API_KEYS_FILE_ENV})" if keys.enabled
                else "no API key required (an internal service: see docs/serving.md, Access)")
    if args.endpoint:
        os.environ[tables.ENDPOINT_ENV] = args.endpoint       # the workers' environment
    # Every worker process builds its own app and store client; the access log is off by
    # default (serving.api_access_log): a line per request costs a fifth of the API's CPU.
    uvicorn.run("flashfeed.serving.api:app_from_environment", factory=True, host=args.host, port=args.port,
                workers=args.workers, access_log=settings["api_access_log"], log_level="info")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
