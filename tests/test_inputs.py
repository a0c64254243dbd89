"""Hostile and boundary inputs on every command (issue #15, part 5).

Each option declares its limits so Discord's client enforces them (checked here on the synced command
definitions), and each value is checked again by the service, because a client can send anything:
`Member.slash_raw` sends values exactly as given. Every row asserts what the member sees (a private line
saying what to do), that nothing was sent to the AI Horde, and that the database did not change.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import discord
import pytest
from PIL import Image
from sqlalchemy import select, text

from bot.config import Settings
from bot.db.models import Base
from tests.conftest import make_settings
from tests.fakes.horde import FakeHorde
from tests.harness import Harness, Member, Reply

NAN, INF = math.nan, math.inf


@pytest.fixture
def settings(tmp_path: Path, horde: FakeHorde) -> Settings:
    # Many refusals in a row from one member: each is a Horde-calling command to the bot's rate limiter.
    return make_settings(tmp_path, horde.base_url, safety={"user_burst": 500, "guild_burst": 500})


@pytest.fixture(autouse=True)
def _no_fake_rate_limits(horde: FakeHorde) -> None:
    # The fake's limiter counts real seconds while these tests move virtual ones.
    horde.enforce_rate_limits = False


def png(width: int = 64, height: int = 48) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(out, format="PNG")
    return out.getvalue()


async def snapshot(h: Harness) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table the bot maps: compared before and after a refused command."""
    async with h.runtime.db.session() as session:
        return {
            table.name: sorted((tuple(r) for r in (await session.execute(select(table))).all()), key=repr)
            for table in Base.metadata.sorted_tables
        }


def work_sent(horde: FakeHorde, since: int = 0) -> list[str]:
    """Requests to the Horde that ask it to do or change something (catalog look-ups are GETs)."""
    return [f"{c.method} {c.path}" for c in horde.calls[since:] if c.method != "GET"]


async def refused_cleanly(h: Harness, horde: FakeHorde, act: Any) -> Reply:
    """Run `act()` and check the refusal: private, nothing sent to the Horde, no database change."""
    before, calls = await snapshot(h), len(horde.calls)
    reply: Reply = await act()
    assert reply.private, reply.text
    assert "Something went wrong" not in reply.text and reply.text.strip(), reply.text
    assert work_sent(horde, calls) == []
    assert await snapshot(h) == before
    return reply


async def linked(h: Harness, horde: FakeHorde, name: str = "alice", kudos: float = 1000) -> Member:
    member = h.member(name)
    user = horde.add_user(name, kudos=kudos)
    shown = await member.slash("login")
    reply = await member.submit_modal(shown, {"login:apikey": user.apikey or ""})
    assert "linked" in reply.text.lower()
    return member


# --- /generate -------------------------------------------------------------------------------------------


