"""The only code that speaks HTTP to the AI Horde.

One shared `httpx.AsyncClient`; a `Client-Agent` header; every failure becomes a `HordeError`.
Retry policy (the bot shares one IP with all its members, so it must be a frugal client):
- the limiter's 429 (no rc): wait `Retry-After` (if short enough) and try again, for any method: a
  rate-limited request was not processed;
- 5xx, timeouts, connection errors: retried with capped, jittered exponential backoff, but only for
  idempotent calls; a POST that may have been applied is never silently repeated.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from bot import __version__
from bot.clock import Clock
from bot.config import HordeSettings
from bot.horde.errors import HordeError, HordeUnavailable
from bot.horde.models import ApiKey, HordeUser

log = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)

# A Retry-After longer than this is not waited out inside a call: the caller gets the error
# (with `retry_after`) and decides, e.g. tells the member or reschedules background work.
MAX_INLINE_RETRY_AFTER = 10.0


def client_agent(contact: str) -> str:
    return f"hordebot:{__version__}:{contact}"


def build_http_client(settings: HordeSettings) -> httpx.AsyncClient:
    """The one HTTP client the bot uses for the Horde (and for downloading its images)."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(settings.timeout, connect=settings.connect_timeout),
        headers={"Client-Agent": client_agent(settings.contact)},
        limits=httpx.Limits(max_connections=50, max_keepalive_connections=20),
        follow_redirects=False,
    )


def _retry_after(response: httpx.Response) -> float | None:
    raw = response.headers.get("Retry-After")
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        return None


class HordeClient:
    def __init__(self, http: httpx.AsyncClient, settings: HordeSettings, clock: Clock) -> None:
        self._http = http
        self._settings = settings
        self._clock = clock
        self.base_url = settings.api_url.rstrip("/") + "/v2"

    @property
    def http(self) -> httpx.AsyncClient:
        return self._http

    def _backoff(self, attempt: int) -> float:
        # "Full jitter": spreads retries of many callers instead of synchronising them.
        ceiling = min(self._settings.backoff_cap, self._settings.backoff_base * (2**attempt))
        return random.uniform(ceiling / 2, ceiling)

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
    ) -> Any:
        """Send one logical request; returns the decoded JSON body."""
        if idempotent is None:
            idempotent = method in ("GET", "HEAD", "PUT", "DELETE")
        send_headers: dict[str, str] = dict(headers or {})
        if apikey is not None:
            send_headers["apikey"] = apikey.reveal()
        url = self.base_url + path
        attempt = 0
        while True:
            try:
                response = await self._http.request(
                    method, url, json=json, params=params, headers=send_headers
                )
            except httpx.TimeoutException:
                error: HordeError = HordeUnavailable("The AI Horde did not answer in time")
            except httpx.TransportError as exc:
                error = HordeUnavailable(f"The AI Horde could not be reached ({type(exc).__name__})")
            else:
                log.debug("horde %s %s -> %s", method, path, response.status_code)
                if response.is_success:
                    try:
                        return response.json()
                    except ValueError:
                        error = HordeUnavailable(
                            "The AI Horde sent an unreadable answer", status=response.status_code
                        )
                else:
                    try:
                        body = response.json()
                    except ValueError:
                        body = None
                    error = HordeError.from_response(response.status_code, body, _retry_after(response))
            if attempt >= self._settings.max_retries:
                raise error
            if error.is_rate_limit:
                wait = error.retry_after if error.retry_after is not None else self._backoff(attempt)
                if wait > MAX_INLINE_RETRY_AFTER:
                    raise error
            elif isinstance(error, HordeUnavailable) and idempotent:
                wait = self._backoff(attempt)
            else:
                raise error
            log.info(
                "horde %s %s failed (%s); retry %d in %.1fs", method, path, error.message, attempt + 1, wait
            )
            attempt += 1
            await self._clock.sleep(wait)

    async def get_model(self, model: type[M], path: str, **kwargs: Any) -> M:
        return self.parse(model, await self.request("GET", path, **kwargs))

    @staticmethod
    def parse(model: type[M], body: Any) -> M:
        try:
            return model.model_validate(body)
        except ValidationError:
            raise HordeUnavailable("The AI Horde sent an answer the bot does not understand") from None

    # --- users -------------------------------------------------------------------------------------

    async def find_user(self, apikey: ApiKey) -> HordeUser:
        """The account behind a key. A wrong key is 404 UserNotFound here, not 401 (API_NOTES §1)."""
        return await self.get_model(HordeUser, "/find_user", apikey=apikey)

    async def get_user(self, user_id: int) -> HordeUser:
        return await self.get_model(HordeUser, f"/users/{user_id}")
