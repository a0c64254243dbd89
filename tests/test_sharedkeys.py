"""Shared keys: members create and delete them; admins let one pay for unlinked members."""

from __future__ import annotations

import discord
import pytest
from sqlalchemy import text

from bot.errors import UserFacingError
from tests.fakes.horde import FakeHorde
from tests.harness import Harness, Member, Reply

LLAMA = "koboldcpp/Llama-3-8B"
POLL = 5.0


async def login(member: Member, key: str) -> Reply:
    shown = await member.slash("login")
    return await member.submit_modal(shown, {"login:apikey": key})


def admin(harness: Harness, name: str = "admin") -> Member:
    role = harness.guild.create_role("admins", permissions=discord.Permissions(manage_guild=True))
    return harness.member(name, roles=[role])


def shown_only_ephemerally(harness: Harness, key: str) -> None:
    """The key went to Discord only in ephemeral messages (flag 64): its owner's eyes only."""
    requests = harness.requests_containing(key)
    assert requests, "the new key must be shown to its owner"
    for request in requests:
        body = request.json.get("data", request.json)
        assert body.get("flags", 0) & 64, f"{request.method} {request.path} is not ephemeral"
    harness.shown_to_owner.add(key)


async def stored(h: Harness, table: str) -> list[dict[str, object]]:
    async with h.runtime.db.session() as session:
        rows = (await session.execute(text(f"SELECT * FROM {table}"))).all()  # noqa: S608 - fixed names
        return [dict(r._mapping) for r in rows]


async def test_create_shows_the_key_only_to_its_owner_and_stores_it_encrypted(
    harness: Harness, horde: FakeHorde
) -> None:
    user = horde.add_user("alice", kudos=10000)
    alice = harness.member("alice")
    await login(alice, user.key)
    reply = await alice.slash("sharedkey create", name="friends", kudos=500, max_text_tokens=200)
    assert reply.private
    (key_id,) = [k for k, v in horde.shared_keys.items() if v.owner_id == user.id]
    assert key_id in reply.text
    shown_only_ephemerally(harness, key_id)
    assert "500" in reply.text and "200 tokens" in reply.text
    rows = await stored(harness, "shared_keys")
    assert len(rows) == 1 and rows[0]["name"] == "friends"
    assert key_id not in str(rows[0]["key_encrypted"])
    # Never in anything public.
    assert not any(key_id in m.content for m in harness.channel_messages())


async def test_create_needs_a_linked_account(harness: Harness, horde: FakeHorde) -> None:
    reply = await harness.member("bob").slash("sharedkey create", name="friends")
    assert reply.private
    assert "/login" in reply.text
    assert horde.count("PUT", r"/sharedkeys") == 0


async def test_info_and_delete(harness: Harness, horde: FakeHorde) -> None:
    user = horde.add_user("alice", kudos=10000)
    alice = harness.member("alice")
    await login(alice, user.key)
    await alice.slash("sharedkey create", name="friends", kudos=500)
    shown_only_ephemerally(harness, next(iter(horde.shared_keys)))
    info = await alice.slash("sharedkey info")
    assert info.private
    assert "friends" in info.text and "0 of 500 used" in info.text
    choices = await alice.autocomplete("sharedkey delete", "key", "fri")
    assert [c["name"] for c in choices] == ["friends"]
    assert choices[0]["value"].isdigit(), "choices carry our row id, never the key"
    deleted = await alice.slash("sharedkey delete", key=choices[0]["value"])
    assert "no longer works" in deleted.text
    assert horde.shared_keys == {}
    assert await stored(harness, "shared_keys") == []


async def test_nobody_else_can_delete_my_key(harness: Harness, horde: FakeHorde) -> None:
    alice_user, bob_user = horde.add_user("alice", kudos=100), horde.add_user("bob")
    alice, bob = harness.member("alice"), harness.member("bob")
    await login(alice, alice_user.key)
    await login(bob, bob_user.key)
    await alice.slash("sharedkey create", name="friends")
    shown_only_ephemerally(harness, next(iter(horde.shared_keys)))
    row_id = str((await stored(harness, "shared_keys"))[0]["id"])
    reply = await bob.slash("sharedkey delete", key=row_id)
    assert "no shared key by that name" in reply.text
    assert len(horde.shared_keys) == 1


