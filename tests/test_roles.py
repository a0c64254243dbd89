"""Automated roles, driven as members and admins do: link, unlink, the background sync, problems."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import discord
import pytest
from sqlalchemy import insert, text

from bot.config import Settings
from bot.db.models import User
from bot.horde.models import ApiKey
from bot.services.guild_config import KudosTier
from tests.conftest import make_settings
from tests.fakes.horde import FakeHorde, FakeUser
from tests.harness import Harness, Member, run_harness

# Test-sized sync: wakes every second, a pass per minute, generous budget.
ROLES: dict[str, Any] = {
    "interval": 60,
    "step_seconds": 1.0,
    "calls_per_minute": 600,
    "batch_size": 10,
    "problem_retry_seconds": 300,
}


@pytest.fixture
def settings(tmp_path: Path, horde: FakeHorde, db_url: str) -> Settings:
    return make_settings(tmp_path, horde.base_url, database_url=db_url, roles=ROLES)


async def elapse(h: Harness, seconds: float) -> None:
    """Let time pass: wall-clock time (what the sync's interval is measured in) and the scheduler's."""
    h.clock.shift(seconds)
    await h.advance(seconds)


async def link(member: Member, user: FakeUser) -> None:
    shown = await member.slash("login")
    reply = await member.submit_modal(shown, {"login:apikey": user.apikey or ""})
    assert "linked" in reply.text.lower()


def roles_of(h: Harness, member: Member) -> set[int]:
    return set(h.env.backend.get_member(h.guild.id, member.id).role_ids)


def role_calls(h: Harness, method: str | None = None) -> list[Any]:
    """Role PUT/DELETE requests the bot sent to Discord."""
    return [
        r
        for r in h.rest_requests()
        if "/members/" in r.path and "/roles/" in r.path and (method is None or r.method == method)
    ]


def bot_role_id(h: Harness) -> int:
    guild = h.bot.get_guild(h.guild.id)
    assert guild is not None and guild.me is not None
    return guild.me.top_role.id


async def configure(h: Harness, **rules: Any) -> None:
    await h.services.guild_config.update(h.guild.id, **rules)


def log_texts(channel: Any, h: Harness) -> list[str]:
    return [m.content for m in h.channel_messages(channel)]


async def user_fetches(horde: FakeHorde, user: FakeUser) -> int:
    return horde.count("GET", rf"/users/{user.id}$")


# --- link and unlink ---------------------------------------------------------------------------------------


async def test_linking_grants_the_linked_role(harness: Harness, horde: FakeHorde) -> None:
    linked = harness.guild.create_role("Linked")
    await configure(harness, linked_role_id=linked.id)
    alice = harness.member("alice")
    await link(alice, horde.add_user("alice"))
    assert linked.id in roles_of(harness, alice)
    puts = role_calls(harness, "PUT")
    assert [r.path for r in puts] == [f"/guilds/{harness.guild.id}/members/{alice.id}/roles/{linked.id}"]


async def test_linking_grants_worker_trusted_and_the_highest_kudos_tier_only(
    harness: Harness, horde: FakeHorde
) -> None:
    worker, trusted = harness.guild.create_role("Worker"), harness.guild.create_role("Trusted")
    bronze, silver, gold = (harness.guild.create_role(n) for n in ("Bronze", "Silver", "Gold"))
    await configure(
        harness,
        worker_role_id=worker.id,
        trusted_role_id=trusted.id,
        kudos_tiers=[
            KudosTier(threshold=100, role_id=bronze.id),
            KudosTier(threshold=10_000, role_id=gold.id),
            KudosTier(threshold=1_000, role_id=silver.id),
        ],
    )
    owner = horde.add_user("owner", kudos=5_000, trusted=True)
    horde.add_worker("owner-box", models=["stable_diffusion"], owner=owner)
    alice = harness.member("alice")
    await link(alice, owner)
    assert roles_of(harness, alice) == {worker.id, trusted.id, silver.id}
    # A member with nothing on the Horde gets none of these roles (and no request is sent).
    before = len(role_calls(harness))
    bob = harness.member("bob")
    await link(bob, horde.add_user("bob", kudos=5))
    assert roles_of(harness, bob) == set()
    assert len(role_calls(harness)) == before


async def test_other_roles_are_never_touched(harness: Harness, horde: FakeHorde) -> None:
    linked, vip = harness.guild.create_role("Linked"), harness.guild.create_role("VIP")
    await configure(harness, linked_role_id=linked.id)
    alice = Member(harness, harness.guild.add_member(harness.env.create_user("alice"), roles=[vip]))
    await link(alice, horde.add_user("alice"))
    assert roles_of(harness, alice) == {linked.id, vip.id}
    await alice.slash("logout")
    assert roles_of(harness, alice) == {vip.id}
    assert {r.path.rsplit("/", 1)[1] for r in role_calls(harness)} == {str(linked.id)}


async def test_unlinking_removes_every_managed_role(harness: Harness, horde: FakeHorde) -> None:
    linked, trusted = harness.guild.create_role("Linked"), harness.guild.create_role("Trusted")
    await configure(harness, linked_role_id=linked.id, trusted_role_id=trusted.id)
    alice = harness.member("alice")
    await link(alice, horde.add_user("alice", trusted=True))
    assert roles_of(harness, alice) == {linked.id, trusted.id}
    reply = await alice.slash("logout")
    assert "deleted" in reply.text
    assert roles_of(harness, alice) == set()
    assert len(role_calls(harness, "DELETE")) == 2


async def test_unlinking_removes_roles_in_every_server(harness: Harness, horde: FakeHorde) -> None:
    other = harness.env.create_guild(name="Second Server")
    here, there = harness.guild.create_role("Linked"), other.create_role("Horde linked")
    await configure(harness, linked_role_id=here.id)
    await harness.services.guild_config.update(other.id, linked_role_id=there.id)
    await harness.settle()
    alice = harness.member("alice")
    other.add_member(alice.actor.user)
    await link(alice, horde.add_user("alice"))
    assert roles_of(harness, alice) == {here.id}
    assert set(harness.env.backend.get_member(other.id, alice.id).role_ids) == {there.id}
    await alice.slash("logout")
    assert roles_of(harness, alice) == set()
    assert set(harness.env.backend.get_member(other.id, alice.id).role_ids) == set()


async def test_online_only_worker_rule_needs_a_worker_seen_online(harness: Harness, horde: FakeHorde) -> None:
    worker_role = harness.guild.create_role("Worker")
    await configure(harness, worker_role_id=worker_role.id, worker_online_only=True)
    owner = horde.add_user("owner")
    box = horde.add_worker("owner-box", models=["stable_diffusion"], owner=owner, online=False)
    alice = harness.member("alice")
    await link(alice, owner)
    assert roles_of(harness, alice) == set()
    # The worker comes online: the next pass sees it (the public view hides worker ids, so the bot asks
    # the Horde with the member's own key) and grants the role.
    horde.set_worker_online(box, True)
    await elapse(harness, ROLES["interval"] + 2)
    assert roles_of(harness, alice) == {worker_role.id}
    # Offline again: still "online in the last day" (as the bot saw it), so the role stays...
    horde.set_worker_online(box, False)
    await elapse(harness, ROLES["interval"] + 2)
    assert roles_of(harness, alice) == {worker_role.id}
    # ...until a day has passed since it was last seen online.
    harness.clock.shift(86_400)
    await elapse(harness, ROLES["interval"] + 2)
    assert roles_of(harness, alice) == set()


# --- background sync ---------------------------------------------------------------------------------------


async def test_kudos_tier_changes_when_kudos_cross_a_threshold_at_the_next_sync(
    harness: Harness, horde: FakeHorde
) -> None:
    bronze, silver = harness.guild.create_role("Bronze"), harness.guild.create_role("Silver")
    await configure(
        harness,
        kudos_tiers=[
            KudosTier(threshold=100, role_id=bronze.id),
            KudosTier(threshold=1000, role_id=silver.id),
        ],
    )
    user = horde.add_user("alice", kudos=150)
    alice = harness.member("alice")
    await link(alice, user)
    assert roles_of(harness, alice) == {bronze.id}
    horde.set_kudos(user, 2500)
    await elapse(harness, ROLES["interval"] + 2)
    assert roles_of(harness, alice) == {silver.id}
    # And back down below both thresholds: no tier role at all.
    horde.set_kudos(user, 10)
    await elapse(harness, ROLES["interval"] + 2)
    assert roles_of(harness, alice) == set()


async def test_account_gone_from_the_horde_keeps_only_the_linked_role(
    harness: Harness, horde: FakeHorde
) -> None:
    linked, trusted = harness.guild.create_role("Linked"), harness.guild.create_role("Trusted")
    await configure(harness, linked_role_id=linked.id, trusted_role_id=trusted.id)
    user = horde.add_user("alice", trusted=True)
    alice = harness.member("alice")
    await link(alice, user)
    assert roles_of(harness, alice) == {linked.id, trusted.id}
    with horde.lock:
        del horde.users[user.id]  # GET /users/{id} now answers 404 UserNotFound
    await elapse(harness, ROLES["interval"] + 2)
    assert roles_of(harness, alice) == {linked.id}


async def test_sync_skips_members_who_left(harness: Harness, horde: FakeHorde) -> None:
    trusted = harness.guild.create_role("Trusted")
    await configure(harness, trusted_role_id=trusted.id)
    stay_user, gone_user = horde.add_user("stay", trusted=True), horde.add_user("gone", trusted=True)
    stay, gone = harness.member("stay"), harness.member("gone")
    await link(stay, stay_user)
    await link(gone, gone_user)
    harness.guild.remove_member(gone.actor)
    await harness.settle()
    calls_before = len(role_calls(harness))
    gone_fetches = await user_fetches(horde, gone_user)
    horde.set_kudos(stay_user, 1)  # irrelevant change; just a pass
    await elapse(harness, ROLES["interval"] + 2)
    assert await user_fetches(horde, stay_user) >= 1
    # No Horde look-up and no role request for the member who left.
    assert await user_fetches(horde, gone_user) == gone_fetches
    assert len(role_calls(harness)) == calls_before
    assert harness.services.roles.stats.members_skipped >= 1


async def test_sync_spreads_horde_calls_within_the_budget(tmp_path: Path, horde: FakeHorde) -> None:
    settings = make_settings(
        tmp_path, horde.base_url, roles={**ROLES, "calls_per_minute": 60, "batch_size": 100}
    )
    async with run_harness(settings) as h:
        trusted = h.guild.create_role("Trusted")
        await h.services.guild_config.update(h.guild.id, trusted_role_id=trusted.id)
        users = [horde.add_user(f"u{i}", trusted=True) for i in range(20)]
        members = [h.member(f"u{i}") for i in range(20)]
        await insert_links(h, [(m.id, u.id) for m, u in zip(members, users, strict=True)])
        horde.clear_calls()
        await elapse(h, 10)
        # 60 a minute is one a second: about ten in ten seconds, never all twenty at once.
        fetched = horde.count("GET", r"/users/\d+$")
        assert 8 <= fetched <= 12
        await elapse(h, 15)
        assert horde.count("GET", r"/users/\d+$") == 20
        assert all(trusted.id in roles_of(h, m) for m in members)


async def test_a_horde_rate_limit_pauses_the_sync(harness: Harness, horde: FakeHorde) -> None:
    trusted = harness.guild.create_role("Trusted")
    await configure(harness, trusted_role_id=trusted.id)
    user = horde.add_user("alice", trusted=True)
    member = harness.member("alice")
    await insert_links(harness, [(member.id, user.id)])
    horde.inject(r"/users/\d+$", status=429, retry_after=30, times=None)
    await elapse(harness, 3)
    limited = horde.count("GET", r"/users/\d+$")
    assert limited == 1  # Retry-After is too long to wait inline: the sync pauses instead
    await elapse(harness, 20)
    assert horde.count("GET", r"/users/\d+$") == limited  # still pausing: no hammering
    horde.clear_injections()
    await elapse(harness, 20)
    assert trusted.id in roles_of(harness, member)


# --- problems: told once, no crash, no tight retry ---------------------------------------------------------


async def test_role_above_the_bot_is_reported_once(harness: Harness, horde: FakeHorde) -> None:
    log_channel = harness.text_channel("mod-log")
    high = harness.guild.create_role("Admins", position=50)
    await configure(harness, linked_role_id=high.id, log_channel_id=log_channel.id)
    for name in ("alice", "bob"):
        await link(harness.member(name), horde.add_user(name))
    await elapse(harness, 3 * ROLES["interval"])
    messages = log_texts(log_channel, harness)
    assert len(messages) == 1
    assert "not below my highest role" in messages[0] and f"<@&{high.id}>" in messages[0]
    # Judged from the cache: Discord was never asked to do what it would refuse.
    assert role_calls(harness) == []


async def test_missing_manage_roles_is_reported_once_and_not_retried(
    harness: Harness, horde: FakeHorde
) -> None:
    log_channel = harness.text_channel("mod-log")
    linked, trusted = harness.guild.create_role("Linked"), harness.guild.create_role("Trusted")
    await configure(
        harness, linked_role_id=linked.id, trusted_role_id=trusted.id, log_channel_id=log_channel.id
    )
    perms = discord.Permissions.all()
    perms.administrator = perms.manage_roles = False
    harness.env.backend.edit_role(harness.guild.id, bot_role_id(harness), {"permissions": perms.value})
    await harness.settle()
    alice = harness.member("alice")
    await link(alice, horde.add_user("alice", trusted=True))
    await elapse(harness, 3 * ROLES["interval"])
    messages = log_texts(log_channel, harness)
    assert len(messages) == 1 and "Manage Roles" in messages[0]
    assert role_calls(harness) == []
    # Once the permission is back, roles are granted at a later sync without another message.
    perms.manage_roles = True
    harness.env.backend.edit_role(harness.guild.id, bot_role_id(harness), {"permissions": perms.value})
    await elapse(harness, ROLES["problem_retry_seconds"] + ROLES["interval"] + 2)
    assert roles_of(harness, alice) == {linked.id, trusted.id}
    assert len(log_texts(log_channel, harness)) == 1


async def test_deleted_role_is_reported_once_and_the_rest_still_works(
    harness: Harness, horde: FakeHorde
) -> None:
    log_channel = harness.text_channel("mod-log")
    linked, trusted = harness.guild.create_role("Linked"), harness.guild.create_role("Trusted")
    await configure(
        harness, linked_role_id=linked.id, trusted_role_id=trusted.id, log_channel_id=log_channel.id
    )
    harness.env.backend.delete_role(harness.guild.id, trusted.id)
    await harness.settle()
    alice, bob = harness.member("alice"), harness.member("bob")
    await link(alice, horde.add_user("alice", trusted=True))
    await link(bob, horde.add_user("bob", trusted=True))
    await elapse(harness, 3 * ROLES["interval"])
    assert roles_of(harness, alice) == {linked.id} and roles_of(harness, bob) == {linked.id}
    messages = log_texts(log_channel, harness)
    assert len(messages) == 1
    assert "no longer exists" in messages[0] and str(trusted.id) in messages[0]
    assert all(r.path.endswith(f"/roles/{linked.id}") for r in role_calls(harness))


async def test_a_problem_is_not_reposted_after_a_restart(harness: Harness, horde: FakeHorde) -> None:
    log_channel = harness.text_channel("mod-log")
    high = harness.guild.create_role("Admins", position=50)
    await configure(harness, linked_role_id=high.id, log_channel_id=log_channel.id)
    await link(harness.member("alice"), horde.add_user("alice"))
    assert len(log_texts(log_channel, harness)) == 1
    await harness.restart()
    await elapse(harness, 3 * ROLES["interval"])
    assert len(log_texts(log_channel, harness)) == 1


# --- large guilds, restarts --------------------------------------------------------------------------------


async def insert_links(h: Harness, pairs: list[tuple[int, int]]) -> None:
    """Linked accounts written straight to the database (what thousands of /login would leave)."""
    encrypted = h.runtime.cipher.encrypt(ApiKey("k" * 22))
    now = h.clock.now()
    rows = [
        {
            "discord_id": discord_id,
            "horde_user_id": horde_id,
            "horde_username": f"user#{horde_id}",
            "api_key_encrypted": encrypted,
            "linked_at": now,
        }
        for discord_id, horde_id in pairs
    ]
    async with h.runtime.db.session() as session:
        await session.execute(insert(User), rows)


async def sync_cursor(h: Harness) -> int:
    async with h.runtime.db.session() as session:
        value = await session.scalar(text("SELECT cursor FROM role_sync_state"))
        return int(value or 0)


async def test_sync_resumes_after_a_restart_from_its_cursor(tmp_path: Path, horde: FakeHorde) -> None:
    settings = make_settings(
        tmp_path, horde.base_url, roles={**ROLES, "calls_per_minute": 60, "batch_size": 3}
    )
    async with run_harness(settings) as h:
        trusted = h.guild.create_role("Trusted")
        await h.services.guild_config.update(h.guild.id, trusted_role_id=trusted.id)
        users = [horde.add_user(f"u{i}", trusted=True) for i in range(10)]
        members = [h.member(f"u{i}") for i in range(10)]
        by_discord = {m.id: u.id for m, u in zip(members, users, strict=True)}
        await insert_links(h, list(by_discord.items()))
        await elapse(h, 5)
        cursor = await sync_cursor(h)
        done_before = {d for d in by_discord if d <= cursor}
        assert 0 < len(done_before) < 10
        await h.restart()
        horde.clear_calls()
        await elapse(h, 20)
        fetched = {int(c.path.rsplit("/", 1)[1]) for c in horde.calls_to(r"/users/\d+$", "GET")}
        # After the restart only the members after the cursor were looked up: the pass did not start over.
        assert fetched == {by_discord[d] for d in by_discord if d > cursor}
        assert all(trusted.id in roles_of(h, m) for m in members)
        assert h.services.roles.stats.passes_finished == 1


MANY = 10_000


async def test_ten_thousand_linked_members_bounded_batches_and_resume(
    tmp_path: Path, horde: FakeHorde
) -> None:
    batch = 200
    settings = make_settings(
        tmp_path,
        horde.base_url,
        roles={
            "interval": 3600,
            "step_seconds": 1.0,
            "calls_per_minute": 1_000_000,
            "batch_size": batch,
            "members_intent": True,
        },
    )
    async with run_harness(settings) as h:
        linked = h.guild.create_role("Linked")
        await h.services.guild_config.update(h.guild.id, linked_role_id=linked.id)
        members = []
        for i in range(MANY):
            # Most already carry the role; every 1000th still needs it (a few real requests).
            roles = [] if i % 1000 == 0 else [linked]
            members.append(h.guild.add_member(h.env.create_user(f"m{i}"), roles=roles))
        await h.settle()
        await insert_links(h, [(m.id, 1_000_000 + i) for i, m in enumerate(members)])
        await elapse(h, MANY // batch // 2)
        stats = h.services.roles.stats
        assert 0 < stats.members_checked < MANY
        assert stats.largest_page <= batch
        cursor = await sync_cursor(h)
        assert cursor > 0
        await h.restart()
        await elapse(h, MANY // batch)
        stats = h.services.roles.stats
        assert stats.passes_finished == 1
        # The resumed pass only went through the members after the cursor, a page at a time.
        assert stats.members_checked == sum(1 for m in members if m.id > cursor)
        assert stats.largest_page <= batch
        assert stats.pages >= (MANY - sum(1 for m in members if m.id <= cursor)) // batch
        assert all(linked.id in set(h.env.backend.get_member(h.guild.id, m.id).role_ids) for m in members)
        assert len(role_calls(h, "PUT")) == MANY // 1000
        # The linked rule needs no Horde data: ten thousand members cost no Horde call.
        assert horde.count("GET", r"/users/\d+$") == 0


# --- audit of #6: Discord rate limits ------------------------------------------------------------------


async def test_a_discord_rate_limit_on_a_role_grant_is_retried_at_the_next_sync(
    harness: Harness, horde: FakeHorde
) -> None:
    log_channel = harness.text_channel("mod-log")
    linked = harness.guild.create_role("Linked")
    await configure(harness, linked_role_id=linked.id, log_channel_id=log_channel.id)
    # discord.py waits out Discord's 429s itself; this one it gave up on (at link, then at the first pass).
    harness.env.inject_error(
        "PUT", f"/guilds/{harness.guild.id}/members/*/roles/*", status=429, message="rate limited", times=2
    )
    alice = harness.member("alice")
    await link(alice, horde.add_user("alice"))  # linking itself succeeds
    assert linked.id not in roles_of(harness, alice)
    await elapse(harness, ROLES["interval"] + 2)  # a pass: refused again
    assert linked.id not in roles_of(harness, alice)
    await elapse(harness, ROLES["interval"] + 2)  # the next pass
    assert linked.id in roles_of(harness, alice)
    assert len(role_calls(harness, "PUT")) == 3
    # A transient refusal is not a problem for the moderators.
    assert log_texts(log_channel, harness) == []
