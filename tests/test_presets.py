"""/preset save|list|delete and the `preset` option of /generate, driven as members and admins do."""

from __future__ import annotations

from typing import Any

import discord
import pytest
from sqlalchemy import text

from tests.fakes.horde import FakeHorde
from tests.harness import Harness, Member


@pytest.fixture(autouse=True)
def _no_fake_rate_limits(horde: FakeHorde) -> None:
    horde.enforce_rate_limits = False


def admin(h: Harness, name: str = "boss") -> Member:
    role = h.guild.create_role("admins", permissions=discord.Permissions(manage_guild=True))
    return h.member(name, roles=[role])


async def stored(h: Harness) -> list[dict[str, Any]]:
    async with h.runtime.db.session() as session:
        result = await session.execute(
            text("SELECT scope, owner_id, name, options FROM generation_presets ORDER BY id")
        )
        return [dict(r._mapping) for r in result.all()]


async def test_member_saves_uses_and_deletes_a_preset(harness: Harness, horde: FakeHorde) -> None:
    alice = harness.member("alice")
    saved = await alice.slash(
        "preset save", name="Gothic", steps=12, size="640x384", loras="Magnagothica=0.8", n=2
    )
    assert saved.private
    assert "Saved your preset **Gothic**" in saved.text
    rows = await stored(harness)
    assert [(r["scope"], r["owner_id"], r["name"]) for r in rows] == [("member", alice.id, "Gothic")]

    # Options typed in /generate win over the preset's.
    reply = await alice.slash("generate", prompt="a cathedral", preset="gothic", n=1)
    assert not reply.private, reply.text
    params = horde.last_request("image").params
    assert (params["steps"], params["width"], params["height"], params["n"]) == (12, 640, 384, 1)
    assert params["loras"] == [{"name": "Magnagothica", "model": 0.8}]

    choices = await alice.autocomplete("generate", "preset", "go")
    assert [c["value"] for c in choices] == ["Gothic"]
    listed = await alice.slash("preset list")
    assert listed.private and "Gothic" in listed.text and "steps: 12" in listed.text

    deleted = await alice.slash("preset delete", name="GOTHIC")
    assert deleted.private and "Deleted the preset" in deleted.text
    assert await stored(harness) == []
    again = await alice.slash("preset delete", name="Gothic")
    assert again.private
    assert "You have no preset called `Gothic`: see `/preset list`." in again.text


async def test_bad_values_are_refused_at_save(harness: Harness, horde: FakeHorde) -> None:
    alice = harness.member("alice")
    too_many = await alice.slash("preset save", name="Six", loras="a,b,c,d,e,f")
    assert too_many.private and "You can use at most 5 LoRAs per image (got 6)." in too_many.text
    empty = await alice.slash("preset save", name="Nothing")
    assert "A preset needs at least one option besides its name" in empty.text
    assert await stored(harness) == []
    assert horde.count("POST", r"/generate/async") == 0


async def test_unknown_preset_in_generate_is_refused_privately(harness: Harness, horde: FakeHorde) -> None:
    reply = await harness.member("alice").slash("generate", prompt="a cat", preset="nope")
    assert reply.private
    assert "No preset called `nope`: see `/preset list`, or save one with `/preset save`." in reply.text
    assert horde.count("POST", r"/generate/async") == 0


async def test_server_presets_are_for_admins_and_used_by_everyone(harness: Harness, horde: FakeHorde) -> None:
    bob = harness.member("bob")
    refused = await bob.slash("preset save", name="House", server=True, steps=20)
    assert refused.private
    assert "Only members with Manage Server can change this server's presets." in refused.text
    boss = admin(harness)
    made = await boss.slash("preset save", name="House", server=True, steps=20)
    assert "Saved this server's preset **House**" in made.text
    assert [(r["scope"], r["owner_id"]) for r in await stored(harness)] == [("guild", harness.guild.id)]

    await bob.slash("generate", prompt="a house", preset="House")
    assert horde.last_request("image").params["steps"] == 20
    not_his = await bob.slash("preset delete", name="House", server=True)
    assert "Only members with Manage Server" in not_his.text


async def test_logout_forgets_a_members_presets_but_not_the_servers(
    harness: Harness, horde: FakeHorde
) -> None:
    user = horde.add_user("alice", kudos=1000)
    alice = harness.member("alice")
    shown = await alice.slash("login")
    assert shown.modal is not None
    await alice.submit_modal(shown, {"login:apikey": user.apikey or ""})
    await alice.slash("preset save", name="Mine", steps=15)
    boss = admin(harness)
    await boss.slash("preset save", name="House", server=True, steps=20)
    await alice.slash("logout")
    assert [r["name"] for r in await stored(harness)] == ["House"]
