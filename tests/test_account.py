"""Account linking, driven as a member would: /login modal, /logout, /userinfo."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from sqlalchemy import text

from bot.app import build_runtime, build_services
from bot.config import HordeSettings
from bot.horde.errors import HordeUnavailable
from bot.ui.errors import render_error
from tests.conftest import make_settings
from tests.fakes.horde import FakeHorde
from tests.harness import Harness, Member, Reply
from tests.support.runtime import runtime_of


async def login(member: Member, key: str) -> Reply:
    shown = await member.slash("login")
    assert shown.modal is not None, "/login must open a modal"
    return await member.submit_modal(shown, {"login:apikey": key})


async def stored_row(h: Harness, discord_id: int) -> dict[str, object] | None:
    async with h.runtime.db.session() as session:
        row = (
            await session.execute(text("SELECT * FROM users WHERE discord_id = :d"), {"d": discord_id})
        ).first()
        return dict(row._mapping) if row is not None else None


async def test_login_opens_a_modal_asking_for_the_key(harness: Harness) -> None:
    alice = harness.member("alice")
    shown = await alice.slash("login")
    assert shown.modal is not None
    assert shown.modal_field_ids == ["login:apikey"]


async def test_login_with_valid_key_links_and_shows_username_and_kudos(
    harness: Harness, horde: FakeHorde
) -> None:
    user = horde.add_user("alice", kudos=1234)
    alice = harness.member("alice")
    reply = await login(alice, user.key)
    assert reply.ephemeral
    assert f"alice#{user.id}" in reply.text
    assert "1,234" in reply.text
    row = await stored_row(harness, alice.id)
    assert row is not None and row["horde_user_id"] == user.id
    # Encrypted at rest: the database never holds the key in clear text.
    assert user.key not in str(row["api_key_encrypted"])


async def test_wrong_key_gives_clear_error_and_stores_nothing(harness: Harness, horde: FakeHorde) -> None:
    alice = harness.member("alice")
    reply = await login(alice, "wrongkey123456789")
    assert reply.ephemeral
    assert "doesn't recognise that API key" in reply.text
    assert "Nothing was stored" in reply.text
    assert await stored_row(harness, alice.id) is None


async def test_key_pasted_with_spaces_and_newlines_is_cleaned(harness: Harness, horde: FakeHorde) -> None:
    user = horde.add_user("bob")
    bob = harness.member("bob")
    key = user.key
    pasted = f"  {key[:8]}\n{key[8:]}  \n"
    reply = await login(bob, pasted)
    assert f"bob#{user.id}" in reply.text
    assert await stored_row(harness, bob.id) is not None


async def test_key_with_invalid_characters_is_rejected_before_calling_the_horde(
    harness: Harness, horde: FakeHorde
) -> None:
    alice = harness.member("alice")
    calls_before = horde.count("GET", r"/find_user")
    reply = await login(alice, "not a key! <>{}")
    assert reply.ephemeral
    assert "doesn't look like an AI Horde API key" in reply.text
    assert horde.count("GET", r"/find_user") == calls_before


async def test_anonymous_key_cannot_be_linked(harness: Harness) -> None:
    reply = await login(harness.member("alice"), "0000000000")
    assert "anonymous key" in reply.text


async def test_horde_down_during_login_says_so_and_stores_nothing(harness: Harness, horde: FakeHorde) -> None:
    user = horde.add_user("alice")
    alice = harness.member("alice")
    horde.set_down(True)
    reply = await login(alice, user.key)
    assert reply.ephemeral
    assert "not reachable" in reply.text
    assert await stored_row(harness, alice.id) is None


async def test_horde_timeout_during_login(tmp_path: Path, horde: FakeHorde) -> None:
    """Timeouts are wall-clock timers, which the Discord simulator virtualises; so this drives the account
    service directly (the same code /login runs) and checks the message the member would get."""
    settings = make_settings(tmp_path, horde.base_url)
    settings = dataclasses.replace(
        settings, horde=HordeSettings(api_url=horde.base_url, contact="t", timeout=0.3, max_retries=1)
    )
    services = build_services(build_runtime(settings))
    await services.start()
    try:
        user = horde.add_user("alice")
        horde.inject(r"/find_user", delay=2.0, times=2)
        with pytest.raises(HordeUnavailable) as info:
            await services.accounts.link(42, user.key)
        assert "not reachable" in (render_error(info.value) or "")
        assert "did not answer in time" in info.value.message
        assert await runtime_of(services).users.get(42) is None
    finally:
        await services.close()


async def test_connection_dropped_during_login(harness: Harness, horde: FakeHorde) -> None:
    user = horde.add_user("alice")
    alice = harness.member("alice")
    horde.inject(r"/find_user", drop=True, times=10)
    reply = await login(alice, user.key)
    assert reply.deferred, "the interaction must be acknowledged before the Horde is called"
    assert reply.ephemeral
    assert "not reachable" in reply.text
    assert await stored_row(harness, alice.id) is None


async def test_horde_rate_limit_short_retry_after_is_waited_out(harness: Harness, horde: FakeHorde) -> None:
    user = horde.add_user("alice")
    horde.inject(r"/find_user", status=429, retry_after=1, times=1)
    reply = await login(harness.member("alice"), user.key)
    assert f"alice#{user.id}" in reply.text
    assert horde.count("GET", r"/find_user") == 2


async def test_horde_rate_limit_long_retry_after_tells_the_member(harness: Harness, horde: FakeHorde) -> None:
    user = horde.add_user("alice")
    alice = harness.member("alice")
    horde.inject(r"/find_user", status=429, retry_after=45, times=5)
    reply = await login(alice, user.key)
    assert "rate-limiting" in reply.text
    assert "46 s" in reply.text
    assert await stored_row(harness, alice.id) is None


async def test_second_login_replaces_the_first(harness: Harness, horde: FakeHorde) -> None:
    first = horde.add_user("alice")
    second = horde.add_user("alice_alt")
    alice = harness.member("alice")
    await login(alice, first.key)
    reply = await login(alice, second.key)
    assert f"alice_alt#{second.id}" in reply.text
    row = await stored_row(harness, alice.id)
    assert row is not None and row["horde_user_id"] == second.id
    me = await alice.slash("userinfo")
    assert f"alice_alt#{second.id}" in me.text


async def test_logout_when_not_linked(harness: Harness) -> None:
    reply = await harness.member("alice").slash("logout")
    assert reply.ephemeral
    assert "You had no linked account" in reply.text
    assert "Could not be removed" not in reply.text


async def test_logout_deletes_key_and_data(harness: Harness, horde: FakeHorde) -> None:
    user = horde.add_user("alice")
    alice = harness.member("alice")
    await login(alice, user.key)
    reply = await alice.slash("logout")
    assert reply.ephemeral
    assert "deleted" in reply.text
    assert await stored_row(harness, alice.id) is None
    after = await alice.slash("userinfo")
    assert "/login" in after.text


async def test_userinfo_for_self_shows_account_details(harness: Harness, horde: FakeHorde) -> None:
    user = horde.add_user("alice", kudos=50, trusted=True, worker_count=2)
    alice = harness.member("alice")
    await login(alice, user.key)
    reply = await alice.slash("userinfo")
    assert reply.ephemeral
    assert f"alice#{user.id}" in reply.text
    assert "Workers: 2" in reply.text
    assert "Trusted: yes" in reply.text
    assert "Kudos: 50" in reply.text


async def test_userinfo_for_another_linked_member_uses_public_profile(
    harness: Harness, horde: FakeHorde
) -> None:
    bob_user = horde.add_user("bob", kudos=777)
    bob = harness.member("bob")
    await login(bob, bob_user.key)
    alice = harness.member("alice")
    reply = await alice.slash("userinfo", member=bob.actor)
    assert f"bob#{bob_user.id}" in reply.text
    assert horde.count("GET", rf"/users/{bob_user.id}$") == 1


async def test_userinfo_for_unlinked_member(harness: Harness) -> None:
    bob = harness.member("bob")
    reply = await harness.member("alice").slash("userinfo", member=bob.actor)
    assert "has not linked" in reply.text


async def test_userinfo_unlinked_self_points_to_login(harness: Harness) -> None:
    reply = await harness.member("alice").slash("userinfo")
    assert reply.ephemeral
    assert "/login" in reply.text


async def test_revoked_key_is_reported_on_use(harness: Harness, horde: FakeHorde) -> None:
    user = horde.add_user("alice")
    alice = harness.member("alice")
    await login(alice, user.key)
    horde.revoke_key(user.key)
    reply = await alice.slash("userinfo")
    assert "no longer works" in reply.text


async def test_corrupted_stored_key_asks_to_login_again(harness: Harness, horde: FakeHorde) -> None:
    user = horde.add_user("alice")
    alice = harness.member("alice")
    await login(alice, user.key)
    async with harness.runtime.db.session() as session:
        await session.execute(
            text("UPDATE users SET api_key_encrypted = 'gAAAAAcorrupted' WHERE discord_id = :d"),
            {"d": alice.id},
        )
    reply = await alice.slash("userinfo")
    assert reply.ephemeral
    assert "can't be read" in reply.text and "/login" in reply.text


async def test_userinfo_shows_usage(harness: Harness, horde: FakeHorde) -> None:
    user = horde.add_user("alice", kudos=50)
    alice = harness.member("alice")
    await login(alice, user.key)
    reply = await alice.slash("userinfo")
    assert "Usage:" in reply.text
    assert "megapixelsteps" in reply.text and "tokens" in reply.text


async def test_a_shared_key_cannot_be_linked_as_ones_own(harness: Harness, horde: FakeHorde) -> None:
    owner = horde.add_user("boss", kudos=1000)
    shared = horde.add_shared_key(owner, "fund", kudos=100, max_image_steps=20)
    alice = harness.member("alice")
    reply = await login(alice, shared.id)
    assert reply.private
    assert "That is a shared key" in reply.text and "/serverkey set" in reply.text
    assert "Nothing was stored" in reply.text
    assert await stored_row(harness, alice.id) is None


async def test_logout_deletes_jobs_chats_and_shared_key_rows_and_warns_about_live_keys(
    harness: Harness, horde: FakeHorde
) -> None:
    llama = "koboldcpp/Llama-3-8B"
    user = horde.add_user("alice", kudos=10000)
    horde.add_worker("t1", models=[llama], type="text")
    alice = harness.member("alice")
    await login(alice, user.key)
    created = await alice.slash("sharedkey create", name="friends", kudos=100)
    (key_id,) = horde.shared_keys
    assert created.private
    harness.shown_to_owner.add(key_id)
    await alice.slash("text", prompt="hello", model=llama)
    await alice.slash("chat start", model=llama)
    (thread,) = harness.channel.threads
    await alice.slash("chat say", channel=thread, message="hi there")

    reply = await alice.slash("logout")
    assert reply.private
    assert "deleted" in reply.text
    assert "friends" in reply.text and "still work on the AI Horde" in reply.text
    async with harness.runtime.db.session() as session:
        for table in ("users", "alchemy_text_jobs", "shared_keys", "chat_sessions", "chat_turns"):
            count = (await session.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one()  # noqa: S608
            assert count == 0, f"{table} still holds {count} rows about the member"
