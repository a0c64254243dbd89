"""A job's reply after its process stopped (issue #17): the command's interaction token is stored with the
job, encrypted, so whichever process delivers it reads and edits the reply as the one that got the command
would. A result a killed process already showed in a private reply (or an alchemy or text reply) is found
there, not sent again by DM or in the channel."""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import text

from bot.crypto import KeyCipher
from bot.db.held_jobs import ACTIVE_STATES
from bot.db.key_rotation import KeyRotationRepository
from bot.services.key_rotation import rotate_keys
from bot.ui.delivery import SENT_BY_DM
from tests.fakes.horde import FakeHorde
from tests.harness import Harness, Member
from tests.test_alchemy import png
from tests.test_generation import LONGEST, POLL, generate, results, rows
from tests.test_text import LLAMA, text_worker

pytestmark = pytest.mark.both_engines

ORIGINAL = re.compile(r"/webhooks/\d+/([^/]+)/messages/@original$")


@pytest.fixture(autouse=True)
def _no_fake_rate_limits(horde: FakeHorde) -> None:
    horde.enforce_rate_limits = False  # the fake's limiter counts real seconds, the tests virtual ones


async def job_row(h: Harness, table: str) -> dict[str, Any]:
    async with h.runtime.db.session() as session:
        [row] = (await session.execute(text(f"SELECT * FROM {table}"))).all()  # noqa: S608 (ours)
        return dict(row._mapping)


async def as_if_killed_after_showing(
    h: Harness, table: str, kept: dict[str, Any], *, lease_until: datetime | None = None, **changes: Any
) -> None:
    """The row as a process killed between showing the result in the reply and storing the end leaves it:
    `delivering`, held by nobody (free for the next process; or, with `lease_until`, still held by the dead
    process until its lease runs out), the command's token still stored (`kept`: the row's values before
    the end cleared them)."""
    values = {
        "state": "delivering",
        "holder": None if lease_until is None else "killed",
        "lease_until": lease_until,
        "token": kept["reply_token"],
        "expires": kept["reply_expires_at"],
        **changes,
    }
    extra = ", result_message_id = NULL, finished_at = NULL" if table == "generation_jobs" else ""
    async with h.runtime.db.session() as session:
        await session.execute(
            text(
                f"UPDATE {table} SET state = :state, claimed_by = :holder, lease_until = :lease_until, "  # noqa: S608
                f"reply_token = :token, reply_expires_at = :expires{extra}"
            ),
            values,
        )


def when(value: Any) -> datetime:
    """A stored time as read raw (SQLite keeps text)."""
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def reply_calls(h: Harness, method: str) -> int:
    return sum(1 for r in h.env.http_requests if r.method == method and ORIGINAL.search(r.path))


def dms(member: Member) -> list[Any]:
    channel = member.actor.user.dm_channel
    return list(channel.history()) if channel is not None else []


async def test_the_token_is_stored_encrypted_and_cleared_when_the_job_ends(
    harness: Harness, horde: FakeHorde
) -> None:
    h = harness
    await generate(h.member("alice"), prompt="a kept token", private=True)
    stored = await job_row(h, "generation_jobs")
    # Encrypted at rest (Fernet, like the API keys), and it is the token of the command's reply.
    sealed = stored["reply_token"]
    assert sealed.startswith("gAAAA")
    token = h.runtime.cipher.unseal(sealed)
    used = {m.group(1) for r in h.env.http_requests if (m := ORIGINAL.search(r.path))}
    assert used == {token} and token not in sealed
    assert when(stored["reply_expires_at"]) > h.services.clock.now() + timedelta(minutes=14)
    assert token not in h.sent_text()
    horde.finish(horde.last_request("image").id)
    await h.advance(LONGEST)
    ended = await job_row(h, "generation_jobs")
    assert ended["state"] == "done"
    assert ended["reply_token"] is None and ended["reply_expires_at"] is None


async def test_an_expired_token_of_a_job_in_flight_is_cleared_by_retention(
    harness: Harness, horde: FakeHorde
) -> None:
    h = harness
    await generate(h.member("alice"), prompt="a job still waiting", private=True)
    await h.member("bob").slash("text", prompt="hello")
    now = h.services.clock.now()
    async with h.runtime.db.session() as session:
        await session.execute(
            text("UPDATE generation_jobs SET reply_expires_at = :past"), {"past": now - timedelta(seconds=1)}
        )
    report = await h.services.retention.prune()
    image, textjob = await job_row(h, "generation_jobs"), await job_row(h, "alchemy_text_jobs")
    assert image["state"] == "waiting", "the job itself lives on"
    assert image["reply_token"] is None and image["reply_expires_at"] is None
    assert report.deleted == {"generation_jobs.reply_token": 1}
    assert textjob["reply_token"] is not None, "a token still valid is kept"


