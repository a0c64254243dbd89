"""Image ratings, driven as members do: /rate, both steps, Next image, parties, own generations, figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from bot.config import Settings
from tests.conftest import make_settings
from tests.fakes.horde import FakeHorde, FakeUser
from tests.fakes.ratings import FakeRatings
from tests.harness import Harness, Member, Reply

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
    async with h.services.db.session() as session:
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
    assert reply.embeds[0].image.url and "Expires=" not in reply.embeds[0].image.url
    assert "Expires=" not in harness.sent_text()


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
    async with harness.services.db.session() as session:
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
    """Discord wants an answer within 3 s; the service here takes 2 s. (A call slower than the bot's
    timeout is covered in test_ratings_service.py: timeouts run on the simulator's virtual clock.)"""
    ratings.add_image()
    alice, _ = await linked_member(harness, horde, "alice")
    step2 = await choose(alice, 4)
    ratings.inject(r"/rating/", method="POST", delay=2.0, times=1)
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