async def test_img2img_strength_minus_one_is_refused_before_the_source_image_nsfw_check(
    harness: Harness, horde: FakeHorde
) -> None:
    h = harness
    await h.services.guild_config.update(h.guild.id, alchemy_nsfw_check=True)
    alice = h.member("alice")
    reply = await refused_cleanly(
        h,
        horde,
        lambda: alice.slash_raw(
            "generate", {"prompt": "a lighthouse", "image": ("cat.png", png()), "strength": -1}
        ),
    )
    assert "Strength must be between 0.01 and 1 (got -1)." in reply.text
    assert horde.interrogations == [] and horde.count("POST", r"/interrogate/async") == 0


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"strength": -1}, "Strength must be between 0.01 and 1 (got -1)."),
        ({"strength": NAN}, "Strength must be a number between 0.01 and 1."),
        ({"strength": INF}, "Strength must be a number between 0.01 and 1."),
        ({"strength": -INF}, "Strength must be a number between 0.01 and 1."),
        ({"strength": "lots"}, "One of the options has a value of the wrong kind"),
        ({"cfg": NAN}, "CFG must be a number from 0 to 100"),
        ({"cfg": INF}, "CFG must be a number from 0 to 100"),
        ({"cfg": -0.5}, "CFG must be between 0 and 100 (got -0.5)."),
        ({"width": -64}, "Width must be between 64 and 3072 pixels (got -64)."),
        ({"width": "wide"}, "Width must be a whole number of pixels"),
        ({"height": 0}, "Height must be between 64 and 3072 pixels (got 0)."),
        ({"steps": -1}, "Steps must be between 1 and 500 (got -1)."),
        ({"steps": 501}, "Steps must be between 1 and 500 (got 501)."),
        ({"n": -1}, "n must be between 1 and 20 images (got -1)."),
        ({"n": 2.5}, "n must be a whole number of images from 1 to 20."),
        ({"negative": "blurry\x00"}, "`negative` contains a NUL byte; remove it and try again."),
        ({"prompt": "a cat\x00"}, "`prompt` contains a NUL byte"),
        ({"prompt": "a cat \x1b[31m"}, "`prompt` contains an invisible control character (U+001B)"),
        ({"prompt": "\u3000 \t\n"}, "The prompt is empty"),
        ({"seed": "12\x0034"}, "`seed` contains a NUL byte"),
        ({"model": "stable\ndiffusion"}, "`model` contains a line break"),
        ({"sampler": "<@everyone> `x`"}, "Unknown sampler `<@everyone> 'x'`. Choose one of: k_euler_a"),
        ({"post_processing": " , "}, None),
        ({"control_type": "canny"}, "`control_type` needs an `image`"),
        ({"karras": "yes"}, "`karras` must be true or false."),
    ],
)
async def test_generate_hostile_values_are_refused_before_anything_happens(
    harness: Harness, horde: FakeHorde, options: dict[str, Any], expected: str | None
) -> None:
    alice = harness.member("alice")
    sent = {"prompt": "a lighthouse", **options}
    if "strength" in options:
        sent["image"] = ("cat.png", png())
    if expected is None:
        # Blank text is the same as leaving the option out: the request goes through.
        reply = await alice.slash_raw("generate", sent)
        assert "Generating" in reply.latest().text
        return
    reply = await refused_cleanly(harness, horde, lambda: alice.slash_raw("generate", sent))
    assert expected in reply.text


async def test_remix_strength_nan_is_refused(harness: Harness, horde: FakeHorde) -> None:
    alice, bob = harness.member("alice"), harness.member("bob")
    posted = await bob.send("my drawing", attachments=[("drawing.png", png(320, 240))])
    shown = await alice.context_menu("Remix with Horde", posted)
    reply = await refused_cleanly(
        harness, horde, lambda: alice.submit_modal(shown, {"prompt": "as an oil painting", "strength": "nan"})
    )
    assert "Strength must be a number between 0.01 and 1." in reply.text


# --- every option declares its limits --------------------------------------------------------------------


def _leaves(command: dict[str, Any], path: str = "") -> list[tuple[str, list[dict[str, Any]]]]:
    name = f"{path} {command['name']}".strip()
    options = command.get("options") or []
    if any(o["type"] in (1, 2) for o in options):  # subcommands and groups
        return [leaf for o in options for leaf in _leaves(o, name)]
    return [(name, options)]


async def test_every_option_declares_its_limits_for_discords_client(harness: Harness) -> None:
    """Numbers have a minimum and a maximum, text a maximum length (and choice options their choices or
    an autocomplete), so Discord's client refuses out-of-range values before the bot sees them."""
    missing: list[str] = []
    for command in harness.bot.tree.get_commands():
        payload = command.to_dict(harness.bot.tree)
        if payload.get("type", 1) != 1:
            continue  # context menus have no options
        for name, options in _leaves(payload):
            for option in options:
                where = f"/{name} {option['name']}"
                bounded = option.get("min_value") is not None and option.get("max_value") is not None
                if option["type"] in (4, 10) and not option.get("choices") and not bounded:
                    missing.append(f"{where}: no min_value/max_value")
                if option["type"] == 3 and not option.get("choices") and option.get("max_length") is None:
                    missing.append(f"{where}: no max_length")
    assert missing == [], "\n".join(missing)


