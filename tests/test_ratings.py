"""Image ratings, driven as members do: /rate, both steps, Next image, parties, own generations, figures."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import discord
import httpx
import pytest
from sqlalchemy import text

from bot.config import Settings
from cogs.ratings import generation_rate_button
from tests.conftest import make_settings
from tests.fakes.horde import FakeHorde, FakeUser
from tests.fakes.ratings import FakeRatings, make_image
from tests.harness import Harness, Member, Reply, row_items, run_harness

# Fast, test-sized settings: short timeouts, quick background retries (virtual time).
RATINGS_SECTION: dict[str, Any] = {
    "timeout": 0.5,
    "max_retries": 0,
    "autocomplete_timeout": 0.5,
    "retry_base_seconds": 10.0,
    "retry_check_seconds": 1.0,
    "submit_attempts": 3,
    "party_seconds": 120.0,
}


@pytest.fixture
def settings(tmp_path: Path, horde: FakeHorde, ratings: FakeRatings) -> Settings:
    return make_settings(tmp_path, horde.base_url, ratings_url=ratings.base_url, ratings=RATINGS_SECTION)


async def link(member: Member, user: FakeUser) -> None:
    shown = await member.slash("login")
    reply = await member.submit_modal(shown, {"login:apikey": user.apikey or ""})
    assert "linked" in seen(reply).lower()


async def linked_member(h: Harness, horde: FakeHorde, name: str) -> tuple[Member, FakeUser]:
    user = horde.add_user(name, kudos=10)
    member = h.member(name)
    await link(member, user)
    return member, user


def seen(reply: Reply) -> str:
    """What the member reads, without bold markers."""
    return reply.text.replace("**", "")


def labels(reply: Reply) -> list[str]:
    assert reply.raw is not None
    message = reply.raw.response
    assert message is not None
    return [c.get("label") for row in message.components for c in row.get("components", [])]


def custom_ids(reply: Reply) -> list[str]:
    message = reply.raw.response
    return [c.get("custom_id") for row in message.components for c in row.get("components", [])]


async def votes(h: Harness) -> list[dict[str, Any]]:
    async with h.runtime.db.session() as session:
        rows = (await session.execute(text("SELECT * FROM rating_votes ORDER BY id"))).all()
        return [dict(row._mapping) for row in rows]


async def test_rate_shows_the_image_attached_with_ten_buttons(
    harness: Harness, horde: FakeHorde, ratings: FakeRatings
) -> None:
    image = ratings.add_image()
    alice, _ = await linked_member(harness, horde, "alice")
    reply = await alice.slash("rate")
    assert reply.ephemeral and reply.deferred
    assert "Rate this image" in seen(reply)
    assert [label for label in labels(reply)][:10] == [str(n) for n in range(1, 11)]
    assert "Skip" in labels(reply)
    # Downloaded and attached: the member sees the very bytes, not a signed URL that will expire.
    assert len(reply.attachments) == 1
    assert reply.attachments[0].filename.endswith(".webp")
    assert await reply.attachments[0].read() == image.data
    assert not reply.embeds[0].image.url, "shown as the attachment itself, not through a URL"
    assert "Expires=" not in harness.sent_text()
    # The service's signed URL expires; what the member sees does not depend on it.
    ratings.expire_urls()
    assert reply.message is not None
    assert await reply.message.attachments[0].read() == image.data


async def rate_image(member: Member) -> Reply:
    reply = await member.slash("rate")
    assert "Rate this image" in seen(reply), reply.text
    return reply


async def test_two_steps_then_reward_and_next_image(
    harness: Harness, horde: FakeHorde, ratings: FakeRatings
) -> None:
    first, second = ratings.add_images(2)
    alice, user = await linked_member(harness, horde, "alice")
    kudos_before = horde.user(user.id).kudos
    shown = await rate_image(alice)
    step2 = await alice.click(shown.message, label="7")
    assert step2.deferred
    assert "You rated it 7/10" in seen(step2)
    assert labels(step2) == [
        "0 · flawless",
        "1 · little flaws",
        "2 · some flaws",
        "3 · obvious flaws",
        "4 · harmful flaws",
        "5 · garbage",
    ]
    done = await alice.click(step2.message, label="1 · little flaws")
    assert done.deferred
    assert "+5 kudos" in seen(done)
    assert "7/10 with little flaws" in seen(done)
    assert labels(done) == ["Next image"]
    # The image stays on the message through both steps.
    assert len(done.attachments) == 1
    [submission] = ratings.submissions
    assert (submission.image_id, submission.rating, submission.artifacts) == (first.id, 7, 1)
    assert submission.username == user.username
    assert horde.user(user.id).kudos == kudos_before + 5
    [vote] = await votes(harness)
    assert (vote["state"], vote["reward"], vote["discord_id"]) == ("submitted", 5.0, alice.id)

    following = await alice.click(done.message, label="Next image")
    assert following.deferred
    assert "Rate this image" in seen(following)
    assert labels(following)[:10] == [str(n) for n in range(1, 11)]
    assert len(following.attachments) == 1
    assert await following.attachments[0].read() == second.data


async def test_skip_shows_another_image_and_submits_nothing(
    harness: Harness, horde: FakeHorde, ratings: FakeRatings
) -> None:
    ratings.add_images(2)
    alice, _ = await linked_member(harness, horde, "alice")
    shown = await rate_image(alice)
    first_bytes = await shown.attachments[0].read()
    skipped = await alice.click(shown.message, label="Skip")
    assert "Rate this image" in seen(skipped)
    assert await skipped.attachments[0].read() != first_bytes
    assert ratings.submissions == []
    assert await votes(harness) == []


async def test_unlinked_member_gets_the_login_hint(harness: Harness, ratings: FakeRatings) -> None:
    ratings.add_image()
    reply = await harness.member("carol").slash("rate")
    assert reply.ephemeral
    assert "/login" in seen(reply)
    assert reply.attachments == []
    assert ratings.count("GET", r"/rating/new") == 0


async def test_ten_clicks_in_a_second_submit_once(
    harness: Harness, horde: FakeHorde, ratings: FakeRatings
) -> None:
    ratings.add_images(3)
    alice, user = await linked_member(harness, horde, "alice")
    kudos_before = horde.user(user.id).kudos
    shown = await rate_image(alice)
    # Ten aesthetic clicks on different numbers before the bot answers any: one rating is kept.
    aesthetic = [cid for cid in custom_ids(shown) if cid.startswith("rate:a:")]
    burst = await alice.click_burst(shown.message, aesthetic)
    assert all(reply.deferred for reply in burst), "every click must be acknowledged"
    [vote] = await votes(harness)
    assert vote["state"] == "choosing"
    current = burst[-1]
    assert f"You rated it {vote['rating']}/10" in seen(current)
    # Ten clicks on the flaws buttons (some twice): exactly one submission reaches the service.
    flaws = [cid for cid in custom_ids(current) if cid.startswith("rate:f:")]
    burst = await alice.click_burst(current.message, (flaws * 2)[:10])
    assert all(reply.deferred for reply in burst)
    assert ratings.count("POST", r"/rating/") == 1
    assert len(ratings.submissions) == 1
    assert horde.user(user.id).kudos == kudos_before + 5
    [vote] = await votes(harness)
    assert vote["state"] == "submitted" and vote["attempts"] == 1
    assert "+5 kudos" in seen(burst[-1])
    # Ten clicks on Next image: one new image is fetched, not ten.
    fetched = ratings.count("GET", r"/rating/new")
    nexts = [cid for cid in custom_ids(burst[-1]) if cid.startswith("rate:n:")]
    burst = await alice.click_burst(burst[-1].message, nexts * 10)
    assert all(reply.deferred for reply in burst)
    assert ratings.count("GET", r"/rating/new") == fetched + 1
    async with harness.runtime.db.session() as session:
        served = (await session.execute(text("SELECT count(*) FROM rating_images"))).scalar()
    assert served == 2


async def choose(member: Member, value: int = 7) -> Reply:
    shown = await rate_image(member)
    step2 = await member.click(shown.message, label=str(value))
    assert "Any flaws?" in seen(step2)
    return step2


async def test_service_down_when_rating_answers_at_once_and_retries_in_the_background(
    harness: Harness, horde: FakeHorde, ratings: FakeRatings
) -> None:
    ratings.add_image()
    alice, _ = await linked_member(harness, horde, "alice")
    step2 = await choose(alice, 9)
    ratings.set_down(True)
    reply = await alice.click(step2.message, label="0 · flawless")
    assert reply.deferred, "the click must be acknowledged before the ratings service is called"
    assert "not delivered yet" in seen(reply)
    assert "No need to click again" in seen(reply)
    assert labels(reply) == ["Next image"]
    [vote] = await votes(harness)
    assert vote["state"] == "retrying"
    ratings.set_down(False)
    await harness.advance(11)
    [vote] = await votes(harness)
    assert vote["state"] == "submitted" and vote["attempts"] == 2
    [submission] = ratings.submissions
    assert (submission.rating, submission.artifacts) == (9, 0)
    # The member is told how the retry went, in a private follow-up to their click.
    followups = [m for m in reply.raw.followups]
    assert followups and "+5 kudos" in followups[-1].embeds[0].title
    assert followups[-1].ephemeral


async def test_slow_service_the_click_is_acknowledged_before_the_call(
    harness: Harness, horde: FakeHorde, ratings: FakeRatings
) -> None:
    """Discord wants an answer within 3 s; the service here takes 1 s. (A call slower than the bot's
    timeout is covered in test_ratings_service.py: timeouts run on the simulator's virtual clock.)"""
    ratings.add_image()
    alice, _ = await linked_member(harness, horde, "alice")
    step2 = await choose(alice, 4)
    ratings.inject(r"/rating/", method="POST", delay=1.0, times=1)
    reply = await alice.click(step2.message, label="3 · obvious flaws")
    assert reply.deferred, "the click must be acknowledged before the slow call"
    callbacks = [r for r in harness.rest_requests() if r.path.endswith("/callback")]
    assert callbacks[-1].json["type"] == 6
    assert "+5 kudos" in seen(reply)
    assert len(ratings.submissions) == 1


async def test_service_stays_down_the_member_is_told_it_failed(
    harness: Harness, horde: FakeHorde, ratings: FakeRatings
) -> None:
    ratings.add_image()
    alice, _ = await linked_member(harness, horde, "alice")
    step2 = await choose(alice)
    ratings.set_down(True)
    reply = await alice.click(step2.message, label="2 · some flaws")
    assert "not delivered yet" in seen(reply)
    await harness.advance(200)
    [vote] = await votes(harness)
    assert vote["state"] == "failed" and vote["attempts"] == 3
    assert ratings.count("POST", r"/rating/") == 3
    final = reply.raw.followups[-1]
    assert "stayed unreachable" in final.embeds[0].description
    stats = await alice.slash("rate-stats")
    assert "0 ratings submitted" in seen(stats) and "1 failed" in seen(stats)


async def test_service_down_when_asking_for_an_image(
    harness: Harness, horde: FakeHorde, ratings: FakeRatings
) -> None:
    ratings.add_image()
    alice, _ = await linked_member(harness, horde, "alice")
    ratings.set_down(True)
    reply = await alice.slash("rate")
    assert reply.ephemeral and reply.deferred
    assert "ratings service is not reachable" in seen(reply)
    assert reply.attachments == []


async def test_image_the_service_no_longer_knows(
    harness: Harness, horde: FakeHorde, ratings: FakeRatings
) -> None:
    image, _ = ratings.add_images(2)
    alice, _ = await linked_member(harness, horde, "alice")
    step2 = await choose(alice)
    ratings.forget_image(image.id)
    reply = await alice.click(step2.message, label="1 · little flaws")
    assert "no longer knows this image" in seen(reply)
    assert "not submitted" in seen(reply)
    assert labels(reply) == ["Next image"]
    [vote] = await votes(harness)
    assert vote["state"] == "failed"
    # No retry for an image that is gone.
    await harness.advance(60)
    assert ratings.count("POST", r"/rating/") == 1
    following = await alice.click(reply.message, label="Next image")
    assert "Rate this image" in seen(following)


async def test_revoked_key_when_rating_and_when_asking(
    harness: Harness, horde: FakeHorde, ratings: FakeRatings
) -> None:
    ratings.add_images(2)
    alice, user = await linked_member(harness, horde, "alice")
    step2 = await choose(alice)
    assert user.apikey is not None
    horde.revoke_key(user.apikey)
    reply = await alice.click(step2.message, label="0 · flawless")
    assert "rejected your API key" in seen(reply)
    assert "/login" in seen(reply)
    [vote] = await votes(harness)
    assert vote["state"] == "failed"
    await harness.advance(60)
    assert ratings.count("POST", r"/rating/") == 1, "a rejected key is not retried"
    again = await alice.slash("rate")
    assert "rejected your API key" in seen(again) and "/login" in seen(again)


async def test_another_member_cannot_use_the_raters_buttons(
    harness: Harness, horde: FakeHorde, ratings: FakeRatings
) -> None:
    ratings.add_images(2)
    alice, _ = await linked_member(harness, horde, "alice")
    bob, _ = await linked_member(harness, horde, "bob")
    shown = await rate_image(alice)
    # Discord only shows an ephemeral message to its member; a forged click still gets nowhere.
    [refused] = await bob.click_burst(shown.message, [custom_ids(shown)[6]], visible_only=False)
    assert "belong to someone else" in seen(refused)
    assert await votes(harness) == []
    step2 = await alice.click(shown.message, label="7")
    [refused] = await bob.click_burst(step2.message, [custom_ids(step2)[0]], visible_only=False)
    assert "belong to someone else" in seen(refused)
    [refused] = await bob.click_burst(shown.message, [custom_ids(step2)[0]], visible_only=False)
    assert ratings.submissions == []
    [vote] = await votes(harness)
    assert vote["state"] == "choosing" and vote["discord_id"] == alice.id


async def finished_request(horde: FakeHorde, user: FakeUser, n: int = 2) -> tuple[str, list[str]]:
    """A finished image request of `user` on the fake Horde, as the generation feature leaves it."""
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{horde.base_url}/v2/generate/async",
            json={"prompt": "a lighthouse at dusk", "params": {"n": n}},
            headers={"apikey": user.apikey or "", "Client-Agent": "tests:1:tests"},
        )
    request_id = response.json()["id"]
    generation_ids = horde.finish(request_id)
    return request_id, generation_ids


