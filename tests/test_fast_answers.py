"""Issue #13 part 5: under load every command answers Discord before it waits for the database or the Horde.

Each command is run as a member would; the database's own statement hook and the bot's HTTP client's
request hook note how many REST requests the bot had sent to Discord at the moment of each database
statement and each Horde request. The interaction's first answer (a defer, a modal or a message) must be
among the requests already sent by then: nothing the command reads or writes comes first. The command gate
(safety cooldowns, the bot-wide pause, rate limits) runs before every Horde command and may not read the
database either.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import discord
import httpx
from sqlalchemy import event

from tests.fakes.horde import FakeHorde
from tests.harness import Harness, Member


@contextmanager
def io_log(h: Harness) -> Iterator[list[tuple[str, int, str]]]:
    """(what, REST requests sent to Discord so far, detail) for every database statement and Horde call."""
    seen: list[tuple[str, int, str]] = []
    engine = h.runtime.db.engine.sync_engine

    def on_statement(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        seen.append(("database", len(h.env.http_requests), statement.split("\n", 1)[0][:80]))

    async def on_request(request: httpx.Request) -> None:
        seen.append(("horde", len(h.env.http_requests), f"{request.method} {request.url.path}"))

    hooks = h.runtime.http.event_hooks
    event.listen(engine, "before_cursor_execute", on_statement)
    hooks["request"] = [*hooks["request"], on_request]
    h.runtime.http.event_hooks = hooks
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", on_statement)
        hooks["request"] = [hook for hook in hooks["request"] if hook is not on_request]
        h.runtime.http.event_hooks = hooks


async def first_answer_before_io(h: Harness, who: Member, command: str, options: dict[str, Any]) -> list[str]:
    """Run one command; returns the I/O that happened before its first answer reached Discord."""
    start = len(h.env.http_requests)
    with io_log(h) as seen:
        reply = await who.slash_options(command, options)
    answered = next(
        index + 1
        for index, request in enumerate(h.env.http_requests)
        if index >= start and request.path.endswith("/callback")
    )
    assert reply.deferred or reply.modal or reply.text, f"/{command} showed nothing"
    return [f"{what}: {detail}" for what, sent, detail in seen if sent < answered]


async def test_every_command_answers_before_its_first_database_or_horde_access(
    harness: Harness, horde: FakeHorde
) -> None:
    h = harness
    alice, bob = h.member("alice"), h.member("bob")
    boss_role = h.guild.create_role("admins", permissions=discord.Permissions(manage_guild=True))
    boss = h.member("boss", roles=[boss_role])
    a = horde.add_user("alice", kudos=1000)
    horde.add_user("bob", kudos=10)
    worker = horde.add_worker("fast-worker", models=["Deliberate"])
    shown = await alice.slash("login")
    await alice.submit_modal(shown, {"login:apikey": a.apikey or ""})
    await h.services.guild_config.update(h.guild.id, kudos_emojis={"👍": 5})
    # The same guild's settings and the model list may be cached: that is the point (no read at all).
    commands: list[tuple[Member, str, dict[str, Any]]] = [
        (alice, "generate", {"prompt": "a lighthouse at dusk"}),
        (alice, "text", {"prompt": "hello"}),
        (alice, "userinfo", {}),
        (alice, "transfer", {"member": bob.actor, "amount": 5}),
        (alice, "kudos history", {}),
        (alice, "models", {}),
        (alice, "model", {"name": "Deliberate"}),
        (alice, "worker", {"name_or_id": worker.id}),
        (alice, "news", {}),
        (alice, "stats", {}),
        (alice, "horde status", {}),
        (alice, "rate-stats", {}),
        (alice, "sharedkey info", {}),
        (bob, "login", {}),
        (boss, "config kudos-emoji list", {}),
        (boss, "config export", {}),
        (boss, "serverkey info", {}),
        (alice, "logout", {}),
    ]
    late: dict[str, list[str]] = {}
    for member, command, options in commands:
        before = await first_answer_before_io(h, member, command, options)
        if before:
            late[command] = before
    assert late == {}, f"commands that waited for I/O before answering Discord: {late}"


async def test_the_command_gate_reads_no_database_even_for_a_members_first_command(
    harness: Harness, horde: FakeHorde
) -> None:
    """Running cooldowns are read once at start-up; a member the bot has never seen costs no query."""
    h = harness
    carol = h.member("carol")
    gate = h.services.safety.gate
    with io_log(h) as seen:
        for member_id in (carol.id, 42, 43, 44):
            await gate(user_id=member_id, guild_id=h.guild.id)
    assert seen == []
