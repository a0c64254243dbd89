"""/text driven as members do: models, long answers, vanishing models, restarts, pacing."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import text

from tests.fakes.horde import FakeHorde
from tests.harness import Harness
from tests.support.replies import expire_reply_tokens

POLL = 5.0  # TextSettings.poll_interval default
LLAMA = "koboldcpp/Llama-3-8B"


def text_worker(horde: FakeHorde, name: str = "t1", model: str = LLAMA, **kwargs: object) -> object:
    return horde.add_worker(name, models=[model], type="text", **kwargs)  # type: ignore[arg-type]


async def answer(harness: Harness, horde: FakeHorde, reply_text: str) -> None:
    request = horde.last_request("text")
    horde.finish_text(request.id, texts=[reply_text])
    await harness.advance(POLL + 1)


async def job_states(h: Harness) -> list[str]:
    async with h.runtime.db.session() as session:
        rows = (await session.execute(text("SELECT state FROM alchemy_text_jobs ORDER BY id"))).all()
        return [r[0] for r in rows]


async def test_text_answer_is_posted(harness: Harness, horde: FakeHorde) -> None:
    text_worker(horde, max_length=512, max_context_length=4096)
    reply = await harness.member("alice").slash("text", prompt="Write a haiku about kudos", model=LLAMA)
    assert reply.deferred and not reply.ephemeral
    assert "Writing on the AI Horde" in reply.text
    request = horde.last_request("text")
    assert request.models == [LLAMA]
    assert request.params["max_length"] == 160
    # The bot's default context (2048) fits inside what the worker reads (4096).
    assert request.params["max_context_length"] == 2048
    await answer(harness, horde, "Kudos flow like rain")
    done = reply.latest()
    assert "Kudos flow like rain" in done.text
    assert LLAMA in done.text
    assert await job_states(harness) == ["done"]


async def test_model_autocomplete_lists_text_models(harness: Harness, horde: FakeHorde) -> None:
    text_worker(horde)
    text_worker(horde, "t2", "koboldcpp/Mistral-7B")
    horde.add_worker("img", models=["Deliberate"])
    choices = await harness.member("alice").autocomplete("text", "model", "mis")
    assert [c["value"] for c in choices] == ["koboldcpp/Mistral-7B"]


async def test_unknown_model_is_refused_before_sending(harness: Harness, horde: FakeHorde) -> None:
    text_worker(horde)
    reply = await harness.member("alice").slash("text", prompt="hi", model="koboldcpp/Llama")
    assert reply.private
    assert "No worker serves the text model" in reply.text
    assert f"Did you mean `{LLAMA}`" in reply.text
    assert horde.count("POST", r"/generate/text/async") == 0


async def test_max_length_over_what_the_workers_write_is_refused(harness: Harness, horde: FakeHorde) -> None:
    text_worker(horde, max_length=256)
    reply = await harness.member("alice").slash("text", prompt="hi", model=LLAMA, max_length=1000)
    assert reply.private
    assert "at most 256 tokens" in reply.text
    assert horde.count("POST", r"/generate/text/async") == 0


async def test_model_that_disappears_mid_request(harness: Harness, horde: FakeHorde) -> None:
    worker = text_worker(horde)
    reply = await harness.member("alice").slash("text", prompt="hello", model=LLAMA)
    await harness.advance(POLL + 1)
    assert "Writing" in reply.latest().text
    horde.remove_worker(worker)  # type: ignore[arg-type]
    grace = harness.services.text.settings.model_gone_grace
    await harness.advance(harness.services.info.settings.models_ttl + grace + 2 * POLL)
    done = reply.latest()
    assert f"No worker serves `{LLAMA}` any more" in done.text
    assert "cancelled" in done.text
    # An error is for the member only, although /text answers publicly.
    assert done.private
    assert not any("No worker serves" in m.content for m in harness.channel_messages())
    assert horde.count("DELETE", r"/generate/text/status/") == 1
    assert await job_states(harness) == ["failed"]


async def test_model_that_comes_back_within_the_grace_period_is_kept(
    harness: Harness, horde: FakeHorde
) -> None:
    horde.enforce_rate_limits = False
    reply = await harness.member("alice").slash("text", prompt="hello")  # any model
    request = horde.last_request("text")
    horde.set_impossible(request.id, True)
    await harness.advance(3 * POLL)
    horde.set_impossible(request.id, False)
    await harness.advance(harness.services.text.settings.model_gone_grace)
    assert "Writing" in reply.latest().text
    await answer(harness, horde, "still here")
    assert "still here" in reply.latest().text


async def test_4000_character_answer_is_split_across_messages(harness: Harness, horde: FakeHorde) -> None:
    text_worker(horde)
    reply = await harness.member("alice").slash("text", prompt="a long story", model=LLAMA)
    words = [f"word{i}" for i in range(800)]
    long_answer = " ".join(words)[:4000]
    await answer(harness, horde, long_answer)
    done = reply.latest()
    parts = [done.content] + [f.content for f in done.followups]
    assert len(parts) >= 2
    assert all(len(p) <= 2000 for p in parts)
    joined = " ".join(parts)
    assert joined.split("”:", 1)[1].split() == long_answer.split()
    assert done.attachments == []


async def test_very_long_answer_is_attached_as_a_file(harness: Harness, horde: FakeHorde) -> None:
    text_worker(horde)
    reply = await harness.member("alice").slash("text", prompt="a very long story", model=LLAMA)
    long_answer = "lorem ipsum " * 800  # 9600 characters: more than 3 messages
    await answer(harness, horde, long_answer)
    done = reply.latest()
    assert "attached as a file" in done.text
    assert [a.filename for a in done.attachments] == ["answer.txt"]
    assert (await done.attachments[0].read()).decode() == long_answer.strip()


async def test_private_text_stays_private(harness: Harness, horde: FakeHorde) -> None:
    text_worker(horde)
    reply = await harness.member("alice").slash("text", prompt="secret", model=LLAMA, public=False)
    await answer(harness, horde, "a private answer")
    done = reply.latest()
    assert done.ephemeral
    assert "a private answer" in done.text
    assert not any("a private answer" in m.content for m in harness.channel_messages())


async def test_workers_failing_gives_a_clear_message(harness: Harness, horde: FakeHorde) -> None:
    text_worker(horde)
    reply = await harness.member("alice").slash("text", prompt="hello", model=LLAMA)
    request = horde.last_request("text")
    horde.fault(request.id)
    horde.fault(request.id)
    await harness.advance(POLL + 1)
    assert "workers failed" in reply.latest().text
    assert reply.latest().private


async def test_text_request_that_expires(harness: Harness, horde: FakeHorde) -> None:
    reply = await harness.member("alice").slash("text", prompt="hello")
    horde.expire(horde.last_request("text").id)
    await harness.advance(POLL + 1)
    assert "dropped this request" in reply.latest().text
    assert await job_states(harness) == ["expired"]


async def test_text_polling_stays_under_the_status_limit(harness: Harness, horde: FakeHorde) -> None:
    horde.enforce_rate_limits = False  # see test_alchemy.test_polling_is_paced
    await harness.member("alice").slash("text", prompt="hello")
    await harness.advance(60)
    polls = horde.count("GET", r"/generate/text/status/")
    assert 10 <= polls <= 13, polls  # every 5 s; the Horde allows 60 a minute


async def test_text_job_is_resumed_after_a_restart(harness: Harness, horde: FakeHorde) -> None:
    text_worker(horde)
    await harness.member("alice").slash("text", prompt="hello", model=LLAMA)
    await harness.restart()
    await answer(harness, horde, "answer after restart")
    posted = [m.content for m in harness.channel_messages()]
    assert any("answer after restart" in c for c in posted), posted
    assert await job_states(harness) == ["done"]


async def test_a_request_sent_at_once_is_kept_before_its_post_leaves(
    harness: Harness, horde: FakeHorde
) -> None:
    """A POST cut off by a kill is sent again from what the row keeps (tests/test_alchemy.py, the same
    engine), so it is kept before the POST leaves even with nobody in line. Here the Horde drops the
    connection unanswered: the row still holds the request the POST carried."""
    text_worker(horde)
    horde.inject(r"/generate/text/async$", method="POST", drop=True)
    await harness.member("alice").slash("text", prompt="kept for a resend", model=LLAMA)
    assert horde.count("POST", r"/generate/text/async$") == 1
    async with harness.runtime.db.session() as session:
        payload = (await session.execute(text("SELECT payload FROM alchemy_text_jobs"))).scalar_one()
    kept = (json.loads(payload) if isinstance(payload, str) else payload)["pending"]
    assert kept["prompt"].endswith("kept for a resend") and kept["models"] == [LLAMA]


async def test_killed_after_posting_the_answer_it_is_not_posted_again(
    harness: Harness, horde: FakeHorde
) -> None:
    """A process killed right after posting an answer in the channel leaves the job `delivering`: the next
    one fetches the answer again and posts it with the job's nonce; Discord answers with the first message
    (one mechanism for every kind: tests/test_generation.py)."""
    text_worker(horde)
    await harness.member("alice").slash("text", prompt="hello", model=LLAMA)
    await expire_reply_tokens(harness)  # too late to edit the reply: the answer is posted in the channel
    await harness.restart()
    await answer(harness, horde, "an answer posted once")
    assert len([m for m in harness.channel_messages() if "an answer posted once" in m.content]) == 1
    async with harness.runtime.db.session() as session:
        await session.execute(text("UPDATE alchemy_text_jobs SET state = 'delivering'"))
    await harness.restart()
    await harness.advance(POLL + 1)
    request_id = horde.last_request("text").id
    assert horde.count("GET", rf"/generate/text/status/{request_id}$") >= 2  # fetched once more
    assert len([m for m in harness.channel_messages() if "an answer posted once" in m.content]) == 1
    assert await job_states(harness) == ["done"]


async def test_failure_after_a_restart_is_sent_privately_by_dm(harness: Harness, horde: FakeHorde) -> None:
    alice = harness.member("alice")
    await alice.slash("text", prompt="hello")
    await expire_reply_tokens(harness)  # restarted too late to use the reply (tests/test_replies.py)
    await harness.restart()
    horde.expire(horde.last_request("text").id)
    await harness.advance(POLL + 1)
    assert not any("dropped this request" in m.content for m in harness.channel_messages())
    dms = [m.content for m in alice.actor.user.dm_channel.history()]
    assert any("dropped this request" in c and "try again" in c for c in dms), dms


async def test_horde_request_id_is_never_shown(harness: Harness, horde: FakeHorde) -> None:
    text_worker(horde)
    reply = await harness.member("alice").slash("text", prompt="hello", model=LLAMA)
    request = horde.last_request("text")
    await answer(harness, horde, "an answer")
    assert "an answer" in reply.latest().text
    assert request.id not in harness.sent_text()


async def test_member_text_pings_nobody(harness: Harness, horde: FakeHorde) -> None:
    text_worker(horde)
    role = harness.guild.create_role("everyone-in-it", mentionable=True)
    bob = harness.member("bob")
    prompt = f"@everyone @here <@{bob.id}> <@&{role.id}> say hi"
    reply = await harness.member("alice").slash("text", prompt=prompt, model=LLAMA)
    await answer(harness, horde, f"Hi @everyone and <@{bob.id}> and <@&{role.id}>")
    assert "Hi" in reply.latest().text
    posted = [m for m in harness.channel_messages() if "say hi" in m.content or "Hi" in m.content]
    assert posted
    for message in posted:
        assert harness.pings(message) == ([], [], False), message.content


async def test_discord_429_when_delivering_posts_the_answer_in_the_channel(
    harness: Harness, horde: FakeHorde
) -> None:
    text_worker(horde)
    reply = await harness.member("alice").slash("text", prompt="hello", model=LLAMA)
    harness.discord_rate_limits("PATCH", "/webhooks/*/messages/@original", times=1)
    await answer(harness, horde, "an answer despite Discord")
    assert "an answer despite Discord" not in reply.latest().text
    assert any("an answer despite Discord" in m.content for m in harness.channel_messages())


async def test_answer_withheld_by_the_safety_filter_says_what_to_do(
    harness: Harness, horde: FakeHorde
) -> None:
    text_worker(horde)
    reply = await harness.member("alice").slash("text", prompt="hello", model=LLAMA)
    horde.finish_text(horde.last_request("text").id, csam=True)
    await harness.advance(POLL + 1)
    done = reply.latest()
    assert "withheld by the AI Horde's safety filter" in done.text
    assert "Rephrase your prompt and try again" in done.text
    assert done.private


async def test_unknown_horde_refusal_says_what_to_do(harness: Harness, horde: FakeHorde) -> None:
    text_worker(horde)
    horde.inject(r"/generate/text/async", status=400, rc="SomethingNew")
    reply = await harness.member("alice").slash("text", prompt="hello", model=LLAMA)
    assert reply.private
    assert "The AI Horde refused the request" in reply.text
    assert "Check your options and try again" in reply.text


async def test_sampling_options_reach_the_horde(harness: Harness, horde: FakeHorde) -> None:
    text_worker(horde, max_length=512)
    await harness.member("alice").slash(
        "text", prompt="hi", model=LLAMA, max_length=200, temperature=0.7, top_p=0.9, top_k=40, rep_pen=1.1
    )
    params = horde.last_request("text").params
    assert params["max_length"] == 200
    assert (params["temperature"], params["top_p"], params["top_k"], params["rep_pen"]) == (0.7, 0.9, 40, 1.1)


async def test_out_of_range_option_is_refused_by_discord_before_the_bot(
    harness: Harness, horde: FakeHorde
) -> None:
    text_worker(horde)
    with pytest.raises(Exception, match="temperature"):
        await harness.member("alice").slash("text", prompt="hi", model=LLAMA, temperature=9.0)
    assert horde.count("POST", r"/generate/text/async") == 0