async def post_generation_result(h: Harness, rating_id: int | None, images: int) -> discord.Message:
    """Stand in for the generation feature: the bot posts a result with the Rate button when offered."""
    channel = h.bot.get_channel(h.channel.id)
    assert isinstance(channel, discord.TextChannel)
    view = discord.ui.View(timeout=None)
    if rating_id is not None:
        view.add_item(generation_rate_button(rating_id))
    files = [
        discord.File(io.BytesIO(make_image(f"gen{i}")), filename=f"image{i}.webp") for i in range(images)
    ]
    message = await channel.send("Your images are ready", files=files, view=view)
    await h.settle()
    return message


async def test_rating_own_shared_generation_in_two_steps_per_image(
    harness: Harness, horde: FakeHorde
) -> None:
    alice, user = await linked_member(harness, horde, "alice")
    request_id, generation_ids = await finished_request(horde, user, n=2)
    service = harness.services.ratings
    not_shared = await service.offer_generation_rating(
        guild_id=harness.guild.id,
        discord_id=alice.id,
        request_id=request_id,
        generation_ids=generation_ids,
        shared=False,
    )
    assert not_shared is None, "no Rate button unless the Horde reports the request as shared"
    rating_id = await service.offer_generation_rating(
        guild_id=harness.guild.id,
        discord_id=alice.id,
        request_id=request_id,
        generation_ids=generation_ids,
        shared=True,
    )
    assert rating_id is not None
    result = await post_generation_result(harness, rating_id, images=2)
    assert request_id not in harness.sent_text(), "a Horde request id never goes to Discord"

    opened = await alice.click(result, label="Rate")
    assert opened.ephemeral and opened.deferred
    step = opened.followups[0] if opened.followups else opened
    assert "Image 1 of 2" in seen(step)
    assert step.embeds[0].image.url, "the image being rated is shown"
    step = await alice.click(step.message, label="9")
    assert "Image 1 of 2" in seen(step) and "You rated it 9/10" in seen(step)
    step = await alice.click(step.message, label="1 · little flaws")
    assert "Image 2 of 2" in seen(step)
    step = await alice.click(step.message, label="6")
    step = await alice.click(step.message, label="3 · obvious flaws")
    assert "+" in seen(step) and "kudos" in seen(step)
    [call] = horde.calls_to(r"/generate/rate/")
    assert call.json == {
        "best": generation_ids[0],
        "ratings": [
            {"id": generation_ids[0], "rating": 9, "artifacts": 1},
            {"id": generation_ids[1], "rating": 6, "artifacts": 3},
        ],
    }
    again = await alice.click(result, label="Rate")
    assert "submitted" in seen(again)
    assert len(horde.calls_to(r"/generate/rate/")) == 1


