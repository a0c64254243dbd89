"""The fake CivitAI answers as the real API does (developer.civitai.com/site/reference/models), and the bot's
client reads those answers."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from bot.horde.civitai import CivitaiClient
from bot.horde.settings import CivitaiSettings
from tests.fakes.civitai import FakeCivitai


@pytest.fixture
def fake() -> Iterator[FakeCivitai]:
    civitai = FakeCivitai()
    civitai.start()
    civitai.add("Detail Tweaker", id=1, size_mb=144)
    civitai.add("Spicy Style", id=2, nsfw=True)
    civitai.add("Big Model", id=3, type="Checkpoint", base_model="SDXL 1.0", size_mb=6500)
    try:
        yield civitai
    finally:
        civitai.stop()


async def test_wire_shapes_and_refusals(fake: FakeCivitai) -> None:
    async with httpx.AsyncClient(base_url=fake.origin) as http:
        page = (await http.get("/api/v1/models", params={"types": "LORA", "query": "style"})).json()
        assert page["items"] == [] and page["metadata"] == {}  # mature models are left out by default
        spicy = (await http.get("/api/v1/models", params={"query": "style", "nsfw": "true"})).json()
        [item] = spicy["items"]
        assert (item["id"], item["type"], item["nsfw"]) == (2, "LORA", True)
        [version] = item["modelVersions"]
        [file] = version["files"]
        assert (
            file["primary"] is True and file["name"].endswith(".safetensors") and file["sizeKB"] == 144 * 1024
        )
        both = (await http.get("/api/v1/models", params=[("ids", "1"), ("ids", "3")])).json()
        assert [m["id"] for m in both["items"]] == [1, 3] and both["metadata"]["totalItems"] == 2
        with_page = await http.get("/api/v1/models", params={"query": "x", "page": "2"})
        assert with_page.status_code == 400  # a search pages by cursor only
        assert (await http.get("/api/v1/models", params={"limit": "500"})).status_code == 400
        missing = await http.get("/api/v1/models/99")
        assert (missing.status_code, missing.json()) == (404, {"error": "No model with id 99"})
        by_version = (await http.get(f"/api/v1/model-versions/{fake.models[3].version_id}")).json()
        assert by_version["modelId"] == 3 and by_version["model"]["type"] == "Checkpoint"


async def test_the_client_reads_the_fake(fake: FakeCivitai) -> None:
    async with httpx.AsyncClient() as http:
        client = CivitaiClient(http, CivitaiSettings(base_url=fake.origin), f"{fake.origin}/nothing")
        [found] = await client.search_loras("detail", nsfw=False)
        assert (found.name, found.versions[0].loadable_file is not None) == ("Detail Tweaker", True)
        big = await client.model(3)
        assert big is not None and (big.type, big.versions[0].base_model) == ("Checkpoint", "SDXL 1.0")
        version = await client.version(fake.models[2].version_id)
        assert version is not None and version.model is not None and version.model.nsfw is True
        assert await client.model(42) is None
