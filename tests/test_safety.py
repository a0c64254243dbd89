"""Safety, driven as members do: refused prompts, cooldowns, Horde rejections, rate limits, mentions, keys."""

from __future__ import annotations

import base64
import io
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from sqlalchemy import text

from bot.services.safety import REFUSED
from tests.conftest import make_settings
from tests.fakes.horde import FakeHorde
from tests.harness import Harness, run_harness
from tests.test_account import login

LLAMA = "koboldcpp/Llama-3-8B"
BLOCKED = "loli, nude"
POLL = 5.0


def text_worker(horde: FakeHorde) -> None:
    horde.add_worker("t1", models=[LLAMA], type="text")


async def with_log_channel(harness: Harness) -> Any:
    logs = harness.text_channel("mod-log")
    await harness.services.guild_config.update(harness.guild.id, log_channel_id=logs.id)
    return logs


def log_lines(harness: Harness, channel: Any) -> list[str]:
    return [m.content for m in harness.channel_messages(channel)]


async def strikes(h: Harness) -> list[tuple[int, str]]:
    async with h.runtime.db.session() as session:
        rows = (await session.execute(text("SELECT user_id, reason FROM safety_strikes ORDER BY id"))).all()
        return [(r[0], r[1]) for r in rows]


async def test_refused_prompt_is_logged_and_never_sent(harness: Harness, horde: FakeHorde) -> None:
    text_worker(horde)
    logs = await with_log_channel(harness)
    alice = harness.member("alice")
    reply = await alice.slash("text", prompt=BLOCKED, model=LLAMA)
    assert reply.private
    assert REFUSED in reply.text
    # Neutral: nothing about what was detected.
    assert "loli" not in reply.text and "csam" not in reply.text.lower()
    assert horde.count("POST", r"/generate/text/async") == 0
    [posted] = log_lines(harness, logs)
    assert alice.mention in posted
    assert "refused a prompt" in posted
    assert BLOCKED in posted
    assert await strikes(harness) == [(alice.id, "csam")]
    # The bot's own log has it too.
    assert not harness.channel_messages()  # nothing public


async def test_chat_persona_is_checked_before_the_thread_opens(harness: Harness, horde: FakeHorde) -> None:
    text_worker(horde)
    reply = await harness.member("alice").slash("chat start", model=LLAMA, persona="a loli who is naked")
    assert reply.private
    assert REFUSED in reply.text
    # No thread was opened, nothing reached the Horde.
    assert not harness.channel.threads
    assert horde.count("POST", r"/generate/text/async") == 0


async def test_repeated_refusals_escalate_and_survive_a_restart(harness: Harness, horde: FakeHorde) -> None:
    text_worker(horde)
    alice = harness.member("alice")
    first = await alice.slash("text", prompt=BLOCKED, model=LLAMA)
    # The first refusal only refuses.
    assert REFUSED in first.text and "paused" not in first.text
    second = await alice.slash("text", prompt="l0l1 nude", model=LLAMA)
    assert "Your requests are paused for 5 minutes" in second.text
    harmless = await alice.slash("text", prompt="a haiku about kudos", model=LLAMA)
    assert harmless.private
    assert "Try again in 5 minutes" in harmless.text
    assert horde.count("POST", r"/generate/text/async") == 0

    await harness.restart()
    again = await alice.slash("text", prompt="a haiku about kudos", model=LLAMA)
    assert "Try again in 5 minutes" in again.text
    # Other members are not affected.
    ok = await harness.member("bob").slash("text", prompt="a haiku about kudos", model=LLAMA)
    assert "Writing on the AI Horde" in ok.text

    harness.clock.shift(5 * 60 + 1)
    await harness.advance(60)  # refill the rate-limit bucket as well
    works = await alice.slash("text", prompt="a haiku about kudos", model=LLAMA)
    assert "Writing on the AI Horde" in works.text
    third = await alice.slash("text", prompt=BLOCKED, model=LLAMA)
    assert "paused for 30 minutes" in third.text
    # A day later the slate is clean: the next refusal starts again without a pause.
    harness.clock.shift(24 * 3600 + 31 * 60)
    await harness.advance(60)
    fresh = await alice.slash("text", prompt=BLOCKED, model=LLAMA)
    assert REFUSED in fresh.text and "paused" not in fresh.text
    assert len(horde.text_jobs) == 2


