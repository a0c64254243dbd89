"""One way of wiring (issue #19): a service tells listeners through a `Hook` and reaches Discord through a
`Port` (bot/hooks.py); cogs register on them in `cog_load` and remove what they registered in `cog_unload`.

The cog test walks every service the bot was built with, so a hook added later is checked without being
named here."""

from __future__ import annotations

import ast
import dataclasses
import logging
from pathlib import Path
from typing import Any

import pytest
from discord.ext import commands

from bot.app import build_runtime, build_services
from bot.hooks import Hook, Port
from bot.services import Services
from tests.harness import Harness, run_as_bot


def _name(fn: object) -> str:
    owner = getattr(fn, "__self__", None)
    own = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return f"{type(owner).__qualname__}.{own}" if owner is not None and "." not in own else own


def registrations(services: Services) -> dict[str, list[object]]:
    """What is registered on every service (and on the helpers it holds, one level down, e.g. its outage
    watch): each Hook's listeners, each Port's plugged implementation, and every method of some other object
    set as an attribute (the old style: a hook set by hand)."""
    shared = [getattr(services, field.name) for field in dataclasses.fields(services)]

    def foreign(value: object, holder: object) -> bool:
        owner = getattr(value, "__self__", None)
        return owner is not None and owner is not holder and not any(owner is s for s in shared)

    found: dict[str, list[object]] = {}

    def walk(where: str, holder: object, depth: int) -> None:
        for attribute, value in getattr(holder, "__dict__", {}).items():
            at = f"{where}.{attribute}"
            if isinstance(value, Hook):
                found[at] = list(value.listeners)
            elif isinstance(value, Port):
                found[at] = [value.plugged] if value.plugged is not None else []
            elif foreign(value, holder):
                found[at] = [value]
            elif isinstance(value, list) and any(foreign(v, holder) for v in value):
                found[at] = list(value)
            elif depth == 0 and hasattr(value, "__dict__") and not any(value is s for s in shared):
                walk(at, value, 1)

    for field in dataclasses.fields(services):
        walk(field.name, getattr(services, field.name), 0)
    return found


def by_name(found: dict[str, list[object]]) -> dict[str, list[str]]:
    return {where: sorted(_name(v) for v in values) for where, values in found.items() if values}


def held_by(services: Services, cogs: list[commands.Cog]) -> list[str]:
    """Registrations that belong to one of `cogs`: its bound methods, or objects it made (its gateway)."""
    shared = [getattr(services, field.name) for field in dataclasses.fields(services)]
    made = [
        v
        for cog in cogs
        for v in vars(cog).values()
        if v is not None and not isinstance(v, commands.Bot) and not any(v is s for s in shared)
    ]
    owned = [*cogs, *made]
    found = registrations(services)
    return [
        f"{where}: {_name(value)}"
        for where, values in found.items()
        for value in values
        if any(value is o or getattr(value, "__self__", None) is o for o in owned)
    ]


async def test_every_cog_removes_on_unload_what_it_registered_on_load(harness: Harness) -> None:
    h = harness
    loaded = registrations(h.services)
    # A sanity check of the walk: the cogs did register (Discord ports plugged in, cog listeners).
    assert h.services.kudos.gateway.plugged is not None
    assert h.services.roles.gateway.plugged is not None
    assert h.services.parties.gateway.plugged is not None
    assert [_name(f) for f in h.services.ratings.on_vote_settled.listeners] == ["RatingsCog._vote_settled"]
    extensions = sorted(h.bot.features)
    assert len(extensions) >= 10
    for extension in extensions:
        cogs = [cog for cog in h.bot.cogs.values() if type(cog).__module__ == extension]
        assert cogs, extension
        await run_as_bot(h, h.bot.unload_feature(extension))
        left = held_by(h.services, cogs)
        assert left == [], f"{extension} left registered after unload: {left}"
        # Loaded again, it registers exactly what it did before (no duplicates, nothing missing).
        await run_as_bot(h, h.bot.load_feature(extension))
        assert by_name(registrations(h.services)) == by_name(loaded), extension


async def test_with_every_cog_unloaded_only_the_factorys_wiring_remains(harness: Harness) -> None:
    h = harness
    for extension in sorted(h.bot.features):
        await run_as_bot(h, h.bot.unload_feature(extension))
    left = by_name(registrations(h.services))
    # The bot itself stays plugged into the notifier until it closes (log channels and DMs).
    assert h.services.notifier.client.plugged is h.bot  # type: ignore[attr-defined]
    del left["notifier.client"]
    fresh = build_services(build_runtime(h.settings))
    try:
        # The factory subscribes services to each other (e.g. roles and kudos to `accounts.on_linked`).
        assert by_name(registrations(fresh)) == left
        assert "RolesService.on_linked" in left["accounts.on_linked"]
        assert all(port.plugged is None for port in (h.services.kudos.gateway, h.services.roles.gateway))
    finally:
        await fresh.close()