# --- /text -------------------------------------------------------------------------------------------------


TEXT_ROWS: list[tuple[dict[str, Any], str]] = [
    ({"temperature": NAN}, "`temperature` must be a number from 0 to 5."),
    ({"temperature": INF}, "`temperature` must be a number from 0 to 5."),
    ({"temperature": -0.1}, "`temperature` must be a number from 0 to 5 (got -0.1)."),
    ({"max_length": 0}, "`max_length` must be a whole number from 16 to 4,096 (got 0)."),
    ({"max_length": -1}, "`max_length` must be a whole number from 16 to 4,096 (got -1)."),
    ({"max_length": 4097}, "`max_length` must be a whole number from 16 to 4,096 (got 4,097)."),
    ({"max_length": "lots"}, "`max_length` must be a whole number from 16 to 4,096."),
    ({"top_p": 0}, "`top_p` must be a number from 0.001 to 1 (got 0)."),
    ({"top_k": 201}, "`top_k` must be a whole number from 0 to 200 (got 201)."),
    ({"rep_pen": NAN}, "`rep_pen` must be a number from 1 to 3."),
    ({"prompt": "hello\x00there"}, "`prompt` contains a NUL byte"),
    ({"prompt": "   "}, "The prompt is empty."),
    ({"model": "llama\x00"}, "`model` contains a NUL byte"),
]


async def test_text_hostile_values_are_refused_and_leave_no_job_row(
    harness: Harness, horde: FakeHorde
) -> None:
    """`/text` with a non-number temperature used to leave a row stuck in `submitting`: every value is now
    checked before the job row exists."""
    alice = harness.member("alice")
    for options, expected in TEXT_ROWS:
        sent = {"prompt": "Write a haiku about rain", **options}
        reply = await refused_cleanly(harness, horde, lambda sent=sent: alice.slash_raw("text", sent))
        assert expected in reply.text, (options, reply.text)
    async with harness.runtime.db.session() as session:
        assert (await session.execute(text("SELECT count(*) FROM alchemy_text_jobs"))).scalar() == 0


# --- /sharedkey create -------------------------------------------------------------------------------------


SHAREDKEY_ROWS: list[tuple[dict[str, Any], str]] = [
    ({"name": "   "}, "`name` is empty (only spaces): give the key a name of at least 3 characters."),
    ({"name": " a "}, "`name` must be at least 3 characters"),
    ({"name": "x" * 256}, "`name` can be at most 255 characters (got 256)."),
    ({"name": "our\x00key"}, "`name` contains a NUL byte"),
    ({"name": "friends", "kudos": 0}, "`kudos` must be positive, or -1 for no limit."),
    ({"name": "friends", "kudos": -2}, "`kudos` must be a whole number from -1 to 50,000,000 (got -2)."),
    ({"name": "friends", "kudos": 50_000_001}, "`kudos` must be a whole number from -1 to 50,000,000"),
    ({"name": "friends", "expiry_days": 3651}, "`expiry_days` must be a whole number from -1 to 3,650"),
    ({"name": "friends", "max_image_pixels": 4_194_305}, "`max_image_pixels` must be a whole number"),
    ({"name": "friends", "max_image_steps": 501}, "`max_image_steps` must be a whole number from -1 to 500"),
    ({"name": "friends", "max_text_tokens": -5}, "`max_text_tokens` must be a whole number from -1 to 500"),
    ({"name": "friends", "max_text_tokens": "many"}, "`max_text_tokens` must be a whole number"),
]


async def test_sharedkey_create_hostile_values_never_reach_the_horde(
    harness: Harness, horde: FakeHorde
) -> None:
    alice = await linked(harness, horde)
    for options, expected in SHAREDKEY_ROWS:
        reply = await refused_cleanly(
            harness, horde, lambda options=options: alice.slash_raw("sharedkey create", options)
        )
        assert expected in reply.text, (options, reply.text)
    assert horde.count("PUT", r"/sharedkeys") == 0


