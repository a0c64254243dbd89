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
    async with h.runtime.db.session() as session:
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
            if (f.name or "").startswith(name):
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
    await boss.slash("config blocked-words add", term="dragon")
    member = harness.member("alice")
    commands = await harness.bot.tree.fetch_commands()
    config = next(c for c in commands if c.name == "config")
    # A server can let a member see the command (Integrations settings); the permission still counts.
    harness.guild.set_command_permissions(config, {member.actor: True})
    reply = await member.slash("config generation anonymous", allowed=False)
    assert reply.private
    assert "Manage Server" in seen(reply)
    assert (await stored(harness)).get("allow_anonymous", True) is True
    # Autocomplete runs no command checks: the server's blocked terms are still not shown to them.
    assert await member.autocomplete("config blocked-words remove", "term", "dra") == []


# --- show and simple setters ------------------------------------------------------------------------------


async def test_show_lists_every_setting_privately(harness: Harness) -> None:
    boss = admin(harness)
    reply = await show(boss)
    assert field(reply, "Generation channels") == "every channel"
    for name in ("NSFW", "Anonymous generation", "Default model", "Steps", "Size", "Log channel"):
        field(reply, name)
    assert "none" in field(reply, "Kudos emojis")
    assert field(reply, "Steps") == field(reply, "Size") == "bot defaults"


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
    assert field(reply, "Size") == "default 768×512 · max 1,048,576 pixels"
    assert field(reply, "Max images") == "2"
    assert field(reply, "Cooldown") == "30 s"
    # Leaving the value out clears it.
    await boss.slash("config generation cooldown")
    await boss.slash("config generation size")
    data = await stored(harness)
    assert data["cooldown_seconds"] is None and data["default_width"] is None
    reply = await show(boss)
    assert field(reply, "Cooldown") == "bot default"
    assert field(reply, "Size") == "default bot default · max 1,048,576 pixels"


async def test_out_of_range_and_inconsistent_values_are_refused(harness: Harness) -> None:
    boss = admin(harness)
    await boss.slash("config generation max-steps", steps=40)
    reply = await boss.slash("config generation default-steps", steps=50)
    assert "can't be above the maximum (40)" in seen(reply)
    reply = await boss.slash_raw("config generation max-n", {"n": 0})  # past the declared limit
    assert "between 1 and 20" in seen(reply)
    reply = await boss.slash("config generation size", width=500, height=512)
    assert "multiple of 64" in seen(reply)
    reply = await boss.slash("config generation size", width=512)
    assert "both width and height" in seen(reply)
    reply = await boss.slash_raw("config generation cooldown", {"seconds": -5})
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


# --- channels ---------------------------------------------------------------------------------------------


def no_post_channel(h: Harness, name: str) -> Any:
    """A channel where the bot's role may read but not post."""
    return h.text_channel(name, overwrites={h.bot_role(): discord.PermissionOverwrite(send_messages=False)})


async def test_generation_channels_add_remove_clear(harness: Harness) -> None:
    boss = admin(harness)
    art = harness.text_channel("art")
    more = harness.text_channel("more-art")
    reply = await boss.slash_options("config channels add", {"channel": art})
    assert reply.private and f"<#{art.id}>" in seen(reply)
    await boss.slash_options("config channels add", {"channel": more})
    assert (await stored(harness))["generation_channels"] == [art.id, more.id]
    assert field(await show(boss), "Generation channels") == f"<#{art.id}>\n<#{more.id}>"
    again = await boss.slash_options("config channels add", {"channel": art})
    assert "already in the list" in seen(again)
    await boss.slash_options("config channels remove", {"channel": art})
    assert (await stored(harness))["generation_channels"] == [more.id]
    cleared = await boss.slash("config channels clear")
    assert "every channel" in seen(cleared)
    assert (await stored(harness))["generation_channels"] == []