async def test_only_the_requester_can_rate_their_generation(harness: Harness, horde: FakeHorde) -> None:
    alice, user = await linked_member(harness, horde, "alice")
    bob, _ = await linked_member(harness, horde, "bob")
    request_id, generation_ids = await finished_request(horde, user, n=1)
    rating_id = await harness.services.ratings.offer_generation_rating(
        guild_id=harness.guild.id,
        discord_id=alice.id,
        request_id=request_id,
        generation_ids=generation_ids,
        shared=True,
    )
    result = await post_generation_result(harness, rating_id, images=1)
    refused = await bob.click(result, label="Rate")
    assert refused.ephemeral
    assert "Only the member who made these images can rate them" in seen(refused)
    opened = await alice.click(result, label="Rate")
    step = opened.followups[0] if opened.followups else opened
    [refused] = await bob.click_burst(step.message, [custom_ids(step)[0]], visible_only=False)
    assert "Only the member who made these images" in seen(refused)
    assert horde.calls_to(r"/generate/rate/") == []


async def test_buttons_work_after_a_restart(harness: Harness, horde: FakeHorde, ratings: FakeRatings) -> None:
    ratings.add_images(2)
    alice, _ = await linked_member(harness, horde, "alice")
    shown = await rate_image(alice)
    await harness.restart()
    step2 = await alice.click(shown.message, label="8")
    assert "You rated it 8/10" in seen(step2)
    await harness.restart()
    done = await alice.click(step2.message, label="0 · flawless")
    assert "+5 kudos" in seen(done)
    await harness.restart()
    following = await alice.click(done.message, label="Next image")
    assert "Rate this image" in seen(following)
    assert len(ratings.submissions) == 1


