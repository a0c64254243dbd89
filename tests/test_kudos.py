"""Kudos gifting driven as members do: reactions, /transfer, /kudos history, against the fake Horde."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

import discord
import pytest
from sqlalchemy import text

from bot.config import ConfigError, Settings
from bot.db.kudos import FAILED, LAPSED, PENDING, QUEUED, SENT, Gift
from bot.services.kudos import KudosSettings, OldestFirst
from tests.conftest import make_settings
from tests.fakes.horde import FakeHorde, FakeUser
from tests.harness import Harness, Member, deliver_reactions, virtual_seconds

KUDOS: dict[str, Any] = {"check_interval": 1.0, "retry_base": 2.0, "retry_cap": 30.0}
DAY = 86400.0


@pytest.fixture
def settings(tmp_path: Path, horde: FakeHorde, db_url: str) -> Settings:
    # Fifty members /login in one test: each login is a ⏱ Horde call, so lift the server's burst above that.
    return make_settings(
        tmp_path, horde.base_url, database_url=db_url, kudos=KUDOS, safety={"guild_burst": 100}
    )


@pytest.fixture(autouse=True)
async def _kudos_world(harness: Harness, horde: FakeHorde) -> None:
    """The harness with kudos emojis configured and the fake Horde on the simulator's virtual clock (its
    1 transfer/s per key limit is then checked in the same time the bot paces itself in)."""
    horde.clock = lambda: virtual_seconds(harness)
    await harness.services.guild_config.update(harness.guild.id, kudos_emojis={"👍": 5, "❤": 20})


async def link(member: Member, user: FakeUser) -> None:
    shown = await member.slash("login")
    reply = await member.submit_modal(shown, {"login:apikey": user.apikey or ""})
    assert "linked" in reply.text.lower()


async def linked_pair(
    h: Harness, horde: FakeHorde, **kudos: float
) -> tuple[Member, FakeUser, Member, FakeUser]:
    alice, bob = h.member("alice"), h.member("bob")
    a, b = (
        horde.add_user("alice", kudos=kudos.get("alice", 100)),
        horde.add_user("bob", kudos=kudos.get("bob", 100)),
    )
    await link(alice, a)
    await link(bob, b)
    return alice, a, bob, b


def transfers(horde: FakeHorde) -> list[Any]:
    return horde.calls_to(r"/kudos/transfer$", "POST")


def paid(horde: FakeHorde) -> list[Any]:
    return [c for c in transfers(horde) if c.status == 200]


def idempotency_key(call: Any) -> str:
    return str({k.lower(): v for k, v in call.headers.items()}["idempotency-key"])


def dms(member: Member) -> list[str]:
    channel = member.actor.user.dm_channel
    return [m.content for m in channel.history()] if channel is not None else []


async def gifts(h: Harness) -> list[Gift]:
    return await h.services.kudos.repo.all_gifts()


async def elapse(h: Harness, seconds: float) -> None:
    """Let wall-clock time (retry times, pending windows, notice intervals) and the scheduler's time pass
    together, in small steps. Days-long waits jump all but their last two minutes at once."""
    if seconds > 600:
        h.clock.shift(seconds - 120)
        seconds = 120
    while seconds > 0:
        step = min(1.0, seconds)
        await h.advance(step)
        h.clock.shift(step)
        seconds -= step


# --- the basic gift ----------


async def test_reaction_gifts_the_mapped_amount_once_and_confirms(harness: Harness, horde: FakeHorde) -> None:
    h = harness
    log_channel = h.text_channel("kudos-log")
    await h.services.guild_config.update(h.guild.id, kudos_log_channel_id=log_channel.id)
    alice, a, bob, b = await linked_pair(h, horde)
    message = await bob.send("here is how to fix your lora")
    await alice.react(message, "👍")
    await elapse(h, 1)
    assert horde.user(a.id).kudos == 95 and horde.user(b.id).kudos == 105
    [call] = paid(horde)
    assert call.json == {"username": b.username, "amount": 5}
    assert call.user_id == a.id
    assert idempotency_key(call).startswith("hordebot-")
    [gift] = await gifts(h)
    assert (gift.state, gift.giver_id, gift.receiver_id, gift.amount, gift.emoji) == (
        SENT,
        alice.id,
        bob.id,
        5,
        "👍",
    )
    assert gift.horde_response == '{"transferred": 5.0}'
    # Confirmation: one bot reaction on the message, a short line in the kudos log, nothing in the chat.
    stored = h.env.backend.get_message(h.channel.id, message.id)
    confirm = stored.reaction_for("✅")
    assert h.bot.user is not None
    assert confirm is not None and confirm.user_ids == [h.bot.user.id]
    [line] = [m.content for m in h.channel_messages(log_channel)]
    assert line == f"💝 <@{alice.id}> gave 5 kudos to <@{bob.id}> with 👍."
    assert h.pings(h.channel_messages(log_channel)[0]) == ([], [], False)
    assert [m.id for m in h.channel_messages()] == [message.id]


async def test_unmapped_emoji_and_other_guild_emojis_do_nothing(harness: Harness, horde: FakeHorde) -> None:
    h = harness
    alice, _a, bob, _b = await linked_pair(h, horde)
    message = await bob.send("hi")
    await alice.react(message, "😂")
    await elapse(h, 2)
    assert transfers(horde) == [] and await gifts(h) == []


async def test_same_reaction_event_twice_pays_once(harness: Harness, horde: FakeHorde) -> None:
    h = harness
    alice, a, bob, _b = await linked_pair(h, horde)
    message = await bob.send("useful")
    await alice.react(message, "❤️")
    # Discord re-delivers the same MESSAGE_REACTION_ADD (a resumed gateway session), twice more.
    await deliver_reactions(
        h, [(alice, h.channel.id, message.id, "❤️"), (alice, h.channel.id, message.id, "❤")]
    )
    await elapse(h, 3)
    assert len(paid(horde)) == 1 and horde.user(a.id).kudos == 80
    assert len(await gifts(h)) == 1


async def test_remove_and_re_add_does_not_pay_again(harness: Harness, horde: FakeHorde) -> None:
    h = harness
    alice, a, bob, _b = await linked_pair(h, horde)
    message = await bob.send("useful")
    await alice.react(message, "👍")
    await elapse(h, 1)
    await alice.unreact(message, "👍")
    await alice.react(message, "👍")
    await elapse(h, 3)
    assert len(paid(horde)) == 1 and horde.user(a.id).kudos == 95
    # A different mapped emoji on the same message is a different gift.
    await alice.react(message, "❤")
    await elapse(h, 3)
    assert len(paid(horde)) == 2 and horde.user(a.id).kudos == 75


async def test_no_self_gifts_and_no_gifts_to_bots(harness: Harness, horde: FakeHorde) -> None:
    h = harness
    alice, _a, _bob, _b = await linked_pair(h, horde)
    own = await alice.send("my own message")
    await alice.react(own, "👍")
    with h.time_context():
        channel = h.bot.get_channel(h.channel.id)
        assert isinstance(channel, discord.TextChannel)
        bot_message = await channel.send("a bot message nobody requested")
    await alice.react(bot_message, "👍")
    await elapse(h, 2)
    assert transfers(horde) == [] and await gifts(h) == []


async def test_reaction_on_the_bots_generation_message_gifts_the_requester(
    harness: Harness, horde: FakeHorde
) -> None:
    h = harness
    alice, a, bob, b = await linked_pair(h, horde)
    with h.time_context():
        channel = h.bot.get_channel(h.channel.id)
        assert isinstance(channel, discord.TextChannel)
        result = await channel.send("bob's generated image")
    requested: dict[int, int] = {result.id: bob.id}

    async def requester_of_message(message_id: int) -> int | None:
        return requested.get(message_id)

    h.services.kudos.message_owners.subscribe(requester_of_message)
    await alice.react(result, "👍")
    await elapse(h, 1)
    assert horde.user(b.id).kudos == 105 and horde.user(a.id).kudos == 95
    # The requester reacting on their own result is a self-gift: nothing.
    await bob.react(result, "👍")
    await elapse(h, 2)
    assert len(paid(horde)) == 1


async def test_reaction_on_a_deleted_message_gives_nothing(harness: Harness, horde: FakeHorde) -> None:
    h = harness
    alice, _a, bob, _b = await linked_pair(h, horde)
    message = await bob.send("soon gone")
    channel_id, message_id = h.channel.id, message.id
    h.env.backend.delete_message(channel_id, message_id)
    await h.settle()
    await deliver_reactions(h, [(alice, channel_id, message_id, "👍")])
    await elapse(h, 2)
    assert transfers(horde) == [] and await gifts(h) == []
    assert h.take_errors() == []


@pytest.mark.parametrize("amount", [0, -5])
async def test_emoji_mapped_to_zero_or_negative_is_rejected_at_config_time(
    harness: Harness, horde: FakeHorde, amount: int
) -> None:
    h = harness
    from tests.test_admin import admin

    boss = admin(h)
    # Sent raw: the option declares its minimum, so only a hostile client can send this; the bot refuses too.
    reply = await boss.slash_raw("config kudos-emoji add", {"emoji": "🔥", "amount": amount})
    assert reply.private and "positive whole number" in reply.text
    assert "🔥" not in (await h.services.guild_config.get(h.guild.id)).kudos_emojis
    # So reacting with it gives nothing.
    alice, _a, bob, _b = await linked_pair(h, horde)
    message = await bob.send("hi")
    await alice.react(message, "🔥")
    await elapse(h, 2)
    assert transfers(horde) == []


# --- unlinked members ----------


async def test_unlinked_reactor_reaction_removed_and_told_once_a_day(
    harness: Harness, horde: FakeHorde
) -> None:
    h = harness
    bob = h.member("bob")
    await link(bob, horde.add_user("bob"))
    carol = h.member("carol")
    first, second = await bob.send("one"), await bob.send("two")
    await carol.react(first, "👍")
    await carol.react(second, "❤")
    stored = h.env.backend.get_message(h.channel.id, first.id)
    assert stored.reaction_for("👍") is None, "the bot removed the reaction"
    assert len(dms(carol)) == 1 and "/login" in dms(carol)[0]
    await elapse(h, DAY + 1)
    await carol.react(first, "👍")
    assert len(dms(carol)) == 2
    assert transfers(horde) == [] and await gifts(h) == []


async def test_unlinked_reactor_reaction_stays_when_the_bot_may_not_remove_it(
    harness: Harness, horde: FakeHorde
) -> None:
    h = harness
    await h.set_channel_overwrite(h.channel, h.bot_role(), discord.PermissionOverwrite(manage_messages=False))
    bob, carol = h.member("bob"), h.member("carol")
    await link(bob, horde.add_user("bob"))
    message = await bob.send("one")
    await carol.react(message, "👍")
    stored = h.env.backend.get_message(h.channel.id, message.id)
    assert stored.reaction_for("👍") is not None
    assert len(dms(carol)) == 1


async def test_unlinked_author_gift_waits_and_is_delivered_on_login(
    harness: Harness, horde: FakeHorde
) -> None:
    h = harness
    alice, dave = h.member("alice"), h.member("dave")
    a = horde.add_user("alice")
    await link(alice, a)
    one, two = await dave.send("one"), await dave.send("two")
    await alice.react(one, "👍")
    await alice.react(two, "❤")
    await elapse(h, 2)
    assert transfers(horde) == []
    assert [g.state for g in await gifts(h)] == [PENDING, PENDING]
    [claim] = dms(dave)  # told once, not per gift
    assert "/login" in claim and "7 days" in claim
    await elapse(h, 3 * DAY)
    d = horde.add_user("dave", kudos=0)
    await link(dave, d)
    await elapse(h, 3)
    assert horde.user(d.id).kudos == 25 and horde.user(a.id).kudos == 75
    assert [g.state for g in await gifts(h)] == [SENT, SENT]


async def test_pending_gift_lapses_after_seven_days_and_the_reactor_is_told(
    harness: Harness, horde: FakeHorde
) -> None:
    h = harness
    alice, dave = h.member("alice"), h.member("dave")
    a = horde.add_user("alice")
    await link(alice, a)
    message = await dave.send("one")
    await alice.react(message, "👍")
    await elapse(h, 7 * DAY + 5)
    [gift] = await gifts(h)
    assert gift.state == LAPSED
    [told] = dms(alice)
    assert "lapsed" in told and "Nothing was taken" in told
    # Linking afterwards delivers nothing.
    await link(dave, horde.add_user("dave", kudos=0))
    await elapse(h, 3)
    assert transfers(horde) == [] and horde.user(a.id).kudos == 100


# --- Horde errors ----------


async def test_not_enough_kudos_fails_with_one_dm(harness: Harness, horde: FakeHorde) -> None:
    h = harness
    alice, a, bob, _b = await linked_pair(h, horde, alice=3)
    one, two = await bob.send("one"), await bob.send("two")
    await alice.react(one, "👍")
    await alice.react(two, "👍")
    await elapse(h, 3)
    states = [(g.state, g.horde_rc) for g in await gifts(h)]
    assert states == [(FAILED, "KudosTransferNotEnough")] * 2
    [told] = dms(alice)
    assert "don't have enough kudos" in told and "Nothing was taken" in told
    assert horde.user(a.id).kudos == 3


async def test_giver_key_revoked_fails_with_a_dm_saying_to_login(harness: Harness, horde: FakeHorde) -> None:
    h = harness
    alice, a, bob, _b = await linked_pair(h, horde)
    horde.revoke_key(a.apikey or "")
    message = await bob.send("one")
    await alice.react(message, "👍")
    await elapse(h, 2)
    [gift] = await gifts(h)
    assert (gift.state, gift.horde_rc) == (FAILED, "InvalidAPIKey")
    [told] = dms(alice)
    assert "no longer works" in told and "/login" in told


async def test_a_gift_back_within_a_minute_is_held_until_the_horde_accepts_it(
    harness: Harness, horde: FakeHorde
) -> None:
    """The Horde refuses a gift back to someone who gifted you in the last minute (400
    TooFastKudosTransfers, transcript 59). The bot knows the first transfer, so it holds the gift back and
    sends it once, when it can succeed, instead of sending it to be refused."""
    h = harness
    alice, a, bob, b = await linked_pair(h, horde)
    mine = await alice.send("mine")
    await bob.react(mine, "👍")
    await elapse(h, 1)
    message = await bob.send("thanks!")
    await alice.react(message, "👍")
    await elapse(h, 2)
    [_, gift] = await gifts(h)
    assert (gift.state, gift.horde_rc, gift.attempts) == (QUEUED, "TooFastKudosTransfers", 0)
    [told] = dms(alice)
    assert "less than a minute ago" in told and "sent automatically" in told
    await elapse(h, 50)
    assert len(transfers(horde)) == 1, "nothing is sent while the Horde would refuse it"
    await elapse(h, 15)
    [_, gift] = await gifts(h)
    assert gift.state == SENT and gift.attempts == 1
    assert horde.user(a.id).kudos == 100 and horde.user(b.id).kudos == 100
    assert [c.status for c in transfers(horde)] == [200, 200]
    assert len(dms(alice)) == 1


async def test_gifts_both_ways_at_once_never_meet_the_horde_refusal(
    harness: Harness, horde: FakeHorde
) -> None:
    """Alice and bob react to each other in the same instant: one gift goes, the other waits its minute."""
    h = harness
    alice, a, bob, b = await linked_pair(h, horde)
    hers, his = await alice.send("hers"), await bob.send("his")
    h.env.settle_timeout = 60.0
    await deliver_reactions(h, [(alice, h.channel.id, his.id, "❤"), (bob, h.channel.id, hers.id, "❤")])
    await elapse(h, 70)
    assert {g.state for g in await gifts(h)} == {SENT}
    assert [c.status for c in transfers(horde)] == [200, 200]
    assert horde.user(a.id).kudos == 100 and horde.user(b.id).kudos == 100


async def test_a_gift_back_held_across_a_restart_is_still_held(harness: Harness, horde: FakeHorde) -> None:
    """The last minute's transfers are read back at start-up: a restart doesn't forget the Horde's rule."""
    h = harness
    # Across a restart only the wall clock carries over: the fake Horde keeps time by it here.
    horde.clock = lambda: h.clock.now().timestamp()
    alice, _a, bob, _b = await linked_pair(h, horde)
    mine = await alice.send("mine")
    await bob.react(mine, "👍")
    await elapse(h, 1)
    await h.restart()
    message = await bob.send("thanks!")
    await alice.react(message, "👍")
    await elapse(h, 30)
    assert [c.status for c in transfers(horde)] == [200]
    await elapse(h, 40)
    assert [c.status for c in transfers(horde)] == [200, 200]
    assert {g.state for g in await gifts(h)} == {SENT}


