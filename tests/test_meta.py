"""Owner-only command sync, and the error handler's behaviour for bugs."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import discord
import pytest
from sqlalchemy import text

from bot.config import DiscordSettings
from tests.conftest import make_settings
from tests.fakes.horde import FakeHorde
from tests.harness import run_harness


async def test_sync_is_refused_for_non_owners(tmp_path: Path, horde: FakeHorde) -> None:
    settings = dataclasses.replace(
        make_settings(tmp_path, horde.base_url), discord=DiscordSettings(token="t", owner_ids=(1,))
    )
    async with run_harness(settings) as h:
        admins = h.guild.create_role("Admins", permissions=discord.Permissions(administrator=True))
        reply = await h.member("mallory", roles=[admins]).slash("sync")
        assert reply.ephemeral
        assert "Only the bot's owner" in reply.text


async def test_owner_can_sync_here_and_globally(tmp_path: Path, horde: FakeHorde) -> None:
    async with run_harness(make_settings(tmp_path, horde.base_url)) as h:
        admins = h.guild.create_role("Admins", permissions=discord.Permissions(administrator=True))
        owner = h.member("owner", roles=[admins])
        settings = dataclasses.replace(h.settings, discord=DiscordSettings(token="t", owner_ids=(owner.id,)))
        h.bot.settings = settings
        reply = await owner.slash("sync", scope="here")
        assert reply.ephemeral and "Synced" in reply.text and "(here)" in reply.text
        reply = await owner.slash("sync")
        assert "(global)" in reply.text


async def test_a_bug_in_a_command_gives_a_generic_ephemeral_message_and_is_logged(
    tmp_path: Path, horde: FakeHorde, caplog: pytest.LogCaptureFixture
) -> None:
    """The shared handler: an unexpected exception is logged with its traceback, the member sees a short
    apology, never the exception text."""
    async with run_harness(make_settings(tmp_path, horde.base_url)) as h:
        # A table gone missing under the bot: an error no code path expects.
        async with h.runtime.db.session() as session:
            await session.execute(text("DROP TABLE users"))
        alice = h.member("alice")
        with caplog.at_level(logging.ERROR):
            reply = await alice.slash("logout")
        assert reply.ephemeral
        assert "Something went wrong on our side" in reply.text
        assert "users" not in reply.text and "OperationalError" not in reply.text
        assert "unhandled error in interaction" in caplog.text
        assert "Traceback" in caplog.text or any(r.exc_info for r in caplog.records)
        # The bug also reached the simulator's error capture; acknowledge it: this test is about the message.
        errors = h.take_errors()
        assert len(errors) == 1 and "no such table" in str(errors[0])
