"""The job engine under load, as members see it: a line instead of refusals when the Horde's limits
apply, Cancel while waiting in line, a restart with jobs in line, polling that backs off while nothing
moves, and outages told and recovered from.

These tests run the fake Horde's limiter as the real server counts (fixed windows, `Retry-After: 0`
inside the second) on the simulator's virtual clock, so the bot meets the Horde's real limits."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from sqlalchemy import text

from tests.conftest import make_settings
from tests.fakes.horde import FakeHorde
from tests.fakes.horde.core import ANON_APIKEY
from tests.harness import Harness, Member, Reply, run_harness, virtual_seconds
from tests.test_alchemy import png

BUSY = {"cooldown_seconds": 0, "max_per_user": 10, "max_per_guild": 100}
LENIENT_SAFETY = {"user_burst": 100, "guild_burst": 100}


def real_limits(horde: FakeHorde, h: Harness) -> None:
    horde.clock = lambda: virtual_seconds(h)
    horde.horde_limiter = True
    horde.enforce_rate_limits = True
    horde.reset_rate_limits()


async def rows(h: Harness) -> list[dict[str, Any]]:
    async with h.runtime.db.session() as session:
        result = (await session.execute(text("SELECT * FROM generation_jobs ORDER BY id"))).all()
        return [dict(r._mapping) for r in result]


async def generate(member: Member, prompt: str, **options: Any) -> Reply:
    return await member.slash("generate", prompt=prompt, **options)


def plain(value: str) -> str:
    return value.replace("**", "")


def posted_prompts(horde: FakeHorde) -> list[str]:
    return [str(c.json["prompt"]) for c in horde.calls_to(r"/generate/async$", "POST") if c.status == 202]


async def test_a_burst_waits_in_line_with_its_position_and_is_sent_in_order(
    tmp_path: Path, horde: FakeHorde
) -> None:
    settings = make_settings(tmp_path, horde.base_url, generation_jobs=BUSY, safety=LENIENT_SAFETY)
    async with run_harness(settings) as h:
        real_limits(horde, h)
        members = [h.member(f"member{i}") for i in range(6)]
        replies = [await generate(m, f"picture {i}") for i, m in enumerate(members)]
        # Nobody is refused: two are sent at once, the others wait their turn and see where they are.
        assert all(not r.private for r in replies)
        assert posted_prompts(horde) == ["picture 0", "picture 1"]
        assert "Waiting to be sent to the AI Horde (position 1)" in replies[2].latest().text
        assert "Waiting to be sent to the AI Horde (position 4)" in replies[5].latest().text
        await h.advance(1.2)
        assert posted_prompts(horde) == [f"picture {i}" for i in range(4)]
        assert "Waiting to be sent to the AI Horde (position 2)" in replies[5].latest().text
        await h.advance(1.2)
        assert posted_prompts(horde) == [f"picture {i}" for i in range(6)]
        # The Horde's limiter never had to refuse the bot.
        assert horde.count("POST", r"/generate/async$") == 6
        assert [r["state"] for r in await rows(h)] == ["waiting"] * 6
        await h.advance(3)
        assert "Waiting to be sent" not in replies[5].latest().text


async def test_cancel_while_waiting_to_be_sent_sends_nothing(tmp_path: Path, horde: FakeHorde) -> None:
    settings = make_settings(tmp_path, horde.base_url, generation_jobs=BUSY, safety=LENIENT_SAFETY)
    async with run_harness(settings) as h:
        real_limits(horde, h)
        alice, bob, carol = h.member("alice"), h.member("bob"), h.member("carol")
        await generate(alice, "first")
        await generate(bob, "second")
        waiting = await generate(carol, "never sent")
        progress = waiting.latest()
        assert "Waiting to be sent to the AI Horde (position 1)" in progress.text
        assert progress.message is not None
        refused = await alice.click(progress.message, label="Cancel")
        assert refused.private and "Only the member who asked" in refused.text
        answer = await carol.click(progress.message, label="Cancel")
        assert answer.private and "Cancelled" in answer.text
        assert "Cancelled before it was sent to the AI Horde" in plain(waiting.latest().text)
        await h.advance(5)
        assert posted_prompts(horde) == ["first", "second"]
        assert all("never sent" not in str(c.json) for c in horde.calls)
        assert [r["state"] for r in await rows(h)] == ["waiting", "waiting", "cancelled"]


async def test_restart_while_jobs_wait_to_be_sent_sends_each_once_in_order(
    tmp_path: Path, horde: FakeHorde
) -> None:
    settings = make_settings(tmp_path, horde.base_url, generation_jobs=BUSY, safety=LENIENT_SAFETY)
    async with run_harness(settings) as h:
        real_limits(horde, h)
        replies = [await generate(h.member(f"member{i}"), f"picture {i}") for i in range(5)]
        assert posted_prompts(horde) == ["picture 0", "picture 1"]
        assert [r["state"] for r in await rows(h)] == ["waiting", "waiting", "queued", "queued", "queued"]
        await h.restart()  # the old process dies with three jobs in line
        await h.advance(3)
        assert posted_prompts(horde) == [f"picture {i}" for i in range(5)]  # each once, in order
        # The new process can't know the old one's last sends: the Horde's limiter may refuse one POST
        # (429, not processed): it goes back to the head of the line, so the order holds.
        assert horde.count("POST", r"/generate/async$") <= 6
        assert [r["state"] for r in await rows(h)] == ["waiting"] * 5
        for request in horde.jobs:
            horde.finish(request.id)
        await h.advance(31)
        delivered = [m for m in h.channel_messages() if m.attachments]
        assert len(delivered) == 5
        assert all(r["state"] == "done" for r in await rows(h))
        # The old process's interactions died with it: results are posted, the progress messages retired.
        # Each in its own reply: the restarted process edits it through the token stored with the job.
        assert all(r.latest().attachments for r in replies)


async def cut_off_while_sending(h: Harness, horde: FakeHorde, job_id: int) -> None:
    """What a process killed while a job's POST was on its way leaves: the row `submitting` (stored just
    before the POST leaves), and the request created at the Horde, its answer never stored."""
    async with h.runtime.db.session() as session:
        await session.execute(
            text("UPDATE generation_jobs SET state = 'submitting' WHERE id = :id"), {"id": job_id}
        )
        payload = (
            await session.execute(text("SELECT payload FROM generation_jobs WHERE id = :id"), {"id": job_id})
        ).scalar_one()
    horde.reset_rate_limits()  # the dead process's POST went within the Horde's limits
    answer = httpx.post(
        f"{horde.base_url}/v2/generate/async",
        json=json.loads(payload) if isinstance(payload, str) else payload,
        headers={"apikey": ANON_APIKEY},
    )
    assert answer.status_code == 202, answer.text


async def test_a_restart_while_a_post_was_on_its_way_sends_it_again_once_first_in_line(
    tmp_path: Path, horde: FakeHorde
) -> None:
    """The Horde has no idempotency on its creating POST and no way to find one's own requests: the job cut
    off while sending is sent again, before the jobs that were waiting behind it, and its member gets one
    result (the first request, had it run, is nobody's)."""
    settings = make_settings(tmp_path, horde.base_url, generation_jobs=BUSY, safety=LENIENT_SAFETY)
    async with run_harness(settings) as h:
        real_limits(horde, h)
        replies = [await generate(h.member(f"member{i}"), f"picture {i}") for i in range(4)]
        assert posted_prompts(horde) == ["picture 0", "picture 1"]
        await cut_off_while_sending(h, horde, job_id=3)  # "picture 2", the head of the line
        await h.restart()
        await h.advance(3)
        assert posted_prompts(horde) == ["picture 0", "picture 1", "picture 2", "picture 2", "picture 3"]
        jobs = await rows(h)
        assert [r["state"] for r in jobs] == ["waiting"] * 4
        assert [r["interrupted_sends"] for r in jobs] == [0, 0, 1, 0]
        for request in horde.jobs:
            horde.finish(request.id)
        await h.advance(31)
        delivered = [m for m in h.channel_messages() if m.attachments]
        shown = [e.description or "" for m in delivered for e in m.embeds]
        assert len(delivered) == 4 and sum("picture 2" in d for d in shown) == 1
        assert all(r["state"] == "done" for r in await rows(h))
        # Each in its own reply: the restarted process edits it through the token stored with the job.
        assert all(r.latest().attachments for r in replies[2:])
        assert not any("restarted while sending" in m.content for m in h.channel_messages())


async def test_a_post_cut_off_twice_is_failed_and_the_member_told_to_try_again(
    tmp_path: Path, horde: FakeHorde
) -> None:
    """A process that dies in the same moment again must not keep creating Horde requests: the second
    cut-off fails the job, and its member reads why."""
    settings = make_settings(tmp_path, horde.base_url, generation_jobs=BUSY, safety=LENIENT_SAFETY)
    async with run_harness(settings) as h:
        real_limits(horde, h)
        reply = await generate(h.member("alice"), "an unlucky picture")
        await cut_off_while_sending_again(h, horde)
        await h.advance(3)
        # Sent, sent again (both POSTs cut off before their answer was stored), never a third time.
        assert posted_prompts(horde) == ["an unlucky picture"] * 2
        [job] = await rows(h)
        assert job["state"] == "failed" and job["interrupted_sends"] == 1
        told = [plain(m.content) for m in h.channel_messages()]
        assert sum("The bot restarted while sending this request. Please try again." in t for t in told) == 1
        assert not [m for m in h.channel_messages() if m.attachments]
        # The notice is the member's own reply: the restarted process edits it through the stored token.
        assert "The bot restarted while sending this request." in plain(reply.latest().text)


async def test_a_post_cut_off_after_its_member_cancelled_it_is_not_sent_again(
    tmp_path: Path, horde: FakeHorde
) -> None:
    """Cancel pressed while the POST was on its way, then the process died: the member's word holds."""
    settings = make_settings(tmp_path, horde.base_url, generation_jobs=BUSY, safety=LENIENT_SAFETY)
    async with run_harness(settings) as h:
        real_limits(horde, h)
        replies = [await generate(h.member(f"member{i}"), f"picture {i}") for i in range(3)]
        await cut_off_while_sending(h, horde, job_id=3)
        async with h.runtime.db.session() as session:
            await session.execute(text("UPDATE generation_jobs SET state = 'cancelling' WHERE id = 3"))
        await h.restart()
        await h.advance(3)
        assert posted_prompts(horde) == ["picture 0", "picture 1", "picture 2"], "not sent again"
        assert [r["state"] for r in await rows(h)] == ["waiting", "waiting", "cancelled"]
        # The notice is the member's own reply: the restarted process edits it through the stored token.
        assert "Cancelled" in plain(replies[2].latest().text)
        assert any("Cancelled" in plain(m.content) for m in h.channel_messages())
        assert not any("restarted while sending" in m.content for m in h.channel_messages())


async def cut_off_while_sending_again(h: Harness, horde: FakeHorde) -> None:
    """The one job is sent, cut off by a kill, sent again by the restarted process, and cut off again."""
    [job] = await rows(h)
    assert job["state"] == "waiting"
    async with h.runtime.db.session() as session:
        # As if the first POST's answer was never stored (the row went `submitting` before it).
        await session.execute(
            text("UPDATE generation_jobs SET state = 'submitting', horde_id = NULL WHERE id = :id"),
            {"id": job["id"]},
        )
    horde.inject(r"/generate/async$", method="POST", status=429, times=None)  # the resend waits in line
    await h.restart()
    [job] = await rows(h)
    assert job["state"] == "queued" and job["interrupted_sends"] == 1
    horde.clear_injections()
    await cut_off_while_sending(h, horde, job_id=job["id"])
    await h.restart()


async def test_polling_backs_off_while_stuck_and_resets_when_the_request_moves(
    tmp_path: Path, horde: FakeHorde
) -> None:
    horde.enforce_rate_limits = False
    horde.add_worker("busy-worker", models=["Busy Model"])
    horde.add_worker("idle-worker", models=["Idle Model"])
    settings = make_settings(tmp_path, horde.base_url, generation_jobs=BUSY)
    async with run_harness(settings) as h:
        alice = h.member("alice")
        reply = await generate(alice, "a stuck lighthouse", model="Busy Model")
        request = horde.last_request("image")
        # The real Horde's state with no worker free: wait_time 0, queue_position 1, on every check.
        horde.set_queue(request.id, 1, wait_time=0)
        await h.advance(60)
        first_minute = horde.count("GET", r"/generate/check/")
        await h.advance(120)
        later = horde.count("GET", r"/generate/check/") - first_minute
        assert later <= 12, f"{later} checks in 2 minutes of a stuck request (at most 1 per 10 s)"
        shown = reply.latest().text
        assert "No worker has taken this request yet" in shown
        assert "Idle Model" in shown  # a model whose workers are free right now
        assert "Waiting for: 2 min" in shown
        # A worker takes it: checks are frequent again at once.
        horde.start_processing(request.id)
        await h.advance(11)  # at most one backed-off wait (backoff_max) until the change is seen
        seen = horde.count("GET", r"/generate/check/")
        await h.advance(10)
        assert horde.count("GET", r"/generate/check/") - seen >= 3
        assert "Working on it" in reply.latest().text
        assert "No worker has taken" not in reply.latest().text


async def test_outage_is_told_on_the_progress_message_and_cleared(harness: Harness, horde: FakeHorde) -> None:
    horde.enforce_rate_limits = False
    reply = await generate(harness.member("alice"), "through an outage")
    request = horde.last_request("image")
    horde.set_queue(request.id, 3, wait_time=40)
    await harness.advance(3)
    assert "Queue position 3" in reply.latest().text
    horde.set_down(True)  # 503s from the proxy in front of a dead Horde
    await harness.advance(25)
    shown = reply.latest().text
    assert "The AI Horde isn't answering right now" in shown and "Your request is safe" in shown
    horde.set_down(False)
    await harness.advance(35)
    assert "isn't answering" not in reply.latest().text
    assert "Queue position 3" in reply.latest().text
    horde.finish(request.id)
    await harness.advance(31)
    assert len(reply.latest().attachments) == 1


# --- alchemy and text: the same outage notice --------------------------------------------------------


def _png() -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(out, format="PNG")
    return out.getvalue()


async def test_alchemy_outage_is_told_and_cleared(harness: Harness, horde: FakeHorde) -> None:
    horde.enforce_rate_limits = False
    reply = await harness.member("alice").slash("describe", image=("cat.png", _png()))
    assert "Describing your image" in reply.text
    horde.set_down(True)
    await harness.advance(40)
    shown = reply.latest().text
    assert "The AI Horde isn't answering right now" in shown and "Your request is safe" in shown
    horde.set_down(False)
    await harness.advance(70)
    assert "answering again" in reply.latest().text
    request = horde.last_request("interrogation")
    horde.finish_form(request.id)
    await harness.advance(4)
    assert "Alt text: A fake caption of a test image." in plain(reply.latest().text)


async def test_text_outage_is_told_and_cleared(harness: Harness, horde: FakeHorde) -> None:
    horde.enforce_rate_limits = False
    model = "koboldcpp/Llama-3-8B"
    horde.add_worker("t1", models=[model], type="text")
    reply = await harness.member("alice").slash("text", prompt="A haiku about kudos", model=model)
    assert "Writing on the AI Horde" in reply.text
    horde.set_down(True)
    await harness.advance(60)
    assert "The AI Horde isn't answering right now" in reply.latest().text
    horde.set_down(False)
    await harness.advance(90)
    assert "answering again" in reply.latest().text
    horde.finish_text(horde.last_request("text").id, texts=["Kudos flow like rain"])
    await harness.advance(6)
    assert "Kudos flow like rain" in reply.latest().text


# --- text and alchemy run through the same engine: a line with positions, Cancel in line, restarts ---------

LLAMA = "koboldcpp/Llama-3-8B"
# Two bot processes share the IP: this one keeps 2 text POSTs per 2 s, so a third waits longer than a
# command waits inline, and goes in line.
SHARED_IP = {"processes": 2}


async def text_rows(h: Harness) -> list[dict[str, Any]]:
    async with h.runtime.db.session() as session:
        result = (await session.execute(text("SELECT * FROM alchemy_text_jobs ORDER BY id"))).all()
        return [dict(r._mapping) for r in result]


def text_prompts(horde: FakeHorde) -> list[str]:
    posts = horde.calls_to(r"/generate/text/async$", "POST")
    return [str(c.json["prompt"]) for c in posts if c.status == 202]


async def ask(member: Member, prompt: str) -> Reply:
    return await member.slash("text", prompt=prompt, model=LLAMA)


async def test_text_waits_in_line_with_its_position_and_cancel_there_sends_nothing(
    tmp_path: Path, horde: FakeHorde
) -> None:
    horde.add_worker("t1", models=[LLAMA], type="text")
    settings = make_settings(tmp_path, horde.base_url, safety=LENIENT_SAFETY, horde_pacer=SHARED_IP)
    async with run_harness(settings) as h:
        real_limits(horde, h)
        members = [h.member(f"member{i}") for i in range(4)]
        replies = [await ask(m, f"question {i}") for i, m in enumerate(members)]
        # Nobody is refused: two are sent at once, the others are stored and told their place in line.
        assert all(not r.private for r in replies)
        assert text_prompts(horde) == ["question 0", "question 1"]
        assert "Writing on the AI Horde" in replies[1].latest().text
        assert "Waiting to be sent to the AI Horde (position 1)" in replies[2].latest().text
        waiting = replies[3].latest()
        assert "Waiting to be sent to the AI Horde (position 2)" in waiting.text
        assert [r["state"] for r in await text_rows(h)] == ["waiting", "waiting", "queued", "queued"]
        # Cancel in line: only the member who asked; nothing is ever sent for it.
        assert waiting.message is not None
        refused = await members[0].click(waiting.message, label="Cancel")
        assert refused.private and "Only the member who asked" in refused.text
        cancelled = await members[3].click(waiting.message, label="Cancel")
        assert cancelled.private and cancelled.text == "Cancelled."
        await h.advance(3)
        assert text_prompts(horde) == ["question 0", "question 1", "question 2"]
        assert all("question 3" not in str(c.json) for c in horde.calls)
        states = [r["state"] for r in await text_rows(h)]
        assert states == ["waiting", "waiting", "waiting", "cancelled"]
        # The one sent from the line says it is being written from its first check on, and its answer
        # comes there.
        await h.advance(5)
        assert "Writing on the AI Horde" in replies[2].latest().text
        third = next(r for r in horde.text_jobs if r.prompt == "question 2")
        horde.finish_text(third.id, texts=["Answer two"])
        await h.advance(6)
        assert "Answer two" in replies[2].latest().text
        # The cancelled question's public placeholder is gone; its member alone is told why.
        told = replies[3].latest()
        assert told.private and "Cancelled before it was sent to the AI Horde" in told.text


async def test_text_restart_while_waiting_in_line_sends_each_once_in_order(
    tmp_path: Path, horde: FakeHorde
) -> None:
    horde.add_worker("t1", models=[LLAMA], type="text")
    settings = make_settings(tmp_path, horde.base_url, safety=LENIENT_SAFETY, horde_pacer=SHARED_IP)
    async with run_harness(settings) as h:
        real_limits(horde, h)
        for i in range(4):
            await ask(h.member(f"member{i}"), f"question {i}")
        assert text_prompts(horde) == ["question 0", "question 1"]
        rows_before = await text_rows(h)
        assert [r["state"] for r in rows_before] == ["waiting", "waiting", "queued", "queued"]
        # What a restart needs is stored while they wait (and dropped once sent).
        assert all("pending" in str(r["payload"]) for r in rows_before[2:])
        await h.restart()  # the old process dies with two questions in line
        await h.advance(4)
        assert text_prompts(horde) == [f"question {i}" for i in range(4)]  # each once, in order
        rows_after = await text_rows(h)
        assert [r["state"] for r in rows_after] == ["waiting"] * 4
        assert all("pending" not in str(r["payload"]) for r in rows_after)
        for request in list(horde.text_jobs):
            horde.finish_text(request.id, texts=[f"answer to {request.prompt}"])
        await h.advance(6)
        assert [r["state"] for r in await text_rows(h)] == ["done"] * 4
        # The old interactions died with the process: public answers are posted in the channel.
        posted = " ".join(m.content for m in h.channel_messages())
        assert "answer to question 3" in posted


def interrogations_posted(horde: FakeHorde) -> int:
    return len([c for c in horde.calls_to(r"/interrogate/async$", "POST") if c.status == 202])


async def test_alchemy_waits_in_line_cancel_there_and_a_restart_sends_the_rest_once(
    tmp_path: Path, horde: FakeHorde
) -> None:
    horde.enforce_rate_limits = False
    # One interrogation a minute for this bot: the second and third wait in line.
    settings = make_settings(tmp_path, horde.base_url, horde_pacer={"alchemy_per_minute": 1})
    async with run_harness(settings) as h:
        alice, bob, carol = h.member("alice"), h.member("bob"), h.member("carol")
        first = await alice.slash("describe", image=("a.png", _png()))
        assert "Describing your image" in first.text
        second = await bob.slash("describe", image=("b.png", _png()))
        third = await carol.slash("describe", image=("c.png", _png()))
        assert "Waiting to be sent to the AI Horde (position 1)" in second.latest().text
        assert "Waiting to be sent to the AI Horde (position 2)" in third.latest().text
        assert interrogations_posted(horde) == 1
        # Cancel in line (a private reply: its owner's button); nothing is sent for it.
        in_line = second.latest()
        assert in_line.message is not None
        cancelled = await bob.click(in_line.message, label="Cancel")
        assert cancelled.private and cancelled.text == "Cancelled."
        assert "Cancelled before it was sent to the AI Horde" in second.latest().text
        await h.advance(2)
        assert "Waiting to be sent to the AI Horde (position 1)" in third.latest().text
        assert [r["state"] for r in await text_rows(h)] == ["waiting", "cancelled", "queued"]
        # The image of the job in line is kept for the restart, never in the row.
        assert "source_image" not in str((await text_rows(h))[2]["payload"])
        await h.restart()
        await h.advance(2)
        assert interrogations_posted(horde) == 2  # carol's, once, and never bob's
        assert [r["state"] for r in await text_rows(h)] == ["waiting", "cancelled", "waiting"]
        horde.finish_form(horde.last_request("interrogation").id)
        await h.advance(4)
        assert [r["state"] for r in await text_rows(h)][2] == "done"


async def test_checks_of_jobs_a_worker_has_taken_go_first_in_the_budget() -> None:
    from bot.scheduler import Scheduler
    from bot.services.jobs.poller import JobPoller
    from tests.support.clock import TestClock

    clock = TestClock()
    polled: list[int] = []
    taken = {40, 41}

    async def poll(job_id: int) -> tuple[float, bool]:
        polled.append(job_id)
        return 1.0, job_id in taken

    poller = JobPoller("t", Scheduler(clock), clock, poll, tick=1.0, per_second=5.0)
    for job_id in range(50):
        poller.track(job_id, 0)
    await poller.run_due()  # the oldest due first while nobody is known to be taken
    assert polled == [0, 1, 2, 3, 4]
    for job_id in range(50):
        poller.track(job_id, 0, urgent=job_id in taken)
    polled.clear()
    clock.t += 1.0
    await poller.run_due()
    # A worker has 40 and 41: their results are fetched first, the queued jobs fill the rest.
    assert polled[:2] == [40, 41] and len(polled) == 5
    polled.clear()
    clock.t += 1.0
    await poller.run_due()
    assert polled[:2] == [40, 41]  # still taken (the poll said so): first again


async def test_img2img_waiting_in_line_is_sent_with_its_source(tmp_path: Path, horde: FakeHorde) -> None:
    # The line keeps an img2img request without its source (megabytes each, for as long as the line
    # lasts) and reads it back from the source store just before the POST: the Horde gets the same image.
    settings = make_settings(tmp_path, horde.base_url, generation_jobs=BUSY, safety=LENIENT_SAFETY)
    async with run_harness(settings) as h:
        real_limits(horde, h)
        await generate(h.member("alice"), "first")
        await generate(h.member("bob"), "second")
        upload = io.BytesIO()
        Image.new("RGB", (64, 48), (30, 200, 30)).save(upload, format="PNG")
        waiting = await h.member("carol").slash_raw(
            "generate", {"prompt": "from my sketch", "image": ("sketch.png", upload.getvalue())}
        )
        assert "Waiting to be sent to the AI Horde (position 1)" in waiting.latest().text
        await h.advance(1.2)
        assert posted_prompts(horde) == ["first", "second", "from my sketch"]
        sent = horde.calls_to(r"/generate/async$", "POST")[-1].json
        assert sent["source_processing"] == "img2img"
        with Image.open(io.BytesIO(base64.b64decode(sent["source_image"]))) as image:
            assert image.format == "WEBP"
            assert image.size == (64, 48)
            assert image.convert("RGB").getpixel((10, 10)) == pytest.approx((30, 200, 30), abs=3)
        await h.advance(3)
        assert "Waiting to be sent" not in waiting.latest().text


PAUSED = "The AI Horde has paused requests from this bot after a rejected prompt. Try again in 2 minutes."


async def test_a_job_waiting_in_line_is_not_sent_into_the_hordes_ip_pause(
    tmp_path: Path, horde: FakeHorde
) -> None:
    """The Horde times out the bot's IP (an alchemy request answered TimeoutIP) while a generation waits in
    line: it is not sent into the pause (the Horde would refuse it and the pause grow) but ended, and its
    member is told what a new command is told then; nothing was charged."""
    settings = make_settings(tmp_path, horde.base_url, generation_jobs=BUSY, safety=LENIENT_SAFETY)
    async with run_harness(settings) as h:
        real_limits(horde, h)
        await generate(h.member("alice"), "picture 0")
        await generate(h.member("bob"), "picture 1")
        waiting = await generate(h.member("carol"), "in line")
        assert "Waiting to be sent to the AI Horde (position 1)" in waiting.latest().text
        horde.inject(r"/interrogate/async", method="POST", status=403, rc="TimeoutIP", retry_after=120)
        described = await h.member("dave").slash("describe", image=("cat.png", png()))
        assert "paused requests from this bot" in described.text
        await h.advance(3)
        assert posted_prompts(horde) == ["picture 0", "picture 1"], "not sent into the pause"
        assert PAUSED in plain(waiting.latest().text)
        assert [r["state"] for r in await rows(h)] == ["waiting", "waiting", "failed"]
        await h.advance(150)
        assert posted_prompts(horde) == ["picture 0", "picture 1"], "nor after it: it was ended"
