"""HTTP plumbing: the route table, the aiohttp app on its own thread and loop, fault injection, recording."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from tests.fakes.horde import errors as err
from tests.fakes.horde.catalog import CatalogMixin
from tests.fakes.horde.core import HORDE_VERSION, ApiRequest, ApiResponse
from tests.fakes.horde.ratelimit import DEFAULT_RULES, RateRule
from tests.fakes.horde.records import Call, Injection, InterrogationForm, Job, make_call

BANNED_CLIENT_AGENT = "My-Project:v0.0.1:My-Contact"
BANNED_CLIENT_AGENT_MESSAGE = (
    "This Client-Agent has been banned. Please use a unique Client-Agent identifying your client."
)
GEN_RULES = (
    RateRule(90, 60, "ip_path", whitelisted=300),
    RateRule(2, 1, "ip_path", whitelisted=10),
    RateRule(2, 1, "key_path", anon=60),
)
WORKER_RULES = (RateRule(60, 1, "ip_route"),)
NO_RULES: tuple[RateRule, ...] = ()
_ID = r"(?P<id>[^/]+)"


@dataclass(frozen=True)
class Route:
    methods: frozenset[str]
    pattern: re.Pattern[str]
    endpoint: str
    rules: tuple[RateRule, ...]
    name: str


def _route(methods: str, path: str, endpoint: str, rules: tuple[RateRule, ...] = DEFAULT_RULES) -> Route:
    return Route(frozenset(methods.split("|")), re.compile(f"^/api/v2{path}$"), endpoint, rules, path)


ROUTES: tuple[Route, ...] = (
    _route("POST", "/generate/async", "_ep_image_async", GEN_RULES),
    _route("GET", f"/generate/check/{_ID}", "_ep_image_check", (RateRule(10, 1),)),
    _route("GET|DELETE", f"/generate/status/{_ID}", "_ep_image_status", (RateRule(10, 60),)),
    _route("POST", f"/generate/rate/{_ID}", "_ep_image_rate", (RateRule(5, 60),)),
    _route("POST", "/generate/pop", "_ep_image_pop", WORKER_RULES),
    _route("POST", "/generate/submit", "_ep_image_submit", WORKER_RULES),
    _route("POST", "/generate/text/async", "_ep_text_async", GEN_RULES),
    _route("GET|DELETE", f"/generate/text/status/{_ID}", "_ep_text_status", (RateRule(60, 60),)),
    _route("POST", "/generate/text/pop", "_ep_text_pop", WORKER_RULES),
    _route("POST", "/generate/text/submit", "_ep_text_submit", WORKER_RULES),
    _route("POST", "/interrogate/async", "_ep_interrogate_async"),
    _route("GET|DELETE", f"/interrogate/status/{_ID}", "_ep_interrogate_status", (RateRule(10, 1),)),
    _route("POST", "/interrogate/pop", "_ep_interrogate_pop", WORKER_RULES),
    _route("POST", "/interrogate/submit", "_ep_interrogate_submit", WORKER_RULES),
    _route(
        "POST",
        "/kudos/transfer",
        "_ep_kudos_transfer",
        (RateRule(1, 1, "key_path"), RateRule(90, 3600, "key_path", whitelisted=600)),
    ),
    _route("GET", "/find_user", "_ep_find_user"),
    _route("GET", f"/users/{_ID}", "_ep_user", (RateRule(60, 60),)),
    _route("GET", "/workers", "_ep_workers"),
    _route("GET", "/workers/name/(?P<name>.+)", "_ep_worker_by_name"),
    _route("GET", f"/workers/{_ID}", "_ep_worker", (RateRule(30, 60),)),
    _route("GET", "/teams", "_ep_teams", (RateRule(30, 60),)),
    _route("GET", f"/teams/{_ID}", "_ep_team", (RateRule(30, 60),)),
    _route("PUT", "/sharedkeys", "_ep_sharedkey_put", (RateRule(5, 60),)),
    _route("GET|PATCH|DELETE", f"/sharedkeys/{_ID}", "_ep_sharedkey"),
    _route(
        "GET",
        "/styles/image",
        "_ep_styles",
        (RateRule(90, 60, whitelisted=300), RateRule(2, 1, whitelisted=10)),
    ),
    _route("GET", f"/styles/image/{_ID}", "_ep_style", (RateRule(20, 3600), RateRule(2, 1, whitelisted=10))),
    _route("GET", "/styles/image_by_name/(?P<name>.+)", "_ep_style_by_name"),
    _route(
        "GET",
        "/collections",
        "_ep_collections",
        (RateRule(90, 60, whitelisted=300), RateRule(2, 1, whitelisted=10)),
    ),
    _route("GET", "/status/models", "_ep_models"),
    _route("GET", "/status/models/(?P<name>.+)", "_ep_model"),
    _route("GET", "/status/news", "_ep_news"),
    _route("GET", "/status/performance", "_ep_performance"),
    _route("GET", "/status/heartbeat", "_ep_heartbeat", NO_RULES),
    _route("GET", "/status/modes", "_ep_modes", (RateRule(30, 60, "ip_route"),)),
    _route("GET", "/stats/img/totals", "_ep_stats_img"),
    _route("GET", "/stats/text/totals", "_ep_stats_text"),
)
_R2_PATH = re.compile(r"^/r2/(?P<id>[^/]+)\.webp$")
MODEL_REFERENCE_PATH = "/model-reference.json"  # not under /api: the real file lives on GitHub
LORA_REFERENCE_PATH = "/lora.json"  # the curated LoRA list beside it (a JSON list of CivitAI model ids)

_HTML_ERRORS = {
    502: "502 Bad Gateway",
    503: "503 Service Temporarily Unavailable",
    504: "504 Gateway Time-out",
}


def _html_page(status: int) -> bytes:
    title = _HTML_ERRORS.get(status, f"{status} {HTTPStatus(status).phrase}")
    page = f"<html><head><title>{title}</title></head><body><center><h1>{title}</h1></center></body></html>"
    return page.encode()


def _s3_error(code: str, message: str) -> bytes:
    xml = f"<Error><Code>{code}</Code><Message>{message}</Message></Error>"
    xml = '<?xml version="1.0" encoding="UTF-8"?>' + xml
    return xml.encode()


class FakeHorde(CatalogMixin):
    """A fake AI Horde speaking the real wire protocol on 127.0.0.1 (see the package docstring)."""

    def __init__(
        self,
        *,
        enforce_rate_limits: bool = True,
        clock: Callable[[], float] = time.monotonic,
        horde_limiter: bool = True,
    ) -> None:
        super().__init__(clock=clock)
        self.enforce_rate_limits = enforce_rate_limits
        self.horde_limiter = horde_limiter
        self._base_url: str | None = None
        self.port: int | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._wake: asyncio.Event | None = None

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/api`` once started."""
        if self._base_url is None:
            raise RuntimeError("FakeHorde is not started")
        return self._base_url

    @property
    def horde_limiter(self) -> bool:
        """True (the default): the limiter counts as AI Horde 5.1.5 does (fixed windows, ``Retry-After: 0``
        when the window resets within the second); False: the older moving windows (``Retry-After`` >= 1),
        only for a test that says why it needs them."""
        return self.rate_limiter.strategy == "horde"

    @horde_limiter.setter
    def horde_limiter(self, value: bool) -> None:
        with self.lock:
            self.rate_limiter.strategy = "horde" if value else "moving"

    # ---- lifecycle -----------------------------------------------------------------------------------
    def start(self) -> str:
        """Serve on 127.0.0.1 (free port) from a private thread and loop; returns ``http://127.0.0.1:PORT/api``."""
        if self._thread is not None:
            raise RuntimeError("FakeHorde already started")
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._serve())
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=run, name="fake-horde", daemon=True)
        self._thread.start()
        if not ready.wait(timeout=10):
            raise RuntimeError("FakeHorde did not start within 10 s")
        if failure:
            self._thread = None
            raise RuntimeError("FakeHorde failed to start") from failure[0]
        return self.base_url

    async def _serve(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self._runner = runner
        self._wake = asyncio.Event()
        address = runner.addresses[0]
        self.port = int(address[1])
        self.origin = f"http://127.0.0.1:{self.port}"
        self._base_url = f"{self.origin}/api"

    def stop(self) -> None:
        """Stop serving (hung injected calls are released) and join the thread. Idempotent."""
        thread, loop, runner = self._thread, self._loop, self._runner
        if thread is None or loop is None:
            return
        if self._wake is not None:
            loop.call_soon_threadsafe(self._wake.set)
        if runner is not None:
            future = asyncio.run_coroutine_threadsafe(runner.cleanup(), loop)
            try:
                future.result(timeout=10)
            except Exception as exc:  # pragma: no cover - best effort on teardown
                self.server_errors.append(f"stop: {exc!r}")
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        self._thread = None
        self._loop = None
        self._runner = None

    @property
    def model_reference_url(self) -> str:
        """Where `model_reference` is served (set `horde.model_reference_url` to this)."""
        return f"{self.origin}{MODEL_REFERENCE_PATH}"

    @property
    def lora_reference_url(self) -> str:
        """Where `lora_reference` is served (set `horde.lora_reference_url` to this)."""
        return f"{self.origin}{LORA_REFERENCE_PATH}"

    def __enter__(self) -> FakeHorde:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ---- fault injection & observability -------------------------------------------------------------
    def inject(
        self,
        path_regex: str,
        *,
        method: str | None = None,
        status: int | None = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
        times: int | None = 1,
        delay: float = 0.0,
        malformed: bool = False,
        retry_after: float | None = None,
        rc: str | None = None,
        drop: bool = False,
    ) -> Injection:
        """Make the next ``times`` calls (None = all) whose path matches ``path_regex`` (re.search on the
        full path, e.g. ``/api/v2/generate/check/<id>``) misbehave.

        ``delay``: wait that many real seconds first (``math.inf`` = until ``release_delays()``/``stop()``);
        with nothing else set the call then proceeds normally. ``status``: answer with it; the default body
        is the Horde's shape for that code (500 ``{"message":"Internal Server Error"}``, 429 limiter
        ``{"message": "2 per 1 second"}`` + ``Retry-After``/``X-RateLimit-*``, 502/503/504 an HTML page,
        else ``{"message", "rc"}`` with ``rc``). ``body``: dict/list (JSON), str or bytes (raw).
        ``malformed``: a non-JSON body (with ``status`` or 200). ``drop``: close the connection unanswered.
        """
        with self.lock:
            injection = Injection(
                pattern=re.compile(path_regex),
                method=method,
                status=status,
                body=body,
                headers=dict(headers or {}),
                remaining=times,
                delay=delay,
                malformed=malformed,
                retry_after=retry_after,
                rc=rc,
                drop=drop,
            )
            self.injections.append(injection)
            return injection

    def clear_injections(self) -> None:
        with self.lock:
            self.injections.clear()

    def release_delays(self) -> None:
        """Let every call currently held by a ``delay`` injection go on now."""
        loop, wake = self._loop, self._wake
        if loop is None or wake is None:
            return

        def swap() -> None:
            wake.set()
            self._wake = asyncio.Event()

        loop.call_soon_threadsafe(swap)

    def set_down(self, down: bool = True) -> None:
        """While down, every call gets a 503 HTML page (like the proxy in front of a dead Horde)."""
        with self.lock:
            self.down = down

    def count(self, method: str | None, path_regex: str) -> int:
        """How many recorded calls match ``method`` (None = any) and ``path_regex`` (re.search)."""
        return len(self.calls_to(path_regex, method))

    def calls_to(self, path_regex: str, method: str | None = None) -> list[Call]:
        pattern = re.compile(path_regex)
        with self.lock:
            return [
                call
                for call in self.calls
                if (method is None or call.method == method.upper()) and pattern.search(call.path)
            ]

    def clear_calls(self) -> None:
        with self.lock:
            self.calls.clear()

    def reset_rate_limits(self) -> None:
        with self.lock:
            self.rate_limiter.reset()

    # ---- request handling ----------------------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        method = request.method.upper()
        path = request.path
        headers = {k.lower(): v for k, v in request.headers.items()}
        query = dict(parse_qsl(request.query_string, keep_blank_values=True))
        body: Any = None
        bad_json = False
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                bad_json = True
        with self.lock:
            user, shared = self._resolve_key(headers.get("apikey"))
            injection = None
            if not self.down:
                injection = next((i for i in self.injections if i.matches(method, path)), None)
                if injection is not None:
                    injection.hits += 1
                    if injection.remaining is not None:
                        injection.remaining -= 1
        answered_by_injection = False
        if self.down:
            response = ApiResponse(503, _html_page(503), content_type="text/html")
            answered_by_injection = True
        elif injection is not None:
            if injection.delay > 0 and self._wake is not None:
                timeout = None if math.isinf(injection.delay) else injection.delay
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=timeout)
            if injection.drop:
                if request.transport is not None:
                    request.transport.close()
                with self.lock:
                    self._record(method, path, 0, headers, body, query, user, shared, None, True)
                return web.Response(status=599)
            injected = self._injected_response(injection)
            if injected is not None:
                response = injected
                answered_by_injection = True
        if not answered_by_injection:
            with self.lock:
                response = self._dispatch(
                    method, path, query, headers, body, bad_json, raw, request.remote or ""
                )
        response.headers.setdefault("Access-Control-Allow-Origin", "*")
        response.headers.setdefault("Horde-Node", f"fakehorde:{self.port}:{HORDE_VERSION}")
        response_json = response.body if response.content_type == "application/json" else None
        with self.lock:
            self._record(
                method,
                path,
                response.status,
                headers,
                body,
                query,
                user,
                shared,
                response_json,
                injection is not None,
            )
        if isinstance(response.body, bytes):
            payload = response.body
        elif isinstance(response.body, str):
            payload = response.body.encode()
        else:
            payload = json.dumps(response.body).encode()
        return web.Response(
            status=response.status, body=payload, headers=response.headers, content_type=response.content_type
        )

    def _record(
        self,
        method: str,
        path: str,
        status: int,
        headers: dict[str, str],
        body: Any,
        query: dict[str, str],
        user: Any,
        shared: Any,
        response: Any,
        injected: bool,
    ) -> None:
        safe_headers = {k: ("<redacted>" if k == "apikey" else v) for k, v in headers.items()}
        self.calls.append(
            make_call(
                method,
                path,
                status,
                safe_headers,
                body,
                query=query,
                user_id=user.id if user is not None else None,
                shared_key=shared is not None,
                apikey_sent="apikey" in headers,
                client_agent=headers.get("client-agent"),
                response=response,
                injected=injected,
                at=self.now(),
            )
        )

    def _injected_response(self, injection: Injection) -> ApiResponse | None:
        if injection.malformed:
            status = injection.status or 200
            raw = injection.body if isinstance(injection.body, bytes | str) else "<html>not json{"
            return ApiResponse(status, raw, dict(injection.headers), content_type="application/json")
        if injection.status is None:
            return None
        status = injection.status
        headers = dict(injection.headers)
        if injection.body is not None:
            if isinstance(injection.body, bytes | str):
                return ApiResponse(status, injection.body, headers, content_type="text/plain")
            return ApiResponse(status, injection.body, headers)
        if status in _HTML_ERRORS:
            return ApiResponse(status, _html_page(status), headers, content_type="text/html")
        if status == 500:
            return ApiResponse(status, {"message": "Internal Server Error"}, headers)
        if status == 429 and injection.rc is None:
            retry = injection.retry_after if injection.retry_after is not None else 1
            # retry_after=0: "the window resets within this second", as the real limiter says it.
            headers.setdefault("Retry-After", str(max(0, math.ceil(retry))))
            headers.setdefault("X-RateLimit-Limit", "2")
            headers.setdefault("X-RateLimit-Remaining", "0")
            headers.setdefault("X-RateLimit-Reset", str(math.ceil(self.wall() + retry)))
            return ApiResponse(status, {"message": "2 per 1 second"}, headers)
        if injection.retry_after is not None:
            headers.setdefault("Retry-After", str(max(1, math.ceil(injection.retry_after))))
        phrase = HTTPStatus(status).phrase
        return ApiResponse(
            status, {"message": phrase, "rc": injection.rc or phrase.replace(" ", "")}, headers
        )

    def _match(self, method: str, path: str) -> tuple[Route | None, dict[str, str], bool]:
        path_matched = False
        for route in ROUTES:
            found = route.pattern.match(path)
            if found is None:
                continue
            path_matched = True
            if method in route.methods:
                return route, found.groupdict(), True
        return None, {}, path_matched

    def _dispatch(
        self,
        method: str,
        path: str,
        query: dict[str, str],
        headers: dict[str, str],
        body: Any,
        bad_json: bool,
        raw: bytes,
        remote: str,
    ) -> ApiResponse:
        rate_headers: dict[str, str] = {}
        try:
            r2 = _R2_PATH.match(path)
            if r2 is not None:
                return self._r2_endpoint(method, r2.group("id"), query, raw)
            if path == MODEL_REFERENCE_PATH and method == "GET":
                if self.model_reference is None:
                    return ApiResponse(404, {"message": "Not Found"})
                return ApiResponse(200, self.model_reference)
            if path == LORA_REFERENCE_PATH and method == "GET":
                if self.lora_reference is None:
                    return ApiResponse(404, {"message": "Not Found"})
                return ApiResponse(200, self.lora_reference)
            if method == "OPTIONS":
                return ApiResponse(
                    200,
                    {},
                    {
                        "Access-Control-Allow-Headers": "apikey, Client-Agent, Content-Type, Idempotency-Key",
                        "Access-Control-Allow-Methods": "GET, POST, PUT, PATCH, DELETE, OPTIONS",
                    },
                )
            route, params, path_known = self._match(method, path)
            if route is None:
                if path_known:
                    raise err.HordeHTTPError(
                        405, {"message": "The method is not allowed for the requested URL."}
                    )
                raise err.horde_error(404, "RequestNotFound", err.UNKNOWN_ROUTE_MESSAGE)
            if self.enforce_rate_limits and route.rules:
                apikey = headers.get("apikey")
                decision = self.rate_limiter.check(
                    route.rules,
                    ip=remote,
                    method=method,
                    path=path,
                    route=f"{method} {route.name}",
                    apikey=apikey,
                    anon=apikey == "0000000000",
                    whitelisted=remote in self.whitelisted_ips and self.whitelisted_ips[remote] > self.now(),
                )
                rate_headers = decision.headers
                if not decision.allowed:
                    raise err.HordeHTTPError(429, {"message": decision.message})
            # Checked after the limiter, as upstream does: the 403 has rate-limit headers (transcript 46).
            if headers.get("client-agent") == BANNED_CLIENT_AGENT:
                raise err.horde_error(403, "BannedClientAgent", BANNED_CLIENT_AGENT_MESSAGE)
            if bad_json:
                raise err.HordeHTTPError(400, {"message": err.BAD_JSON_MESSAGE})
            api_request = ApiRequest(method, path, params, query, headers, body, remote)
            response: ApiResponse = getattr(self, route.endpoint)(api_request)
            response.headers.update(rate_headers)
            return response
        except err.HordeHTTPError as exc:
            return ApiResponse(exc.status, exc.body, {**rate_headers, **exc.headers})
        except Exception:
            self.server_errors.append(traceback.format_exc())
            return ApiResponse(500, {"message": "Internal Server Error"}, rate_headers)

    def _r2_endpoint(self, method: str, object_id: str, query: dict[str, str], raw: bytes) -> ApiResponse:
        stored = self._r2.get(object_id)
        if stored is None and object_id in self._jobs:
            stored = self._jobs[object_id][1]
        if stored is None and object_id in self._forms:
            stored = self._forms[object_id][1]
        expires = query.get("Expires", "")
        if expires.isdigit() and self.wall() > int(expires):
            return ApiResponse(
                403, _s3_error("AccessDenied", "Request has expired"), content_type="application/xml"
            )
        if method == "PUT":
            if isinstance(stored, Job | InterrogationForm):
                stored.uploaded = raw
                return ApiResponse(200, b"", content_type="application/octet-stream")
            return ApiResponse(
                404,
                _s3_error("NoSuchKey", "The specified key does not exist."),
                content_type="application/xml",
            )
        if method not in ("GET", "HEAD"):
            return ApiResponse(
                405, _s3_error("MethodNotAllowed", "Method not allowed"), content_type="application/xml"
            )
        data: bytes | None = None
        if isinstance(stored, bytes):
            data = stored or None
        elif isinstance(stored, Job):
            data = None if stored.broken else (stored.image or stored.uploaded)
        elif isinstance(stored, InterrogationForm):
            data = stored.image or stored.uploaded
        if data is None:
            return ApiResponse(
                404,
                _s3_error("NoSuchKey", "The specified key does not exist."),
                content_type="application/xml",
            )
        return ApiResponse(200, data, content_type="image/webp")