async def test_too_fast_from_a_transfer_made_outside_the_bot_is_retried_not_dropped(
    harness: Harness, horde: FakeHorde
) -> None:
    """Bob gifted alice on the Horde's website: the bot can't know, the Horde refuses, the gift waits."""
    h = harness
    alice, a, bob, b = await linked_pair(h, horde)
    horde.inject(
        r"/kudos/transfer$",
        status=400,
        rc="TooFastKudosTransfers",
        body={
            "message": "This user transferred kudos to you very recently. Please wait at least 1 minute.",
            "rc": "TooFastKudosTransfers",
        },
    )
    message = await bob.send("thanks!")
    await alice.react(message, "👍")
    await elapse(h, 2)
    [gift] = await gifts(h)
    assert (gift.state, gift.horde_rc, gift.attempts) == (QUEUED, "TooFastKudosTransfers", 1)
    [told] = dms(alice)
    assert "delayed" in told and "sent automatically" in told
    await elapse(h, 65)
    [gift] = await gifts(h)
    assert gift.state == SENT and horde.user(b.id).kudos == 105 and horde.user(a.id).kudos == 95


async def test_rate_limit_429_is_retried_with_backoff(harness: Harness, horde: FakeHorde) -> None:
    h = harness
    alice, a, bob, _b = await linked_pair(h, horde)
    horde.inject(r"/kudos/transfer$", status=429, retry_after=30, times=2)
    message = await bob.send("one")
    await alice.react(message, "👍")
    await elapse(h, 2)
    [gift] = await gifts(h)
    assert gift.state == QUEUED and gift.attempts == 1
    await elapse(h, 70)
    [gift] = await gifts(h)
    assert gift.state == SENT and horde.user(a.id).kudos == 95
    assert dms(alice) == []  # the bot's own pacing: nothing for the member to do


