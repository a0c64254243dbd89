"""The right key is blamed (issue #15, part 4): when this server's shared key (/serverkey) or the anonymous
key paid for a refused request, the member is told about *that* key and what they can do, and the server's
log channel hears once that its key stopped working, until the key is set again."""

from __future__ import annotations

import discord
import pytest
from sqlalchemy import text

from tests.fakes.horde import FakeHorde
from tests.harness import Harness, Member, Reply

LLAMA = "koboldcpp/Llama-3-8B"
SERVER_KEY_REJECTED = "The AI Horde rejected this server's shared key"
STOPPED = "This server's shared AI Horde key"


@pytest.fixture(autouse=True)
def _no_fake_rate_limits(horde: FakeHorde) -> None:
    # The fake's limiter counts real seconds while these tests move virtual ones.
    horde.enforce_rate_limits = False


def admin(harness: Harness, name: str = "boss") -> Member:
    role = harness.guild.create_role("admins", permissions=discord.Permissions(manage_guild=True))
    return harness.member(name, roles=[role])


async def set_server_key(harness: Harness, member: Member, key_id: str) -> Reply:
    shown = await member.slash("serverkey set")
    return await member.submit_modal(shown, {"serverkey:key": key_id})


async def login(member: Member, key: str) -> Reply:
    shown = await member.slash("login")
    return await member.submit_modal(shown, {"login:apikey": key})


def log_posts(harness: Harness, channel: object) -> list[str]:
    return [m.content for m in harness.channel_messages(channel) if STOPPED in m.content]


async def job_states(harness: Harness) -> list[str]:
    async with harness.runtime.db.session() as session:
        return list((await session.execute(text("SELECT state FROM generation_jobs"))).scalars().all())


async def test_deleted_server_key_is_named_and_reported_once_until_set_again(
    harness: Harness, horde: FakeHorde
) -> None:
    logs = harness.text_channel("bot-logs")
    await harness.services.guild_config.update(harness.guild.id, log_channel_id=logs.id)
    owner = horde.add_user("owner", kudos=10000)
    key = horde.add_shared_key(owner, "server fund", kudos=5000)
    boss = admin(harness)
    assert "server fund" in (await set_server_key(harness, boss, key.id)).text
    # Deleted on the Horde while the bot still has its details cached: the submit itself gets the 401.
    horde.add_worker("t1", models=[LLAMA], type="text")
    horde.revoke_key(key.id)

    carol = harness.member("carol")
    first = await carol.slash("generate", prompt="a lighthouse at dusk")
    assert first.private
    assert SERVER_KEY_REJECTED in first.text
    assert "`/login`" in first.text and "`/serverkey set`" in first.text
    assert "your API key" not in first.text
    assert horde.count("POST", r"/generate/async") == 1
    assert await job_states(harness) == ["failed"]
    (post,) = log_posts(harness, logs)
    assert "was rejected by the AI Horde" in post and "`/serverkey set`" in post

    # The next members are refused before anything is sent, naming the server's key; no second post.
    dave = await harness.member("dave").slash("generate", prompt="a boat")
    assert dave.private
    assert "This server's shared AI Horde key no longer works" in dave.text
    assert "`/login`" in dave.text and "`/serverkey set`" in dave.text
    erin = await harness.member("erin").slash("text", prompt="hello", model=LLAMA)
    assert "This server's shared AI Horde key no longer works" in erin.text
    assert horde.count("POST", r"/generate/(text/)?async") == 1
    assert len(log_posts(harness, logs)) == 1

    # Set again (a new key) and broken again: the log channel hears about it again, once.
    new_key = horde.add_shared_key(owner, "new fund", kudos=5000)
    assert "new fund" in (await set_server_key(harness, boss, new_key.id)).text
    horde.revoke_key(new_key.id)
    await harness.advance(11)  # carol's cooldown between generations
    again = await carol.slash("generate", prompt="a lighthouse at dusk")
    assert SERVER_KEY_REJECTED in again.text
    await harness.member("dave").slash("generate", prompt="a boat")
    assert len(log_posts(harness, logs)) == 2


async def test_server_key_without_kudos_for_an_upfront_request(harness: Harness, horde: FakeHorde) -> None:
    logs = harness.text_channel("bot-logs")
    await harness.services.guild_config.update(harness.guild.id, log_channel_id=logs.id)
    owner = horde.add_user("owner", kudos=10000)
    key = horde.add_shared_key(owner, "server fund", kudos=5000)
    await set_server_key(harness, admin(harness), key.id)
    horde.inject(r"/generate/async$", status=403, rc="KudosUpfront")
    reply = await harness.member("carol").slash("generate", prompt="a lighthouse at dusk")
    assert reply.private
    assert "this server's shared key doesn't have enough" in reply.text
    assert "`/login`" in reply.text and "ask an admin" in reply.text
    assert "your AI Horde account" not in reply.text
    # The key still works for smaller requests: nothing to tell the log channel.
    assert log_posts(harness, logs) == []


async def test_anonymous_key_upfront_request_names_the_anonymous_key(
    harness: Harness, horde: FakeHorde
) -> None:
    horde.inject(r"/generate/async$", status=403, rc="KudosUpfront")
    reply = await harness.member("carol").slash("generate", prompt="a lighthouse at dusk")
    assert reply.private
    assert "the anonymous key has none" in reply.text and "`/login`" in reply.text


async def test_members_own_revoked_key_is_still_theirs(harness: Harness, horde: FakeHorde) -> None:
    logs = harness.text_channel("bot-logs")
    await harness.services.guild_config.update(harness.guild.id, log_channel_id=logs.id)
    owner = horde.add_user("owner", kudos=10000)
    await set_server_key(harness, admin(harness), horde.add_shared_key(owner, "fund", kudos=5000).id)
    user = horde.add_user("alice", kudos=100)
    assert user.apikey is not None
    alice = harness.member("alice")
    await login(alice, user.apikey)
    horde.revoke_key(user.apikey)
    reply = await alice.slash("generate", prompt="a lighthouse at dusk")
    assert reply.private
    assert "rejected your API key" in reply.text and "`/login`" in reply.text
    assert log_posts(harness, logs) == []


async def test_server_key_rejected_on_text_is_named(harness: Harness, horde: FakeHorde) -> None:
    logs = harness.text_channel("bot-logs")
    await harness.services.guild_config.update(harness.guild.id, log_channel_id=logs.id)
    owner = horde.add_user("owner", kudos=10000)
    key = horde.add_shared_key(owner, "fund", kudos=5000)
    await set_server_key(harness, admin(harness), key.id)
    horde.add_worker("t1", models=[LLAMA], type="text")
    horde.revoke_key(key.id)
    reply = await harness.member("carol").slash("text", prompt="hello", model=LLAMA)
    assert reply.private
    assert SERVER_KEY_REJECTED in reply.text
    assert len(log_posts(harness, logs)) == 1