async def test_server_key_pays_for_unlinked_members(harness: Harness, horde: FakeHorde) -> None:
    owner = horde.add_user("boss", kudos=10000)
    boss = admin(harness, "boss")
    await login(boss, owner.key)
    await boss.slash("sharedkey create", name="server fund", kudos=1000)
    shown_only_ephemerally(harness, next(iter(horde.shared_keys)))
    row_id = str((await stored(harness, "shared_keys"))[0]["id"])
    reply = await boss.slash("serverkey set", key=row_id)
    assert "now use the shared key server fund" in reply.text.replace("**", "")
    rows = await stored(harness, "guild_shared_keys")
    (key_id,) = horde.shared_keys
    assert rows[0]["guild_id"] == harness.guild.id and key_id not in str(rows[0]["key_encrypted"])

    horde.add_worker("t1", models=[LLAMA], type="text")
    await harness.member("carol").slash("text", prompt="hello", model=LLAMA)
    assert horde.last_request("text").sharedkey_id == key_id


async def test_server_key_by_paste_and_unknown_key(harness: Harness, horde: FakeHorde) -> None:
    owner = horde.add_user("boss", kudos=10000)
    key = horde.add_shared_key(owner, "pasted", kudos=100)
    boss = admin(harness, "boss")
    shown = await boss.slash("serverkey set")
    assert shown.modal is not None
    bad = await boss.submit_modal(shown, {"serverkey:key": "00000000-0000-0000-0000-000000000000"})
    assert "doesn't know that shared key" in bad.text
    assert await stored(harness, "guild_shared_keys") == []
    shown = await boss.slash("serverkey set")
    good = await boss.submit_modal(shown, {"serverkey:key": key.id})
    assert "pasted" in good.text
    info = await boss.slash("serverkey info")
    assert "0 of 100 used" in info.text
    assert key.id not in harness.sent_text()
    cleared = await boss.slash("serverkey clear")
    assert "removed" in cleared.text


async def test_serverkey_is_for_managers_only(harness: Harness, horde: FakeHorde) -> None:
    member = harness.member("alice")
    try:
        reply = await member.slash("serverkey info")
    except Exception as exc:  # the command is hidden from members without Manage Server
        assert "not visible" in str(exc)
    else:
        assert "Manage Server" in reply.text


async def test_text_over_the_shared_key_token_limit_is_refused_before_sending(
    harness: Harness, horde: FakeHorde
) -> None:
    owner = horde.add_user("boss", kudos=10000)
    key = horde.add_shared_key(owner, "small", kudos=1000, max_text_tokens=100)
    await harness.services.shared_keys.set_guild_key(harness.guild.id, 1, key.id)
    horde.add_worker("t1", models=[LLAMA], type="text")
    carol = harness.member("carol")
    reply = await carol.slash("text", prompt="hello", model=LLAMA, max_length=300)
    assert reply.private
    assert "at most 100 tokens" in reply.text
    assert horde.count("POST", r"/generate/text/async") == 0
    # Without an explicit length the request is fitted to the key.
    await carol.slash("text", prompt="hello", model=LLAMA)
    assert horde.last_request("text").params["max_length"] == 100


async def test_shared_key_that_runs_dry_mid_generation(harness: Harness, horde: FakeHorde) -> None:
    logs = harness.text_channel("bot-logs")
    await harness.services.guild_config.update(harness.guild.id, log_channel_id=logs.id)
    owner = horde.add_user("boss", kudos=10000)
    key = horde.add_shared_key(owner, "fund", kudos=50)
    await harness.services.shared_keys.set_guild_key(harness.guild.id, 1, key.id)
    horde.add_worker("t1", models=[LLAMA], type="text")
    carol = harness.member("carol")

    first = await carol.slash("text", prompt="hello", model=LLAMA)
    # While it is being written, the key's kudos are spent elsewhere.
    horde.shared_keys[key.id].utilized = 50
    request = horde.last_request("text")
    horde.finish_text(request.id, texts=["an answer the Horde still delivers"])
    await harness.advance(POLL + 1)
    assert "an answer the Horde still delivers" in first.latest().text
    # Admins hear about it once, in the log channel.
    assert any("run out of kudos" in m.content for m in harness.channel_messages(logs))

    second = await carol.slash("text", prompt="again", model=LLAMA)
    assert second.private
    assert "shared AI Horde key has run out of kudos" in second.text
    assert "/login" in second.text
    assert horde.count("POST", r"/generate/text/async") == 1
    assert sum("run out of kudos" in m.content for m in harness.channel_messages(logs)) == 1