async def test_sharedkey_create_declares_the_hordes_limits(harness: Harness) -> None:
    [create] = [c for c in harness.bot.tree.walk_commands() if c.qualified_name == "sharedkey create"]
    options = {o["name"]: o for o in create.to_dict(harness.bot.tree)["options"]}
    assert (options["name"]["min_length"], options["name"]["max_length"]) == (3, 255)
    assert (options["kudos"]["min_value"], options["kudos"]["max_value"]) == (-1, 50_000_000)
    assert (options["max_image_pixels"]["min_value"], options["max_image_pixels"]["max_value"]) == (
        -1,
        4_194_304,
    )
    assert (options["max_image_steps"]["max_value"], options["max_text_tokens"]["max_value"]) == (500, 500)


# --- choices: never an unknown one, never echoed ------------------------------------------------------------


async def test_unknown_choices_are_refused_without_echoing_them(harness: Harness, horde: FakeHorde) -> None:
    h = harness
    alice = await linked(h, horde)
    horde.add_worker("sd-1", models=["stable_diffusion"], threads=1)
    hostile = "<@&1> **bold** `tick`"
    rows: list[tuple[str, dict[str, Any], str]] = [
        ("models", {"type": hostile}, "`type` must be one of: image, text. Pick one from the list."),
        ("models", {"type": ""}, "`type` must be one of: image, text."),
        ("upscale", {"image": ("cat.png", png()), "upscaler": ""}, "`upscaler` must be one of: RealESRGAN"),
        ("upscale", {"image": ("cat.png", png()), "upscaler": hostile}, "`upscaler` must be one of:"),
        ("facefix", {"image": ("cat.png", png()), "fixer": ""}, "`fixer` must be one of: GFPGAN"),
        ("facefix", {"image": ("cat.png", png()), "fixer": hostile}, "`fixer` must be one of:"),
    ]
    for command, options, expected in rows:
        reply = await refused_cleanly(h, horde, lambda c=command, o=options: alice.slash_raw(c, o))
        assert expected in reply.text, (command, options, reply.text)
        assert "bold" not in reply.text and "tick" not in reply.text
    assert horde.interrogations == []


async def test_sync_with_an_unknown_scope_is_refused(harness: Harness, horde: FakeHorde) -> None:
    import dataclasses

    from bot.config import DiscordSettings

    h = harness
    admins = h.guild.create_role("Admins", permissions=discord.Permissions(administrator=True))
    owner = h.member("owner", roles=[admins])
    h.bot.settings = dataclasses.replace(
        h.settings, discord=DiscordSettings(token="t", owner_ids=(owner.id,))
    )
    synced = len(h.rest_requests())
    reply = await refused_cleanly(h, horde, lambda: owner.slash_raw("sync", {"scope": "everywhere*"}))
    assert "`scope` must be one of: global, here." in reply.text and "everywhere" not in reply.text
    assert not [r for r in h.rest_requests()[synced:] if "/commands" in r.path]


# --- /config roles tier-add --------------------------------------------------------------------------------


async def test_tier_add_with_the_bots_own_managed_role_changes_nothing(
    harness: Harness, horde: FakeHorde
) -> None:
    h = harness
    boss = h.member(
        "boss", roles=[h.guild.create_role("admins", permissions=discord.Permissions(manage_guild=True))]
    )
    rows: list[tuple[dict[str, Any], str]] = [
        ({"kudos": 1000, "role": h.bot_role()}, "is managed by an integration"),
        ({"kudos": -1, "role": h.bot_role()}, "The kudos threshold must be between 0 and"),
        ({"kudos": "many", "role": h.bot_role()}, "The kudos threshold must be a whole number between 0"),
    ]
    for options, expected in rows:
        reply = await refused_cleanly(
            h, horde, lambda options=options: boss.slash_raw("config roles tier-add", options)
        )
        assert expected in reply.text, (options, reply.text)
    async with h.runtime.db.session() as session:
        assert (await session.execute(text("SELECT count(*) FROM role_sync_state"))).scalar() == 0


