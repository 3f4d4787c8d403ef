"""Read API: one member's payload for one feed, or one product's related products, in a single request.

    python -m flashfeed.serving.api            # http://127.0.0.1:8088 (FLASHFEED_API_PORT), /docs, /openapi.json

- `GET /v1/members/{member_id}/feeds/{feed}?variant=card|full&division=<division>`: feed one of
  products, brands, categories (variant `card`, the default, or `full`) or because (`card`
  only). Returns the stored payload string verbatim (no re-serialisation) with headers
  `X-Feed-Version` (the served version) and `X-Feed-Source` (`member`, or `fallback` when the
  member is unknown to this version). An unknown member gets the fallback of the division
  given as `division` (a hint from the caller: the API does not know a member's division),
  else, or when that division has no fallback, the global one; `X-Feed-Fallback` names it.
  While an experiment runs (config `experiments`), the six collections answer with the
  member's variant (a stable salted hash of her id, flashfeed.core.experiments) and name it in
  `X-Feed-Experiment: <experiment>:<variant>`; a stopped variant's members get control.
- `GET /v1/styles/{style_id}/related`: products related to one product on sale (groups of the
  related subclass-brands' products); `GET /v1/styles/{style_id}/bought-together`: products
  bought with it. One GetItem each; 404 when the product is not on sale in the served version.
- `GET /v1/health` -> `{"status": "ok", "served_version": ..., "table": ...}`, 503 when
  nothing is served or the served table is missing.

The served version comes from the control item, cached for `serving.api_pointer_cache_seconds`
so a flip reaches every API process within that time; then one GetItem in the served table (a
member unknown to it: one more request, a BatchGetItem of her fallbacks).
Errors are JSON `{"error": ..., "detail": ...}`: 400 bad member id, style id, variant or
division, 404 unknown feed, a variant the feed lacks or no payload, 405 (with `Allow`) another
method, 422 malformed request, 503 nothing served / store unreachable. Every parameter (typed:
patterns, enums), response and header is declared in the OpenAPI document (`/openapi.json`).
"""
from __future__ import annotations

import argparse
import logging
import os
import threading
import time
from contextlib import contextmanager
from typing import Annotated, Iterator, Literal

from fastapi import FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from flashfeed.core import experiments
from flashfeed.core.config import load_config
from flashfeed.core.lake import BOUGHT_TOGETHER, FALLBACK_MEMBER_PREFIX, FEEDS, MEMBER_FEEDS, RELATED
from flashfeed.serving import control, dynamodb_reader, payloads, tables
from flashfeed.serving.errors import ServingStoreError

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
DEFAULT_PORT = 8088
PORT_ENV = "FLASHFEED_API_PORT"
DEFAULT_VARIANT = "card"
ID_REGEX = r"^[A-Za-z0-9_.:-]{1,64}$"        # the lake's id rule (spark_jobs/transforms/cleaning.py)
DIVISION_REGEX = r"^[A-Za-z][A-Za-z0-9_-]{0,31}$"
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
                            "division must be a division name of 1 to 32 letters, digits, '_' or '-', "
                            "starting with a letter, e.g. women"),
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


class Health(BaseModel):
    status: str
    served_version: str | None
    table: str | None
    error: str | None = None
    detail: str | None = None


def _header(description: str) -> dict:
    return {"description": description, "schema": {"type": "string"}}


VERSION_HEADER = {"X-Feed-Version": _header("the served version the payload comes from, YYYYMMDDtHHMM")}
ERRORS = {
    400: {"model": ErrorBody, "description": "invalid id, variant or division"},
    404: {"model": ErrorBody, "description": "unknown feed, or no payload in the served version"},
    422: {"model": ErrorBody, "description": "malformed request"},
    503: {"model": ErrorBody, "description": "nothing served yet, or the store cannot be read; retry shortly"},
}


class ApiError(Exception):
    def __init__(self, status: int, error: str, detail: str):
        super().__init__(error)
        self.status, self.error, self.detail = status, error, detail


class ServedPointer:
    """The served version, re-read from the control item at most every `ttl` seconds; its
    experiment is parsed once per read (`experiment`: an Experiment or None)."""

    def __init__(self, client_factory, prefix: str | None, ttl: float):
        self._client_factory, self._prefix, self._ttl = client_factory, prefix, ttl
        self._lock = threading.Lock()
        self._value: dict | None = None
        self._read_at = float("-inf")

    def get(self, fresh: bool = False) -> dict | None:
        with self._lock:
            if fresh or time.monotonic() - self._read_at >= self._ttl:
                served = control.served_version(self._client_factory(), self._prefix)
                self._value = served and {**served, "experiment": experiments.from_dict(served.get("experiment"))}
                self._read_at = time.monotonic()
            return self._value