async def test_horde_refusing_an_empty_shared_key_is_explained(harness: Harness, horde: FakeHorde) -> None:
    owner = horde.add_user("boss", kudos=10000)
    key = horde.add_shared_key(owner, "fund", kudos=50)
    await harness.services.shared_keys.set_guild_key(harness.guild.id, 1, key.id)
    horde.add_worker("t1", models=[LLAMA], type="text")
    # The bot's cached view still says kudos are left; the Horde knows better.
    horde.shared_keys[key.id].utilized = 50
    reply = await harness.member("carol").slash("text", prompt="hello", model=LLAMA)
    assert reply.private
    assert "run out of kudos" in reply.text


async def test_unlinked_member_where_anonymous_is_not_allowed(harness: Harness, horde: FakeHorde) -> None:
    await harness.services.guild_config.update(harness.guild.id, allow_anonymous=False)
    reply = await harness.member("carol").slash("text", prompt="hello")
    assert reply.private
    assert "requires a linked AI Horde account" in reply.text


async def test_image_request_over_the_shared_key_limits_is_refused_before_sending(
    harness: Harness, horde: FakeHorde
) -> None:
    """The Horde answers 500 (not 400) when a shared key's image limits are exceeded (API_NOTES §9), so
    the check that image generation runs before sending is pinned here, with what the member reads."""
    owner = horde.add_user("boss", kudos=10000)
    key = horde.add_shared_key(owner, "small", kudos=1000, max_image_pixels=512 * 512, max_image_steps=20)
    await harness.services.shared_keys.set_guild_key(harness.guild.id, 1, key.id)
    keys = harness.services.shared_keys
    resolved = await keys.resolve(harness.member("carol").id, harness.guild.id)
    assert resolved.source == "guild"
    with pytest.raises(UserFacingError, match=r"at most 262,144 pixels per image \(1024×1024 is 1,048,576\)"):
        keys.check_image(resolved, 1024, 1024, 10)
    with pytest.raises(UserFacingError, match="at most 20 steps"):
        keys.check_image(resolved, 512, 512, 30)
    keys.check_image(resolved, 512, 512, 20)  # within both limits
    # A member's own key has no such limits.
    user = horde.add_user("dave")
    dave = harness.member("dave")
    await login(dave, user.key)
    own = await keys.resolve(dave.id, harness.guild.id)
    keys.check_image(own, 3072, 3072, 500)


async def test_shared_key_never_in_reprs(harness: Harness, horde: FakeHorde) -> None:
    owner = horde.add_user("boss", kudos=10000)
    key = horde.add_shared_key(owner, "fund", kudos=50)
    await harness.services.shared_keys.set_guild_key(harness.guild.id, 1, key.id)
    resolved = await harness.services.shared_keys.resolve(harness.member("carol").id, harness.guild.id)
    assert resolved.shared is not None and resolved.shared.id == key.id
    assert key.id not in repr(resolved) and key.id not in str(resolved)
    assert key.id not in repr(resolved.shared)


async def test_create_with_image_limits_and_a_zero_limit(harness: Harness, horde: FakeHorde) -> None:
    user = horde.add_user("alice", kudos=10000)
    alice = harness.member("alice")
    await login(alice, user.key)
    zero = await alice.slash("sharedkey create", name="friends", kudos=0)
    assert zero.private
    assert "`kudos` must be positive, or -1 for no limit" in zero.text
    assert horde.count("PUT", r"/sharedkeys") == 0
    reply = await alice.slash("sharedkey create", name="friends", max_image_pixels=262144, max_image_steps=25)
    (key,) = horde.shared_keys.values()
    shown_only_ephemerally(harness, key.id)
    assert (key.max_image_pixels, key.max_image_steps, key.max_text_tokens) == (262144, 25, -1)
    assert "262,144 pixels" in reply.text and "25 steps" in reply.text and "no limit" in reply.text
