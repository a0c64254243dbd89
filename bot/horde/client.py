"""The only code that speaks HTTP to the AI Horde.

One shared `httpx.AsyncClient`; a `Client-Agent` header; every failure becomes a `HordeError`.
Retry policy (the bot shares one IP with all its members, so it must be a frugal client):
- the limiter's 429 (no rc): wait `Retry-After` (if short enough) and try again, for any method: a
  rate-limited request was not processed;
- 5xx, timeouts, connection errors: retried with capped, jittered exponential backoff, but only for
  idempotent calls; a POST that may have been applied is never silently repeated.
"""

from __future__ import annotations

import functools
import json
import logging
import random
import re
import ssl
from collections.abc import Callable, Mapping
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, TypeAdapter, ValidationError

from bot import __version__
from bot.clock import Clock
from bot.horde.alchemy import InterrogationRequest, InterrogationStatus, RequestAccepted
from bot.horde.errors import HordeError, HordeUnavailable, HordeUnexpectedResponse
from bot.horde.generation import ImageCheck, ImageRequest, ImageStatus, ImageStyle, StyleCollection
from bot.horde.kudos import KudosTransferred
from bot.horde.model_reference import ModelReferenceEntry, parse_model_reference
from bot.horde.models import ApiKey, HordeUser
from bot.horde.pacer import Kind, Pacer, key_id
from bot.horde.settings import HordeSettings
from bot.horde.status import (
    ActiveModel,
    Heartbeat,
    ImageTotals,
    Modes,
    Newspiece,
    Performance,
    SharedKeyDetails,
    SharedKeyInput,
    Team,
    TextTotals,
    Worker,
)
from bot.horde.text import TextRequest, TextStatus

log = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)

# A Retry-After longer than this is not waited out inside a call: the caller gets the error
# (with `retry_after`) and decides, e.g. tells the member or reschedules background work.
MAX_INLINE_RETRY_AFTER = 10.0
# A paced POST answered by the limiter's 429 was not processed: it waits in line again. This many in a
# row means something else shares the limit (another client on the IP): the caller gets the error.
MAX_PACED_429 = 20


def client_agent(contact: str) -> str:
    return f"hordebot:{__version__}:{contact}"


class _RedactSharedKeyUrls(logging.Filter):
    """httpx logs every URL; `/sharedkeys/{id}` carries a secret (the id is the key)."""

    _pattern = re.compile(r"(/sharedkeys/)[^\s/?\"']+")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "/sharedkeys/" in message:
            record.msg, record.args = self._pattern.sub(r"\1***", message), None
        return True


def _guard_httpx_logs() -> None:
    logger = logging.getLogger("httpx")
    if not any(isinstance(f, _RedactSharedKeyUrls) for f in logger.filters):
        logger.addFilter(_RedactSharedKeyUrls())


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """httpx's default TLS context (certifi's CA bundle), built once per process: loading the bundle costs
    ~0.1 s of CPU, and a context is safe to share between clients (a restart builds a new client)."""
    return httpx.create_ssl_context()


def build_http_client(settings: HordeSettings) -> httpx.AsyncClient:
    """The one HTTP client the bot uses for the Horde (and for downloading its images)."""
    _guard_httpx_logs()
    return httpx.AsyncClient(
        verify=_tls_context(),
        timeout=httpx.Timeout(settings.timeout, connect=settings.connect_timeout),
        headers={"Client-Agent": client_agent(settings.contact)},
        limits=httpx.Limits(max_connections=50, max_keepalive_connections=20),
        follow_redirects=False,
    )


def _reset_epoch(response: httpx.Response) -> float | None:
    raw = response.headers.get("X-RateLimit-Reset")
    try:
        return float(raw) if raw is not None else None
    except ValueError:
        return None


def _retry_after(response: httpx.Response) -> float | None:
    raw = response.headers.get("Retry-After")
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        return None