async def test_killed_after_showing_a_private_generation_it_is_shown_once(
    harness: Harness, horde: FakeHorde
) -> None:
    """Private /generate: the process edited its reply into the result and was killed before storing the
    end. The next process reads the reply through the stored token, finds the result there, and only stores
    the end: no DM, nothing in the channel."""
    h = harness
    alice = h.member("alice")
    reply = await generate(alice, prompt="a private lighthouse", private=True)
    kept = await job_row(h, "generation_jobs")
    request_id = horde.last_request("image").id
    horde.finish(request_id)
    await h.advance(LONGEST)
    shown = reply.latest()
    assert shown.private and shown.attachments and shown.message is not None
    await as_if_killed_after_showing(h, "generation_jobs", kept)
    edits = reply_calls(h, "PATCH")
    await h.restart()
    await h.advance(POLL + 1)
    assert horde.count("GET", rf"/generate/status/{request_id}$") == 2  # the result fetched once more
    assert reply_calls(h, "PATCH") == edits, "the reply already showed it: not edited again"
    assert reply.latest().attachments and dms(alice) == [] and results(h) == []
    [job] = await rows(h)
    assert job["state"] == "done" and job["result_message_id"] == shown.message.id
    assert job["reply_token"] is None


async def test_a_private_generation_its_process_never_showed_is_edited_into_the_reply(
    harness: Harness, horde: FakeHorde
) -> None:
    """Killed before showing it: the next process edits the result into the command's private reply (not
    a DM), through the stored token."""
    h = harness
    alice = h.member("alice")
    reply = await generate(alice, prompt="a lighthouse not lost", private=True)
    kept = await job_row(h, "generation_jobs")
    horde.finish(horde.last_request("image").id)
    await as_if_killed_after_showing(h, "generation_jobs", kept)
    await h.restart()
    await h.advance(POLL + 1)
    shown = reply.latest()
    assert shown.private and shown.attachments and "a lighthouse not lost" in shown.text
    assert dms(alice) == [] and results(h) == []
    [job] = await rows(h)
    assert (
        job["state"] == "done" and shown.message is not None and job["result_message_id"] == shown.message.id
    )


async def test_with_the_token_expired_the_result_is_sent_once_by_dm(
    harness: Harness, horde: FakeHorde
) -> None:
    """Past the token's 15 minutes nobody can read or edit the reply: the result is sent by DM, with the
    job's nonce, once, also when the process that sent it is killed before storing the end."""
    h = harness
    alice = h.member("alice")
    reply = await generate(alice, prompt="a lighthouse by DM", private=True)
    kept = await job_row(h, "generation_jobs")
    request_id = horde.last_request("image").id
    horde.finish(request_id)
    expired = h.services.clock.now() - timedelta(seconds=1)
    await as_if_killed_after_showing(h, "generation_jobs", kept, expires=expired)
    await h.restart()
    await h.advance(POLL + 1)
    [dm] = dms(alice)
    assert dm.attachments and "a lighthouse by DM" in dm.embeds[0].description
    assert not reply.latest().attachments, "the reply was not touched"
    assert reply_calls(h, "PATCH") == 1  # only the progress shown by the first process
    await as_if_killed_after_showing(h, "generation_jobs", kept, expires=expired)
    await h.restart()
    await h.advance(POLL + 1)
    assert horde.count("GET", rf"/generate/status/{request_id}$") == 2
    assert [m.id for m in dms(alice)] == [dm.id], "the DM's nonce: Discord answers with the first"
    [job] = await rows(h)
    assert job["state"] == "done" and job["reply_token"] is None


async def test_killed_after_showing_an_alchemy_result_it_is_shown_once(
    harness: Harness, horde: FakeHorde
) -> None:
    h = harness
    alice = h.member("alice")
    reply = await alice.slash("describe", image=("cat.png", png()))
    kept = await job_row(h, "alchemy_text_jobs")
    request_id = horde.last_request("interrogation").id
    horde.finish_form(request_id, result={"caption": "a caption shown once"})
    await h.advance(POLL + 1)
    shown = reply.latest()
    assert shown.private and "A caption shown once." in shown.text.replace("**", "")
    await as_if_killed_after_showing(h, "alchemy_text_jobs", kept)
    edits = reply_calls(h, "PATCH")
    await h.restart()
    await h.advance(POLL + 1)
    assert horde.count("GET", rf"/interrogate/status/{request_id}$") >= 2  # fetched once more
    assert reply_calls(h, "PATCH") == edits and dms(alice) == []
    assert not [m for m in h.channel_messages() if "caption shown once" in m.content]
    job = await job_row(h, "alchemy_text_jobs")
    assert job["state"] == "done" and job["reply_token"] is None


