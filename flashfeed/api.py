"""Read API: one member's payload for one feed in a single request.

    python -m flashfeed.api            # http://127.0.0.1:8088 (FLASHFEED_API_PORT)

- `GET /v1/members/{member_id}/feeds/{feed}?variant=card|full` (variant defaults to `card`)
  returns the stored payload string verbatim (no re-serialisation) with headers
  `X-Feed-Version` (the served version) and `X-Feed-Source` (`member`, or `fallback` when
  the member is unknown to this version and gets the global fallback `__fallback__#all`:
  the API does not know a member's division).
- `GET /v1/health` -> `{"status": "ok", "served_version": ..., "table": ...}`, 503 when
  nothing is served or the served table is missing.

The served version comes from the control item, cached for `serving.api_pointer_cache_seconds`
so a flip reaches every API process within that time; then one GetItem in the served table.
Errors are JSON `{"error": ..., "detail": ...}`: 400 bad member id or variant, 404 unknown
feed or no payload, 422 malformed request, 503 nothing served / store unreachable.
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import threading
import time
from contextlib import contextmanager
from typing import Any, Iterator

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from flashfeed import serving_store
from flashfeed.config import load_config
from flashfeed.lake import FEEDS, VARIANTS

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
DEFAULT_PORT = 8088
PORT_ENV = "FLASHFEED_API_PORT"
DEFAULT_VARIANT = "card"
MEMBER_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
SOURCE_MEMBER = "member"
SOURCE_FALLBACK = "fallback"


class ApiError(Exception):
    def __init__(self, status: int, error: str, detail: str):
        super().__init__(error)
        self.status, self.error, self.detail = status, error, detail


class ServedPointer:
    """The served version, re-read from the control item at most every `ttl` seconds."""

    def __init__(self, client_factory, prefix: str | None, ttl: float):
        self._client_factory, self._prefix, self._ttl = client_factory, prefix, ttl
        self._lock = threading.Lock()
        self._value: dict | None = None
        self._read_at = float("-inf")

    def get(self, fresh: bool = False) -> dict | None:
        with self._lock:
            if fresh or time.monotonic() - self._read_at >= self._ttl:
                self._value = serving_store.served_version(self._client_factory(), self._prefix)
                self._read_at = time.monotonic()
            return self._value


@contextmanager
def store_errors_as_503() -> Iterator[None]:
    """DynamoDB unreachable, throttled or a table deleted under us: 503, with the cause logged."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (BotoCoreError, ClientError) as error:
        logger.warning("serving store request failed: %s", error)
        raise ApiError(503, "serving store unavailable",
                       f"the feed store could not be read ({type(error).__name__}); retry shortly") from None


def _error(status: int, error: str, detail: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": error, "detail": detail})


def create_app(client=None, prefix: str | None = None) -> FastAPI:
    """The read API over `client` (default: `serving_store.dynamodb_client()`, created lazily)."""
    settings = load_config()["serving"]
    table_prefix = settings["table_prefix"] if prefix is None else prefix
    state: dict[str, Any] = {"client": client}
    client_lock = threading.Lock()

    def get_client():
        with client_lock:
            if state["client"] is None:
                state["client"] = serving_store.dynamodb_client()
            return state["client"]

    pointer = ServedPointer(get_client, table_prefix, float(settings["api_pointer_cache_seconds"]))
    app = FastAPI(title="flashfeed read API", version="1",
                  description="Personalised flash-sale feeds: one member's payload per request.")
    app.state.pointer = pointer

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, error: ApiError) -> JSONResponse:
        return _error(error.status, error.error, error.detail)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, error: StarletteHTTPException) -> JSONResponse:
        if error.status_code == 404:
            return _error(404, "not found", "no such endpoint; try GET /v1/members/{member_id}/feeds/{feed}")
        return _error(error.status_code, "request failed", str(error.detail))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, error: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg')}" for e in error.errors())
        return _error(422, "invalid request", problems)

    def served_or_503() -> dict:
        with store_errors_as_503():
            served = pointer.get()
        if served is None:
            raise ApiError(503, "nothing served yet",
                           "no feed version has been flipped to serving; run the launch feeds DAG")
        return served

    @app.get("/v1/members/{member_id}/feeds/{feed}")
    def member_feed(member_id: str, feed: str, variant: str = DEFAULT_VARIANT) -> Response:
        if not MEMBER_ID_PATTERN.fullmatch(member_id):
            raise ApiError(400, "invalid member id",
                           "member_id must be 1 to 64 characters of letters, digits, '_', '.', ':' or '-'")
        if feed not in FEEDS:
            raise ApiError(404, "unknown feed", f"feed {feed!r} does not exist; use one of {', '.join(FEEDS)}")
        if variant not in VARIANTS:
            raise ApiError(400, "invalid variant",
                           f"variant {variant!r} does not exist; use one of {', '.join(VARIANTS)}")
        served = served_or_503()
        with store_errors_as_503():
            client = get_client()
            source = SOURCE_MEMBER
            payload = serving_store.get_payload(client, served["table"], member_id, feed, variant)
            if payload is None:
                source = SOURCE_FALLBACK
                payload = serving_store.get_payload(client, served["table"],
                                                    serving_store.GLOBAL_FALLBACK_MEMBER, feed, variant)
        if payload is None:
            raise ApiError(404, "no feed for member",
                           f"member {member_id} has no {feed} {variant} feed in version "
                           f"{served['version']} and there is no fallback payload")
        return Response(content=payload, media_type="application/json",
                        headers={"X-Feed-Version": served["version"], "X-Feed-Source": source})

    @app.get("/v1/health")
    def health() -> JSONResponse:
        with store_errors_as_503():
            served = pointer.get(fresh=True)     # health answers about now, not the cache
        if served is None:
            return JSONResponse(status_code=503, content={
                "status": "unavailable", "served_version": None, "table": None,
                "error": "nothing served yet", "detail": "no feed version has been flipped to serving"})
        with store_errors_as_503():
            table_ok = serving_store.table_exists(get_client(), served["table"])
        if not table_ok:
            return JSONResponse(status_code=503, content={
                "status": "unavailable", "served_version": served["version"], "table": served["table"],
                "error": "served table missing",
                "detail": f"table {served['table']} does not exist or is not ACTIVE; flip to a retained version"})
        return JSONResponse({"status": "ok", "served_version": served["version"], "table": served["table"]})

    return app


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m flashfeed.api", description="Run the flashfeed read API.")
    parser.add_argument("--host", default=HOST, help=f"listen address (default {HOST})")
    parser.add_argument("--port", type=int, default=int(os.environ.get(PORT_ENV) or DEFAULT_PORT),
                        help=f"port (default: {PORT_ENV} or {DEFAULT_PORT})")
    parser.add_argument("--endpoint", default=None,
                        help="DynamoDB endpoint (default: FLASHFEED_DYNAMODB_ENDPOINT, else AWS)")
    args = parser.parse_args(argv)
    client = serving_store.dynamodb_client(args.endpoint) if args.endpoint else None
    uvicorn.run(create_app(client), host=args.host, port=args.port, log_level="info")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