async def test_a_channel_the_bot_cannot_post_in_is_refused(harness: Harness) -> None:
    boss = admin(harness)
    muted = no_post_channel(harness, "muted")
    reply = await boss.slash_options("config logs channel", {"channel": muted})
    assert reply.private
    assert "I can't post in #muted: I'm missing Send Messages there." in seen(reply)
    reply = await boss.slash_options("config channels add", {"channel": muted})
    assert "I can't post in #muted" in seen(reply)
    hidden = harness.text_channel(
        "hidden", overwrites={harness.bot_role(): discord.PermissionOverwrite(view_channel=False)}
    )
    reply = await boss.slash_options("config logs kudos-channel", {"channel": hidden})
    assert "View Channel" in seen(reply)
    no_embeds = harness.text_channel(
        "plain", overwrites={harness.bot_role(): discord.PermissionOverwrite(embed_links=False)}
    )
    reply = await boss.slash_options("config logs channel", {"channel": no_embeds})
    assert "Embed Links" in seen(reply)
    data = await stored(harness)
    assert data.get("log_channel_id") is None and data.get("kudos_log_channel_id") is None
    assert data.get("generation_channels", []) == []


async def test_log_channels_are_stored_shown_and_used(harness: Harness) -> None:
    boss = admin(harness)
    logs = harness.text_channel("bot-logs")
    kudos = harness.text_channel("kudos-logs")
    await boss.slash_options("config logs channel", {"channel": logs})
    await boss.slash_options("config logs kudos-channel", {"channel": kudos})
    data = await stored(harness)
    assert (data["log_channel_id"], data["kudos_log_channel_id"]) == (logs.id, kudos.id)
    reply = await show(boss)
    assert field(reply, "Log channel") == f"<#{logs.id}>"
    assert field(reply, "Kudos log channel") == f"<#{kudos.id}>"
    notifier = harness.services.notifier
    assert await notifier.log_to_guild(harness.guild.id, "a moderation event")
    assert await notifier.log_to_guild(harness.guild.id, "a kudos event", kind="kudos")
    assert [m.content for m in harness.channel_messages(logs)] == ["a moderation event"]
    assert [m.content for m in harness.channel_messages(kudos)] == ["a kudos event"]
    await boss.slash("config logs kudos-channel")
    assert (await stored(harness))["kudos_log_channel_id"] is None
    assert field(await show(boss), "Kudos log channel") == "same as the log channel"