async def send_once(
    http: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    service: str,
    unavailable: type[HordeUnavailable],
    refused: Callable[[int, Any, float | None], HordeError],
    **request: Any,
) -> tuple[Any, HordeError | None, httpx.Response | None]:
    """One try of an HTTP call to `service` ("The AI Horde", "The ratings service"): the decoded JSON body
    of a 2xx, or the error the exchange amounts to (`unavailable`: no answer in time, no connection, an
    unreadable body; `refused(status, body, retry_after)`: any other status), with the response if any.
    The callers' retry rules differ; what a failure means is the same."""
    try:
        response = await http.request(method, url, **request)
    except httpx.TimeoutException:
        return None, unavailable(f"{service} did not answer in time"), None
    except httpx.TransportError as exc:
        return None, unavailable(f"{service} could not be reached ({type(exc).__name__})"), None
    if response.is_success:
        try:
            return response.json(), None, response
        except ValueError:
            unreadable = unavailable(f"{service} sent an unreadable answer", status=response.status_code)
            return None, unreadable, response
    try:
        body = response.json()
    except ValueError:
        body = None
    return None, refused(response.status_code, body, _retry_after(response)), response


def backoff_delay(attempt: int, base: float, cap: float) -> float:
    """Exponential backoff with jitter: spreads the retries of many callers instead of synchronising them."""
    ceiling = min(cap, base * (2**attempt))
    return random.uniform(ceiling / 2, ceiling)


def retry_wait(
    error: HordeError, attempt: int, *, idempotent: bool, backoff: Callable[[int], float]
) -> float | None:
    """How long to wait before trying a failed call again, or None to give up now. A rate-limited call was
    not processed: it is repeated, even a POST, unless the wait asked is too long for a call in progress.
    After an outage only an idempotent call is repeated: a POST may have been applied."""
    if error.is_rate_limit:
        wait = error.retry_after if error.retry_after is not None else backoff(attempt)
        return wait if wait <= MAX_INLINE_RETRY_AFTER else None
    if isinstance(error, HordeUnavailable) and idempotent:
        return backoff(attempt)
    return None


def _unexpected(endpoint: str, exc: ValidationError) -> HordeUnexpectedResponse:
    """The first field that didn't fit, logged (never its value: it could be a key or a request id)."""
    first = exc.errors(include_url=False, include_input=False)[0]
    field = ".".join(str(part) for part in first["loc"])
    error = HordeUnexpectedResponse(endpoint, field, first["msg"])
    log.warning(
        "the AI Horde sent an answer this bot doesn't understand: %s, field %r: %s",
        endpoint,
        field or "(whole body)",
        first["msg"],
    )
    return error