async def test_outage_is_retried_later_and_the_giver_told_once(harness: Harness, horde: FakeHorde) -> None:
    h = harness
    alice, a, bob, _b = await linked_pair(h, horde)
    horde.set_down(True)
    message = await bob.send("one")
    await alice.react(message, "👍")
    await elapse(h, 10)
    [gift] = await gifts(h)
    assert gift.state == QUEUED
    [told] = dms(alice)
    assert "can't be reached" in told
    await elapse(h, 30)
    assert len(dms(alice)) == 1
    horde.set_down(False)
    await elapse(h, 60)
    [gift] = await gifts(h)
    assert gift.state == SENT and horde.user(a.id).kudos == 95
    assert len(paid(horde)) == 1


async def test_giver_unlinking_while_gifts_are_queued_fails_them_with_a_dm(
    harness: Harness, horde: FakeHorde
) -> None:
    h = harness
    alice, a, bob, _b = await linked_pair(h, horde)
    horde.set_down(True)
    message = await bob.send("one")
    await alice.react(message, "👍")
    await elapse(h, 2)
    reply = await alice.slash("logout")
    assert "deleted" in reply.text
    horde.set_down(False)
    await elapse(h, 30)
    [gift] = await gifts(h)
    assert (gift.state, gift.horde_rc) == (FAILED, "GiverNotLinked")
    assert any("no longer linked" in d for d in dms(alice))
    assert horde.user(a.id).kudos == 100