async def test_a_deleted_log_channel_is_reported_once_and_never_crashes(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    boss = admin(harness)
    logs = harness.text_channel("bot-logs")
    await boss.slash_options("config logs channel", {"channel": logs})
    await harness.delete_channel(logs)
    notifier = harness.services.notifier
    assert await notifier.log_to_guild(harness.guild.id, "first") is False
    assert await notifier.log_to_guild(harness.guild.id, "second", kind="kudos") is False
    warnings = [r for r in caplog.records if "log channel" in r.getMessage() and "unusable" in r.getMessage()]
    assert len(warnings) == 1
    reply = await show(boss)
    assert field(reply, "Log channel") == f"`{logs.id}` ⚠️ deleted"
    # The admin can point it somewhere else, and logging works again.
    fresh = harness.text_channel("new-logs")
    await boss.slash_options("config logs channel", {"channel": fresh})
    assert await notifier.log_to_guild(harness.guild.id, "third")
    assert [m.content for m in harness.channel_messages(fresh)] == ["third"]


async def test_a_log_channel_the_bot_lost_access_to_is_not_crashed_on(harness: Harness) -> None:
    boss = admin(harness)
    logs = harness.text_channel("bot-logs")
    await boss.slash_options("config logs channel", {"channel": logs})
    # Someone takes the bot's permissions away afterwards.
    await harness.set_channel_overwrite(
        logs, harness.bot_role(), discord.PermissionOverwrite(send_messages=False)
    )
    assert await harness.services.notifier.log_to_guild(harness.guild.id, "hello") is False
    assert "I can't post there" in field(await show(boss), "Log channel")


# --- kudos emojis -----------------------------------------------------------------------------------------


async def test_kudos_emojis_unicode_and_custom(harness: Harness) -> None:
    boss = admin(harness)
    reply = await boss.slash("config kudos-emoji add", emoji="👍", amount=5)
    assert reply.private and "👍 now gives 5 kudos" in seen(reply)
    # Clients send the heart with or without the variation selector: one key.
    await boss.slash("config kudos-emoji add", emoji="❤️", amount=20)
    reply = await boss.slash("config kudos-emoji add", emoji="<:horde:123456789012345678>", amount=50)
    assert "<:horde:123456789012345678> now gives 50 kudos" in seen(reply)
    await boss.slash("config kudos-emoji add", emoji="<a:spin:223456789012345678>", amount=7)
    data = await stored(harness)
    assert data["kudos_emojis"] == {
        "👍": 5,
        "❤": 20,
        "123456789012345678": 50,
        "223456789012345678": 7,
    }
    listed = await boss.slash("config kudos-emoji list")
    assert listed.private
    assert "<:emoji:123456789012345678> → 50 kudos" in seen(listed)
    assert "👍 → 5 kudos" in seen(listed)
    assert "❤ → 20 kudos" in field(await show(boss), "Kudos emojis")
    # Changing an amount replaces it; removing the heart works with either spelling.
    await boss.slash("config kudos-emoji add", emoji="👍", amount=8)
    await boss.slash("config kudos-emoji remove", emoji="❤")
    await boss.slash("config kudos-emoji remove", emoji="<:renamed:123456789012345678>")
    assert (await stored(harness))["kudos_emojis"] == {"👍": 8, "223456789012345678": 7}


@pytest.mark.parametrize("amount", [0, -3])
async def test_kudos_emoji_amount_must_be_positive(harness: Harness, amount: int) -> None:
    boss = admin(harness)
    reply = await boss.slash_raw("config kudos-emoji add", {"emoji": "👍", "amount": amount})
    assert reply.private
    assert f"The amount must be a positive whole number (1 to 1,000), not {amount}." in seen(reply)
    assert (await stored(harness)).get("kudos_emojis", {}) == {}


async def test_kudos_emoji_amount_cap_and_non_emojis(harness: Harness) -> None:
    boss = admin(harness)
    reply = await boss.slash_raw("config kudos-emoji add", {"emoji": "👍", "amount": 1001})
    assert "at most 1,000 kudos" in seen(reply)
    for bad in ("abc", ":thumbsup:", "<:broken:12>", "👍 👍"):
        reply = await boss.slash("config kudos-emoji add", emoji=bad, amount=5)
        assert "That is not an emoji" in seen(reply), bad
    reply = await boss.slash("config kudos-emoji remove", emoji="🎉")
    assert "doesn't give kudos here" in seen(reply)
    assert "No emoji gives kudos" in seen(await boss.slash("config kudos-emoji list"))
    assert (await stored(harness)).get("kudos_emojis", {}) == {}


# --- blocked words ----------------------------------------------------------------------------------------


async def test_blocked_words_add_list_remove_and_take_effect(harness: Harness) -> None:
    from bot.services.safety import PromptRefusedError

    boss = admin(harness)
    reply = await boss.slash("config blocked-words add", term="dragon")
    assert reply.private and "Blocked `dragon`" in seen(reply)
    await boss.slash("config blocked-words add", term="re:fo+bar")
    assert (await stored(harness))["blocked_words"] == ["dragon", "re:fo+bar"]
    listed = await boss.slash("config blocked-words list")
    assert "dragon" in seen(listed) and "re:fo+bar" in seen(listed)
    assert "built-in safety rules always apply" in seen(listed)
    assert "dragon" in field(await show(boss), "Blocked words (2")
    with pytest.raises(PromptRefusedError):
        await harness.services.safety.check_prompt(
            guild_id=harness.guild.id, user_id=1, prompt="a red dragon"
        )
    assert await boss.autocomplete("config blocked-words remove", "term", "dra") == [
        {"name": "dragon", "value": "dragon"}
    ]
    await boss.slash("config blocked-words remove", term="Dragon")
    assert (await stored(harness))["blocked_words"] == ["re:fo+bar"]
    await harness.services.safety.check_prompt(guild_id=harness.guild.id, user_id=1, prompt="a red dragon")


async def test_invalid_blocked_word_patterns_are_refused(harness: Harness) -> None:
    boss = admin(harness)
    reply = await boss.slash("config blocked-words add", term="re:(unclosed")
    assert reply.private
    assert "That term can't be used: The regex is invalid" in seen(reply)
    reply = await boss.slash("config blocked-words add", term="re:a*")
    assert "can match empty text" in seen(reply)
    reply = await boss.slash("config blocked-words add", term="x")
    assert "at least two letters" in seen(reply)
    assert (await stored(harness)).get("blocked_words", []) == []


async def test_built_in_rules_cannot_be_removed(harness: Harness) -> None:
    boss = admin(harness)
    reply = await boss.slash("config blocked-words remove", term="loli")
    assert "built-in safety rules can't be removed" in seen(reply)


# --- role rules -------------------------------------------------------------------------------------------


async def test_role_rules_are_stored_and_shown(harness: Harness) -> None:
    boss = admin(harness)
    linked = harness.guild.create_role("Linked")
    worker = harness.guild.create_role("Worker")
    trusted = harness.guild.create_role("Trusted")
    bronze = harness.guild.create_role("Bronze")
    gold = harness.guild.create_role("Gold")
    reply = await boss.slash("config roles linked", role=linked)
    assert reply.private and f"<@&{linked.id}>" in seen(reply)
    await boss.slash("config roles worker", role=worker, online_only=True)
    await boss.slash("config roles trusted", role=trusted)
    await boss.slash("config roles tier-add", kudos=100_000, role=gold)
    await boss.slash("config roles tier-add", kudos=1000, role=bronze)
    data = await stored(harness)
    assert (data["linked_role_id"], data["worker_role_id"], data["trusted_role_id"]) == (
        linked.id,
        worker.id,
        trusted.id,
    )
    assert data["worker_online_only"] is True
    assert data["kudos_tiers"] == [
        {"threshold": 1000, "role_id": bronze.id},
        {"threshold": 100_000, "role_id": gold.id},
    ]
    reply = await show(boss)
    assert f"Worker owner: <@&{worker.id}> (workers online in the last day)" in field(reply, "Roles")
    assert field(reply, "Kudos tiers") == f"1,000 kudos → <@&{bronze.id}>\n100,000 kudos → <@&{gold.id}>"
    same_role = await boss.slash("config roles tier-add", kudos=5000, role=gold)
    assert "already the role of another kudos tier" in seen(same_role)
    await boss.slash("config roles tier-remove", kudos=1000)
    missing = await boss.slash("config roles tier-remove", kudos=1234)
    assert "no kudos tier at 1,234 kudos" in seen(missing)
    await boss.slash("config roles linked")
    data = await stored(harness)
    assert data["linked_role_id"] is None
    assert data["kudos_tiers"] == [{"threshold": 100_000, "role_id": gold.id}]


async def test_a_role_above_the_bots_own_is_refused(harness: Harness) -> None:
    boss = admin(harness)
    mods = harness.role_above_bot("Moderators")
    reply = await boss.slash("config roles trusted", role=mods)
    assert reply.private
    assert "@Moderators is not below my own highest role" in seen(reply)
    reply = await boss.slash("config roles tier-add", kudos=10, role=mods)
    assert "not below my own highest role" in seen(reply)
    assert (await stored(harness)).get("trusted_role_id") is None


async def test_everyone_and_managed_roles_are_refused(harness: Harness) -> None:
    boss = admin(harness)
    reply = await boss.slash("config roles linked", role=harness.guild.default_role)
    assert "@everyone can't be used" in seen(reply)
    boosters = harness.guild.create_role("Server Booster", managed=True)
    reply = await boss.slash("config roles worker", role=boosters)
    assert "managed by an integration" in seen(reply)
    assert (await stored(harness)).get("linked_role_id") is None


async def test_roles_need_the_bot_to_have_manage_roles(harness: Harness) -> None:
    boss = admin(harness)
    linked = harness.guild.create_role("Linked")
    perms = discord.Permissions.all()
    perms.administrator = False
    perms.manage_roles = False
    await harness.set_role_permissions(harness.bot_role(), perms)
    reply = await boss.slash("config roles linked", role=linked)
    assert "I need the Manage Roles permission" in seen(reply)
    assert (await stored(harness)).get("linked_role_id") is None


# --- export and import ------------------------------------------------------------------------------------


async def export_file(member: Member) -> tuple[str, bytes]:
    reply = await member.slash("config export")
    assert reply.private
    attachments = reply.attachments + [a for f in reply.followups for a in f.attachments]
    assert len(attachments) == 1
    return attachments[0].filename, await attachments[0].read()


async def import_file(member: Member, data: bytes, name: str = "config.json") -> Reply:
    reply = await member.slash("config import", file=(name, data))
    assert reply.private
    return reply


def message_of(reply: Reply) -> Any:
    return reply.followups[0].message if reply.followups and reply.followups[0].message else reply.message


async def test_export_then_import_round_trip(harness: Harness, horde: FakeHorde) -> None:
    horde.add_worker("w1", models=["Deliberate"])
    boss = admin(harness)
    logs = harness.text_channel("bot-logs")
    art = harness.text_channel("art")
    linked = harness.guild.create_role("Linked")
    gold = harness.guild.create_role("Gold")
    await boss.slash_options("config logs channel", {"channel": logs})
    await boss.slash_options("config channels add", {"channel": art})
    await boss.slash("config roles linked", role=linked)
    await boss.slash("config roles tier-add", kudos=500, role=gold)
    await boss.slash("config kudos-emoji add", emoji="👍", amount=5)
    await boss.slash("config blocked-words add", term="dragon")
    await boss.slash("config generation model", name="Deliberate")
    await boss.slash("config generation max-n", n=3)
    before = await stored(harness)
    name, data = await export_file(boss)
    assert name == f"hordebot-config-{harness.guild.id}.json"
    assert json.loads(data) == before
    # Change things, then bring the exported setup back.
    await boss.slash("config channels clear")
    await boss.slash("config kudos-emoji remove", emoji="👍")
    await boss.slash("config generation max-n", n=1)
    shown = await import_file(boss, data)
    assert "Replace all of this server's settings" in seen(shown)
    assert (await stored(harness))["max_n"] == 1  # nothing changes before the confirmation
    done = await boss.click(message_of(shown), label="Replace the settings")
    assert "Imported" in seen(done)
    assert await stored(harness) == before
    assert field(await show(boss), "Max images") == "3"


async def test_import_can_be_cancelled(harness: Harness) -> None:
    boss = admin(harness)
    data = json.dumps({"max_n": 4}).encode()
    shown = await import_file(boss, data)
    done = await boss.click(message_of(shown), label="Cancel")
    assert "nothing changed" in seen(done)
    assert (await stored(harness)).get("max_n") is None


async def test_import_confirm_belongs_to_the_admin_who_asked(harness: Harness) -> None:
    boss = admin(harness)
    other = harness.member("other", roles=[harness.guild.roles["admins"]])
    shown = await import_file(boss, json.dumps({"max_n": 4}).encode())
    refused = (await other.click_burst(message_of(shown), ["config:import"], visible_only=False))[0]
    assert "belong to someone else" in seen(refused)
    assert (await stored(harness)).get("max_n") is None


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"this is not json", "not valid JSON"),
        (b"\xff\xfe\x00garbage", "not valid JSON"),
        (b"[1, 2, 3]", "one JSON object"),
        (b'{"max_n": 4, "colour": "blue"}', "colour: Extra inputs are not permitted"),
        (b'{"max_n": 99}', "max_n: Input should be less than or equal to 20"),
        (b'{"nsfw_policy": "always"}', "nsfw_policy: Input should be 'off' or 'nsfw_channels'"),
        (b'{"kudos_emojis": {"\\ud83d\\udc4d": 0}}', "must be a positive whole number"),
        (b'{"blocked_words": ["re:("]}', "blocked_words: 're:(': The regex is invalid"),
        (b'{"kudos_emojis": {"hello": 5}}', "kudos_emojis: 'hello' is not an emoji key"),
        (b'{"kudos_emojis": {"\\u2764\\ufe0f": 5, "\\u2764": 6}}', "the same emoji is listed twice"),
        (b'{"default_steps": 50, "max_steps": 20}', "default_steps: can't be above max_steps"),
    ],
)
async def test_bad_import_files_are_rejected_naming_the_problem(
    harness: Harness, content: bytes, expected: str
) -> None:
    boss = admin(harness)
    await boss.slash("config generation max-n", n=2)
    before = await stored(harness)
    reply = await import_file(boss, content)
    assert expected in seen(reply)
    assert "Replace the settings" not in str(reply.raw)
    assert await stored(harness) == before


