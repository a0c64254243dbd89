"""/config, driven as a server admin does: every setter, validation messages, export/import, log channels."""

from __future__ import annotations

import json
from typing import Any

import discord
import pytest
from simcord.backend.errors import SetupError
from sqlalchemy import text

from tests.fakes.horde import FakeHorde
from tests.harness import Harness, Member, Reply

LLAMA = "koboldcpp/Llama-3-8B"


def admin(h: Harness, name: str = "boss") -> Member:
    role = h.guild.create_role("admins", permissions=discord.Permissions(manage_guild=True))
    return h.member(name, roles=[role])


def seen(reply: Reply) -> str:
    return reply.text.replace("**", "")


async def stored(h: Harness) -> dict[str, Any]:
    async with h.services.db.session() as session:
        row = (
            await session.execute(
                text("SELECT data FROM guild_settings WHERE guild_id = :g"), {"g": h.guild.id}
            )
        ).first()
    if row is None:
        return {}
    data = row[0]
    return json.loads(data) if isinstance(data, str) else dict(data)


def field(reply: Reply, name: str) -> str:
    for embed in reply.embeds + [e for f in reply.followups for e in f.embeds]:
        for f in embed.fields:
            if f.name.startswith(name):
                return str(f.value)
    raise AssertionError(f"no field {name!r} in {reply.text!r}")


async def show(member: Member) -> Reply:
    reply = await member.slash("config show")
    assert reply.private
    return reply


# --- who may use /config ---------------------------------------------------------------------------------


async def test_config_is_hidden_from_members_without_manage_server(harness: Harness) -> None:
    member = harness.member("alice")
    with pytest.raises(SetupError, match="not visible"):
        await member.slash("config show")


async def test_a_member_granted_the_command_without_manage_server_is_refused(harness: Harness) -> None:
    boss = admin(harness)
    await boss.slash("config show")  # registers the command
    member = harness.member("alice")
    commands = await harness.bot.tree.fetch_commands()
    config = next(c for c in commands if c.name == "config")
    # A server can let a member see the command (Integrations settings); the permission still counts.
    harness.guild.set_command_permissions(config, {member.actor: True})
    reply = await member.slash("config generation anonymous", allowed=False)
    assert reply.private
    assert "Manage Server" in seen(reply)
    assert (await stored(harness)).get("allow_anonymous", True) is True


# --- show and simple setters ------------------------------------------------------------------------------


async def test_show_lists_every_setting_privately(harness: Harness) -> None:
    boss = admin(harness)
    reply = await show(boss)
    assert field(reply, "Generation channels") == "every channel"
    for name in ("NSFW", "Anonymous generation", "Default model", "Steps", "Size", "Log channel"):
        field(reply, name)
    assert "none" in field(reply, "Kudos emojis")


async def test_generation_setters_are_stored_and_shown(harness: Harness) -> None:
    boss = admin(harness)
    for command, options in (
        ("config generation nsfw", {"policy": "off"}),
        ("config generation anonymous", {"allowed": False}),
        ("config generation max-steps", {"steps": 60}),
        ("config generation default-steps", {"steps": 30}),
        ("config generation size", {"width": 768, "height": 512}),
        ("config generation max-pixels", {"pixels": 1024 * 1024}),
        ("config generation max-n", {"n": 2}),
        ("config generation cooldown", {"seconds": 30}),
        ("config generation alchemy-nsfw-check", {"enabled": True}),
    ):
        reply = await boss.slash(command, **options)
        assert reply.private, command
    data = await stored(harness)
    assert data["nsfw_policy"] == "off"
    assert data["allow_anonymous"] is False
    assert (data["default_steps"], data["max_steps"]) == (30, 60)
    assert (data["default_width"], data["default_height"]) == (768, 512)
    assert data["max_pixels"] == 1024 * 1024
    assert (data["max_n"], data["cooldown_seconds"]) == (2, 30)
    assert data["alchemy_nsfw_check"] is True
    reply = await show(boss)
    assert field(reply, "NSFW") == "never"
    assert field(reply, "Anonymous generation") == "linked accounts only"
    assert field(reply, "Steps") == "default 30 · max 60"
    assert field(reply, "Size") == "default 768×512 · max pixels 1,048,576"
    assert field(reply, "Max images") == "2"
    assert field(reply, "Cooldown") == "30 s"
    # Leaving the value out clears it.
    await boss.slash("config generation cooldown")
    await boss.slash("config generation size")
    data = await stored(harness)
    assert data["cooldown_seconds"] is None and data["default_width"] is None
    assert field(await show(boss), "Cooldown") == "bot default"


async def test_out_of_range_and_inconsistent_values_are_refused(harness: Harness) -> None:
    boss = admin(harness)
    await boss.slash("config generation max-steps", steps=40)
    reply = await boss.slash("config generation default-steps", steps=50)
    assert "can't be above the maximum (40)" in seen(reply)
    reply = await boss.slash("config generation max-n", n=0)
    assert "between 1 and 20" in seen(reply)
    reply = await boss.slash("config generation size", width=500, height=512)
    assert "multiple of 64" in seen(reply)
    reply = await boss.slash("config generation size", width=512)
    assert "both width and height" in seen(reply)
    reply = await boss.slash("config generation cooldown", seconds=-5)
    assert "between 0 and 3,600" in seen(reply)
    assert (await stored(harness)).get("default_steps") is None


async def test_anonymous_off_takes_effect_at_once(harness: Harness, horde: FakeHorde) -> None:
    horde.add_worker("t1", models=[LLAMA], type="text")
    boss = admin(harness)
    await boss.slash("config generation anonymous", allowed=False)
    carol = harness.member("carol")
    reply = await carol.slash("text", prompt="hello", model=LLAMA)
    assert "requires a linked AI Horde account" in seen(reply)
    assert horde.count("POST", r"/generate/text/async") == 0


# --- default model ----------------------------------------------------------------------------------------


async def test_default_model_must_be_an_image_model_served_now(harness: Harness, horde: FakeHorde) -> None:
    horde.add_worker("w1", models=["Deliberate", "AlbedoBase XL (SDXL)"])
    boss = admin(harness)
    reply = await boss.slash("config generation model", name="deliberate")
    assert "Deliberate" in seen(reply)
    assert (await stored(harness))["default_model"] == "Deliberate"
    assert field(await show(boss), "Default model") == "Deliberate"
    reply = await boss.slash("config generation model", name="Deliberat3")
    assert "No AI Horde worker serves an image model called 'Deliberat3'" in seen(reply)
    assert "Did you mean Deliberate" in seen(reply)
    assert (await stored(harness))["default_model"] == "Deliberate"
    await boss.slash("config generation model")
    assert (await stored(harness))["default_model"] is None


async def test_default_model_when_the_horde_is_down(harness: Harness, horde: FakeHorde) -> None:
    boss = admin(harness)
    horde.set_down(True)
    reply = await boss.slash("config generation model", name="Deliberate")
    assert "AI Horde is not answering" in seen(reply)
    assert "Nothing was changed" in seen(reply)
    assert (await stored(harness)).get("default_model") is None


async def test_model_autocomplete_offers_served_image_models(harness: Harness, horde: FakeHorde) -> None:
    horde.add_worker("w1", models=["Deliberate", "Anything"])
    boss = admin(harness)
    choices = await boss.autocomplete("config generation model", "name", "delib")
    assert [c["value"] for c in choices] == ["Deliberate"]