@pytest.mark.parametrize(
    ("setup", "rc", "why"),
    [
        ("flag_giver", "SourceAccountFlagged", "flagged"),
        ("same_account", "KudosTransferToSelf", "same AI Horde account"),
    ],
)
async def test_other_horde_refusals_fail_with_the_reason(
    harness: Harness, horde: FakeHorde, setup: str, rc: str, why: str
) -> None:
    h = harness
    alice, bob = h.member("alice"), h.member("bob")
    a = horde.add_user("alice")
    await link(alice, a)
    if setup == "same_account":
        await link(bob, a)
    else:
        await link(bob, horde.add_user("bob"))
        horde.user(a.id).flagged = True
    message = await bob.send("one")
    await alice.react(message, "👍")
    await elapse(h, 2)
    [gift] = await gifts(h)
    assert (gift.state, gift.horde_rc) == (FAILED, rc)
    [told] = dms(alice)
    assert why in told


# --- bursts, pacing and restarts ----------


async def test_fifty_members_reacting_within_a_second_are_all_paid(
    harness: Harness, horde: FakeHorde
) -> None:
    h = harness
    bob = h.member("bob")
    b = horde.add_user("bob", kudos=0)
    await link(bob, b)
    message = await bob.send("the best guide")
    h.env.settle_timeout = 60.0  # fifty handlers and fifty Horde calls settle in one go
    reactors = []
    for i in range(50):
        member = h.member(f"fan{i}")
        await link(member, horde.add_user(f"fan{i}"))
        reactors.append(member)
    await deliver_reactions(h, [(m, h.channel.id, message.id, "👍") for m in reactors])
    await elapse(h, 5)
    assert len(paid(horde)) == 50
    assert [c for c in transfers(horde) if c.status != 200] == []
    assert horde.user(b.id).kudos == 250
    assert {g.state for g in await gifts(h)} == {SENT}


async def test_one_giver_is_paced_at_one_transfer_per_second(harness: Harness, horde: FakeHorde) -> None:
    h = harness
    alice, _a, bob, b = await linked_pair(h, horde)
    messages = [await bob.send(f"tip {i}") for i in range(5)]
    h.env.settle_timeout = 60.0
    await deliver_reactions(h, [(alice, h.channel.id, m.id, "👍") for m in messages])
    await elapse(h, 10)
    assert len(paid(horde)) == 5 and horde.user(b.id).kudos == 125
    assert [c for c in transfers(horde) if c.status != 200] == [], "the Horde's 1/s per key was respected"
    # The fake Horde records each call with its clock (the simulator's here): a transfer starts a second
    # after the previous one ended, so the Horde answers them at least a second apart.
    answered = [c.at for c in transfers(horde)]
    gaps = [later - earlier for earlier, later in itertools.pairwise(answered)]
    assert all(gap >= 1.0 for gap in gaps), gaps