async def test_import_revalidates_channels_and_roles(harness: Harness) -> None:
    boss = admin(harness)
    muted = no_post_channel(harness, "muted")
    mods = harness.role_above_bot("Moderators")
    reply = await import_file(boss, json.dumps({"log_channel_id": muted.id}).encode())
    assert "log_channel_id: I can't post in #muted" in seen(reply)
    reply = await import_file(boss, json.dumps({"generation_channels": [123456789012345678]}).encode())
    assert "generation_channels: channel 123456789012345678 doesn't exist in this server" in seen(reply)
    reply = await import_file(
        boss, json.dumps({"kudos_tiers": [{"threshold": 5, "role_id": mods.id}]}).encode()
    )
    assert "kudos_tiers: @Moderators is not below my own highest role" in seen(reply)
    reply = await import_file(boss, json.dumps({"trusted_role_id": 42}).encode())
    assert "trusted_role_id: role 42 doesn't exist" in seen(reply)
    assert await stored(harness) == {}


async def test_import_rechecks_at_confirmation(harness: Harness) -> None:
    boss = admin(harness)
    logs = harness.text_channel("bot-logs")
    shown = await import_file(boss, json.dumps({"log_channel_id": logs.id}).encode())
    await harness.delete_channel(logs)
    done = await boss.click(message_of(shown), label="Replace the settings")
    assert f"Nothing was changed. log_channel_id: channel {logs.id} doesn't exist in this server" in seen(
        done
    )
    assert await stored(harness) == {}


