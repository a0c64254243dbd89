"""/models, /model, /worker, /team, /news, /stats, /horde status: public, cached, paginated."""

from __future__ import annotations

import pytest

from tests.fakes.horde import FakeHorde
from tests.harness import Harness


def add_image_models(horde: FakeHorde, count: int) -> None:
    for i in range(count):
        horde.add_worker(f"worker-{i:02d}", models=[f"model-{i:02d}"], type="image")


async def test_models_lists_served_models_with_workers_queue_and_eta(
    harness: Harness, horde: FakeHorde
) -> None:
    horde.add_worker("w1", models=["Deliberate"], threads=2)
    horde.add_worker("w2", models=["Deliberate", "AlbedoBase XL"])
    reply = await harness.member("alice").slash("models")
    assert reply.deferred
    assert not reply.ephemeral
    assert "**Deliberate**: 3 workers" in reply.text
    assert "**AlbedoBase XL**: 1 worker," in reply.text
    assert "ETA" in reply.text
    # Busiest first.
    assert reply.text.index("Deliberate") < reply.text.index("AlbedoBase XL")


async def test_models_text_type_and_search(harness: Harness, horde: FakeHorde) -> None:
    horde.add_worker("img", models=["Deliberate"])
    horde.add_worker("txt", models=["koboldcpp/Llama-3-8B", "koboldcpp/Mistral-7B"], type="text")
    reply = await harness.member("alice").slash("models", type="text", search="llama")
    assert "koboldcpp/Llama-3-8B" in reply.text
    assert "Mistral" not in reply.text
    assert "Deliberate" not in reply.text


async def test_models_with_no_match_says_so(harness: Harness, horde: FakeHorde) -> None:
    horde.add_worker("img", models=["Deliberate"])
    reply = await harness.member("alice").slash("models", search="nothing-like-this")
    assert "No image model matching" in reply.text
    assert "Try part of the name" in reply.text
    assert reply.private


async def test_two_models_calls_cost_the_horde_one_request(harness: Harness, horde: FakeHorde) -> None:
    horde.add_worker("w1", models=["Deliberate"])
    alice, bob = harness.member("alice"), harness.member("bob")
    first = await alice.slash("models")
    second = await bob.slash("models")
    assert "Deliberate" in first.text and "Deliberate" in second.text
    assert horde.count("GET", r"/status/models") == 1
    assert harness.services.info.cache.hits >= 1
    # After the TTL the list is fetched again.
    await harness.advance(harness.services.info.settings.models_ttl + 1)
    await alice.slash("models")
    assert horde.count("GET", r"/status/models") == 2


async def test_models_pagination_only_invoker_and_stops_after_timeout(
    harness: Harness, horde: FakeHorde
) -> None:
    add_image_models(horde, 25)
    alice, bob = harness.member("alice"), harness.member("bob")
    reply = await alice.slash("models")
    message = reply.followups[0].raw if reply.followups else reply.raw.response
    assert "Page 1/3" in reply.text
    assert "model-00" in reply.text and "model-10" not in reply.text

    page2 = await alice.click(message, label="Next")
    assert "Page 2/3" in page2.text
    assert "model-10" in page2.text

    refused = await bob.click(message, label="Next")
    assert refused.ephemeral
    assert "belong to someone else" in refused.text
    # Bob's press changed nothing.
    current = harness.channel_messages()[-1]
    assert "Page 2/3" in (current.embeds[0].footer.text or "")

    back = await alice.click(message, label="Previous")
    assert "Page 1/3" in back.text

    await harness.advance(harness.services.info.settings.view_timeout + 5)
    after = harness.channel_messages()[-1]
    assert after.components == [], "the buttons must be removed once the view times out"


async def test_model_details_and_unknown_model(harness: Harness, horde: FakeHorde) -> None:
    horde.add_worker("w1", models=["Deliberate"])
    alice = harness.member("alice")
    reply = await alice.slash("model", name="deliberate")
    assert "Deliberate" in reply.text
    assert "Workers: 1" in reply.text
    missing = await alice.slash("model", name="NoSuchModel")
    assert missing.private
    assert "No worker serves a model by that name" in missing.text


async def test_model_autocomplete_offers_served_models(harness: Harness, horde: FakeHorde) -> None:
    horde.add_worker("w1", models=["Deliberate", "Dreamshaper"])
    horde.add_worker("t1", models=["koboldcpp/Llama-3"], type="text")
    choices = await harness.member("alice").autocomplete("model", "name", "dre")
    assert [c["value"] for c in choices] == ["Dreamshaper"]


