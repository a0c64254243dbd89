"""The simulated Discord of the behaviour tests (simcord, through tests/support/simcord_adapter.py) answers a
message create's `enforce_nonce` as Discord does: what the bot's once-only delivery relies on."""

from __future__ import annotations

import discord
import pytest

from tests.harness import Harness
from tests.support.simcord_adapter import NONCE_WINDOW


async def test_a_repeated_nonce_returns_the_first_message_within_a_few_minutes(harness: Harness) -> None:
    h = harness
    with h.time_context():
        channel = h.bot.get_channel(h.channel.id)
        assert isinstance(channel, discord.TextChannel)
        first = await channel.send("the result", nonce="job-gen-1")
        again = await channel.send("the result, sent again by another process", nonce="job-gen-1")
        other = await channel.send("another job's result", nonce="job-gen-2")
        plain = await channel.send("no nonce of the bot's own: discord.py makes a random one")
    assert again.id == first.id and again.content == "the result" and other.id != first.id
    assert [m.content for m in h.channel_messages()] == [
        "the result",
        "another job's result",
        "no nonce of the bot's own: discord.py makes a random one",
    ]
    assert plain.id not in (first.id, other.id)
    with h.time_context():
        await other.delete()
        with pytest.raises(discord.NotFound):  # discord.py documents it for a deleted message's nonce
            await channel.send("after its deletion", nonce="job-gen-2")
    # Past "a few minutes" the nonce is free again.
    await h.advance(NONCE_WINDOW.total_seconds() + 1)
    with h.time_context():
        later = await channel.send("much later", nonce="job-gen-1")
    assert later.id != first.id
    assert [m.content for m in h.channel_messages()][-1] == "much later"