async def test_import_file_size_limit(harness: Harness) -> None:
    boss = admin(harness)
    big = json.dumps({"blocked_words": ["word"] * 20000}).encode()
    assert len(big) > harness.services.admin.settings.max_import_bytes
    reply = await import_file(boss, big)
    assert "too large" in seen(reply)
    assert await stored(harness) == {}


async def test_worker_online_only_alone_keeps_the_role(harness: Harness) -> None:
    boss = admin(harness)
    worker = harness.guild.create_role("Worker")
    await boss.slash("config roles worker", role=worker)
    reply = await boss.slash("config roles worker", online_only=True)
    assert f"<@&{worker.id}> (workers online in the last day only)" in seen(reply)
    data = await stored(harness)
    assert (data["worker_role_id"], data["worker_online_only"]) == (worker.id, True)
    await boss.slash("config roles worker")
    assert (await stored(harness))["worker_role_id"] is None


async def test_an_unconfirmed_import_expires(harness: Harness) -> None:
    boss = admin(harness)
    shown = await import_file(boss, json.dumps({"max_n": 4}).encode())
    await harness.advance(harness.services.admin.settings.confirm_timeout + 5)
    latest = shown.latest()
    assert "The import expired; nothing changed." in seen(latest)
    message = message_of(latest)
    assert message is None or not message.components
    assert (await stored(harness)).get("max_n") is None