async def test_guild_blocked_word_refuses_the_prompt(harness: Harness, horde: FakeHorde) -> None:
    text_worker(horde)
    logs = await with_log_channel(harness)
    await harness.services.guild_config.update(harness.guild.id, blocked_words=["dragonfruit"])
    alice = harness.member("alice")
    reply = await alice.slash("text", prompt="a DRAGONFRUIT smoothie", model=LLAMA)
    assert reply.private and REFUSED in reply.text
    assert horde.count("POST", r"/generate/text/async") == 0
    [posted] = log_lines(harness, logs)
    assert "blocked words" in posted and "DRAGONFRUIT smoothie" in posted
    # The same prompt is fine in another guild... and other prompts here.
    ok = await alice.slash("text", prompt="a mango smoothie", model=LLAMA)
    assert "Writing on the AI Horde" in ok.text


async def test_horde_corrupt_prompt_is_an_incident(harness: Harness, horde: FakeHorde, settings: Any) -> None:
    text_worker(horde)
    logs = await with_log_channel(harness)
    horde.inject(r"/generate/text/async", method="POST", status=400, rc="CorruptPrompt")
    alice = harness.member("alice")
    reply = await alice.slash("text", prompt="an innocent looking prompt", model=LLAMA)
    assert reply.private
    assert "The AI Horde refused this prompt" in reply.text
    [posted] = log_lines(harness, logs)
    assert "Safety incident" in posted and "CorruptPrompt" in posted
    assert alice.mention in posted and "an innocent looking prompt" in posted
    assert "paused for 30 minutes" in posted and "for 3 minutes" in posted
    # For maintainers: one JSON line per incident, without the member's id.
    review = Path(settings.section("safety")["review_file"]).read_text().splitlines()
    [line] = [json.loads(x) for x in review]
    assert line["rc"] == "CorruptPrompt"
    assert line["prompt"] == "an innocent looking prompt"
    assert line["negative"] == ""
    assert str(alice.id) not in review[0]

    # The whole bot holds back while the Horde times out its IP: nobody's request is sent.
    bob = harness.member("bob")
    held = await bob.slash("text", prompt="hello", model=LLAMA)
    assert held.private
    assert "paused requests from this bot" in held.text and "Try again in 3 minutes" in held.text
    described = await bob.slash("describe", image=("cat.png", b"not even read"))
    assert "paused requests from this bot" in described.text
    assert horde.count("POST", r"/generate/text/async") == 1
    assert horde.count("POST", r"/interrogate/async") == 0

    # After the pause, others can send again; the member who caused it stays paused.
    harness.clock.shift(181)
    await harness.restart()  # the pause and the cooldown are both stored
    assert "Writing on the AI Horde" in (await bob.slash("text", prompt="hello", model=LLAMA)).text
    assert "Try again in 27 minutes" in (await alice.slash("text", prompt="hello", model=LLAMA)).text


async def test_repeated_incidents_escalate_the_pause(harness: Harness, horde: FakeHorde) -> None:
    text_worker(horde)
    pauses = []
    for n in range(3):
        horde.inject(r"/generate/text/async", method="POST", status=400, rc="CorruptPrompt")
        member = harness.member(f"m{n}")
        await member.slash("text", prompt="hello", model=LLAMA)
        until = await harness.services.safety.ip_blocked_until()
        assert until is not None
        pauses.append(round((until - harness.clock.now()).total_seconds() / 60))
        harness.clock.shift((until - harness.clock.now()).total_seconds() + 1)
    assert pauses == [3, 9, 15]


async def test_horde_ip_timeout_honours_retry_after(harness: Harness, horde: FakeHorde) -> None:
    text_worker(horde)
    horde.inject(r"/generate/text/async", method="POST", status=403, rc="TimeoutIP", retry_after=600)
    alice = harness.member("alice")
    reply = await alice.slash("text", prompt="hello", model=LLAMA)
    assert "paused requests from this bot" in reply.text
    held = await harness.member("bob").slash("text", prompt="hello", model=LLAMA)
    assert "Try again in 10 minutes" in held.text
    assert horde.count("POST", r"/generate/text/async") == 1