class HordeClient:
    def __init__(
        self, http: httpx.AsyncClient, settings: HordeSettings, clock: Clock, pacer: Pacer | None = None
    ) -> None:
        _guard_httpx_logs()
        self._http = http
        self._settings = settings
        self._clock = clock
        # Every POST that creates Horde work waits its turn here (see bot.horde.pacer).
        self.pacer = pacer or Pacer(clock)
        self.base_url = settings.api_url.rstrip("/") + "/v2"

    @property
    def http(self) -> httpx.AsyncClient:
        return self._http

    def _backoff(self, attempt: int) -> float:
        return backoff_delay(attempt, self._settings.backoff_base, self._settings.backoff_cap)

    async def request(
        self,
        method: str,
        path: str,
        *,
        apikey: ApiKey | None = None,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool | None = None,
        secret_path: bool = False,
        retries: int | None = None,
        pace: Kind | None = None,
        acquired: bool = False,
    ) -> Any:
        """Send one logical request; returns the decoded JSON body.

        `secret_path`: the last path segment is a secret (a shared key): it is never logged.
        `retries`: at most this many retries instead of `max_retries` (0: the caller decides when to retry).
        `pace`: the request creates Horde work of this kind: it waits its turn in the pacer, and the
        limiter's 429 puts it back in line (the bot holds the kind back as the 429 says) instead of failing.
        `acquired`: the caller took the slot itself (`Pacer.try_acquire`) and keeps its own line: the
        limiter's 429 holds the kind back and is raised for the caller to put the request back in line.
        """
        shown_path = path.rsplit("/", 1)[0] + "/***" if secret_path else path
        if idempotent is None:
            idempotent = method in ("GET", "HEAD", "PUT", "DELETE")
        send_headers: dict[str, str] = dict(headers or {})
        if apikey is not None:
            send_headers["apikey"] = apikey.reveal()
        url = self.base_url + path
        attempt = 0
        limited = 0
        pace_key = key_id(apikey.reveal()) if apikey is not None else None
        holding = pace is not None and acquired  # a pacer slot not landed yet
        while True:
            reset: float | None = None
            if pace is not None and not acquired:
                await self.pacer.acquire(pace, pace_key)
                holding = True
            try:
                body, error, response = await send_once(
                    self._http,
                    method,
                    url,
                    service="The AI Horde",
                    unavailable=HordeUnavailable,
                    refused=HordeError.from_response,
                    json=json,
                    params=params,
                    headers=send_headers,
                )
            finally:
                if pace is not None and holding:
                    # The Horde has counted it by now (or never will): its slot counts from here.
                    self.pacer.landed(pace, pace_key)
                    holding = False
            if response is not None:
                log.debug("horde %s %s -> %s", method, shown_path, response.status_code)
            if error is None:
                return body
            if response is not None and not response.is_success:
                reset = _reset_epoch(response)
            # Transfers are limited per key: the kudos service schedules their retries itself.
            if pace is not None and error.is_rate_limit and acquired:
                self.pacer.hold_after_429(pace, error.retry_after, reset, self._clock.now().timestamp())
                raise error
            if pace is not None and pace != "kudos" and error.is_rate_limit and limited < MAX_PACED_429:
                limited += 1
                held = self.pacer.hold_after_429(
                    pace, error.retry_after, reset, self._clock.now().timestamp()
                )
                log.info(
                    "horde %s %s: 429 (%s); in line again after %.2fs",
                    method,
                    shown_path,
                    error.message,
                    held,
                )
                continue
            if attempt >= (self._settings.max_retries if retries is None else retries):
                raise error
            wait = retry_wait(error, attempt, idempotent=idempotent, backoff=self._backoff)
            if wait is None:
                raise error
            log.info(
                "horde %s %s failed (%s); retry %d in %.1fs",
                method,
                shown_path,
                error.message,
                attempt + 1,
                wait,
            )
            attempt += 1
            await self._clock.sleep(wait)

    async def get_model(self, model: type[M], path: str, endpoint: str, **kwargs: Any) -> M:
        return self.parse(model, await self.request("GET", path, **kwargs), endpoint)

    @staticmethod
    def parse(model: type[M], body: Any, endpoint: str) -> M:
        """`body` as `model`, or `HordeUnexpectedResponse` naming `endpoint` and the field that didn't fit."""
        try:
            return model.model_validate(body)
        except ValidationError as exc:
            raise _unexpected(endpoint, exc) from None

    # --- users -------------------------------------------------------------------------------------

    async def find_user(self, apikey: ApiKey) -> HordeUser:
        """The account behind a key. A wrong key is 404 UserNotFound here, not 401 (API_NOTES §1)."""
        return await self.get_model(HordeUser, "/find_user", "GET /find_user", apikey=apikey)

    async def get_user(self, user_id: int) -> HordeUser:
        return await self.get_model(HordeUser, f"/users/{user_id}", "GET /users/{id}")

    @staticmethod
    def parse_list(model: type[M], body: Any, endpoint: str) -> list[M]:
        try:
            return TypeAdapter(list[model]).validate_python(body)  # type: ignore[valid-type]
        except ValidationError as exc:
            raise _unexpected(endpoint, exc) from None

    async def download(self, url: str, *, max_bytes: int) -> bytes:
        """Fetch a result file (an R2 URL from a status answer), refusing anything over `max_bytes`."""
        if not url.startswith(("https://", "http://")):
            raise HordeUnavailable("The AI Horde sent a result the bot cannot fetch")
        try:
            async with self._http.stream("GET", url) as response:
                if not response.is_success:
                    raise HordeUnavailable(
                        "The result file could not be downloaded", status=response.status_code
                    )
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > max_bytes:
                        raise HordeUnavailable("The result file is larger than the bot accepts")
                    chunks.append(chunk)
                return b"".join(chunks)
        except httpx.HTTPError as exc:
            raise HordeUnavailable(
                f"The result file could not be downloaded ({type(exc).__name__})"
            ) from None

    # --- alchemy (interrogation) ------------------------------------------------------------------

    async def interrogate(
        self, request: InterrogationRequest, apikey: ApiKey, *, acquired: bool = False
    ) -> RequestAccepted:
        body = await self.request(
            "POST",
            "/interrogate/async",
            apikey=apikey,
            json=request.model_dump(exclude_none=True),
            pace="alchemy",
            acquired=acquired,
        )
        return self.parse(RequestAccepted, body, "POST /interrogate/async")

    async def interrogation_status(self, request_id: str) -> InterrogationStatus:
        return await self.get_model(
            InterrogationStatus,
            f"/interrogate/status/{quote(request_id, safe='')}",
            "GET /interrogate/status/{id}",
        )

    async def cancel_interrogation(self, request_id: str) -> InterrogationStatus:
        body = await self.request("DELETE", f"/interrogate/status/{quote(request_id, safe='')}")
        return self.parse(InterrogationStatus, body, "DELETE /interrogate/status/{id}")

    # --- image generation ---------------------------------------------------------------------------

    async def generate_image(
        self,
        request: ImageRequest,
        apikey: ApiKey,
        *,
        acquired: bool = False,
    ) -> RequestAccepted:
        # Not idempotent: a retried POST could queue (and charge) the request twice.
        body = await self.request(
            "POST",
            "/generate/async",
            apikey=apikey,
            json=request.payload(),
            pace="image",
            acquired=acquired,
        )
        return self.parse(RequestAccepted, body, "POST /generate/async")

    async def image_check(self, request_id: str) -> ImageCheck:
        return await self.get_model(
            ImageCheck, f"/generate/check/{quote(request_id, safe='')}", "GET /generate/check/{id}"
        )

    async def cancel_image(self, request_id: str) -> ImageStatus:
        body = await self.request("DELETE", f"/generate/status/{quote(request_id, safe='')}")
        return self.parse(ImageStatus, body, "DELETE /generate/status/{id}")

    # --- text generation ---------------------------------------------------------------------------

    async def generate_text(
        self, request: TextRequest, apikey: ApiKey, *, acquired: bool = False
    ) -> RequestAccepted:
        body = await self.request(
            "POST",
            "/generate/text/async",
            apikey=apikey,
            json=request.model_dump(exclude_none=True),
            pace="text",
            acquired=acquired,
        )
        return self.parse(RequestAccepted, body, "POST /generate/text/async")

    async def text_status(self, request_id: str) -> TextStatus:
        """At most 60 calls a minute per request id (there is no text /check)."""
        return await self.get_model(
            TextStatus,
            f"/generate/text/status/{quote(request_id, safe='')}",
            "GET /generate/text/status/{id}",
        )

    async def cancel_text(self, request_id: str) -> TextStatus:
        body = await self.request("DELETE", f"/generate/text/status/{quote(request_id, safe='')}")
        return self.parse(TextStatus, body, "DELETE /generate/text/status/{id}")

    # --- public information (callers cache these: see bot.services.info) --------------------------

    async def models(self, model_type: str = "image") -> list[ActiveModel]:
        body = await self.request("GET", "/status/models", params={"type": model_type})
        return self.parse_list(ActiveModel, body, "GET /status/models")

    async def workers(self, worker_type: str | None = None) -> list[Worker]:
        params = {"type": worker_type} if worker_type else None
        return self.parse_list(Worker, await self.request("GET", "/workers", params=params), "GET /workers")

    async def worker(self, worker_id: str) -> Worker:
        return await self.get_model(Worker, f"/workers/{quote(worker_id, safe='')}", "GET /workers/{id}")

    async def worker_by_name(self, name: str) -> Worker:
        return await self.get_model(
            Worker, f"/workers/name/{quote(name, safe='')}", "GET /workers/name/{name}"
        )

    async def teams(self) -> list[Team]:
        return self.parse_list(Team, await self.request("GET", "/teams"), "GET /teams")

    async def team(self, team_id: str) -> Team:
        return await self.get_model(Team, f"/teams/{quote(team_id, safe='')}", "GET /teams/{id}")

    async def news(self) -> list[Newspiece]:
        return self.parse_list(Newspiece, await self.request("GET", "/status/news"), "GET /status/news")

    async def image_totals(self) -> ImageTotals:
        return await self.get_model(ImageTotals, "/stats/img/totals", "GET /stats/img/totals")

    async def text_totals(self) -> TextTotals:
        return await self.get_model(TextTotals, "/stats/text/totals", "GET /stats/text/totals")

    async def performance(self) -> Performance:
        return await self.get_model(Performance, "/status/performance", "GET /status/performance")

    async def heartbeat(self) -> Heartbeat:
        return await self.get_model(Heartbeat, "/status/heartbeat", "GET /status/heartbeat")

    async def modes(self) -> Modes:
        return await self.get_model(Modes, "/status/modes", "GET /status/modes")

    # --- shared keys -------------------------------------------------------------------------------

    async def create_shared_key(self, spec: SharedKeyInput, apikey: ApiKey) -> SharedKeyDetails:
        # PUT is idempotent in HTTP terms but creates a new key each time here: never retry it blindly.
        body = await self.request(
            "PUT", "/sharedkeys", apikey=apikey, json=spec.model_dump(), idempotent=False
        )
        return self.parse(SharedKeyDetails, body, "PUT /sharedkeys")

    async def shared_key(self, key_id: str) -> SharedKeyDetails:
        return await self.get_model(
            SharedKeyDetails,
            f"/sharedkeys/{quote(key_id, safe='')}",
            "GET /sharedkeys/{id}",
            secret_path=True,
        )

    async def delete_shared_key(self, key_id: str, apikey: ApiKey) -> None:
        await self.request("DELETE", f"/sharedkeys/{quote(key_id, safe='')}", apikey=apikey, secret_path=True)

    # --- image generation options (model reference, styles by page) ----------------------------------

    async def image_styles_page(self, page: int, *, sort: str = "popular") -> list[ImageStyle]:
        """One page of `GET /styles/image` (most used first by default)."""
        body = await self.request("GET", "/styles/image", params={"page": page, "sort": sort})
        return self.parse_list(ImageStyle, body, "GET /styles/image")

    async def image_collections(self) -> list[StyleCollection]:
        """`GET /collections?type=image`: the public style collections."""
        body = await self.request("GET", "/collections", params={"type": "image"})
        return self.parse_list(StyleCollection, body, "GET /collections")

    async def image_model_reference(
        self, url: str, *, max_bytes: int = 20 * 1024 * 1024
    ) -> dict[str, ModelReferenceEntry]:
        """The image model reference (a JSON file outside the API): entries keyed by case-folded name."""
        body = await self.download(url, max_bytes=max_bytes)
        try:
            return parse_model_reference(json.loads(body))
        except ValueError:
            raise HordeUnavailable("The image model reference is not readable JSON") from None

    # --- image generation results (one call, no inline retry) -----------------------------------------

    async def image_status_once(self, request_id: str) -> ImageStatus:
        """`GET /generate/status/{id}` exactly once: no retry on 429 or 5xx. The Horde allows 10 a minute
        per request id, so the caller decides whether and when to try again (HordeError.retry_after)."""
        body = await self.request(
            "GET", f"/generate/status/{quote(request_id, safe='')}", secret_path=True, retries=0
        )
        return self.parse(ImageStatus, body, "GET /generate/status/{id}")

    # --- kudos transfers (issue #5) ---------------------------------------------------------------------

    async def transfer_kudos(
        self, apikey: ApiKey, username: str, amount: int, *, idempotency_key: str
    ) -> KudosTransferred:
        """`POST /v2/kudos/transfer` with the sender's key. The `Idempotency-Key` makes a repeat (after a
        timeout, a 5xx or the limiter's 429) apply the transfer once, so retrying it is safe."""
        body = await self.request(
            "POST",
            "/kudos/transfer",
            apikey=apikey,
            json={"username": username, "amount": int(amount)},
            headers={"Idempotency-Key": idempotency_key},
            idempotent=True,
            pace="kudos",
        )
        return self.parse(KudosTransferred, body, "POST /kudos/transfer")