# --- /transfer: five clicks on Cancel at once, each answered -----------------------------------------------


def _button(message: Any, label: str) -> str:
    return next(
        str(child.custom_id)
        for row in message.components
        for child in row.children
        if getattr(child, "label", None) == label
    )


async def test_five_simultaneous_cancel_clicks_are_each_answered(harness: Harness, horde: FakeHorde) -> None:
    h = harness
    alice, bob = await linked(h, horde, "alice"), await linked(h, horde, "bob")
    shown = await alice.slash("transfer", member=bob.actor, amount=10)
    message = shown.followups[0].message if shown.followups and shown.followups[0].message else shown.message
    replies = await alice.click_burst(message, [_button(message, "Cancel")] * 5)
    assert all(r.text for r in replies), [r.text for r in replies]
    assert sum("Cancelled: no kudos were sent." in r.latest().text for r in replies) >= 1
    others = [r for r in replies if "already answered" in r.text]
    assert len(others) == 4 and all(r.private for r in others)
    assert horde.calls_to(r"/kudos/transfer$", "POST") == []


# --- users the payload doesn't resolve (discord.py hands over a bare discord.Object) -----------------------


async def test_user_options_the_payload_does_not_resolve(harness: Harness, horde: FakeHorde) -> None:
    h = harness
    alice, bob = await linked(h, horde, "alice"), await linked(h, horde, "bob")
    info = await alice.slash_raw("userinfo", {"member": bob.id})
    assert info.private and "AI Horde account of bob" in info.text
    history = await alice.slash_raw("kudos history", {"member": bob.id})
    assert history.private and "bob's kudos gifts" in history.text
    confirm = await alice.slash_raw("transfer", {"member": bob.id, "amount": 10})
    assert confirm.private and "Send **10** kudos" in confirm.content
    nobody = 4242424242424242
    for command, options in [
        ("userinfo", {"member": nobody}),
        ("kudos history", {"member": nobody}),
        ("transfer", {"member": nobody, "amount": 10}),
    ]:
        reply = await refused_cleanly(h, horde, lambda c=command, o=options: alice.slash_raw(c, o))
        assert "I can't tell who that is. Pick a member from the list Discord offers." in reply.text


async def test_a_transfer_button_clicked_after_it_expired_is_answered(
    harness: Harness, horde: FakeHorde
) -> None:
    """The expiry edit that removes the buttons can fail (a Discord 429): a later click still gets an
    answer, never "This interaction failed"."""
    h = harness
    alice, bob = await linked(h, horde, "alice"), await linked(h, horde, "bob")
    shown = await alice.slash("transfer", member=bob.actor, amount=10)
    message = shown.followups[0].message if shown.followups and shown.followups[0].message else shown.message
    h.discord_rate_limits("PATCH", "/webhooks/*/messages/@original", times=None)
    await h.advance(61)
    replies = await alice.click_burst(message, [_button(message, "Send kudos"), _button(message, "Cancel")])
    for reply in replies:
        assert "expired before it was confirmed; nothing was sent" in reply.latest().text, reply.text
    assert horde.calls_to(r"/kudos/transfer$", "POST") == []


# --- the sweep: every other command with text or numbers ---------------------------------------------------