async def test_worker_by_name_and_by_id(harness: Harness, horde: FakeHorde) -> None:
    team = horde.add_team("Team Rocket")
    worker = horde.add_worker("Fast Worker", models=["Deliberate"], team=team, info="runs on a 4090")
    alice = harness.member("alice")
    by_name = await alice.slash("worker", name_or_id="Fast Worker")
    assert "Worker Fast Worker" in by_name.text
    assert "online" in by_name.text
    assert "Team Rocket" in by_name.text
    assert "runs on a 4090" in by_name.text
    by_id = await alice.slash("worker", name_or_id=worker.id)
    assert "Worker Fast Worker" in by_id.text


async def test_unknown_worker(harness: Harness, horde: FakeHorde) -> None:
    reply = await harness.member("alice").slash("worker", name_or_id="ghost")
    assert reply.private
    assert "knows no worker" in reply.text


async def test_team_by_name(harness: Harness, horde: FakeHorde) -> None:
    team = horde.add_team("Team Rocket", info="We blast off")
    horde.add_worker("w1", models=["Deliberate"], team=team)
    alice = harness.member("alice")
    reply = await alice.slash("team", name_or_id="team rocket")
    assert "Team Team Rocket" in reply.text
    assert "We blast off" in reply.text
    by_id = await alice.slash("team", name_or_id=team.id)
    assert "Team Rocket" in by_id.text
    missing = await alice.slash("team", name_or_id="Nope")
    assert missing.private
    assert "knows no team" in missing.text


async def test_news_shows_latest_first(harness: Harness, horde: FakeHorde) -> None:
    reply = await harness.member("alice").slash("news")
    assert "Fake news" in reply.text
    assert reply.text.index("Fake news") < reply.text.index("Older fake news")


async def test_stats(harness: Harness, horde: FakeHorde) -> None:
    horde.add_worker("w1", models=["Deliberate"])
    reply = await harness.member("alice").slash("stats")
    assert "Images" in reply.text
    assert "Text tokens" in reply.text
    assert "Queues" in reply.text


async def test_horde_status_up_maintenance_and_down(harness: Harness, horde: FakeHorde) -> None:
    alice = harness.member("alice")
    up = await alice.slash("horde status")
    assert "Up and accepting requests" in up.text
    horde.maintenance_mode = True
    await harness.advance(harness.services.info.settings.status_ttl + 1)
    maintenance = await alice.slash("horde status")
    assert "maintenance mode" in maintenance.text
    horde.set_down(True)
    await harness.advance(harness.services.info.settings.status_ttl + 1)
    down = await alice.slash("horde status")
    assert "not answering" in down.text


async def test_discord_429_on_the_answer_gives_a_private_message_saying_to_retry(
    harness: Harness, horde: FakeHorde
) -> None:
    horde.add_worker("w1", models=["Deliberate"])
    harness.discord_rate_limits("POST", "/webhooks/*", times=1)
    reply = await harness.member("alice").slash("models")
    assert reply.private
    assert "Discord is rate-limiting this bot" in reply.text and "try again" in reply.text


async def test_model_suggestions_when_the_horde_is_down_are_empty_not_an_error(
    harness: Harness, horde: FakeHorde, caplog: pytest.LogCaptureFixture
) -> None:
    horde.set_down(True)
    alice = harness.member("alice")
    assert await alice.autocomplete("model", "name", "del") == []
    assert await alice.autocomplete("text", "model", "lla") == []
    assert "Ignoring exception" not in caplog.text, "a down Horde is expected, not a bug with a traceback"


async def test_page_buttons_from_before_a_restart_say_so_and_go_away(
    harness: Harness, horde: FakeHorde
) -> None:
    add_image_models(horde, 25)
    alice = harness.member("alice")
    reply = await alice.slash("models")
    message = reply.followups[0].raw if reply.followups else reply.raw.response
    await harness.restart()  # the view lived in memory: its timeout will never fire now
    pressed = await alice.click(message, label="Next")
    (note,) = pressed.followups
    assert note.ephemeral
    assert "stopped working when the bot restarted" in note.text
    assert harness.channel_messages()[-1].components == [], "the dead buttons are removed"
    # This run's pages work as before.
    fresh = await alice.slash("models")
    new_message = fresh.followups[0].raw if fresh.followups else fresh.raw.response
    page2 = await alice.click(new_message, label="Next")
    assert "Page 2/3" in page2.text


async def test_worker_and_team_lookups_share_the_members_rate_limit(
    harness: Harness, horde: FakeHorde
) -> None:
    # Each new name is a Horde call (single look-ups aren't covered by the cached lists): spamming names
    # must run into the member's budget, not into the Horde.
    alice = harness.member("alice")
    burst = harness.services.safety.settings.user_burst
    replies = [await alice.slash("worker", name_or_id=f"ghost-{i}") for i in range(burst)]
    replies.append(await alice.slash("team", name_or_id="ghost-team"))
    limited = [r for r in replies if "too fast" in r.text]
    assert len(limited) == 1 and limited[0].private
    assert horde.count("GET", r"/teams") == 0