async def test_restart_while_gifts_are_queued_sends_them_after_restart_once(
    harness: Harness, horde: FakeHorde
) -> None:
    h = harness
    alice, _a, bob, b = await linked_pair(h, horde)
    horde.set_down(True)
    messages = [await bob.send(f"tip {i}") for i in range(3)]
    for m in messages:
        await alice.react(m, "👍")
    await elapse(h, 3)
    assert {g.state for g in await gifts(h)} == {QUEUED}
    await h.restart()
    horde.set_down(False)
    await elapse(h, 40)
    assert {g.state for g in await gifts(h)} == {SENT}
    assert len(paid(horde)) == 3 and horde.user(b.id).kudos == 115


async def test_crash_after_the_horde_applied_a_transfer_never_pays_twice(
    harness: Harness, horde: FakeHorde
) -> None:
    """The bot dies after the Horde applied a transfer but before it wrote "sent": after the restart it sends
    the gift again with the same Idempotency-Key, and the Horde applies it once."""
    h = harness
    alice, a, bob, b = await linked_pair(h, horde)
    message = await bob.send("tip")
    await alice.react(message, "👍")
    await elapse(h, 1)
    assert horde.user(b.id).kudos == 105
    async with h.runtime.db.session() as session:
        await session.execute(
            text("UPDATE kudos_gifts SET state = 'queued', sent_at = NULL, next_attempt_at = created_at")
        )
    await h.restart()
    await elapse(h, 5)
    calls = paid(horde)
    assert len(calls) == 2 and idempotency_key(calls[0]) == idempotency_key(calls[1])
    assert horde.user(b.id).kudos == 105 and horde.user(a.id).kudos == 95
    [gift] = await gifts(h)
    assert gift.state == SENT


# --- the periodic queue check at rest ----------


def queue_reads(statements: list[str]) -> list[str]:
    """The statements that look for gifts to send (retention's prune also reads the table, by age)."""
    return [s for s in statements if "kudos_gifts.next_attempt_at" in s]


async def test_alone_on_sqlite_an_idle_queue_is_not_read_and_a_reaction_is_still_paid_at_once(
    harness: Harness, horde: FakeHorde, engine: str
) -> None:
    """Alone on its SQLite file the bot writes every gift itself: with nothing queued its queue check (every
    second here) reads nothing, and a gift recorded meanwhile still goes out at once. On PostgreSQL other
    processes may queue gifts: it reads at every check."""
    h = harness
    alice, _a, bob, b = await linked_pair(h, horde)
    await elapse(h, 2)  # the first checks find nothing queued
    with h.statements() as idle:
        await elapse(h, 600)
    checks = [s for s in queue_reads(idle) if s.startswith("SELECT EXISTS")]  # `work_due`
    if engine == "sqlite":
        assert queue_reads(idle) == [], "ten idle minutes, nothing stored: the queue is not read"
    else:
        assert len(checks) >= 500, len(checks)
    message = await bob.send("here is how to fix your lora")
    await alice.react(message, "👍")
    await elapse(h, 1)
    assert [g.state for g in await gifts(h)] == [SENT] and horde.user(b.id).kudos == 105
    await elapse(h, 2)
    with h.statements() as after:
        await elapse(h, 60)
    assert bool(queue_reads(after)) == (engine == "postgresql"), "the gift is sent: at rest again"


async def test_a_gift_held_by_a_429_across_a_restart_is_sent_when_its_time_comes(
    harness: Harness, horde: FakeHorde
) -> None:
    """The lane's own wake-up dies with the process: the new process's queue check, at rest with nothing
    due, still reads again when the stored retry time comes, and the gift goes out within a check of it."""
    h = harness
    horde.clock = lambda: h.clock.now().timestamp()  # only the wall clock carries over a restart
    alice, _a, bob, b = await linked_pair(h, horde)
    horde.inject(r"/kudos/transfer$", status=429, retry_after=30, times=1)
    message = await bob.send("tip")
    await alice.react(message, "👍")
    await elapse(h, 1)
    [gift] = await gifts(h)
    assert gift.state == QUEUED and gift.next_attempt_at is not None
    await h.restart()
    await elapse(h, 20)
    assert [c.status for c in transfers(horde)] == [429], "not before its time"
    await elapse(h, 12)
    [gift] = await gifts(h)
    assert gift.state == SENT and horde.user(b.id).kudos == 105
    [_, sent] = transfers(horde)
    assert sent.status == 200


async def test_a_gift_held_back_for_the_horde_minute_rests_the_check_until_its_time(
    harness: Harness, horde: FakeHorde, engine: str
) -> None:
    """A gift back within the Horde's minute is held (TooFastKudosTransfers): alone on SQLite the check
    reads no more until the hold ends, and the gift still goes out then."""
    h = harness
    alice, a, bob, b = await linked_pair(h, horde)
    mine = await alice.send("mine")
    await bob.react(mine, "👍")
    await elapse(h, 1)
    message = await bob.send("thanks!")
    await alice.react(message, "👍")
    await elapse(h, 3)
    [_, held] = await gifts(h)
    assert (held.state, held.horde_rc) == (QUEUED, "TooFastKudosTransfers")
    with h.statements() as waiting:
        await elapse(h, 50)
    assert bool(queue_reads(waiting)) == (engine == "postgresql")
    await elapse(h, 10)
    assert {g.state for g in await gifts(h)} == {SENT}
    assert [c.status for c in transfers(horde)] == [200, 200]
    assert horde.user(a.id).kudos == 100 and horde.user(b.id).kudos == 100


# --- settings ----------