async def test_a_retry_pending_at_restart_is_delivered_after_it(
    harness: Harness, horde: FakeHorde, ratings: FakeRatings
) -> None:
    ratings.add_image()
    alice, _ = await linked_member(harness, horde, "alice")
    step2 = await choose(alice, 5)
    ratings.set_down(True)
    reply = await alice.click(step2.message, label="2 · some flaws")
    assert "not delivered yet" in seen(reply)
    # The service comes back while the bot is down; the restarted bot finds the rating in the database.
    ratings.set_down(False)
    await harness.restart()
    await harness.advance(2)
    [vote] = await votes(harness)
    assert vote["state"] == "submitted"
    assert len(ratings.submissions) == 1
    stats = await alice.slash("rate-stats")
    assert "1 ratings submitted" in seen(stats)


async def test_stats_count_per_member_and_guild(
    harness: Harness, horde: FakeHorde, ratings: FakeRatings
) -> None:
    images = ratings.add_images(4)
    alice, _ = await linked_member(harness, horde, "alice")
    bob, _ = await linked_member(harness, horde, "bob")
    empty = await alice.slash("rate-stats")
    assert empty.ephemeral
    assert "You: 0 ratings submitted · 0 kudos earned · 0 failed" in seen(empty)
    for _ in range(2):
        step2 = await choose(alice)
        done = await alice.click(step2.message, label="1 · little flaws")
        assert "+5 kudos" in seen(done)
    step2 = await choose(alice)
    shown_ids = [v["image_row_id"] for v in await votes(harness)]
    assert len(shown_ids) == 3
    for image in images:
        ratings.forget_image(image.id)
    failed = await alice.click(step2.message, label="1 · little flaws")
    assert "not submitted" in seen(failed)
    for image in images:
        with ratings.lock:
            image.removed = False
    step2 = await choose(bob)
    await bob.click(step2.message, label="0 · flawless")
    stats = await alice.slash("rate-stats")
    assert "You: 2 ratings submitted · 10 kudos earned · 1 failed" in seen(stats)
    assert "This server: 3 ratings submitted · 15 kudos earned · 1 failed" in seen(stats)
    bob_stats = await bob.slash("rate-stats")
    assert "You: 1 ratings submitted · 5 kudos earned · 0 failed" in seen(bob_stats)


