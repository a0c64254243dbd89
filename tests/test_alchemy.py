"""Alchemy driven as members do: captions (alt text), tags, upscaling, face fixing, NSFW checks."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import discord
import pytest
from PIL import Image
from sqlalchemy import text

from tests.conftest import make_settings
from tests.fakes.horde import FakeHorde
from tests.harness import Harness, Reply, run_harness
from tests.support.replies import expire_reply_tokens

POLL = 3.0  # AlchemySettings.poll_interval default


def png(width: int = 64, height: int = 48, colour: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(out, format="PNG")
    return out.getvalue()


def plain(text: str) -> str:
    """Text as read aloud: bold markers dropped."""
    return text.replace("**", "")


async def finish_and_wait(harness: Harness, horde: FakeHorde, **result: object) -> None:
    request = horde.last_request("interrogation")
    horde.finish_form(request.id, **result)  # type: ignore[arg-type]
    await harness.advance(POLL + 1)


async def job_rows(h: Harness) -> list[dict[str, object]]:
    async with h.runtime.db.session() as session:
        rows = (await session.execute(text("SELECT * FROM alchemy_text_jobs ORDER BY id"))).all()
        return [dict(r._mapping) for r in rows]


async def test_describe_gives_alt_text_privately(harness: Harness, horde: FakeHorde) -> None:
    alice = harness.member("alice")
    reply = await alice.slash("describe", image=("cat.png", png()))
    assert reply.deferred and reply.ephemeral
    assert "Describing your image" in reply.text

    request = horde.last_request("interrogation")
    assert [f.name for f in request.forms] == ["caption"]
    # The upload was re-encoded as WebP before it was sent.
    sent = base64.b64decode(request.source_image)
    assert sent[:4] == b"RIFF" and sent[8:12] == b"WEBP"

    await finish_and_wait(harness, horde)
    done = reply.latest()
    assert done.ephemeral
    assert "Alt text: A fake caption of a test image." in plain(done.text)
    # The Horde request id is a capability: never shown.
    assert request.id not in harness.sent_text()
    rows = await job_rows(harness)
    assert rows[0]["state"] == "done" and rows[0]["horde_id"] == request.id


async def test_describe_with_tags_and_public(harness: Harness, horde: FakeHorde) -> None:
    alice = harness.member("alice")
    reply = await alice.slash("describe", image=("cat.png", png()), tags=True, public=True)
    assert not reply.ephemeral
    request = horde.last_request("interrogation")
    assert sorted(f.name for f in request.forms) == ["caption", "interrogation"]
    await finish_and_wait(harness, horde)
    done = reply.latest()
    assert not done.ephemeral
    assert "Alt text:" in plain(done.text)
    assert "Tags: test pattern (91%), solid colour (55%)" in plain(done.text)
    assert any("Alt text" in m.content for m in harness.channel_messages())


async def test_describe_image_context_menu(harness: Harness, horde: FakeHorde) -> None:
    alice, bob = harness.member("alice"), harness.member("bob")
    posted = await bob.send("look at this", attachments=[("photo.png", png())])
    reply = await alice.context_menu("Describe image", posted)
    assert reply.ephemeral
    await finish_and_wait(harness, horde, form="caption", result={"caption": "a red rectangle"})
    assert "Alt text: A red rectangle." in plain(reply.latest().text)


async def test_describe_context_menu_on_message_without_image(harness: Harness, horde: FakeHorde) -> None:
    alice, bob = harness.member("alice"), harness.member("bob")
    posted = await bob.send("just words")
    reply = await alice.context_menu("Describe image", posted)
    assert reply.private
    assert "no image attached" in reply.text
    assert horde.count("POST", r"/interrogate/async") == 0


async def test_non_image_is_refused_before_calling_the_horde(harness: Harness, horde: FakeHorde) -> None:
    reply = await harness.member("alice").slash("describe", image=("notes.txt", b"hello, not an image"))
    assert reply.private
    assert "not an image I can read" in reply.text
    assert horde.count("POST", r"/interrogate/async") == 0
    assert await job_rows(harness) == []


async def test_image_with_too_many_pixels_is_refused(harness: Harness, horde: FakeHorde) -> None:
    reply = await harness.member("alice").slash("upscale", image=("wide.png", png(4000, 8)))
    assert reply.private
    assert "4000×8" in reply.text and "3072×3072" in reply.text
    assert horde.count("POST", r"/interrogate/async") == 0


async def test_file_over_the_size_limit_is_refused_without_download(tmp_path: Path, horde: FakeHorde) -> None:
    settings = make_settings(tmp_path, horde.base_url, alchemy={"max_upload_bytes": 2048})
    big = png(300, 300, (1, 2, 3)) + b"\0" * 4096
    async with run_harness(settings) as h:
        reply = await h.member("alice").slash("describe", image=("big.png", big))
        assert reply.private
        assert "images may be at most" in reply.text
        assert horde.count("POST", r"/interrogate/async") == 0


async def test_form_that_expires_repeatedly_gives_a_clear_message(harness: Harness, horde: FakeHorde) -> None:
    reply = await harness.member("alice").slash("describe", image=("cat.png", png()))
    request = horde.last_request("interrogation")
    # Each worker has 3 minutes once it takes the form; the third expiry faults it for good.
    for _ in range(3):
        horde.start_form(request.id, "caption")
        horde.expire_form(request.id, "caption")
        await harness.advance(POLL + 1)
    done = reply.latest()
    assert "could not finish the caption" in plain(done.text)
    assert "3 minutes" in plain(done.text)
    assert (await job_rows(harness))[0]["state"] == "failed"


async def test_request_that_expires_on_the_horde_gives_a_clear_message(
    harness: Harness, horde: FakeHorde
) -> None:
    reply = await harness.member("alice").slash("describe", image=("cat.png", png()))
    await harness.advance(POLL + 1)
    assert "Describing" in reply.latest().text
    horde.expire(horde.last_request("interrogation").id)
    await harness.advance(POLL + 1)
    done = reply.latest()
    assert "dropped this request" in plain(done.text)
    assert "20 minutes" in plain(done.text)
    assert (await job_rows(harness))[0]["state"] == "expired"


async def test_upscale_posts_the_result_as_an_attachment(harness: Harness, horde: FakeHorde) -> None:
    reply = await harness.member("alice").slash(
        "upscale", image=("cat.png", png()), upscaler="RealESRGAN_x2plus"
    )
    assert not reply.ephemeral
    request = horde.last_request("interrogation")
    assert [f.name for f in request.forms] == ["RealESRGAN_x2plus"]
    await finish_and_wait(harness, horde)
    done = reply.latest()
    assert "Upscaled with RealESRGAN_x2plus" in plain(done.text)
    assert [a.filename for a in done.attachments] == ["cat_upscaled.webp"]
    data = await done.attachments[0].read()
    assert data[8:12] == b"WEBP"


async def test_facefix_uses_the_chosen_fixer(harness: Harness, horde: FakeHorde) -> None:
    reply = await harness.member("alice").slash("facefix", image=("face.jpg", png()), fixer="GFPGAN")
    request = horde.last_request("interrogation")
    assert [f.name for f in request.forms] == ["GFPGAN"]
    await finish_and_wait(harness, horde)
    done = reply.latest()
    assert "Faces fixed with GFPGAN" in plain(done.text)
    assert done.attachments[0].filename == "face_facefixed.webp"


async def test_nsfwcheck_for_moderators(harness: Harness, horde: FakeHorde) -> None:
    mods = harness.guild.create_role("mods", permissions=discord.Permissions(manage_messages=True))
    mod = harness.member("mod", roles=[mods])
    reply = await mod.slash("nsfwcheck", image=("x.png", png()))
    assert reply.ephemeral
    await finish_and_wait(harness, horde, form="nsfw", result={"nsfw": True})
    assert "flags this image as NSFW" in plain(reply.latest().text)
    with pytest.raises(Exception, match="not visible"):
        await harness.member("alice").slash("nsfwcheck", image=("x.png", png()))


async def test_polling_is_paced(harness: Harness, horde: FakeHorde) -> None:
    # The fake's limiter counts real seconds while this test moves virtual ones: 60 virtual seconds pass
    # in well under one real second, so its 10-per-second limit would trip. Pacing is what is tested here.
    horde.enforce_rate_limits = False
    await harness.member("alice").slash("describe", image=("cat.png", png()))
    await harness.advance(60)
    polls = horde.count("GET", r"/interrogate/status/")
    assert 17 <= polls <= 21, polls  # one every 3 s, not a tight loop


async def test_job_is_resumed_after_a_restart(harness: Harness, horde: FakeHorde) -> None:
    alice = harness.member("alice")
    await alice.slash("describe", image=("cat.png", png()), public=True)
    await harness.restart()
    request = horde.last_request("interrogation")
    horde.finish_form(request.id, result={"caption": "a resumed caption"})
    await harness.advance(POLL + 1)
    # The public result is in the channel: in the command's reply, edited by the restarted process through
    # the token stored with the job.
    posted = [plain(m.content) for m in harness.channel_messages()]
    assert any("Alt text: A resumed caption." in c for c in posted), posted
    assert (await job_rows(harness))[0]["state"] == "done"


async def test_horde_refusal_is_shown_and_recorded(harness: Harness, horde: FakeHorde) -> None:
    horde.maintenance_mode = True
    reply: Reply = await harness.member("alice").slash("describe", image=("cat.png", png()))
    assert reply.private
    assert "maintenance" in reply.text
    assert (await job_rows(harness))[0]["state"] == "failed"


async def test_private_result_after_a_restart_arrives_by_dm(harness: Harness, horde: FakeHorde) -> None:
    alice = harness.member("alice")
    await alice.slash("describe", image=("cat.png", png()))
    await expire_reply_tokens(harness)  # restarted too late to edit the reply (tests/test_replies.py)
    await harness.restart()
    request = horde.last_request("interrogation")
    horde.finish_form(request.id, result={"caption": "a private caption"})
    await harness.advance(POLL + 1)
    # Private results are never posted publicly; without the interaction they go by DM.
    assert not any("private caption" in m.content for m in harness.channel_messages())
    dms = [m.content for m in alice.actor.user.dm_channel.history()]
    assert any("Alt text: A private caption." in plain(c) for c in dms), dms


async def test_failure_of_a_public_upscale_is_shown_only_to_the_member(
    harness: Harness, horde: FakeHorde
) -> None:
    reply = await harness.member("alice").slash("upscale", image=("cat.png", png()))
    assert not reply.ephemeral
    horde.expire(horde.last_request("interrogation").id)
    await harness.advance(POLL + 1)
    done = reply.latest()
    assert "dropped this request" in plain(done.text) and "try again" in plain(done.text)
    assert done.private
    assert not any("dropped this request" in m.content for m in harness.channel_messages())


async def test_public_failure_after_a_restart_goes_by_dm(harness: Harness, horde: FakeHorde) -> None:
    alice = harness.member("alice")
    await alice.slash("facefix", image=("face.png", png()))
    await expire_reply_tokens(harness)  # restarted too late to use the reply (tests/test_replies.py)
    await harness.restart()
    horde.expire(horde.last_request("interrogation").id)
    await harness.advance(POLL + 1)
    assert not any("dropped this request" in m.content for m in harness.channel_messages())
    dms = [plain(m.content) for m in alice.actor.user.dm_channel.history()]
    assert any("dropped this request" in c for c in dms), dms


ORIGINAL = "/webhooks/*/messages/@original"


async def test_discord_429_on_the_working_note_does_not_lose_the_job(
    harness: Harness, horde: FakeHorde
) -> None:
    harness.discord_rate_limits("PATCH", ORIGINAL, times=1)
    reply = await harness.member("alice").slash("describe", image=("cat.png", png()), public=True)
    assert "went wrong" not in reply.text
    await finish_and_wait(harness, horde)
    assert "Alt text: A fake caption of a test image." in plain(reply.latest().text)


async def test_discord_429_when_delivering_posts_the_result_in_the_channel(
    harness: Harness, horde: FakeHorde
) -> None:
    reply = await harness.member("alice").slash("upscale", image=("cat.png", png()))
    harness.discord_rate_limits("PATCH", ORIGINAL, times=1)
    await finish_and_wait(harness, horde)
    assert "Upscaled" not in plain(reply.latest().text)  # the edit was refused...
    posted = [m for m in harness.channel_messages() if "Upscaled with" in m.content]
    assert posted, "...so the result is posted in the channel instead"
    assert [a.filename for a in posted[0].attachments] == ["cat_upscaled.webp"]


async def test_image_the_horde_cannot_read_says_what_to_do(harness: Harness, horde: FakeHorde) -> None:
    horde.inject(r"/interrogate/async", status=400, rc="ImageValidationFailed")
    reply = await harness.member("alice").slash("upscale", image=("cat.png", png()))
    assert reply.private
    assert "could not read that image" in reply.text and "Try a PNG, JPEG or WebP" in reply.text


async def test_request_cut_off_by_a_restart_before_the_horde_answered_is_sent_again_once(
    harness: Harness, horde: FakeHorde
) -> None:
    """The row goes `submitting` before the POST leaves; a kill before the Horde's answer is stored leaves
    it so. The Horde has no idempotency on its POSTs: the restarted bot sends it again, once, and the
    member gets one result (the same engine as /generate: tests/test_generation_engine.py)."""
    alice = harness.member("alice")
    # The Horde's limiter keeps it waiting in line: what a restart needs to send it is stored.
    horde.inject(r"/interrogate/async$", method="POST", status=429, times=None)
    reply = await alice.slash("upscale", image=("cat.png", png()))
    assert "Waiting to be sent" in plain(reply.latest().text)
    [job] = await job_rows(harness)
    async with harness.runtime.db.session() as session:
        # The process stored `submitting`, its POST left, and it was killed before the answer came back.
        await session.execute(
            text("UPDATE alchemy_text_jobs SET state = 'submitting' WHERE id = :id"), {"id": job["id"]}
        )
    horde.clear_injections()
    await harness.restart()
    await harness.advance(1)
    accepted = [c for c in horde.calls_to(r"/interrogate/async$", "POST") if c.status == 202]
    assert len(accepted) == 1, "sent again once"
    await finish_and_wait(harness, horde)
    posted = [m for m in harness.channel_messages() if "Upscaled with" in m.content]
    assert len(posted) == 1 and [a.filename for a in posted[0].attachments] == ["cat_upscaled.webp"]
    [job] = await job_rows(harness)
    assert job["state"] == "done" and job["interrupted_sends"] == 1
    dms = alice.actor.user.dm_channel
    assert dms is None or not any("restarted while sending" in m.content for m in dms.history())


async def test_horde_429_while_polling_waits_as_told_and_still_delivers(
    harness: Harness, horde: FakeHorde
) -> None:
    horde.enforce_rate_limits = False
    reply = await harness.member("alice").slash("describe", image=("cat.png", png()))
    horde.inject(r"/interrogate/status/", status=429, retry_after=30, times=1)
    await harness.advance(POLL + 1)  # the limited poll
    polls_after_limit = horde.count("GET", r"/interrogate/status/")
    await harness.advance(20)  # still inside the Retry-After the Horde gave
    assert horde.count("GET", r"/interrogate/status/") == polls_after_limit
    assert "Describing" in reply.latest().text
    await finish_and_wait(harness, horde)
    await harness.advance(30)
    assert "Alt text: A fake caption of a test image." in plain(reply.latest().text)
