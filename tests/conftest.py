"""Shared fixtures: a fake AI Horde on 127.0.0.1, settings pointing at it, and the bot under simulation."""

from __future__ import annotations

import importlib.machinery
import logging
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import CodeType
from typing import Any

import pytest
from cryptography.fernet import Fernet

from bot.config import DatabaseSettings, DiscordSettings, HordeSettings, SecuritySettings, Settings
from tests.fakes.horde import FakeHorde
from tests.fakes.ratings import FakeRatings
from tests.harness import Harness, start_harness, stop_harness

TEST_TOKEN = "test-discord-token"  # never reaches Discord: the simulator replaces its HTTP layer
# Tests never reach the real ratings service: without the `ratings` fixture its URL is a closed local port.
NO_RATINGS_URL = "http://127.0.0.1:9/api/v1"


def pytest_configure(config: pytest.Config) -> None:
    _remember_compiled_sources()


def _remember_compiled_sources() -> None:
    """Every harness start loads the cogs afresh (discord.py executes an extension's source on each load)
    and Alembic loads each migration from its file. With PYTHONDONTWRITEBYTECODE set there is no .pyc to
    fall back on, and recompiling them costs ~0.7 s a test. Keep each compiled module in memory for the
    session instead: the same code objects a .pyc would give, and nothing is written to disk."""
    if not sys.dont_write_bytecode:
        return
    loader = importlib.machinery.SourceFileLoader
    compile_source = loader.source_to_code
    if getattr(compile_source, "remembers", False):
        return
    compiled: dict[tuple[str, bytes], CodeType] = {}

    def source_to_code(self: Any, data: Any, path: Any, *, _optimize: int = -1) -> CodeType:
        if not isinstance(data, bytes):
            return compile_source(self, data, path, _optimize=_optimize)
        key = (str(path), data)
        code = compiled.get(key)
        if code is None:
            code = compiled[key] = compile_source(self, data, path, _optimize=_optimize)
        return code

    source_to_code.remembers = True  # type: ignore[attr-defined]
    loader.source_to_code = source_to_code  # type: ignore[method-assign]


@pytest.fixture
def horde() -> Iterator[FakeHorde]:
    fake = FakeHorde()
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def ratings(horde: FakeHorde) -> Iterator[FakeRatings]:
    """A fake ratings service whose keys are the fake Horde's; point settings at it with `ratings_url`."""
    fake = FakeRatings(horde=horde)
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


def make_settings(tmp_path: Path, horde_url: str, *, ratings_url: str | None = None, **raw: Any) -> Settings:
    # Incidents are appended to a review file: keep it in the test's directory, not the working tree.
    raw.setdefault("safety", {})
    raw["safety"].setdefault("review_file", str(tmp_path / "safety_review.txt"))
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
        ),
        database=DatabaseSettings(url=f"sqlite+aiosqlite:///{tmp_path / 'hordebot.db'}"),
        raw=raw,
    )


@pytest.fixture
def settings(tmp_path: Path, horde: FakeHorde) -> Settings:
    return make_settings(tmp_path, horde.base_url)


@pytest.fixture
async def harness(
    settings: Settings, horde: FakeHorde, caplog: pytest.LogCaptureFixture
) -> AsyncIterator[Harness]:
    caplog.set_level(logging.DEBUG)
    h = await start_harness(settings)
    try:
        yield h
        violations = spec_violations(h)
        sent = h.sent_text()
    finally:
        await stop_harness(h)
    assert not violations, "requests that break Discord's API schema:\n" + "\n".join(violations)
    # No API key may ever leave the bot: not in a log line, not in anything sent to Discord.
    for key in issued_keys(horde):
        assert key not in caplog.text, "an API key appeared in the logs"
        if key in h.shown_to_owner:
            continue  # a test checked it went only to its owner, ephemerally (a new shared key)
        assert key not in sent, "an API key was sent to Discord"


def issued_keys(horde: FakeHorde) -> list[str]:
    """Every secret the fake Horde handed out: user API keys and shared keys (the anonymous key is public)."""
    keys = [u.apikey for u in horde.users.values() if u.id != 0 and u.apikey]
    keys += list(horde.shared_keys)
    return keys


def spec_violations(h: Harness) -> list[str]:
    from tests.support.discord_spec import get_spec_validator

    validator = get_spec_validator()
    problems: list[str] = []
    for request in h.rest_requests():
        for problem in validator.validate(request.method, request.path, request.json, request.params):
            problems.append(problem)
    return problems


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> Any:
    """Run the test body on the simulator's virtual clock (as simcord's own plugin does for its fixture)."""
    harnesses = [v for v in getattr(item, "funcargs", {}).values() if isinstance(v, Harness)]
    if len(harnesses) == 1:
        with harnesses[0].time_context():
            return (yield)
    return (yield)


@pytest.fixture(autouse=True)
def _no_api_key_in_logs(request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Issue #2's "no API key appears in any log output of the test run", for every test with a fake Horde
    (not only those using the `harness` fixture): every log record at every level is checked."""
    caplog.set_level(logging.DEBUG)
    horde: FakeHorde | None = request.getfixturevalue("horde") if "horde" in request.fixturenames else None
    yield
    if horde is None:
        return
    logged = "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.get_records("call"))
    logged += "\n" + caplog.text
    for key in issued_keys(horde):
        assert key not in logged, f"an API key appeared in the logs of {request.node.name}"