async def test_dataset_option_autocompletes_and_is_kept_for_the_next_image(
    harness: Harness, horde: FakeHorde, ratings: FakeRatings
) -> None:
    cats = ratings.add_dataset("Cats and kittens")
    ratings.add_dataset("Landscapes")
    ratings.add_images(2, cats.id)
    alice, _ = await linked_member(harness, horde, "alice")
    choices = await alice.autocomplete("rate", "dataset", "kit")
    assert choices == [{"name": "Cats and kittens", "value": cats.id}]
    everything = await alice.autocomplete("rate", "dataset", "")
    assert {c["name"] for c in everything} == {"Cats and kittens", "Landscapes"}
    assert ratings.count("GET", r"/datasets") == 1, "the dataset list is cached"
    shown = await alice.slash("rate", dataset=cats.id)
    assert "Dataset: Cats and kittens" in seen(shown)
    assert ratings.calls_to_new_for(cats.id) == 1
    skipped = await alice.click(shown.message, label="Skip")
    assert "Rate this image" in seen(skipped)
    assert ratings.calls_to_new_for(cats.id) == 2
    by_name = await alice.slash("rate", dataset="landscapes")
    assert "no image left to rate in that dataset" in seen(by_name)
    unknown = await alice.slash("rate", dataset="Dogs")
    assert "There is no dataset called `Dogs`" in seen(unknown)


