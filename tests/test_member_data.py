"""The member-data contract (issue #14): every column holding a member's Discord id is forgotten at /logout or
declared kept with a reason, and /logout leaves no trace of the member beyond what is declared."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import discord
import pytest
from sqlalchemy import JSON, BigInteger, Integer, String, Text, func, or_, select

from bot.config import Settings
from bot.db.member_data import declarations, declared_kept, is_member_column, member_id_columns
from bot.db.models import Base
from tests.conftest import make_settings
from tests.fakes.horde import FakeHorde
from tests.harness import Harness
from tests.test_generation import finish, generate, png
from tests.test_kudos import KUDOS, elapse, link
from tests.test_parties import start_party
from tests.test_roles import bot_role_id, roles_of


def _declared() -> tuple[dict[str, type], dict[str, str]]:
    forgotten: dict[str, type] = {}
    kept: dict[str, str] = {}
    for cls, data in declarations():
        for name in data.forgets:
            forgotten[name] = cls
        kept.update(data.keeps)
    return forgotten, kept


def test_every_member_id_column_is_forgotten_or_declared_kept() -> None:
    forgotten, kept = _declared()
    columns = member_id_columns(Base.metadata)
    # The walk finds the obvious ones (a sanity check of the detection itself).
    for known in (
        "users.discord_id",
        "generation_jobs.user_id",
        "kudos_gifts.giver_id",
        "chat_turns.author_id",
    ):
        assert known in columns
    undeclared = [c for c in columns if c not in forgotten and c not in kept]
    assert undeclared == [], (
        f"columns holding a member's Discord id with no forget_member step and no declared reason: "
        f"{undeclared}. Add them to the repository's MEMBER_DATA (bot/db/member_data.py)."
    )


def test_declarations_name_real_columns_and_forgetting_repositories_can_forget() -> None:
    forgotten, kept = _declared()
    tables = Base.metadata.tables
    for name in [*forgotten, *kept]:
        table, _, column = name.partition(".")
        assert table in tables and column in tables[table].columns, f"{name} is declared but does not exist"
    assert not set(forgotten) & set(kept), "a column is either forgotten or kept, not both"
    for name, cls in forgotten.items():
        assert callable(getattr(cls, "forget_member", None)) or name == "users.discord_id", (
            f"{cls.__name__} declares it forgets {name} but has no forget_member"
        )
    for name, why in kept.items():
        assert len(why) > 40, f"{name}: say why it is kept"


def test_detection_ignores_guilds_channels_and_horde_ids() -> None:
    tables = Base.metadata.tables
    assert not is_member_column(tables["generation_jobs"].c.guild_id)
    assert not is_member_column(tables["generation_jobs"].c.result_message_id)
    assert not is_member_column(tables["kudos_parties"].c.thread_id)
    assert not is_member_column(tables["users"].c.horde_user_id)
    assert is_member_column(tables["kudos_parties"].c.host_id)


# --- /logout as a member does it -------------------------------------------------------------------------


@pytest.fixture
def settings(tmp_path: Path, horde: FakeHorde) -> Settings:
    return make_settings(
        tmp_path,
        horde.base_url,
        kudos=KUDOS,
        safety={"guild_burst": 100},
        generation_jobs={"cooldown_seconds": 0},
    )


async def traces(h: Harness, member_id: int) -> dict[str, int]:
    """Every `table.column` that still holds the member's id: as a number in any integer column, or inside
    any text or JSON column. Walks the whole schema, so tables added later are searched too."""
    found: dict[str, int] = {}
    needle = str(member_id)
    async with h.runtime.db.session() as session:
        for table in Base.metadata.tables.values():
            for column in table.columns:
                if isinstance(column.type, BigInteger | Integer):
                    condition: Any = column == member_id
                elif isinstance(column.type, String | Text | JSON):
                    condition = func.cast(column, Text).like(f"%{needle}%")
                else:
                    continue
                count = await session.scalar(select(func.count()).select_from(table).where(or_(condition)))
                if count:
                    found[f"{table.name}.{column.name}"] = int(count)
    return found


async def test_logout_leaves_no_trace_but_what_is_declared_kept(harness: Harness, horde: FakeHorde) -> None:
    """The issue's reproduction: link, generate twice (one img2img), host a party, react, /logout."""
    h = harness
    await h.services.guild_config.update(h.guild.id, kudos_emojis={"👍": 5})
    horde.enforce_rate_limits = False
    horde.add_style("Neon Dreams")
    alice, bob = h.member("alice"), h.member("bob")
    await link(alice, horde.add_user("alice", kudos=1000))
    await link(bob, horde.add_user("bob", kudos=1000))
    first = await generate(alice, prompt="a quiet harbour")
    await finish(h, horde)
    second = await generate(
        alice, prompt="the harbour at night", image=("boat.png", png(64, 64)), strength=0.5
    )
    await finish(h, horde)
    assert first.latest().attachments and second.latest().attachments
    await start_party(h, alice)
    for text in ("one", "two", "three"):
        message = await bob.send(text)
        await alice.react(message, "👍")
    await elapse(h, 5)
    before = await traces(h, alice.id)
    assert {"generation_jobs.user_id", "kudos_gifts.giver_id", "kudos_parties.host_id"} <= set(before)
    assert "image_sources.owner_id" in before

    reply = await alice.slash("logout")
    assert reply.private
    assert "Your API key has been deleted" in reply.text
    assert "kudos gifts you gave or received" in reply.text
    assert "Could not be removed" not in reply.text
    after = await traces(h, alice.id)
    kept = declared_kept()
    assert set(after) <= set(kept), f"left behind about the member: {set(after) - set(kept)}"
    assert set(after) == {"kudos_gifts.giver_id", "kudos_gifts.dedup_key"}
    # Bob's own data is untouched.
    assert "users.discord_id" in await traces(h, bob.id)
    # The party they hosted was ended, with a notice in its thread.
    [thread] = h.channel.threads
    assert any("host unlinked" in m.content for m in thread.history())