@pytest.mark.parametrize("public", [False, True])
async def test_killed_after_showing_a_text_answer_it_is_shown_once(
    harness: Harness, horde: FakeHorde, public: bool
) -> None:
    h = harness
    alice = h.member("alice")
    text_worker(horde)
    reply = await alice.slash("text", prompt="hello", model=LLAMA, public=public)
    kept = await job_row(h, "alchemy_text_jobs")
    request_id = horde.last_request("text").id
    horde.finish_text(request_id, texts=["an answer shown once"])
    await h.advance(6)
    assert "an answer shown once" in reply.latest().text
    await as_if_killed_after_showing(h, "alchemy_text_jobs", kept)
    edits = reply_calls(h, "PATCH")
    await h.restart()
    await h.advance(6)
    assert horde.count("GET", rf"/generate/text/status/{request_id}$") >= 2  # fetched once more
    assert reply_calls(h, "PATCH") == edits and dms(alice) == []
    posted = [m for m in h.channel_messages() if "an answer shown once" in m.content]
    assert len(posted) == (1 if public else 0)  # a public reply is a channel message itself
    job = await job_row(h, "alchemy_text_jobs")
    assert job["state"] == "done" and job["reply_token"] is None


DROPPED = "The AI Horde dropped this request"


async def as_if_killed_while_telling(h: Harness, kept: dict[str, Any], **changes: Any) -> None:
    """A text job as a process killed while telling its member it ended without a result leaves it:
    `delivering` with its ending (expired) and error, held by nobody, the command's token still stored."""
    error = f"{DROPPED}: no worker finished it within 20 minutes (or it expired after a restart). Try again."
    await as_if_killed_after_showing(h, "alchemy_text_jobs", kept, **changes)
    async with h.runtime.db.session() as session:
        await session.execute(
            text("UPDATE alchemy_text_jobs SET ending = 'expired', error = :error"), {"error": error}
        )


async def told(h: Harness, member: Member, reply: Any) -> tuple[int, int, int]:
    """How often the member was told the request was dropped: in the reply (the error follows a public
    one privately), by DM, in the channel."""
    return (
        reply.latest().text.count(DROPPED),
        sum(DROPPED in m.content for m in dms(member)),
        sum(DROPPED in m.content for m in h.channel_messages()),
    )


async def asked_for_text(h: Harness) -> tuple[Member, Any, dict[str, Any]]:
    """Alice's /text, in flight: the member, her command's reply, the job's row as first stored."""
    alice = h.member("alice")
    reply = await alice.slash("text", prompt="hello")
    return alice, reply, await job_row(h, "alchemy_text_jobs")


async def restarted_after_killed_while_telling(h: Harness, kept: dict[str, Any], **changes: Any) -> None:
    """The text job left as a process killed while telling its end leaves it, the next process started
    and its first check of the job done."""
    await as_if_killed_while_telling(h, kept, **changes)
    await h.restart()
    await h.advance(6)


async def ended_expired(h: Harness) -> dict[str, Any]:
    """The text job's row, asserted ended as expired with no ending pending."""
    job = await job_row(h, "alchemy_text_jobs")
    assert job["state"] == "expired" and job["ending"] is None
    return job


async def test_killed_before_telling_an_end_without_a_result_it_is_told_once(
    harness: Harness, horde: FakeHorde
) -> None:
    """The end (expired) was stored as `delivering` with its ending, then the process was killed before
    telling it: the next one tells it, privately, in the command's reply (through the stored token)."""
    h = harness
    alice, reply, kept = await asked_for_text(h)
    await restarted_after_killed_while_telling(h, kept)
    assert await told(h, alice, reply) == (1, 0, 0)
    assert reply.latest().private
    assert (await ended_expired(h))["reply_token"] is None


async def test_killed_after_telling_an_end_without_a_result_it_is_not_told_again(
    harness: Harness, horde: FakeHorde
) -> None:
    """Told (the public placeholder removed after the private error followed it), then killed before the
    end was stored: the next process finds the placeholder removed, so it only stores the end."""
    h = harness
    alice, reply, kept = await asked_for_text(h)
    horde.expire(horde.last_request("text").id)
    await h.advance(6)
    assert await told(h, alice, reply) == (1, 0, 0)
    await restarted_after_killed_while_telling(h, kept)
    assert await told(h, alice, reply) == (1, 0, 0)
    await ended_expired(h)