@contextmanager
def store_errors_as_503() -> Iterator[None]:
    """DynamoDB unreachable, throttled or a table deleted under us: 503, with the cause logged."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (BotoCoreError, ClientError, ServingStoreError) as error:
        logger.warning("serving store request failed: %s", error)
        raise ApiError(503, "serving store unavailable",
                       f"the feed store could not be read ({type(error).__name__}); retry shortly") from None


def _error(status: int, error: str, detail: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": error, "detail": detail})


class FeedStore:
    """What the routes read: the served version (cached pointer) and payloads of its table."""

    def __init__(self, client, table_prefix: str, pointer_cache_seconds: float):
        self._client = client
        self._client_lock = threading.Lock()
        self.pointer = ServedPointer(self.client, table_prefix, pointer_cache_seconds)

    def client(self):
        """The DynamoDB client, a `DynamoDBReader` made on first use unless one was given."""
        with self._client_lock:
            if self._client is None:
                self._client = dynamodb_reader.from_settings()
            return self._client

    def served_or_503(self) -> dict:
        with store_errors_as_503():
            served = self.pointer.get()
        if served is None:
            raise ApiError(503, "nothing served yet",
                           "no feed version has been flipped to serving; run the launch feeds DAG")
        return served

    def member_feed(self, member_id: str, feed: str, variant: str, division: str | None) -> tuple[str, dict]:
        """The member's payload (her experiment variant's while one runs), else a fallback; with its headers."""
        if variant not in MEMBER_FEEDS[feed]:
            raise ApiError(404, "no such variant",
                           f"feed {feed} has no {variant} variant; use {' or '.join(MEMBER_FEEDS[feed])}")
        served = self.served_or_503()
        headers = {"X-Feed-Version": served["version"], "X-Feed-Source": SOURCE_MEMBER}
        experiment_variant = None
        experiment = served["experiment"]
        if experiment is not None and feed in FEEDS:
            assigned = experiment.variant(member_id)
            if f"{experiment.name}:{assigned}" in served.get("stopped", ()):
                assigned = experiments.CONTROL          # stopped: its members see control again
            experiment_variant = None if assigned == experiments.CONTROL else assigned
            headers["X-Feed-Experiment"] = f"{experiment.name}:{assigned}"
        with store_errors_as_503():
            payload = payloads.get_item_payload(self.client(), served["table"], member_id,
                                                payloads.feed_key(feed, variant, experiment_variant))
            if payload is None:
                payload, fallback = self.fallback(served["table"], feed, variant,
                                                  division.lower() if division is not None else None)
                headers.update({"X-Feed-Source": SOURCE_FALLBACK, "X-Feed-Fallback": fallback})
        if payload is None:
            raise ApiError(404, "no feed for member",
                           f"member {member_id} has no {feed} {variant} feed in version "
                           f"{served['version']} and there is no fallback payload")
        return payload, headers

    def fallback(self, table: str, feed: str, variant: str, division: str | None) -> tuple[str | None, str]:
        """The division's fallback payload when the hint is given and it exists, else the global one."""
        key = payloads.feed_key(feed, variant)
        if division is None or division == GLOBAL_FALLBACK:
            return payloads.get_item_payload(self.client(), table, payloads.GLOBAL_FALLBACK_MEMBER,
                                             key), GLOBAL_FALLBACK
        found = payloads.get_payloads(self.client(), table, [
            (FALLBACK_MEMBER_PREFIX + division, key), (payloads.GLOBAL_FALLBACK_MEMBER, key)])
        if FALLBACK_MEMBER_PREFIX + division in found:
            return found[FALLBACK_MEMBER_PREFIX + division], division
        return found.get(payloads.GLOBAL_FALLBACK_MEMBER), GLOBAL_FALLBACK

    def product_feed(self, style_id: str, feed: str) -> Response:
        served = self.served_or_503()
        with store_errors_as_503():
            payload = payloads.get_product_payload(self.client(), served["table"], style_id, feed)
        if payload is None:
            raise ApiError(404, "no products for style",
                           f"style {style_id} is not on sale in version {served['version']} (or nothing on sale "
                           f"relates to it): there is no {feed} payload for it")
        return Response(content=payload, media_type="application/json", headers={"X-Feed-Version": served["version"]})

    def health(self) -> JSONResponse:
        with store_errors_as_503():
            served = self.pointer.get(fresh=True)     # health answers about now, not the cache
        if served is None:
            return JSONResponse(status_code=503, content={
                "status": "unavailable", "served_version": None, "table": None,
                "error": "nothing served yet", "detail": "no feed version has been flipped to serving"})
        with store_errors_as_503():
            table_ok = tables.table_exists(self.client(), served["table"])
        if not table_ok:
            return JSONResponse(status_code=503, content={
                "status": "unavailable", "served_version": served["version"], "table": served["table"],
                "error": "served table missing",
                "detail": f"table {served['table']} does not exist or is not ACTIVE; flip to a retained version"})
        return JSONResponse({"status": "ok", "served_version": served["version"], "table": served["table"]})


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