async def test_autocomplete_answers_at_once_when_the_service_is_down(
    harness: Harness, horde: FakeHorde, ratings: FakeRatings
) -> None:
    ratings.add_dataset("Cats")
    alice, _ = await linked_member(harness, horde, "alice")
    ratings.set_down(True)
    assert await alice.autocomplete("rate", "dataset", "ca") == []
    assert await alice.autocomplete("rate", "dataset", "c") == []
    assert ratings.count("GET", r"/datasets") == 1, "a failure is remembered for a while"


async def test_a_dead_image_is_skipped_and_the_member_told_when_none_loads(
    harness: Harness, horde: FakeHorde, ratings: FakeRatings
) -> None:
    broken, good = ratings.add_images(2)
    ratings.break_image(broken.id)
    alice, _ = await linked_member(harness, horde, "alice")
    shown = await rate_image(alice)
    assert await shown.attachments[0].read() == good.data
    ratings.break_image(good.id)
    nothing = await alice.click(shown.message, label="Skip")
    assert "images could not be loaded" in seen(nothing)
    # Nothing changed on the member's message: the same button can be pressed again later.
    assert labels(nothing)[-1] == "Skip"


async def test_unlinking_forgets_the_members_ratings(
    harness: Harness, horde: FakeHorde, ratings: FakeRatings
) -> None:
    ratings.add_image()
    alice, _ = await linked_member(harness, horde, "alice")
    step2 = await choose(alice)
    await alice.click(step2.message, label="0 · flawless")
    assert len(await votes(harness)) == 1
    await alice.slash("logout")
    assert await votes(harness) == []
    async with harness.runtime.db.session() as session:
        served = (await session.execute(text("SELECT count(*) FROM rating_images"))).scalar()
    assert served == 0


async def test_rating_party(harness: Harness, horde: FakeHorde, ratings: FakeRatings) -> None:
    image, _ = ratings.add_images(2)
    alice, alice_user = await linked_member(harness, horde, "alice")
    bob, bob_user = await linked_member(harness, horde, "bob")
    carol = harness.member("carol")
    started = await alice.slash("rate-party")
    assert started.ephemeral and "rating party is on" in seen(started)
    [party] = [m for m in harness.channel_messages() if m.embeds and m.embeds[0].title == "Rating party!"]
    assert len(party.attachments) == 1 and await party.attachments[0].read() == image.data
    again = await bob.slash("rate-party")
    assert "already running in this channel" in seen(again)

    prompt = await alice.click(party, label="8")
    assert prompt.ephemeral and "You rated it 8/10" in seen(prompt)
    step = prompt.followups[0] if prompt.followups else prompt
    done = await alice.click(step.message, label="0 · flawless")
    assert "+5 kudos" in seen(done)
    # Bob double-clicks, then answers the flaws step: one submission with his own key.
    three = next(cid for cid in custom_ids_of(party) if cid.endswith(":3"))
    burst = await bob.click_burst(party, [three, three])
    assert all(reply.deferred for reply in burst)
    step = next(r.followups[0] for r in burst if r.followups) if any(r.followups for r in burst) else burst[0]
    await bob.click(step.message, label="2 · some flaws")
    unlinked = await carol.click(party, label="10")
    assert "/login" in seen(unlinked)
    already = await alice.click(party, label="1")
    assert "You already rated this image" in seen(already)
    assert sorted((s.username, s.rating) for s in ratings.submissions) == sorted(
        [(alice_user.username, 8), (bob_user.username, 3)]
    )

    await harness.advance(121)
    [party] = [m for m in harness.channel_messages() if m.id == party.id]
    assert party.embeds[0].title == "Rating party: results"
    text_seen = party.embeds[0].description or ""
    assert "2 member(s) rated this image, average 5.5/10" in text_seen.replace("**", "")
    assert party.components == [], "the buttons go away when the party ends"
    field = party.embeds[0].fields[0].value or ""
    assert " 8 │" in field and " 3 │" in field
    assert len(party.attachments) == 1, "the image stays"
    another = await bob.slash("rate-party")
    assert "rating party is on" in seen(another)