def test_example_config_kudos_section_is_the_defaults() -> None:
    from cryptography.fernet import Fernet

    from bot.config import load_settings

    example = Path(__file__).resolve().parent.parent / "config.example.toml"
    env = {"DISCORD_TOKEN": "tok", "HORDEBOT_SECRET_KEY": Fernet.generate_key().decode()}
    assert KudosSettings.from_section(load_settings(example, env=env).section("kudos")) == KudosSettings()


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"transfer_interval": 0.5}, "kudos.transfer_interval"),
        ({"pending_days": 0}, "kudos.pending_days"),
        ({"max_parallel": 0}, "kudos.max_parallel"),
        ({"history_limit": 50}, "kudos.history_limit"),
    ],
)
def test_bad_kudos_settings_name_the_key(raw: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        KudosSettings.from_section(raw)
    assert key in str(info.value)


# --- /transfer ----------


def message_of(reply: Any) -> Any:
    return reply.followups[0].message if reply.followups and reply.followups[0].message else reply.message


def button_id(message: Any, label: str) -> str:
    return next(
        str(child.custom_id)
        for row in message.components
        for child in row.children
        if getattr(child, "label", None) == label
    )


async def test_transfer_with_confirm_button(harness: Harness, horde: FakeHorde) -> None:
    h = harness
    alice, a, bob, b = await linked_pair(h, horde)
    shown = await alice.slash("transfer", member=bob.actor, amount=30, reason="for the @everyone tutorial")
    assert shown.private and "Send **30** kudos" in shown.content and "expires" in shown.content
    assert "@\u200beveryone" in shown.content or "\\@everyone" in shown.content
    assert transfers(horde) == [], "nothing is sent before the confirmation"
    done = await alice.click(message_of(shown), label="Send kudos")
    assert "Sent **30** kudos" in done.latest().text
    assert horde.user(a.id).kudos == 70 and horde.user(b.id).kudos == 130
    [gift] = await gifts(h)
    assert (gift.source, gift.state, gift.amount) == ("transfer", SENT, 30)


async def test_transfer_confirm_belongs_to_the_invoker_and_double_click_pays_once(
    harness: Harness, horde: FakeHorde
) -> None:
    h = harness
    alice, a, bob, _b = await linked_pair(h, horde)
    shown = await alice.slash("transfer", member=bob.actor, amount=10)
    confirm = button_id(message_of(shown), "Send kudos")
    [refused] = await bob.click_burst(message_of(shown), [confirm], visible_only=False)
    assert "belong to someone else" in refused.text
    first, second = await alice.click_burst(message_of(shown), [confirm] * 2)
    assert "already answered" in first.text + second.text
    await elapse(h, 3)
    assert len(paid(horde)) == 1 and horde.user(a.id).kudos == 90
    assert len(await gifts(h)) == 1


async def test_transfer_confirm_expires_visibly(harness: Harness, horde: FakeHorde) -> None:
    h = harness
    alice, _a, bob, _b = await linked_pair(h, horde)
    shown = await alice.slash("transfer", member=bob.actor, amount=10)
    await h.advance(61)
    assert "expired" in shown.latest().text and "nothing was sent" in shown.latest().text
    assert transfers(horde) == [] and await gifts(h) == []


async def test_transfer_can_be_cancelled(harness: Harness, horde: FakeHorde) -> None:
    h = harness
    alice, _a, bob, _b = await linked_pair(h, horde)
    shown = await alice.slash("transfer", member=bob.actor, amount=10)
    done = await alice.click(message_of(shown), label="Cancel")
    assert "Cancelled" in done.latest().text
    assert transfers(horde) == [] and await gifts(h) == []


@pytest.mark.parametrize(
    ("target", "amount", "expected"),
    [
        ("self", 10, "yourself"),
        ("bot", 10, "Bots can't receive kudos"),
        ("bob", 0, "from 1 to 100,000"),
        ("bob", -3, "from 1 to 100,000"),
        ("bob", 100_001, "from 1 to 100,000"),
    ],
)
async def test_transfer_bad_input_is_refused_with_what_to_do(
    harness: Harness, horde: FakeHorde, target: str, amount: int, expected: str
) -> None:
    h = harness
    alice, _a, bob, _b = await linked_pair(h, horde)
    other_bot = h.guild.add_member(h.env.create_user("helperbot", bot=True))
    member = {"self": alice.actor, "bot": other_bot, "bob": bob.actor}[target]
    # Sent raw: out-of-range amounts are refused by Discord's client (declared limits) and by the bot.
    reply = await alice.slash_raw("transfer", {"member": member, "amount": amount})
    assert reply.private and expected in reply.text
    assert await gifts(h) == []


async def test_transfer_needs_a_linked_account(harness: Harness, horde: FakeHorde) -> None:
    h = harness
    carol, bob = h.member("carol"), h.member("bob")
    await link(bob, horde.add_user("bob"))
    reply = await carol.slash("transfer", member=bob.actor, amount=5)
    assert reply.private and "/login" in reply.text


async def test_transfer_to_an_unlinked_member_waits_for_them(harness: Harness, horde: FakeHorde) -> None:
    h = harness
    alice, dave = h.member("alice"), h.member("dave")
    await link(alice, horde.add_user("alice"))
    shown = await alice.slash("transfer", member=dave.actor, amount=5)
    done = await alice.click(message_of(shown), label="Send kudos")
    assert "hasn't linked" in done.latest().text and "7 days" in done.latest().text
    assert len(dms(dave)) == 1


async def test_transfer_without_enough_kudos_says_why(harness: Harness, horde: FakeHorde) -> None:
    h = harness
    alice, a, bob, _b = await linked_pair(h, horde, alice=3)
    shown = await alice.slash("transfer", member=bob.actor, amount=10)
    done = await alice.click(message_of(shown), label="Send kudos")
    assert "Not sent: you don't have enough kudos" in done.latest().text
    assert horde.user(a.id).kudos == 3


# --- /kudos history ----------


async def test_history_shows_gifts_sent_and_received(harness: Harness, horde: FakeHorde) -> None:
    h = harness
    alice, _a, bob, _b = await linked_pair(h, horde, alice=7)
    one, two = await bob.send("one"), await bob.send("two")
    await alice.react(one, "👍")
    await alice.react(two, "👍")
    await elapse(h, 3)
    mine = await alice.slash("kudos history")
    assert mine.private
    sent = next(f for f in mine.embeds[0].fields if f.name == "Sent").value or ""
    assert sent.count("**5** to") == 2 and "sent" in sent and "failed (you don't have enough kudos" in sent
    theirs = await alice.slash("kudos history", member=bob.actor)
    received = next(f for f in theirs.embeds[0].fields if f.name == "Received").value or ""
    assert received.count(f"from <@{alice.id}>") == 2
    empty = await h.member("carol").slash("kudos history")
    assert "none yet" in empty.text


# --- audit of #5: the confirm button across a restart, closed DMs, a broken kudos log channel ----------


async def test_transfer_confirm_from_before_a_restart_says_to_run_it_again(
    harness: Harness, horde: FakeHorde
) -> None:
    h = harness
    alice, a, bob, _b = await linked_pair(h, horde)
    shown = await alice.slash("transfer", member=bob.actor, amount=10)
    await h.restart()  # the confirmation lived in memory: its view is gone
    pressed = await alice.click(message_of(shown), label="Send kudos")
    assert "no longer waiting" in pressed.latest().text and "/transfer" in pressed.latest().text
    assert "nothing was sent" in pressed.latest().text
    await elapse(h, 3)
    assert transfers(horde) == [] and await gifts(h) == [] and horde.user(a.id).kudos == 100
    # This run's confirmations work as before.
    again = await alice.slash("transfer", member=bob.actor, amount=10)
    done = await alice.click(message_of(again), label="Send kudos")
    assert "Sent **10** kudos" in done.latest().text


def close_dms(h: Harness) -> None:
    """Members who don't accept DMs from the bot: Discord answers 403 (50007) to every DM."""
    h.env.inject_error(
        "POST",
        "/channels/*/messages",
        status=403,
        code=50007,
        message="Cannot send messages to this user",
        times=None,
    )


async def test_giver_with_closed_dms_gets_the_right_gift_state_and_no_crash(
    harness: Harness, horde: FakeHorde
) -> None:
    h = harness
    alice, a, bob, b = await linked_pair(h, horde, alice=7)
    one, two = await bob.send("one"), await bob.send("two")
    close_dms(h)
    await alice.react(one, "👍")
    await alice.react(two, "👍")
    await elapse(h, 3)
    # The second gift fails for want of kudos; the DM saying so can't be delivered, nothing else changes.
    states = sorted((g.state, g.horde_rc or "") for g in await gifts(h))
    assert states == [(FAILED, "KudosTransferNotEnough"), (SENT, "")]
    assert horde.user(a.id).kudos == 2 and horde.user(b.id).kudos == 105
    assert dms(alice) == []
    assert h.take_errors() == []


async def test_unlinked_reactor_with_closed_dms_loses_the_reaction_quietly(
    harness: Harness, horde: FakeHorde
) -> None:
    h = harness
    bob, carol = h.member("bob"), h.member("carol")
    await link(bob, horde.add_user("bob"))
    message = await bob.send("one")
    close_dms(h)
    await carol.react(message, "👍")
    stored = h.env.backend.get_message(h.channel.id, message.id)
    assert stored.reaction_for("👍") is None, "the bot still removed the reaction"
    assert transfers(horde) == [] and await gifts(h) == []
    assert h.take_errors() == []


async def test_kudos_log_channel_deleted_the_gift_is_still_sent(harness: Harness, horde: FakeHorde) -> None:
    h = harness
    log_channel = h.text_channel("kudos-log")
    await h.services.guild_config.update(h.guild.id, kudos_log_channel_id=log_channel.id)
    await h.delete_channel(log_channel)
    alice, a, bob, b = await linked_pair(h, horde)
    message = await bob.send("thanks")
    await alice.react(message, "👍")
    await elapse(h, 2)
    assert horde.user(a.id).kudos == 95 and horde.user(b.id).kudos == 105
    [gift] = await gifts(h)
    assert gift.state == SENT
    stored = h.env.backend.get_message(h.channel.id, message.id)
    assert stored.reaction_for("✅") is not None, "the gift is still confirmed on the message"
    assert h.take_errors() == []


async def test_kudos_log_channel_the_bot_may_not_post_in_the_gift_is_still_sent(
    harness: Harness, horde: FakeHorde
) -> None:
    h = harness
    log_channel = h.text_channel("kudos-log")
    await h.services.guild_config.update(h.guild.id, kudos_log_channel_id=log_channel.id)
    await h.set_channel_overwrite(log_channel, h.bot_role(), discord.PermissionOverwrite(send_messages=False))
    alice, a, bob, b = await linked_pair(h, horde)
    message = await bob.send("thanks")
    await alice.react(message, "👍")
    await elapse(h, 2)
    shown = await alice.slash("transfer", member=bob.actor, amount=10)
    done = await alice.click(message_of(shown), label="Send kudos")
    assert "Sent **10** kudos" in done.latest().text
    assert horde.user(a.id).kudos == 85 and horde.user(b.id).kudos == 115
    assert sorted(g.state for g in await gifts(h)) == [SENT, SENT]
    assert h.channel_messages(log_channel) == []
    assert h.take_errors() == []


async def test_transfer_outcome_still_shown_when_discord_rate_limits_the_edit(
    harness: Harness, horde: FakeHorde
) -> None:
    h = harness
    alice, a, bob, _b = await linked_pair(h, horde)
    shown = await alice.slash("transfer", member=bob.actor, amount=10)
    h.discord_rate_limits("PATCH", "/webhooks/*/messages/@original")
    done = await alice.click(message_of(shown), label="Send kudos")
    # The gift went out: the member reads so (privately), not a "try again" that would send it twice.
    texts = [f.text for f in done.followups]
    assert any("Sent **10** kudos" in t for t in texts), texts
    assert all(f.ephemeral for f in done.followups)
    assert not any("rate-limiting" in t for t in texts)
    assert horde.user(a.id).kudos == 90 and len(await gifts(h)) == 1


async def test_transfer_confirm_rate_limited_by_discord_can_be_pressed_again(
    harness: Harness, horde: FakeHorde
) -> None:
    h = harness
    alice, a, bob, _b = await linked_pair(h, horde)
    shown = await alice.slash("transfer", member=bob.actor, amount=10)
    h.discord_rate_limits("POST", "/interactions/*/*/callback")
    refused = await alice.click(message_of(shown), label="Send kudos")
    assert "rate-limiting" in refused.latest().text and "try again" in refused.latest().text
    assert await gifts(h) == [] and transfers(horde) == []
    h.take_errors()
    done = await alice.click(message_of(shown), label="Send kudos")
    assert "Sent **10** kudos" in done.latest().text
    assert horde.user(a.id).kudos == 90 and len(await gifts(h)) == 1


async def test_the_anonymous_key_gifts_nothing(harness: Harness, horde: FakeHorde) -> None:
    h = harness
    bob, anon = h.member("bob"), h.member("anon")
    await link(bob, horde.add_user("bob"))
    shown = await anon.slash("login")
    refused = await anon.submit_modal(shown, {"login:apikey": "0000000000"})
    assert "anonymous key" in refused.text and "linked" not in refused.text.replace("be linked", "")
    message = await bob.send("nice")
    await anon.react(message, "👍")
    stored = h.env.backend.get_message(h.channel.id, message.id)
    assert stored.reaction_for("👍") is None and "/login" in dms(anon)[0]
    transfer = await anon.slash("transfer", member=bob.actor, amount=5)
    assert transfer.private and "/login" in transfer.text
    assert transfers(horde) == [] and await gifts(h) == []


async def test_reaction_on_an_old_message_the_bot_never_cached_pays(
    harness: Harness, horde: FakeHorde
) -> None:
    h = harness
    alice, a, bob, b = await linked_pair(h, horde)
    message = await bob.send("posted long ago")
    await h.restart()  # a fresh process: the message is in no cache, only raw reaction events reach it
    await alice.react(message, "👍")
    await elapse(h, 2)
    assert horde.user(a.id).kudos == 95 and horde.user(b.id).kudos == 105
    [gift] = await gifts(h)
    assert (gift.state, gift.receiver_id) == (SENT, bob.id)


async def test_transfer_reason_is_shown_in_the_kudos_log_without_pinging(
    harness: Harness, horde: FakeHorde
) -> None:
    h = harness
    log_channel = h.text_channel("kudos-log")
    await h.services.guild_config.update(h.guild.id, kudos_log_channel_id=log_channel.id)
    alice, _a, bob, _b = await linked_pair(h, horde)
    role = h.guild.create_role("Everyone-ish", mentionable=True)
    reason = f"for the @everyone tutorial <@&{role.id}> <@{bob.id}>"
    shown = await alice.slash("transfer", member=bob.actor, amount=10, reason=reason)
    await alice.click(message_of(shown), label="Send kudos")
    [logged] = h.channel_messages(log_channel)
    assert "/transfer: for the" in logged.content and "tutorial" in logged.content
    assert "@everyone" not in logged.content.replace("@\u200beveryone", "").replace("\\@everyone", "")
    assert h.pings(logged) == ([], [], False)


async def test_discord_429_on_the_confirm_reaction_leaves_the_gift_sent(
    harness: Harness, horde: FakeHorde
) -> None:
    h = harness
    alice, a, bob, b = await linked_pair(h, horde)
    message = await bob.send("thanks")
    h.discord_rate_limits("PUT", "/channels/*/messages/*/reactions/*")
    await alice.react(message, "👍")
    await elapse(h, 2)
    assert h.env.backend.faults == [], "the bot's ✅ did meet the 429"
    assert horde.user(a.id).kudos == 95 and horde.user(b.id).kudos == 105
    [gift] = await gifts(h)
    assert gift.state == SENT
    assert h.take_errors() == []


async def test_transfer_slots_go_to_the_oldest_gift_first() -> None:
    # In a storm every giver's lane asks for a transfer slot again each second; a giver's first gift,
    # recorded before those follow-ups, is let in before them whenever it asked.
    slots = OldestFirst(2)
    order: list[int] = []
    release = asyncio.Event()

    async def transfer(gift_id: int) -> None:
        async with slots.slot(gift_id):
            order.append(gift_id)
            await release.wait()

    first = [asyncio.create_task(transfer(gift_id)) for gift_id in (50, 51)]
    await asyncio.sleep(0)
    later = [asyncio.create_task(transfer(gift_id)) for gift_id in (90, 70, 3, 80)]
    await asyncio.sleep(0)
    cancelled = asyncio.create_task(transfer(1))
    await asyncio.sleep(0)
    cancelled.cancel()  # gone from the line: its turn passes on
    await asyncio.sleep(0)
    assert order == [50, 51]
    release.set()
    await asyncio.gather(*first, *later)
    assert order == [50, 51, 3, 70, 80, 90]
    assert cancelled.cancelled()