async def test_the_log_never_goes_to_another_servers_channel(harness: Harness) -> None:
    other = harness.env.create_guild(name="Elsewhere")
    foreign = other.create_text_channel("their-logs")
    # Only a hand-edited database could hold this: /config and imports accept this server's channels only.
    await harness.services.guild_config.update(harness.guild.id, log_channel_id=foreign.id)
    assert await harness.services.notifier.log_to_guild(harness.guild.id, "secret moderation event") is False
    assert harness.channel_messages(foreign) == []


async def test_config_is_not_offered_in_direct_messages(harness: Harness) -> None:
    user = harness.env.create_user("dana")
    with pytest.raises(SetupError, match="not visible"):
        await user.slash("config show")


async def test_settings_survive_a_restart(harness: Harness) -> None:
    boss = admin(harness)
    await boss.slash("config kudos-emoji add", emoji="🎉", amount=3)
    await boss.slash("config generation nsfw", policy="off")
    await harness.restart()
    reply = await show(boss)
    assert "🎉 → 3 kudos" in field(reply, "Kudos emojis")
    assert field(reply, "NSFW") == "never"


async def test_imported_emoji_keys_are_keyed_like_reactions(harness: Harness) -> None:
    boss = admin(harness)
    shown = await import_file(boss, json.dumps({"kudos_emojis": {"❤️": 5}}).encode())
    await boss.click(message_of(shown), label="Replace the settings")
    assert (await stored(harness))["kudos_emojis"] == {"❤": 5}


