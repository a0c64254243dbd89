"""The simulated Discord of the behaviour tests (simcord, through tests/support/simcord_adapter.py) answers
GET/PATCH /webhooks/{application}/{token}/messages/@original for any holder of the token (here an
interaction rebuilt from it, as a process that never saw the command does) for 15 minutes, then 401
Invalid Webhook Token (50027), as Discord does: what the delivery of a job by another process relies on."""

from __future__ import annotations

import re
from datetime import timedelta

import discord
import pytest

from bot.services.jobs.replies import Reply
from bot.ui.delivery import reopened
from tests.harness import Harness

WEBHOOK = re.compile(r"/webhooks/\d+/([^/]+)")  # the interaction's followups and original response


async def test_the_original_response_answers_its_token_for_15_minutes(harness: Harness) -> None:
    h = harness
    # A command without a job: 15 minutes pass with nothing else to do.
    reply = await h.member("alice").slash("about")
    [token] = {m.group(1) for r in h.env.http_requests if (m := WEBHOOK.search(r.path)) is not None}
    expires = h.services.clock.now() + timedelta(minutes=15)
    rebuilt = reopened(h.bot, Reply(token, expires), channel_id=h.channel.id, guild_id=h.guild.id)
    assert rebuilt is not None
    with h.time_context():
        original = await rebuilt.original_response()
        await rebuilt.edit_original_response(content="edited through the token")
    assert reply.message is not None and original.id == reply.message.id
    assert reply.latest().content == "edited through the token"
    await h.advance(15 * 60 + 1)
    # A fresh one: discord.py keeps the original response it read.
    later = reopened(h.bot, Reply(token, expires), channel_id=h.channel.id, guild_id=h.guild.id)
    assert later is not None
    with h.time_context(), pytest.raises(discord.HTTPException) as refused:
        await later.original_response()
    assert (refused.value.status, refused.value.code) == (401, 50027)