def custom_ids_of(message: discord.Message) -> list[str]:
    return [c.custom_id for c in row_items(message) if c.custom_id]


async def test_a_party_still_ends_after_a_restart(
    harness: Harness, horde: FakeHorde, ratings: FakeRatings
) -> None:
    ratings.add_image()
    alice, _ = await linked_member(harness, horde, "alice")
    await alice.slash("rate-party")
    await harness.restart()
    [party] = [m for m in harness.channel_messages() if m.embeds and m.embeds[0].title == "Rating party!"]
    prompt = await alice.click(party, label="6")
    step = prompt.followups[0] if prompt.followups else prompt
    await alice.click(step.message, label="1 · little flaws")
    await harness.advance(121)
    [party] = [m for m in harness.channel_messages() if m.id == party.id]
    assert party.embeds[0].title == "Rating party: results"
    assert "1 member(s) rated" in (party.embeds[0].description or "").replace("**", "")


# --- audit of #7: own generations after a restart and under double clicks; Discord rate limits ----------


async def offer(
    h: Harness, member: Member, user: FakeUser, horde: FakeHorde, n: int
) -> tuple[int, list[str]]:
    request_id, generation_ids = await finished_request(horde, user, n=n)
    rating_id = await h.services.ratings.offer_generation_rating(
        guild_id=h.guild.id,
        discord_id=member.id,
        request_id=request_id,
        generation_ids=generation_ids,
        shared=True,
    )
    assert rating_id is not None
    return rating_id, generation_ids


async def test_generation_rate_buttons_work_after_a_restart(harness: Harness, horde: FakeHorde) -> None:
    alice, user = await linked_member(harness, horde, "alice")
    rating_id, generation_ids = await offer(harness, alice, user, horde, n=1)
    result = await post_generation_result(harness, rating_id, images=1)
    await harness.restart()
    opened = await alice.click(result, label="Rate")
    step = opened.followups[0] if opened.followups else opened
    assert "Image 1 of 1" in seen(step)
    await harness.restart()
    step = await alice.click(step.message, label="8")
    assert "You rated it 8/10" in seen(step)
    await harness.restart()
    step = await alice.click(step.message, label="0 · flawless")
    assert "+" in seen(step) and "kudos" in seen(step)
    [call] = horde.calls_to(r"/generate/rate/")
    # (one image: no "best" to choose)
    assert call.json["ratings"] == [{"id": generation_ids[0], "rating": 8, "artifacts": 0}]


async def test_generation_rating_double_clicks_submit_once(harness: Harness, horde: FakeHorde) -> None:
    alice, user = await linked_member(harness, horde, "alice")
    rating_id, _ = await offer(harness, alice, user, horde, n=1)
    result = await post_generation_result(harness, rating_id, images=1)
    opened = await alice.click(result, label="Rate")
    step = opened.followups[0] if opened.followups else opened
    aesthetic = [cid for cid in custom_ids(step) if cid.startswith("rgen:a:")]
    burst = await alice.click_burst(step.message, aesthetic)
    assert all(reply.deferred for reply in burst), "every click must be acknowledged"
    current = burst[-1]
    flaws = [cid for cid in custom_ids(current) if cid.startswith("rgen:f:")]
    assert flaws, seen(current)
    burst = await alice.click_burst(current.message, (flaws * 2)[:10])
    assert all(reply.deferred for reply in burst)
    assert len(horde.calls_to(r"/generate/rate/")) == 1
    assert any("kudos" in seen(reply) for reply in burst)
    # Clicking Rate again on the result says it is done; nothing more is sent.
    again = await alice.click(result, label="Rate")
    assert "submitted" in seen(again)
    assert len(horde.calls_to(r"/generate/rate/")) == 1


