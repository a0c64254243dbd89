"""/chat: a conversation with a text model in a thread, kept inside the model's context."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

from tests.fakes.horde import FakeHorde
from tests.harness import Harness, Member, row_items

LLAMA = "koboldcpp/Llama-3-8B"
POLL = 5.0


async def start_chat(harness: Harness, member: Member, **options: Any) -> Any:
    reply = await member.slash("chat start", model=LLAMA, **options)
    assert reply.private
    (thread,) = harness.channel.threads
    assert thread.mention in reply.text
    return thread


async def reply_with(harness: Harness, horde: FakeHorde, answer: str) -> None:
    horde.finish_text(horde.last_request("text").id, texts=[answer])
    await harness.advance(POLL + 1)


async def test_chat_start_say_and_context(harness: Harness, horde: FakeHorde) -> None:
    horde.add_worker("t1", models=[LLAMA], type="text", max_length=300, max_context_length=4096)
    alice = harness.member("alice")
    thread = await start_chat(harness, alice)
    intro = harness.channel_messages(thread)[0]
    assert "started a conversation" in intro.content
    assert any(c.label == "Reply" for c in row_items(intro))

    first = await alice.slash("chat say", channel=thread, message="Hi! What is the AI Horde?")
    request = horde.last_request("text")
    assert request.models == [LLAMA]
    assert request.prompt.endswith("alice: Hi! What is the AI Horde?\nHorde:")
    assert request.params["max_context_length"] == 4096
    assert "\nalice:" in request.params["stop_sequence"]
    await reply_with(harness, horde, " A crowdsourced cluster.\nalice: and then")
    done = first.latest()
    assert "alice: Hi! What is the AI Horde?" in done.text.replace("**", "")
    assert "A crowdsourced cluster." in done.text
    assert "and then" not in done.text, "the model's guess at the member's next line is cut"

    await alice.slash("chat say", channel=thread, message="Who runs the workers?")
    prompt = horde.last_request("text").prompt
    assert "alice: Hi! What is the AI Horde?\nHorde: A crowdsourced cluster.\nalice: Who runs" in prompt


async def test_reply_button_opens_a_modal_and_continues(harness: Harness, horde: FakeHorde) -> None:
    horde.add_worker("t1", models=[LLAMA], type="text")
    alice, bob = harness.member("alice"), harness.member("bob")
    thread = await start_chat(harness, alice)
    intro = harness.channel_messages(thread)[0]
    shown = await bob.click(intro, label="Reply")
    assert shown.modal is not None
    said = await bob.submit_modal(shown, {"chat:reply:message": "hello from bob"})
    assert horde.last_request("text").prompt.endswith("bob: hello from bob\nHorde:")
    await reply_with(harness, horde, "Hi bob")
    assert "Hi bob" in said.latest().text


async def test_reply_button_works_after_a_restart(harness: Harness, horde: FakeHorde) -> None:
    horde.add_worker("t1", models=[LLAMA], type="text")
    alice = harness.member("alice")
    thread = await start_chat(harness, alice)
    await harness.restart()
    intro = harness.channel_messages(thread)[0]
    shown = await alice.click(intro, label="Reply")
    assert shown.modal is not None


async def test_one_turn_at_a_time(harness: Harness, horde: FakeHorde) -> None:
    horde.add_worker("t1", models=[LLAMA], type="text")
    alice = harness.member("alice")
    thread = await start_chat(harness, alice)
    await alice.slash("chat say", channel=thread, message="first")
    again = await alice.slash("chat say", channel=thread, message="second")
    assert again.private
    assert "still answering" in again.text
    assert horde.count("POST", r"/generate/text/async") == 1


async def test_history_is_trimmed_to_the_model_context(harness: Harness, horde: FakeHorde) -> None:
    # A small model: 400 tokens of context, 100 of answer -> about 900 characters for the prompt.
    horde.add_worker("t1", models=[LLAMA], type="text", max_length=100, max_context_length=400)
    alice = harness.member("alice")
    thread = await start_chat(harness, alice)
    for i in range(5):
        await alice.slash("chat say", channel=thread, message=f"message number {i} " + "x" * 150)
        await reply_with(harness, horde, f"answer number {i} " + "y" * 150)
    await alice.slash("chat say", channel=thread, message="the newest line")
    request = horde.last_request("text")
    budget = (400 - 100) * harness.services.text.settings.chars_per_token
    assert len(request.prompt) <= budget
    assert request.params["max_context_length"] == 400
    assert request.prompt.startswith("The following is a friendly conversation")
    assert "answer number 4" in request.prompt
    assert "message number 0 " not in request.prompt
    async with harness.runtime.db.session() as session:
        stored = (await session.execute(text("SELECT count(*) FROM chat_turns"))).scalar_one()
    assert stored == 11, "the whole conversation is kept; only the prompt is trimmed"


async def test_message_too_long_for_a_tiny_context(harness: Harness, horde: FakeHorde) -> None:
    horde.add_worker("t1", models=[LLAMA], type="text", max_length=50, max_context_length=120)
    alice = harness.member("alice")
    thread = await start_chat(harness, alice, persona="Be brief.")
    reply = await alice.slash("chat say", channel=thread, message="z" * 400)
    assert reply.private
    assert "too long for this model's context" in reply.text


async def test_say_outside_a_chat_thread_and_after_end(harness: Harness, horde: FakeHorde) -> None:
    horde.add_worker("t1", models=[LLAMA], type="text")
    alice, bob = harness.member("alice"), harness.member("bob")
    outside = await alice.slash("chat say", message="hello")
    assert "isn't a chat thread" in outside.text
    thread = await start_chat(harness, alice)
    refused = await bob.slash("chat end", channel=thread)
    assert "Only whoever started" in refused.text
    ended = await alice.slash("chat end", channel=thread)
    assert "has ended" in ended.text
    late = await alice.slash("chat say", channel=thread, message="hello?")
    assert "has ended" in late.text


async def test_chat_with_a_model_nobody_serves(harness: Harness, horde: FakeHorde) -> None:
    reply = await harness.member("alice").slash("chat start", model="ghost-model")
    assert reply.private
    assert "No worker serves the text model" in reply.text
    assert harness.channel.threads == []


async def test_chat_model_disappears_mid_turn(harness: Harness, horde: FakeHorde) -> None:
    worker = horde.add_worker("t1", models=[LLAMA], type="text")
    alice = harness.member("alice")
    thread = await start_chat(harness, alice)
    said = await alice.slash("chat say", channel=thread, message="are you there?")
    horde.remove_worker(worker)
    grace = harness.services.text.settings.model_gone_grace
    await harness.advance(harness.services.info.settings.models_ttl + grace + 2 * POLL)
    assert "No worker serves" in said.latest().text
    # The error is the member's alone; the thread keeps their line, no longer "writing…", with Reply.
    in_thread = harness.channel_messages(thread)
    assert not any("No worker serves" in m.content for m in in_thread)
    (line,) = [m for m in in_thread if "are you there?" in m.content]
    assert "is writing" not in line.content
    assert any(c.label == "Reply" for c in row_items(line))
    assert any(f.ephemeral and "No worker serves" in f.text for f in said.latest().followups)


async def test_turn_in_progress_survives_a_restart(harness: Harness, horde: FakeHorde) -> None:
    horde.add_worker("t1", models=[LLAMA], type="text")
    alice = harness.member("alice")
    thread = await start_chat(harness, alice)
    await alice.slash("chat say", channel=thread, message="tell me about kudos")
    request = horde.last_request("text")
    await harness.restart()
    horde.finish_text(request.id, texts=["Kudos are the Horde's currency."])
    await harness.advance(POLL + 1)
    posted = [m.content for m in harness.channel_messages(thread)]
    assert any("Kudos are the Horde's currency." in c for c in posted), posted
    assert request.id not in harness.sent_text()
    # The answer became part of the conversation: the next turn's prompt carries it.
    await alice.slash("chat say", channel=thread, message="and then?")
    prompt = horde.last_request("text").prompt
    assert "Horde: Kudos are the Horde's currency.\nalice: and then?" in prompt


async def test_reply_button_after_the_chat_ended_says_so_privately(
    harness: Harness, horde: FakeHorde
) -> None:
    horde.add_worker("t1", models=[LLAMA], type="text")
    alice = harness.member("alice")
    thread = await start_chat(harness, alice)
    await alice.slash("chat end", channel=thread)
    intro = harness.channel_messages(thread)[0]
    pressed = await alice.click(intro, label="Reply")
    assert pressed.modal is None
    assert pressed.private
    assert "has ended" in pressed.text and "/chat start" in pressed.text


async def test_4000_character_chat_answer_is_split_in_the_thread(harness: Harness, horde: FakeHorde) -> None:
    horde.add_worker("t1", models=[LLAMA], type="text")
    alice = harness.member("alice")
    thread = await start_chat(harness, alice)
    said = await alice.slash("chat say", channel=thread, message="tell me a long story")
    long_answer = " ".join(f"word{i}" for i in range(800))[:4000]
    await reply_with(harness, horde, long_answer)
    done = said.latest()
    parts = [done.content] + [f.content for f in done.followups]
    assert len(parts) >= 3  # the member's line, then the answer in two or more messages
    assert all(len(p) <= 2000 for p in parts)
    assert "tell me a long story" in parts[0]
    assert long_answer.split()[-1] in parts[-1]
    assert not done.private, "a chat answer is for the whole thread"
    last = harness.channel_messages(thread)[-1]
    assert any(c.label == "Reply" for c in row_items(last))


async def test_two_members_replying_at_once_are_each_heard(harness: Harness, horde: FakeHorde) -> None:
    """Both open the Reply form before either submits: each form is its own (discord.py finds a form by its
    custom id alone), so each member's words go out under their own name and nobody's submit is dropped."""
    horde.add_worker("t1", models=[LLAMA], type="text")
    alice, bob = harness.member("alice"), harness.member("bob")
    thread = await start_chat(harness, alice)
    intro = harness.channel_messages(thread)[0]
    alice_form = await alice.click(intro, label="Reply")
    bob_form = await bob.click(intro, label="Reply")
    assert alice_form.modal is not None and bob_form.modal is not None
    assert alice_form.modal["custom_id"] != bob_form.modal["custom_id"]
    await alice.submit_modal(alice_form, {"chat:reply:message": "hello from alice"})
    assert horde.last_request("text").prompt.endswith("alice: hello from alice\nHorde:")
    await reply_with(harness, horde, "Hi alice")
    said = await bob.submit_modal(bob_form, {"chat:reply:message": "hello from bob"})
    assert horde.last_request("text").prompt.endswith("bob: hello from bob\nHorde:")
    await reply_with(harness, horde, "Hi bob")
    assert "Hi bob" in said.latest().text