async def test_with_the_token_expired_an_end_without_a_result_is_told_once_by_dm(
    harness: Harness, horde: FakeHorde
) -> None:
    """Past the token's 15 minutes the end is told by DM, with the job's nonce: killed after that DM, the
    next process's DM is answered with the first."""
    h = harness
    alice, reply, kept = await asked_for_text(h)
    expired = h.services.clock.now() - timedelta(seconds=1)
    for _ in range(2):
        await restarted_after_killed_while_telling(h, kept, expires=expired)
        assert await told(h, alice, reply) == (0, 1, 0)
    await ended_expired(h)


async def test_killed_after_telling_a_private_failure_it_is_shown_once(
    harness: Harness, horde: FakeHorde
) -> None:
    """A private reply (/describe) becomes the end's notice: told again by the next process, it is the same
    reply showing the same words, and no DM."""
    h = harness
    alice = h.member("alice")
    reply = await alice.slash("describe", image=("cat.png", png()))
    kept = await job_row(h, "alchemy_text_jobs")
    await as_if_killed_while_telling(h, kept)
    for _ in range(2):
        await h.restart()
        await h.advance(4)
        assert await told(h, alice, reply) == (1, 0, 0)
        assert reply.latest().private
        await as_if_killed_while_telling(h, kept)
    await h.restart()
    await h.advance(4)
    await ended_expired(h)


async def test_a_token_sealed_under_the_old_secret_key_is_used_after_rotate_keys(
    harness: Harness, horde: FakeHorde
) -> None:
    """`rotate-keys` re-seals the tokens kept with jobs in flight as it does the API keys: with the old
    secret key dropped, the process delivering the job still edits the result into the command's private
    reply (an unreadable token would send it by DM)."""
    h = harness
    alice = h.member("alice")
    reply = await generate(alice, prompt="a lighthouse under a new key", private=True)
    sealed = (await job_row(h, "generation_jobs"))["reply_token"]
    await h.member("bob").slash("text", prompt="hello")
    old, new = h.settings.security.secret_key, Fernet.generate_key().decode()
    report = await rotate_keys(KeyRotationRepository(h.runtime.db), KeyCipher(f"{new},{old}"))
    assert not report.unreadable and report.changed_meanwhile == 0
    only_new = KeyCipher(new)
    for table in ("generation_jobs", "alchemy_text_jobs"):
        resealed = (await job_row(h, table))["reply_token"]
        assert only_new.is_current(resealed), table
    token = KeyCipher(old).unseal(sealed)
    assert only_new.unseal((await job_row(h, "generation_jobs"))["reply_token"]) == token
    # The old key is dropped; the next process (the old one killed, its lease run out) delivers the job.
    h.settings = dataclasses.replace(
        h.settings, security=dataclasses.replace(h.settings.security, secret_key=new)
    )
    async with h.runtime.db.session() as session:
        await session.execute(text("UPDATE generation_jobs SET claimed_by = NULL, lease_until = NULL"))
    await h.restart()
    horde.finish(horde.last_request("image").id)
    await h.advance(LONGEST)
    shown = reply.latest()
    assert shown.private and shown.attachments and "a lighthouse under a new key" in shown.text
    assert dms(alice) == [] and results(h) == []
    [job] = await rows(h)
    assert shown.message is not None and job["result_message_id"] == shown.message.id
    assert job["state"] == "done"


async def elapse(h: Harness, seconds: float) -> None:
    """Time passes for everything: the simulator's (timers, Discord's token) and the wall clock's (stored
    expiries, leases). A minute at a time: each step's polls settle within the simulator's real-time
    limit on a loaded machine too."""
    while seconds > 0:
        step = min(seconds, 60.0)
        h.clock.shift(step)
        await h.advance(step)
        seconds -= step


async def ended(h: Harness, table: str, *, within: float) -> None:
    """Time passes a second at a time until the job has ended (delivered, its end stored)."""
    for _ in range(int(within)):
        if (await job_row(h, table))["state"] not in ACTIVE_STATES:
            return
        await elapse(h, 1)
    raise AssertionError(f"the job did not end within {within} s")