def _characters(option: dict[str, Any]) -> int:
    total = len(option.get("name", "")) + len(option.get("description", ""))
    for choice in option.get("choices") or []:
        total += len(choice["name"]) + len(str(choice["value"]))
    return total + sum(_characters(o) for o in option.get("options") or [])


async def test_the_config_command_fits_discords_limits(harness: Harness) -> None:
    synced = [r for r in harness.rest_requests() if r.method == "PUT" and r.path.endswith("/commands")]
    config = next(c for c in synced[-1].json if c["name"] == "config")
    # Discord: at most 25 subcommands or groups per level, 4000 characters of names, descriptions and choices.
    assert len(config["options"]) <= 25
    assert all(len(group.get("options") or []) <= 25 for group in config["options"])
    assert _characters(config) <= 4000, _characters(config)
    assert int(config["default_member_permissions"]) == discord.Permissions(manage_guild=True).value


# --- audit of #6: the import confirmation across a restart -------------------------------------------------


async def test_an_import_confirmation_from_before_a_restart_says_to_import_again(harness: Harness) -> None:
    boss = admin(harness)
    shown = await import_file(boss, json.dumps({"max_n": 4}).encode())
    await harness.restart()
    # The checked file was only in memory: the click is answered, privately, and changes nothing.
    stale = await boss.click(message_of(shown), label="Replace the settings")
    assert stale.ephemeral
    assert "This import is no longer pending" in seen(stale) and "/config import" in seen(stale)
    assert (await stored(harness)).get("max_n") is None
    cancelled = await boss.click(message_of(shown), label="Cancel")
    assert "This import is no longer pending" in seen(cancelled)
    assert (await stored(harness)).get("max_n") is None


async def test_echoed_blocked_words_ping_nobody(harness: Harness) -> None:
    boss = admin(harness)
    role = harness.guild.create_role("Mods", mentionable=True)
    sneaky = f"@everyone <@&{role.id}> dragon"
    added = await boss.slash("config blocked-words add", term=sneaky)
    assert added.private and "Blocked" in seen(added) and "dragon" in seen(added)
    listed = await boss.slash("config blocked-words list")
    assert "dragon" in seen(listed)
    echoed = [
        r
        for r in harness.rest_requests()
        if isinstance(r.json, dict) and ("everyone" in (body := json.dumps(r.json)) or str(role.id) in body)
    ]
    assert len(echoed) >= 2
    for request in echoed:
        holders = [
            request.json,
            request.json.get("data") if isinstance(request.json.get("data"), dict) else {},
        ]
        allowed = [h["allowed_mentions"] for h in holders if "allowed_mentions" in h]
        assert allowed, f"{request.method} {request.path} echoed an admin's text without allowed_mentions"
        for setting in allowed:
            assert setting.get("parse", []) == [] and not setting.get("roles") and not setting.get("users")