async def test_logout_deletes_the_key_first_and_reports_what_could_not_be_removed(
    harness: Harness, horde: FakeHorde
) -> None:
    """The bot losing Manage Roles neither stops /logout nor hides itself: the member is told."""
    h = harness
    linked = h.guild.create_role("Linked")
    await h.services.guild_config.update(h.guild.id, linked_role_id=linked.id)
    alice = h.member("alice")
    await link(alice, horde.add_user("alice"))
    assert linked.id in roles_of(h, alice)
    await generate(alice)
    perms = discord.Permissions.all()
    perms.administrator = perms.manage_roles = False
    h.env.backend.edit_role(h.guild.id, bot_role_id(h), {"permissions": perms.value})
    await h.settle()
    reply = await alice.slash("logout")
    assert reply.private
    assert "Your API key has been deleted" in reply.text
    assert "Could not be removed" in reply.text
    assert f"<@&{linked.id}>" in reply.text and "lacks the Manage Roles permission" in reply.text
    assert linked.id in roles_of(h, alice)
    after = await traces(h, alice.id)
    assert "users.discord_id" not in after and "generation_jobs.user_id" not in after


async def test_logout_without_a_linked_account_still_forgets_what_was_stored(
    harness: Harness, horde: FakeHorde
) -> None:
    h = harness
    horde.enforce_rate_limits = False
    carol = h.member("carol")
    reply = await generate(carol, prompt="anonymous lighthouse")
    await finish(h, horde)
    assert reply.latest().attachments
    assert "generation_jobs.user_id" in await traces(h, carol.id)
    out = await carol.slash("logout")
    assert out.private
    assert "You had no linked account" in out.text and "has been deleted" in out.text
    assert await traces(h, carol.id) == {}
