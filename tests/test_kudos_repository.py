"""The gift repository's exactly-once guarantees under concurrency (SQLite here; tests/test_repositories.py
runs the same checks on both engines)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bot.db import Database
from bot.db.kudos import FAILED, LAPSED, PENDING, QUEUED, SENT, KudosRepository, NewGift
from bot.services.kudos import idempotency_key_for, reaction_dedup_key

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _gift(giver: int, message: int, *, state: str = QUEUED, receiver: int = 2) -> NewGift:
    key = reaction_dedup_key(1, message, giver, "👍")
    return NewGift(
        dedup_key=key,
        idempotency_key=idempotency_key_for(key),
        source="reaction",
        giver_id=giver,
        receiver_id=receiver,
        amount=5,
        state=state,
        guild_id=1,
        channel_id=3,
        message_id=message,
        emoji="👍",
        expires_at=NOW + timedelta(days=7) if state == PENDING else None,
    )


async def assert_gifts_exactly_once(db: Database) -> None:
    repo = KudosRepository(db)
    assert await repo.work_due(NOW) == (False, False)
    assert await repo.next_work_at() is None, "nothing stored: nothing will come due"
    # The same reaction recorded ten times at once: one gift.
    results = await asyncio.gather(*(repo.add(_gift(1_456_074_443_980_800_010, 99), NOW) for _ in range(10)))
    winners = [r for r in results if r is not None]
    assert len(winners) == 1 and len(await repo.all_gifts()) == 1
    gift = winners[0]
    assert gift.idempotency_key == idempotency_key_for(gift.dedup_key)
    # One giver's gifts go out oldest first, one at a time; other givers in parallel.
    await repo.add(_gift(1_456_074_443_980_800_010, 100), NOW)
    await repo.add(_gift(7, 101), NOW)
    due = await repo.due(NOW)
    assert [(g.giver_id, g.message_id) for g in due] == [(1_456_074_443_980_800_010, 99), (7, 101)]
    assert await repo.work_due(NOW) == (False, True)
    assert await repo.work_due(NOW - timedelta(seconds=1)) == (False, False), "not due before its time"
    # Conditional state changes: two workers finishing the same gift, one wins.
    finished = await asyncio.gather(*(repo.mark_sent(gift.id, '{"transferred": 5.0}', NOW) for _ in range(5)))
    assert finished.count(True) == 1
    assert not await repo.mark_failed(gift.id, "X", "late", NOW), "a sent gift never becomes failed"
    sent = await repo.get(gift.id)
    assert sent is not None and (sent.state, sent.attempts) == (SENT, 1)
    # A DM notice claimed by ten events at once is sent once; again only after the interval.
    claims = await asyncio.gather(
        *(repo.claim_notice(5, "link", NOW, NOW - timedelta(days=1)) for _ in range(10))
    )
    assert claims.count(True) == 1
    assert not await repo.claim_notice(5, "link", NOW + timedelta(hours=1), NOW - timedelta(hours=23))
    assert await repo.claim_notice(5, "link", NOW + timedelta(days=2), NOW + timedelta(days=1))
    assert await repo.claim_notice(6, "once", NOW, None)
    assert not await repo.claim_notice(6, "once", NOW + timedelta(days=30), None)
    # Pending gifts: released once on login, lapsed once after the window.
    await repo.add(_gift(8, 200, state=PENDING, receiver=50), NOW)
    await repo.add(_gift(9, 201, state=PENDING, receiver=60), NOW)
    released = await asyncio.gather(*(repo.release_pending(50, NOW + timedelta(days=1)) for _ in range(3)))
    assert sorted(len(r) for r in released) == [0, 0, 1]
    assert (await repo.work_due(NOW + timedelta(days=6)))[0] is False, "within its window"
    assert (await repo.work_due(NOW + timedelta(days=8)))[0] is True
    lapsed = await asyncio.gather(*(repo.lapse_expired(NOW + timedelta(days=8)) for _ in range(3)))
    assert sorted(len(r) for r in lapsed) == [0, 0, 1]
    assert (await repo.work_due(NOW + timedelta(days=8)))[0] is False, "lapsed once"
    states = {g.message_id: g.state for g in await repo.all_gifts()}
    assert states[200] == QUEUED and states[201] == LAPSED
    assert await repo.count_state(FAILED) == 0
    # When stored work next comes due (a process alone on its database rests its queue check until then):
    # the earliest queued gift's next attempt, or pending gift's end of window.
    queued = [g for g in await repo.all_gifts() if g.state == QUEUED]
    assert await repo.next_work_at() == NOW
    for hours, g in enumerate(queued, start=1):
        assert await repo.retry_at(g.id, NOW + timedelta(hours=hours), "X", "later", NOW)
    assert await repo.next_work_at() == NOW + timedelta(hours=1)
    await repo.add(_gift(10, 202, state=PENDING, receiver=70), NOW)
    for g in queued:
        assert await repo.mark_failed(g.id, "X", "given up", NOW)
    assert await repo.next_work_at() == NOW + timedelta(days=7), "the pending gift's window"


async def test_gifts_exactly_once_on_sqlite(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'kudos.db'}")
    await db.connect()
    try:
        await assert_gifts_exactly_once(db)
    finally:
        await db.close()
