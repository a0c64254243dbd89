"""Settings for a bot under test: every outside service the test doesn't fake is a closed local port.

Apart from tests/conftest.py (which re-exports `make_settings`) so benchmarks can build the same settings
without importing pytest, the harness and the fakes into the process they measure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet

from bot.config import DatabaseSettings, DiscordSettings, HordeSettings, SecuritySettings, Settings

TEST_TOKEN = "test-discord-token"  # never reaches Discord: the simulator replaces its HTTP layer
# Tests never reach the real ratings service: without the `ratings` fixture its URL is a closed local port.
NO_RATINGS_URL = "http://127.0.0.1:9/api/v1"
# Nor CivitAI or the Horde's curated LoRA list: without the `civitai` fixture, closed local ports (a LoRA then
# goes out unchecked, as when CivitAI is down).
NO_CIVITAI_URL = "http://127.0.0.1:9"
NO_LORA_REFERENCE_URL = "http://127.0.0.1:9/lora.json"


def make_settings(
    tmp_path: Path,
    horde_url: str,
    *,
    ratings_url: str | None = None,
    database_url: str | None = None,
    civitai_url: str | None = None,
    lora_reference_url: str | None = None,
    **raw: Any,
) -> Settings:
    # Incidents are appended to a review file: keep it in the test's directory, not the working tree.
    raw.setdefault("safety", {})
    raw["safety"].setdefault("review_file", str(tmp_path / "safety_review.txt"))
    raw.setdefault("civitai", {})
    raw["civitai"].setdefault("base_url", civitai_url or NO_CIVITAI_URL)
    return Settings(
        discord=DiscordSettings(token=TEST_TOKEN),
        security=SecuritySettings(secret_key=Fernet.generate_key().decode()),
        # Fast backoff: retries happen in virtual or near-zero time in tests.
        horde=HordeSettings(
            api_url=horde_url,
            contact="tests@example.invalid",
            backoff_base=0.01,
            backoff_cap=0.05,
            ratings_url=ratings_url or NO_RATINGS_URL,
            lora_reference_url=lora_reference_url or NO_LORA_REFERENCE_URL,
        ),
        # One process per test: its lease keeper has nobody to take over from, so it passes as rarely as
        # the settings allow (a pass every 10 s of virtual time was half the scheduler's work in tests that
        # move time by minutes; the longest lease, 60 s, passes every 20 s). The tests of leases and of
        # several processes set their own lease.
        database=DatabaseSettings(
            url=database_url or f"sqlite+aiosqlite:///{tmp_path / 'hordebot.db'}", lease_seconds=60
        ),
        raw=raw,
    )