async def test_other_commands_refuse_hostile_values_privately(harness: Harness, horde: FakeHorde) -> None:
    """One row per command and class of bad value; each asserts what the member reads."""
    h = harness
    alice = await linked(h, horde)
    boss = h.member(
        "boss", roles=[h.guild.create_role("admins", permissions=discord.Permissions(manage_guild=True))]
    )
    horde.add_worker("t1", models=["koboldcpp/Llama-3-8B"], type="text")
    rows: list[tuple[Member, str, dict[str, Any], str]] = [
        (
            alice,
            "chat start",
            {"model": "koboldcpp/Llama-3-8B", "persona": "a pirate\x00"},
            "`persona` contains a NUL",
        ),
        (
            alice,
            "chat start",
            {"model": "llama\x07"},
            "`model` contains an invisible control character (U+0007)",
        ),
        (alice, "worker", {"name_or_id": "w\x00"}, "`name_or_id` contains a NUL byte"),
        (alice, "team", {"name_or_id": "team\nred"}, "`name_or_id` contains a line break"),
        (alice, "model", {"name": "\x00"}, "`name` contains a NUL byte"),
        (
            alice,
            "party start",
            {"name": "p\x00", "style": "Neon Dreams", "award": 5, "duration": 60},
            "`name` contains a NUL",
        ),
        (
            alice,
            "party start",
            {"name": "p", "style": "Neon Dreams", "award": "5", "duration": 60},
            "The award must be from 1",
        ),
        (
            alice,
            "party start",
            {"name": "p", "style": "Neon Dreams", "award": 5, "duration": -60},
            "The duration must be from 1",
        ),
        (alice, "sharedkey delete", {"key": "²"}, "Pick one of your keys from the list."),
        (alice, "rate", {"dataset": "cats\x00"}, "`dataset` contains a NUL byte"),
        (
            boss,
            "config generation default-steps",
            {"steps": 0},
            "Default steps must be between 1 and 500 (got 0).",
        ),
        (
            boss,
            "config generation max-steps",
            {"steps": "lots"},
            "Maximum steps must be a whole number between 1 and 500.",
        ),
        (
            boss,
            "config generation size",
            {"width": -64, "height": 512},
            "Width must be between 64 and 3,072 (got -64).",
        ),
        (
            boss,
            "config generation max-pixels",
            {"pixels": 1},
            "Maximum pixels must be between 4,096 and 9,437,184",
        ),
        (
            boss,
            "config generation max-n",
            {"n": 21},
            "Maximum images per request must be between 1 and 20 (got 21).",
        ),
        (
            boss,
            "config generation cooldown",
            {"seconds": -1},
            "The cooldown must be between 0 and 3,600 (got -1).",
        ),
        (
            boss,
            "config generation nsfw",
            {"policy": "always"},
            "`policy` must be one of: off, nsfw_channels.",
        ),
        (
            boss,
            "config kudos-emoji add",
            {"emoji": "🔥", "amount": 1001},
            "The amount can be at most 1,000 kudos",
        ),
        (
            boss,
            "config kudos-emoji add",
            {"emoji": "🔥", "amount": "x"},
            "The amount must be a positive whole number",
        ),
        (boss, "config blocked-words add", {"term": "bad\x00word"}, "`term` contains a NUL byte"),
        (boss, "config blocked-words add", {"term": "   "}, "`term` is empty (only spaces)"),
        (boss, "config roles tier-remove", {"kudos": -5}, "The kudos threshold must be between 0 and"),
    ]
    for member, command, options, expected in rows:
        reply = await refused_cleanly(h, horde, lambda m=member, c=command, o=options: m.slash_raw(c, o))
        assert expected in reply.text, (command, options, reply.text)
    assert h.channel.threads == []


async def test_chat_say_with_a_nul_byte_is_refused_before_the_turn_is_stored(
    harness: Harness, horde: FakeHorde
) -> None:
    h = harness
    horde.add_worker("t1", models=["koboldcpp/Llama-3-8B"], type="text")
    alice = h.member("alice")
    started = await alice.slash("chat start", model="koboldcpp/Llama-3-8B")
    assert started.private
    (thread,) = h.channel.threads
    reply = await refused_cleanly(
        h, horde, lambda: alice.slash_raw("chat say", {"message": "hi\x00"}, channel=thread)
    )
    assert "`message` contains a NUL byte" in reply.text