def create_app(client=None, prefix: str | None = None) -> FastAPI:
    """The read API over `client`: a boto3 DynamoDB client or a `DynamoDBReader` (the default,
    `dynamodb_reader.from_settings()`, created lazily)."""
    settings = load_config()["serving"]
    store = FeedStore(client, settings["table_prefix"] if prefix is None else prefix,
                      settings["api_pointer_cache_seconds"])
    app = FastAPI(title="flashfeed read API", version="1",
                  description="Personalised flash-sale feeds: one member's payload per request.")
    app.state.pointer = store.pointer
    add_error_handlers(app)

    @app.get("/v1/members/{member_id}/feeds/{feed}", response_class=Response, responses={
        200: {"model": MemberPayload, "description": "the member's payload, or a fallback payload, verbatim",
              "headers": {**VERSION_HEADER,
                          "X-Feed-Source": _header("`member`, or `fallback` when the member is unknown to this "
                                                   "version"),
                          "X-Feed-Fallback": _header("with `fallback`: the division whose fallback it is, or "
                                                     "`all`"),
                          "X-Feed-Experiment": _header("while an experiment runs (products, brands, categories): "
                                                       "`<experiment>:<variant>` served to this member")}},
        **ERRORS})
    def member_feed(
        member_id: MemberId, feed: Annotated[FeedName, Path(description="the collection")],
        variant: Annotated[VariantName, Query(description="card (a few groups, a carousel) or full (a long "
                                                          "list); because has card only")] = DEFAULT_VARIANT,
        division: Annotated[str | None, Query(pattern=DIVISION_REGEX, description=(
            "the member's division (e.g. women), a hint for an unknown member: she gets that division's "
            "fallback (`all`: the global one)"))] = None,
    ) -> Response:
        payload, headers = store.member_feed(member_id, feed, variant, division)
        return Response(content=payload, media_type="application/json", headers=headers)

    @app.get("/v1/styles/{style_id}/related", response_class=Response, responses={
        200: {"model": RelatedPayload, "description": "products related to this one, verbatim",
              "headers": VERSION_HEADER}, **ERRORS})
    def related(style_id: StyleId) -> Response:
        """Products of the subclass-brands most related to this product's (member co-occurrence)."""
        return store.product_feed(style_id, RELATED)

    @app.get("/v1/styles/{style_id}/bought-together", response_class=Response, responses={
        200: {"model": BoughtTogetherPayload, "description": "products bought with this one, verbatim",
              "headers": VERSION_HEADER}, **ERRORS})
    def bought_together(style_id: StyleId) -> Response:
        """Products of the subclass-brands bought with this product's (FP-Growth association rules)."""
        return store.product_feed(style_id, BOUGHT_TOGETHER)

    @app.get("/v1/health", response_model=Health, responses={503: {"model": Health,
                                                                   "description": "nothing served, or table missing"}})
    def health() -> JSONResponse:
        return store.health()

    return app


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
    if args.endpoint:
        os.environ[tables.ENDPOINT_ENV] = args.endpoint       # the workers' environment
    # Every worker process builds its own app and store client; the access log is off by
    # default (serving.api_access_log): a line per request costs a fifth of the API's CPU.
    uvicorn.run("flashfeed.serving.api:app_from_environment", factory=True, host=args.host, port=args.port,
                workers=args.workers, access_log=settings["api_access_log"], log_level="info")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