async def test_a_discord_rate_limit_on_the_party_post_ends_it_cleanly(
    harness: Harness, horde: FakeHorde, ratings: FakeRatings
) -> None:
    ratings.add_images(2)
    alice, _ = await linked_member(harness, horde, "alice")
    harness.env.inject_error(
        "POST", f"/channels/{harness.channel.id}/messages", status=429, message="You are being rate limited."
    )
    failed = await alice.slash("rate-party")
    assert failed.private
    assert "rating party is on" not in seen(failed)
    assert "Discord is rate-limiting this bot right now" in seen(failed)
    assert "try again in a minute" in seen(failed)
    assert not [m for m in harness.channel_messages() if m.embeds and m.embeds[0].title == "Rating party!"]
    # The failed party does not block the channel: the next one starts.
    again = await alice.slash("rate-party")
    assert "rating party is on" in seen(again)


async def test_party_results_are_shown_even_when_discord_rate_limits_the_edit(
    harness: Harness, horde: FakeHorde, ratings: FakeRatings
) -> None:
    ratings.add_image()
    alice, _ = await linked_member(harness, horde, "alice")
    await alice.slash("rate-party")
    [party] = [m for m in harness.channel_messages() if m.embeds and m.embeds[0].title == "Rating party!"]
    prompt = await alice.click(party, label="9")
    step = prompt.followups[0] if prompt.followups else prompt
    await alice.click(step.message, label="0 · flawless")
    # When the party ends, Discord answers 429 to the results edit (twice): the bot tries again later.
    harness.env.inject_error(
        "PATCH",
        f"/channels/{harness.channel.id}/messages/{party.id}",
        status=429,
        message="slow down",
        times=2,
    )
    await harness.advance(121)
    [still] = [m for m in harness.channel_messages() if m.id == party.id]
    assert still.embeds[0].title == "Rating party!"
    await harness.advance(120)
    [party] = [m for m in harness.channel_messages() if m.id == party.id]
    assert party.embeds[0].title == "Rating party: results"
    assert "1 member(s) rated this image, average 9.0/10" in (party.embeds[0].description or "").replace(
        "**", ""
    )
    assert party.components == []


async def test_an_unlinked_member_cannot_start_a_party(harness: Harness, ratings: FakeRatings) -> None:
    ratings.add_image()
    reply = await harness.member("carol").slash("rate-party")
    assert reply.private and "/login" in seen(reply)
    assert harness.channel_messages() == []
    assert ratings.count("GET", r"/rating/new") == 0


async def test_skipping_image_after_image_is_rate_limited(
    tmp_path: Path, horde: FakeHorde, ratings: FakeRatings
) -> None:
    """Each Skip fetches and downloads another image: skips share the member's budget with /rate."""
    settings = make_settings(
        tmp_path,
        horde.base_url,
        ratings_url=ratings.base_url,
        ratings=RATINGS_SECTION,
        safety={"user_burst": 4, "user_per_minute": 6, "guild_burst": 30},
    )
    ratings.add_images(6)
    async with run_harness(settings) as h:
        alice, _ = await linked_member(h, horde, "alice")
        shown = await rate_image(alice)  # /login and /rate: two requests of the budget
        for _ in range(2):
            shown = await alice.click(shown.message, label="Skip")
            assert "Rate this image" in seen(shown)
        fetched = ratings.count("GET", r"/rating/new")
        limited = await alice.click(shown.message, label="Skip")
        assert limited.private and "You're sending requests too fast. Try again in 10 seconds." in seen(
            limited
        )
        assert ratings.count("GET", r"/rating/new") == fetched
        # The image and its buttons stay: rating it is not limited, and Skip works again a little later.
        step2 = await alice.click(shown.message, label="7")
        assert "You rated it 7/10" in seen(step2)
        await h.advance(20)
        again = await rate_image(alice)
        skipped = await alice.click(again.message, label="Skip")
        assert "Rate this image" in seen(skipped)