async def test_a_result_shown_late_in_the_tokens_life_by_a_process_killed_then_is_shown_once(
    harness: Harness, horde: FakeHorde
) -> None:
    """A result ready 13 of its token's 15 minutes in: shown in the reply by a process killed before
    storing the end, the process taking the job over once the dead one's lease ran out (up to 1 1/3
    leases later) would find the token too old to read the reply, and send it again by DM. So late in the
    token's life it is sent by DM, with the job's nonce, from the start, and the second DM is answered with
    the first: the member sees it once."""
    h = harness
    alice = h.member("alice")
    reply = await generate(alice, prompt="a lighthouse at the last minute", private=True)
    kept = await job_row(h, "generation_jobs")
    expires = when(kept["reply_expires_at"])
    await elapse(h, (expires - timedelta(minutes=2) - h.services.clock.now()).total_seconds())
    request_id = horde.last_request("image").id
    horde.finish(request_id)
    await ended(h, "generation_jobs", within=LONGEST)

    def seen() -> int:
        in_reply = 1 if reply.latest().attachments else 0
        return in_reply + sum(1 for m in dms(alice) if m.attachments) + len(results(h))

    assert seen() == 1
    # The reply, still readable a little longer, no longer shows the progress (nor its Cancel button).
    retired = reply.latest()
    assert retired.content == SENT_BY_DM and not retired.embeds and retired.message is not None
    assert not retired.message.components
    # Killed right after: its lease (renewed a moment ago) runs out a lease later.
    lease = h.settings.database.lease_seconds
    await as_if_killed_after_showing(
        h, "generation_jobs", kept, lease_until=h.services.clock.now() + timedelta(seconds=lease)
    )
    await h.restart()
    await ended(h, "generation_jobs", within=2 * lease)
    assert horde.count("GET", rf"/generate/status/{request_id}$") == 2  # delivered again by the next one
    assert seen() == 1
    [dm] = dms(alice)
    assert "a lighthouse at the last minute" in dm.embeds[0].description
    [job] = await rows(h)
    assert job["state"] == "done" and job["reply_token"] is None


async def test_a_public_answer_late_in_the_tokens_life_is_posted_once_and_its_placeholder_removed(
    harness: Harness, horde: FakeHorde
) -> None:
    """A public /text answered 13 of its token's 15 minutes in is posted in the channel with the job's
    nonce, and the "writing…" reply is removed; killed before storing the end, the process taking the job
    over posts it by the same nonce: one answer in the channel."""
    h = harness
    alice = h.member("alice")
    text_worker(horde)
    reply = await alice.slash("text", prompt="hello", model=LLAMA, public=True)
    kept = await job_row(h, "alchemy_text_jobs")
    await elapse(
        h, (when(kept["reply_expires_at"]) - timedelta(minutes=2) - h.services.clock.now()).total_seconds()
    )
    horde.finish_text(horde.last_request("text").id, texts=["an answer at the last minute"])
    await ended(h, "alchemy_text_jobs", within=LONGEST)

    def posted() -> int:
        return sum("an answer at the last minute" in m.content for m in h.channel_messages())

    assert posted() == 1 and "an answer at the last minute" not in reply.latest().text
    assert not [m for m in h.channel_messages() if "writing" in m.content.casefold()]
    lease = h.settings.database.lease_seconds
    await as_if_killed_after_showing(
        h, "alchemy_text_jobs", kept, lease_until=h.services.clock.now() + timedelta(seconds=lease)
    )
    await h.restart()
    await ended(h, "alchemy_text_jobs", within=2 * lease)
    assert posted() == 1 and dms(alice) == []


async def test_killed_between_telling_a_public_failure_and_removing_its_placeholder_it_is_told_once(
    harness: Harness, horde: FakeHorde
) -> None:
    """A public reply's error follows it privately (an ephemeral followup, which can't be read back), then
    the public placeholder is removed. Killed in between (the removal never reached Discord), the process
    resuming the job finds the end recorded as told on the job: it only removes the placeholder."""
    h = harness
    alice, reply, _ = await asked_for_text(h)
    h.discord_stalls("DELETE", "/webhooks/*/messages/@original")
    horde.expire(horde.last_request("text").id)
    await h.advance(6)
    assert await told(h, alice, reply) == (1, 0, 0)
    assert not reply.latest().private, "the public placeholder is still there"
    assert (await job_row(h, "alchemy_text_jobs"))["state"] == "delivering"
    await h.restart()
    await h.advance(6)
    assert await told(h, alice, reply) == (1, 0, 0)
    assert reply.latest().private, "the placeholder removed: only the private error is left"
    assert (await ended_expired(h))["told_at"] is None