async def test_rate_limits_per_member_and_per_guild(tmp_path: Path, horde: FakeHorde) -> None:
    text_worker(horde)
    settings = make_settings(
        tmp_path,
        horde.base_url,
        safety={"user_burst": 2, "user_per_minute": 6, "guild_burst": 3, "guild_per_minute": 6},
    )
    async with run_harness(settings) as h:
        alice = h.member("alice")
        for _ in range(2):
            assert "Writing on the AI Horde" in (await alice.slash("text", prompt="hi", model=LLAMA)).text
        limited = await alice.slash("text", prompt="hi", model=LLAMA)
        assert limited.private and not limited.deferred
        assert "You're sending requests too fast. Try again in 10 seconds." in limited.text
        # Every Horde-calling command shares the member's budget.
        upscale = await alice.slash("upscale", image=("cat.png", b"x"))
        assert "too fast" in upscale.text
        assert len(horde.text_jobs) == 2
        assert horde.count("POST", r"/interrogate/async") == 0
        # Commands that don't call the Horde are not limited.
        assert "too fast" not in (await alice.slash("logout")).text
        # Autocomplete is not limited either.
        assert await alice.autocomplete("text", "model", "llama")

        bob = h.member("bob")
        assert "Writing on the AI Horde" in (await bob.slash("text", prompt="hi", model=LLAMA)).text
        server = await bob.slash("text", prompt="hi", model=LLAMA)
        assert "This server is sending too many AI Horde requests right now. Try again in" in server.text
        # (the fake Horde's own 2/s limit may make the bot resend one, so count requests, not calls)
        assert len(horde.text_jobs) == 3

        await h.advance(10)
        assert "Writing on the AI Horde" in (await alice.slash("text", prompt="hi", model=LLAMA)).text


def _mentions_settings(body: dict[str, Any]) -> list[Any]:
    found = []
    for holder in (body, body.get("data") if isinstance(body.get("data"), dict) else None):
        if holder is not None and "allowed_mentions" in holder:
            found.append(holder["allowed_mentions"])
    return found


async def test_prompt_with_everyone_and_role_mentions_pings_nobody(
    harness: Harness, horde: FakeHorde
) -> None:
    text_worker(horde)
    logs = await with_log_channel(harness)
    role = harness.guild.create_role("Mods", mentionable=True)
    sneaky = f"@everyone <@&{role.id}> @here look"
    alice = harness.member("alice")
    reply = await alice.slash("text", prompt=sneaky, model=LLAMA)
    horde.finish_text(horde.last_request("text").id, texts=[f"Sure! @everyone <@&{role.id}> hi"])
    await harness.advance(POLL + 1)
    assert "Sure!" in reply.latest().text
    # A prompt that is refused is echoed in the moderation log, pinging nobody either.
    await harness.services.guild_config.update(harness.guild.id, blocked_words=["forbidden"])
    await alice.slash("text", prompt=f"forbidden @everyone <@&{role.id}>", model=LLAMA)
    assert log_lines(harness, logs)

    echoed = [
        r
        for r in harness.rest_requests()
        if isinstance(r.json, dict) and ("everyone" in (body := json.dumps(r.json)) or str(role.id) in body)
    ]
    assert len(echoed) >= 2
    for request in echoed:
        settings = _mentions_settings(request.json)
        assert settings, f"{request.method} {request.path} sent member text without allowed_mentions"
        for allowed in settings:
            assert allowed.get("parse", []) == []
            assert not allowed.get("roles") and not allowed.get("users")
    posted = harness.channel_messages() + harness.channel_messages(logs)
    assert any(str(role.id) in m.content for m in posted)
    for message in posted:
        assert harness.pings(message) == ([], [], False)


async def test_api_key_is_never_in_the_database_in_clear(harness: Harness, horde: FakeHorde) -> None:
    user = horde.add_user("alice", kudos=100)
    alice = harness.member("alice")
    reply = await login(alice, user.key)
    assert "alice#" in reply.text
    db_file = Path(harness.settings.database.url.removeprefix("sqlite+aiosqlite:///"))
    files = [p for p in db_file.parent.iterdir() if p.name.startswith(db_file.name)]
    assert db_file in files
    for path in files:  # the database and any journal / WAL file
        data = path.read_bytes()
        assert user.key.encode() not in data
        assert user.key.encode("utf-16-le") not in data


# --- alchemy NSFW check of /describe inputs ------------------------------------------------------------

ALCHEMY_POLL = 3.0  # AlchemySettings.poll_interval default


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(out, format="PNG")
    return out.getvalue()


def form_names(horde: FakeHorde) -> list[list[str]]:
    return [[f.name for f in r.forms] for r in horde.interrogations]


