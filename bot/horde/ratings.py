"""The Horde's ratings service (ratings.aihorde.net): images to rate for the open aesthetic datasets.

Same rules as `HordeClient`: the one shared `httpx.AsyncClient`, the member's key in the `apikey` header,
every failure a `HordeError` (`{message}` with an HTTP status; the service sends no `rc`), transport failures
and 5xx a `HordeUnavailable`. GETs are retried (capped, jittered backoff); a POST is never silently repeated
here, because a rating that reached the service must not be counted twice: the caller decides.

Also here: rating one's own shared generation (`POST /v2/generate/rate/{id}` on the Horde itself), which
goes through `HordeClient.request` so it shares the Horde client's retry and error rules.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bot.clock import Clock
from bot.horde.client import HordeClient, backoff_delay, retry_wait, send_once
from bot.horde.errors import HordeError, HordeUnavailable
from bot.horde.models import ApiKey

log = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)

ARTIFACT_LABELS: tuple[str, ...] = (
    "flawless",
    "little flaws",
    "some flaws",
    "obvious flaws",
    "harmful flaws",
    "garbage",
)


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class RatingImage(_Model):
    """`GET /rating/new[...]`: an image to rate. `url` may be a signed URL that expires."""

    id: str = Field(min_length=1, max_length=100)
    url: str = Field(min_length=1)
    dataset_id: str | None = None


class RatingSubmission(_Model):
    """Body of `POST /rating/{image_id}`."""

    rating: int = Field(ge=1, le=10)
    artifacts: int | None = Field(default=None, ge=0, le=5)


class RatingResult(_Model):
    """Answer to `POST /rating/{image_id}`: kudos awarded and any note from the service."""

    reward: float = 0
    message: str = ""


class Dataset(_Model):
    id: str = Field(min_length=1, max_length=100)
    name: str = ""
    description: str = ""
    image_count: int | None = None

    @property
    def label(self) -> str:
        return self.name or self.id


class Team(_Model):
    id: str
    name: str = ""


# --- rating one's own generation on the Horde -----------------------------------------------------------


class AestheticRating(_Model):
    id: str = Field(min_length=36, max_length=36)
    rating: int = Field(ge=1, le=10)
    artifacts: int | None = Field(default=None, ge=0, le=5)


class AestheticsPayload(_Model):
    """Body of `POST /v2/generate/rate/{id}`: `best` only matters with 2+ images."""

    best: str | None = Field(default=None, min_length=36, max_length=36)
    ratings: list[AestheticRating] = Field(default_factory=list)


class GenerationRated(_Model):
    reward: float = 0


@dataclass(frozen=True)
class RatingsClientConfig:
    base_url: str
    timeout: float = 10.0
    max_retries: int = 2
    backoff_base: float = 1.0
    backoff_cap: float = 30.0


@dataclass(frozen=True)
class DownloadedImage:
    data: bytes
    content_type: str


class RatingsUnavailable(HordeUnavailable):
    """The ratings service could not be reached, timed out, answered 5xx or sent something unreadable."""


def _error_from_response(status: int, body: Any, retry_after: float | None) -> HordeError:
    message = "The ratings service returned an error"
    if isinstance(body, Mapping):
        raw = body.get("message")
        if isinstance(raw, str) and raw:
            message = raw
    if status >= 500:
        return RatingsUnavailable(message, status=status, retry_after=retry_after)
    return HordeError(message, status=status, retry_after=retry_after)


class RatingsClient:
    def __init__(
        self, http: httpx.AsyncClient, config: RatingsClientConfig, clock: Clock, horde: HordeClient
    ) -> None:
        self._http = http
        self._config = config
        self._clock = clock
        self._horde = horde
        self.base_url = config.base_url.rstrip("/")

    def _backoff(self, attempt: int) -> float:
        return backoff_delay(attempt, self._config.backoff_base, self._config.backoff_cap)

    async def request(
        self,
        method: str,
        path: str,
        *,
        apikey: ApiKey | None = None,
        json: Any = None,
        time_limit: float | None = None,
    ) -> Any:
        """One logical call; returns the decoded JSON body. GETs are retried, POSTs only after a 429."""
        idempotent = method == "GET"
        headers: dict[str, str] = {}
        if apikey is not None:
            headers["apikey"] = apikey.reveal()
        url = self.base_url + path
        request_timeout = httpx.Timeout(time_limit if time_limit is not None else self._config.timeout)
        attempt = 0
        while True:
            body, error, response = await send_once(
                self._http,
                method,
                url,
                service="The ratings service",
                unavailable=RatingsUnavailable,
                refused=_error_from_response,
                json=json,
                headers=headers,
                timeout=request_timeout,
            )
            if response is not None:
                log.debug("ratings %s %s -> %s", method, path, response.status_code)
            if error is None:
                return body
            if attempt >= self._config.max_retries:
                raise error
            # The service's errors carry no rc: every 429 of it is a rate limit.
            wait = retry_wait(error, attempt, idempotent=idempotent, backoff=self._backoff)
            if wait is None:
                raise error
            log.info(
                "ratings %s %s failed (%s); retry %d in %.1fs", method, path, error.message, attempt + 1, wait
            )
            attempt += 1
            await self._clock.sleep(wait)

    @staticmethod
    def parse(model: type[M], body: Any) -> M:
        try:
            return model.model_validate(body)
        except ValidationError:
            raise RatingsUnavailable(
                "The ratings service sent an answer the bot does not understand"
            ) from None

    # --- the service's endpoints ------------------------------------------------------------------------

    async def new_image(
        self, apikey: ApiKey, *, dataset_id: str | None = None, model_name: str | None = None
    ) -> RatingImage:
        path = "/rating/new"
        if dataset_id:
            path += "/" + _segment(dataset_id)
            if model_name:
                path += "/" + _segment(model_name)
        return self.parse(RatingImage, await self.request("GET", path, apikey=apikey))

    async def rate(self, apikey: ApiKey, image_id: str, submission: RatingSubmission) -> RatingResult:
        body = await self.request(
            "POST",
            f"/rating/{_segment(image_id)}",
            apikey=apikey,
            json=submission.model_dump(exclude_none=True),
        )
        return self.parse(RatingResult, body)

    async def datasets(self, *, time_limit: float | None = None) -> list[Dataset]:
        body = await self.request("GET", "/datasets", time_limit=time_limit)
        if isinstance(body, Mapping):
            body = body.get("datasets", [])
        if not isinstance(body, list):
            raise RatingsUnavailable("The ratings service sent an answer the bot does not understand")
        return [self.parse(Dataset, item) for item in body]

    async def teams(self) -> list[Team]:
        body = await self.request("GET", "/teams")
        if isinstance(body, Mapping):
            body = body.get("teams", [])
        if not isinstance(body, list):
            raise RatingsUnavailable("The ratings service sent an answer the bot does not understand")
        teams = []
        for item in body:
            if isinstance(item, Mapping) and "id" in item:
                item = {**item, "id": str(item["id"])}
            teams.append(self.parse(Team, item))
        return teams

    async def download_image(self, url: str, *, max_bytes: int) -> DownloadedImage:
        """Fetch the image at `url`: at most `max_bytes`, streamed, so a huge file is cut off."""
        parsed = httpx.URL(url)
        if parsed.scheme not in ("http", "https"):
            raise HordeError("The ratings service sent an image address the bot won't open", status=None)
        try:
            async with self._http.stream(
                "GET", parsed, timeout=httpx.Timeout(self._config.timeout), follow_redirects=True
            ) as response:
                if not response.is_success:
                    raise _error_from_response(response.status_code, None, None)
                declared = response.headers.get("Content-Length")
                if declared is not None and declared.isdigit() and int(declared) > max_bytes:
                    raise HordeError("The image is too large to show", status=response.status_code)
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > max_bytes:
                        raise HordeError("The image is too large to show", status=response.status_code)
                    chunks.append(chunk)
                content_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
        except httpx.TimeoutException:
            raise RatingsUnavailable("The image did not download in time") from None
        except httpx.TransportError as exc:
            raise RatingsUnavailable(f"The image could not be downloaded ({type(exc).__name__})") from None
        return DownloadedImage(data=b"".join(chunks), content_type=content_type)

    # --- the Horde's own aesthetics endpoint ------------------------------------------------------------

    async def rate_generation(
        self, apikey: ApiKey, request_id: str, payload: AestheticsPayload
    ) -> GenerationRated:
        """Rate a shared generation request (5 calls/min per request id; a second rating is a 400)."""
        body = await self._horde.request(
            "POST",
            f"/generate/rate/{_segment(request_id)}",
            apikey=apikey,
            json=payload.model_dump(exclude_none=True),
        )
        return self._horde.parse(GenerationRated, body, "POST /generate/rate/{id}")


def _segment(value: str) -> str:
    """A value placed in a URL path: percent-encoded, so it can't add segments or a query."""
    return quote(value, safe="")