# --- cogs see services only -------------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]


def _reaches_past_services(path: Path, root: Path = ROOT) -> list[str]:
    """`<x>.services.<name>` (or `services.<name>`) where `name` is no service, and any `.runtime`."""
    services = {field.name for field in dataclasses.fields(Services)}
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Attribute):
            continue
        owner = node.value
        via_services = (isinstance(owner, ast.Attribute) and owner.attr == "services") or (
            isinstance(owner, ast.Name) and owner.id == "services"
        )
        if (via_services and node.attr not in services) or node.attr in ("runtime", "_runtime"):
            found.append(f"{path.relative_to(root)}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_cogs_reach_services_only() -> None:
    """Cogs (and the UI helpers they use) call services: never the database, the HTTP client, a repository
    or the settings the services were built from (import-linter keeps them from importing bot.db, bot.horde
    and bot.runtime; this keeps them from reaching those through an attribute)."""
    files = sorted((ROOT / "cogs").glob("*.py")) + sorted((ROOT / "bot" / "ui").rglob("*.py"))
    assert len(files) > 10
    assert [line for path in files for line in _reaches_past_services(path)] == []
    # The check itself finds what it is there to find.
    assert {f.name for f in dataclasses.fields(Services)}.isdisjoint({"db", "http", "users", "settings"})


def test_the_cog_check_catches_a_cog_reaching_the_database(tmp_path: Path) -> None:
    cog = tmp_path / "cog.py"
    cog.write_text(
        "async def f(self):\n"
        "    await self.bot.services.db.session()\n"
        "    self.bot.runtime.http\n"
        "    self.bot.services.kudos.start()\n",
        encoding="utf-8",
    )
    assert sorted(line.split(": ", 1)[1] for line in _reaches_past_services(cog, tmp_path)) == [
        "self.bot.runtime",
        "self.bot.services.db",
    ]


# --- Hook and Port themselves -----------------------------------------------------------------------------


async def test_a_hook_tells_every_listener_in_order_and_a_failing_one_is_logged_and_skipped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hook: Hook[[int], None] = Hook("test.told")
    heard: list[str] = []

    async def first(n: int) -> None:
        heard.append(f"first {n}")

    async def broken(n: int) -> None:
        raise RuntimeError("listener bug")

    async def last(n: int) -> None:
        heard.append(f"last {n}")

    for listener in (first, broken, last):
        hook.subscribe(listener)
    with caplog.at_level(logging.ERROR, logger="bot.hooks"):
        await hook.emit(7)
    assert heard == ["first 7", "last 7"]
    assert "a listener of test.told failed" in caplog.text and "listener bug" in caplog.text
    with pytest.raises(ValueError, match="already listens"):
        hook.subscribe(first)
    hook.unsubscribe(first)
    hook.unsubscribe(first)  # twice: nothing happens
    await hook.emit(8)
    assert heard == ["first 7", "last 7", "last 8"]
    assert hook.listeners == (broken, last)


async def test_a_hook_question_takes_the_first_answer_that_is_not_none() -> None:
    hook: Hook[[int], int | None] = Hook("test.asked")
    assert await hook.first(1) is None  # nobody listens

    async def unsure(n: int) -> int | None:
        return None

    async def broken(n: int) -> int | None:
        raise RuntimeError("listener bug")

    async def knows(n: int) -> int | None:
        return n * 10

    async def too_late(n: int) -> int | None:
        raise AssertionError("never asked: an earlier listener answered")

    for listener in (unsure, broken, knows, too_late):
        hook.subscribe(listener)
    assert await hook.first(4) == 40


def test_a_port_answers_with_its_fallback_until_something_is_plugged_in() -> None:
    fallback, discord_side, other = object(), object(), object()
    port: Port[Any] = Port("test.port", fallback)
    assert port.get() is fallback and port.plugged is None
    port.plug(discord_side)
    port.plug(discord_side)  # the same one again: fine
    assert port.get() is discord_side
    with pytest.raises(ValueError, match="already has"):
        port.plug(other)
    port.unplug(other)  # not the plugged one: nothing happens
    assert port.get() is discord_side
    port.unplug(discord_side)
    assert port.get() is fallback and port.plugged is None