async def test_describe_checks_the_image_first_when_the_guild_asks(
    harness: Harness, horde: FakeHorde
) -> None:
    await harness.services.guild_config.update(harness.guild.id, alchemy_nsfw_check=True)
    alice = harness.member("alice")
    reply = await alice.slash("describe", image=("cat.png", png()))
    assert form_names(horde) == [["nsfw"]]  # only the check so far
    horde.finish_form(horde.last_request("interrogation").id, "nsfw", {"nsfw": True})
    await harness.advance(ALCHEMY_POLL + 1)
    refused = reply.latest()
    assert refused.private
    assert "can't be used here" in refused.text and "NSFW" in refused.text
    assert form_names(horde) == [["nsfw"]]  # never described

    again = await alice.slash("describe", image=("dog.png", png()))
    horde.finish_form(horde.last_request("interrogation").id, "nsfw", {"nsfw": False})
    await harness.advance(ALCHEMY_POLL + 1)
    assert form_names(horde)[-1] == ["caption"]
    assert "Describing your image" in again.latest().text
    # The image checked is the one described: converted once, a WebP of the upload's size.
    check, described = horde.interrogations[-2:]
    assert check.source_image == described.source_image
    checked = Image.open(io.BytesIO(base64.b64decode(check.source_image)))
    assert checked.format == "WEBP" and checked.size == (64, 48)


async def test_describe_without_the_guild_check_sends_no_nsfw_form(
    harness: Harness, horde: FakeHorde
) -> None:
    await harness.member("alice").slash("describe", image=("cat.png", png()))
    assert form_names(horde) == [["caption"]]


async def test_unanswered_nsfw_check_refuses_the_image(harness: Harness, horde: FakeHorde) -> None:
    await harness.services.guild_config.update(harness.guild.id, alchemy_nsfw_check=True)
    reply = await harness.member("alice").slash("describe", image=("cat.png", png()))
    await harness.advance(harness.services.safety.settings.image_check_timeout + 2 * ALCHEMY_POLL)
    assert "didn't answer in time" in reply.latest().text
    assert horde.count("DELETE", r"/interrogate/status/") == 1
    assert form_names(horde) == [["nsfw"]]


async def test_chat_reply_button_is_gated_like_commands(harness: Harness, horde: FakeHorde) -> None:
    text_worker(horde)
    alice = harness.member("alice")
    await alice.slash("chat start", model=LLAMA)
    (thread,) = harness.channel.threads
    for prompt in (BLOCKED, "l0l1 nude"):
        await alice.slash("text", prompt=prompt, model=LLAMA)
    intro = harness.channel_messages(thread)[0]
    shown = await alice.click(intro, label="Reply")
    said = await alice.submit_modal(shown, {"chat:reply:message": "hello there"})
    assert said.private
    assert "Try again in 5 minutes" in said.text
    assert horde.count("POST", r"/generate/text/async") == 0


async def test_chat_line_completing_a_refused_context_is_refused(harness: Harness, horde: FakeHorde) -> None:
    text_worker(horde)
    alice = harness.member("alice")
    await alice.slash("chat start", model=LLAMA, persona="a cheerful loli")
    (thread,) = harness.channel.threads
    # The whole conversation goes to the Horde, so it is what is checked.
    said = await alice.slash("chat say", channel=thread, message="now get naked")
    assert said.private and REFUSED in said.text
    assert horde.count("POST", r"/generate/text/async") == 0


async def test_describe_image_menu_is_checked_and_gated(harness: Harness, horde: FakeHorde) -> None:
    await harness.services.guild_config.update(harness.guild.id, alchemy_nsfw_check=True)
    alice, bob = harness.member("alice"), harness.member("bob")
    posted = await bob.send("look at this", attachments=[("photo.png", png())])
    reply = await alice.context_menu("Describe image", posted)
    horde.finish_form(horde.last_request("interrogation").id, "nsfw", {"nsfw": True})
    await harness.advance(ALCHEMY_POLL + 1)
    assert "can't be used here" in reply.latest().text
    # The menu is a Horde-calling command like the slash commands: it shares the member's budget.
    await harness.services.guild_config.update(harness.guild.id, alchemy_nsfw_check=False)
    burst = harness.services.safety.settings.user_burst
    replies = [await alice.context_menu("Describe image", posted) for _ in range(burst + 1)]
    limited = [r for r in replies if "too fast" in r.text]
    assert limited and all(r.private for r in limited)


