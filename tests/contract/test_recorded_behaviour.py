"""What members see when the AI Horde answers as the real server does (recorded answers served by the fake
Horde), and when it answers something the bot can't read (issue #15, parts 1 and 3)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from sqlalchemy import text

from tests.contract.transcripts import transcript
from tests.fakes.horde import FakeHorde
from tests.harness import Harness

NOT_UNDERSTOOD = "The AI Horde sent an answer this bot doesn't understand"


@pytest.fixture(autouse=True)
def _no_fake_rate_limits(horde: FakeHorde) -> None:
    # The fake's limiter counts real seconds while these tests move virtual ones.
    horde.enforce_rate_limits = False


def _understood_logs(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "doesn't understand" in r.getMessage()]


async def test_news_works_on_the_recorded_real_news_list(harness: Harness, horde: FakeHorde) -> None:
    recorded: list[dict[str, Any]] = transcript("04_status_news").body
    assert sum(item["tags"] is None for item in recorded) == 38
    horde.news = [dict(item) for item in recorded]
    reply = await harness.member("alice").slash("news")
    assert not reply.private
    assert "not reachable" not in reply.text and "doesn't understand" not in reply.text
    newest = sorted(recorded, key=lambda n: n["date_published"], reverse=True)[:3]
    for item in newest:
        assert item["title"] in reply.text
    assert reply.text.index(newest[0]["title"]) < reply.text.index(newest[2]["title"])


async def test_news_item_with_null_tags_is_shown(harness: Harness, horde: FakeHorde) -> None:
    bridge = next(n for n in transcript("04_status_news").body if n["title"] == "Bridge agent key")
    assert bridge["tags"] is None
    horde.news = [dict(bridge)]
    reply = await harness.member("alice").slash("news")
    assert "2023-01-23" in reply.text and "Bridge agent key" in reply.text


async def test_unreadable_news_is_named_truthfully(
    harness: Harness, horde: FakeHorde, caplog: pytest.LogCaptureFixture
) -> None:
    horde.inject(r"/status/news$", status=200, body=[{"date_published": "2025-01-01", "newspiece": ["?"]}])
    reply = await harness.member("alice").slash("news")
    assert reply.private
    assert NOT_UNDERSTOOD in reply.text
    assert "not reachable" not in reply.text
    (logged,) = _understood_logs(caplog)
    assert "GET /status/news" in logged and "'0.newspiece'" in logged


async def test_submit_answer_without_id_is_named_truthfully(
    harness: Harness, horde: FakeHorde, caplog: pytest.LogCaptureFixture
) -> None:
    # A 202 the bot can't use: the dry-run shape (no `id`), as recorded in transcript 16.
    horde.inject(r"/generate/async$", status=202, body=transcript("16_img_dry_run").body)
    reply = await harness.member("alice").slash("generate", prompt="a lighthouse at dusk")
    assert reply.private
    assert NOT_UNDERSTOOD in reply.text and "not reachable" not in reply.text
    (logged,) = _understood_logs(caplog)
    assert "POST /generate/async" in logged and "'id'" in logged
    async with harness.runtime.db.session() as session:
        states = (await session.execute(text("SELECT state FROM generation_jobs"))).scalars().all()
    assert list(states) == ["failed"]


async def test_user_answer_without_username_names_the_field(
    harness: Harness, horde: FakeHorde, caplog: pytest.LogCaptureFixture
) -> None:
    user = horde.add_user("alice", kudos=50)
    assert user.apikey is not None
    body = dict(transcript("09_find_user_alice").body)
    body["username"] = None
    horde.inject(r"/find_user$", status=200, body=body)
    alice = harness.member("alice")
    shown = await alice.slash("login")
    reply = await alice.submit_modal(shown, {"login:apikey": user.apikey})
    assert reply.ephemeral
    assert NOT_UNDERSTOOD in reply.text
    (logged,) = _understood_logs(caplog)
    assert "GET /find_user" in logged and "'username'" in logged
    assert user.apikey not in caplog.text


def test_logged_level_is_warning(caplog: pytest.LogCaptureFixture) -> None:
    """The 'doesn't understand' line is a warning: an operator must see it without debug logging."""
    from bot.horde.client import HordeClient
    from bot.horde.errors import HordeUnexpectedResponse
    from bot.horde.generation import ImageCheck

    caplog.set_level(logging.INFO)
    with pytest.raises(HordeUnexpectedResponse):
        HordeClient.parse(ImageCheck, {"done": "perhaps"}, "GET /generate/check/{id}")
    (record,) = [r for r in caplog.records if "doesn't understand" in r.getMessage()]
    assert record.levelno == logging.WARNING