async def test_ip_timeout_on_an_alchemy_request_pauses_the_bot(harness: Harness, horde: FakeHorde) -> None:
    text_worker(horde)
    horde.inject(r"/interrogate/async", method="POST", status=403, rc="TimeoutIP")
    alice = harness.member("alice")
    reply = await alice.slash("describe", image=("cat.png", png()))
    assert "paused requests from this bot" in reply.text
    held = await harness.member("bob").slash("text", prompt="hello", model=LLAMA)
    assert "Try again in 3 minutes" in held.text
    assert horde.count("POST", r"/generate/text/async") == 0
    # Nobody's fault: no member was paused for it.
    assert await strikes(harness) == []


# --- audit of #4: the bot's own log, and Discord rate limits -------------------------------------------


async def test_a_refusal_is_in_the_bots_own_log_too(
    harness: Harness, horde: FakeHorde, caplog: pytest.LogCaptureFixture
) -> None:
    text_worker(horde)
    await with_log_channel(harness)
    alice = harness.member("alice")
    reply = await alice.slash("text", prompt=BLOCKED, model=LLAMA)
    assert REFUSED in reply.text
    [record] = [r for r in caplog.records if r.name == "bot.services.safety" and "Refused" in r.getMessage()]
    assert record.levelno == logging.WARNING
    line = record.getMessage()
    assert str(alice.id) in line and str(harness.guild.id) in line and BLOCKED in line


async def test_a_discord_rate_limit_on_the_log_channel_still_refuses_and_pauses(
    harness: Harness, horde: FakeHorde
) -> None:
    text_worker(horde)
    logs = await with_log_channel(harness)
    # Discord answers 429 to the moderation post (discord.py gave up waiting): the refusal must not break.
    harness.env.inject_error(
        "POST", f"/channels/{logs.id}/messages", status=429, message="You are being rate limited.", times=2
    )
    alice = harness.member("alice")
    first = await alice.slash("text", prompt=BLOCKED, model=LLAMA)
    assert first.private and REFUSED in first.text
    second = await alice.slash("text", prompt=BLOCKED, model=LLAMA)
    assert "Your requests are paused for 5 minutes" in second.text
    assert horde.count("POST", r"/generate/text/async") == 0
    assert log_lines(harness, logs) == []
    # Once Discord accepts posts again, the next refusal reaches the moderators.
    bob = harness.member("bob")
    await bob.slash("text", prompt=BLOCKED, model=LLAMA)
    [posted] = log_lines(harness, logs)
    assert bob.mention in posted


async def test_login_and_shared_key_commands_share_the_members_rate_limit(
    tmp_path: Path, horde: FakeHorde
) -> None:
    settings = make_settings(
        tmp_path, horde.base_url, safety={"user_burst": 2, "user_per_minute": 6, "guild_burst": 30}
    )
    user = horde.add_user("alice", kudos=1000)
    async with run_harness(settings) as h:
        alice = h.member("alice")
        # Each key sent through the /login form costs a Horde call: a member cannot send them endlessly.
        for _ in range(2):
            shown = await alice.slash("login")
            wrong = await alice.submit_modal(shown, {"login:apikey": "0123456789abcdefghij"})
            assert "linked" not in wrong.text.lower()
        finds = horde.count("GET", r"/find_user")
        shown = await alice.slash("login")
        assert shown.modal_field_ids == ["login:apikey"]
        limited = await alice.submit_modal(shown, {"login:apikey": user.apikey or ""})
        assert limited.private and "You're sending requests too fast" in limited.text
        assert horde.count("GET", r"/find_user") == finds
        for command in ("sharedkey info", "sharedkey create"):
            options = {"name": "friends"} if command == "sharedkey create" else {}
            reply = await alice.slash(command, **options)
            assert reply.private and "too fast" in reply.text, command
        assert horde.count("POST", r"/sharedkeys") == 0
        await h.advance(10)
        shown = await alice.slash("login")
        linked = await alice.submit_modal(shown, {"login:apikey": user.apikey or ""})
        assert "linked" in linked.text.lower()
        assert horde.count("GET", r"/find_user") == finds + 1

        # While the Horde has the bot's IP timed out, nothing is sent for anyone, logins included.
        await h.services.safety.note_ip_timeout(600)
        bob = h.member("bob")
        paused = await bob.submit_modal(await bob.slash("login"), {"login:apikey": user.apikey or ""})
        assert paused.private and "paused requests from this bot" in paused.text
        assert horde.count("GET", r"/find_user") == finds + 1
