"""Kudos gifts (the audit trail and the send queue) and DM-notice bookkeeping (parties: bot/db/parties.py).

Exactly once: every gift has a `dedup_key` (for a reaction: guild, message, giver and emoji) with a unique
index, so a duplicate gateway event, a remove/re-add or a double click inserts nothing. State changes are
conditional updates (`WHERE state = ...`), so two workers can never both move the same gift. Nothing is
deleted: a failed or lapsed gift stays, with the Horde's answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    Index,
    Integer,
    String,
    Table,
    Text,
    and_,
    bindparam,
    delete,
    exists,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Mapped, aliased, mapped_column

from bot.db.database import Database, upsert
from bot.db.leases import Lease, LeaseColumns, LeasedRows, lease_index, process_holder
from bot.db.member_data import MemberData
from bot.db.models import Base
from bot.db.types import UTCDateTime

PENDING = "pending"  # the receiver has not linked an account yet
QUEUED = "queued"  # waiting for (or between) transfer attempts
SENT = "sent"
FAILED = "failed"
LAPSED = "lapsed"  # the receiver did not link in time
STATES = (PENDING, QUEUED, SENT, FAILED, LAPSED)


class GiftRow(LeaseColumns, Base):
    # A queued gift is held by one process at a time (`bot.db.leases`): the one whose lane sends it.
    __tablename__ = "kudos_gifts"
    __table_args__ = (
        lease_index("kudos_gifts"),
        Index("ix_kudos_gifts_state_due", "state", "next_attempt_at"),
        Index("ix_kudos_gifts_receiver_state", "receiver_id", "state"),
        Index("ix_kudos_gifts_giver", "giver_id"),
        Index("ix_kudos_gifts_party", "party_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dedup_key: Mapped[str] = mapped_column(String(200), unique=True)
    idempotency_key: Mapped[str] = mapped_column(String(80))
    source: Mapped[str] = mapped_column(String(16))  # reaction | transfer | party
    guild_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    channel_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    message_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    emoji: Mapped[str] = mapped_column(String(100), default="")
    giver_id: Mapped[int] = mapped_column(BigInteger)
    receiver_id: Mapped[int] = mapped_column(BigInteger)
    amount: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str | None] = mapped_column(String(200), nullable=True)
    party_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    horde_rc: Mapped[str | None] = mapped_column(String(64), nullable=True)
    horde_response: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class NoticeRow(Base):
    """When a member was last told something (rate-limits DMs: once a day, or once ever)."""

    __tablename__ = "kudos_notices"

    user_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    kind: Mapped[str] = mapped_column(String(64), primary_key=True)
    sent_at: Mapped[datetime] = mapped_column(UTCDateTime())


@dataclass(frozen=True)
class NewGift:
    dedup_key: str
    idempotency_key: str
    source: str
    giver_id: int
    receiver_id: int
    amount: int
    state: str
    guild_id: int | None = None
    channel_id: int | None = None
    message_id: int | None = None
    emoji: str = ""
    reason: str | None = None
    party_id: int | None = None
    expires_at: datetime | None = None


@dataclass(frozen=True)
class Gift:
    id: int
    dedup_key: str
    idempotency_key: str
    source: str
    guild_id: int | None
    channel_id: int | None
    message_id: int | None
    emoji: str
    giver_id: int
    receiver_id: int
    amount: int
    reason: str | None
    party_id: int | None
    state: str
    attempts: int
    next_attempt_at: datetime | None
    expires_at: datetime | None
    horde_rc: str | None
    horde_response: str | None
    created_at: datetime
    updated_at: datetime
    sent_at: datetime | None


def _gift(row: GiftRow) -> Gift:
    return Gift(
        id=row.id,
        dedup_key=row.dedup_key,
        idempotency_key=row.idempotency_key,
        source=row.source,
        guild_id=row.guild_id,
        channel_id=row.channel_id,
        message_id=row.message_id,
        emoji=row.emoji,
        giver_id=row.giver_id,
        receiver_id=row.receiver_id,
        amount=row.amount,
        reason=row.reason,
        party_id=row.party_id,
        state=row.state,
        attempts=row.attempts,
        next_attempt_at=row.next_attempt_at,
        expires_at=row.expires_at,
        horde_rc=row.horde_rc,
        horde_response=row.horde_response,
        created_at=row.created_at,
        updated_at=row.updated_at,
        sent_at=row.sent_at,
    )


# A transfer goes ahead only while its gift is still queued (one expression: holds share batches).
_STILL_QUEUED = GiftRow.state == QUEUED

_LEDGER = (
    "the kudos ledger: each gift is also the other member's record of kudos given or received (the AI Horde "
    "keeps the transfer itself); ids, amounts and times only (the member's /transfer reasons are blanked); "
    "kept retention.kudos_ledger days"
)


def _row_values(gift: NewGift, now: datetime, held: dict[str, Any]) -> dict[str, Any]:
    return {
        # A queued gift is held by the process that recorded it; a pending one waits for nobody.
        **(held if gift.state == QUEUED else LeasedRows.released()),
        "dedup_key": gift.dedup_key,
        "idempotency_key": gift.idempotency_key,
        "source": gift.source,
        "guild_id": gift.guild_id,
        "channel_id": gift.channel_id,
        "message_id": gift.message_id,
        "emoji": gift.emoji,
        "giver_id": gift.giver_id,
        "receiver_id": gift.receiver_id,
        "amount": gift.amount,
        "reason": gift.reason,
        "party_id": gift.party_id,
        "state": gift.state,
        "attempts": 0,
        "next_attempt_at": now if gift.state == QUEUED else None,
        "expires_at": gift.expires_at,
        "created_at": now,
        "updated_at": now,
    }


class KudosRepository:
    MEMBER_DATA = MemberData(
        forgets=("kudos_notices.user_id",),
        keeps={
            "kudos_gifts.giver_id": _LEDGER,
            "kudos_gifts.receiver_id": _LEDGER,
            # The unique key that makes a reaction pay once embeds the giver (or a party's winner).
            "kudos_gifts.dedup_key": _LEDGER,
        },
    )

    def __init__(self, db: Database, lease: Lease | None = None) -> None:
        self._db = db
        self.leases = LeasedRows(db, cast(Table, GiftRow.__table__), lease or Lease(process_holder()))

    # --- gifts ----------------------------------------------------------------------------------------

    async def add(self, gift: NewGift, now: datetime) -> Gift | None:
        """Insert a gift; None if one with the same `dedup_key` exists (a duplicate: nothing changes)."""
        return (await self.add_many([gift], now))[0]

    async def add_many(self, gifts: list[NewGift], now: datetime) -> list[Gift | None]:
        """Insert several gifts in one transaction (a storm's group commit); None for each duplicate.

        One executemany `INSERT ... ON CONFLICT DO NOTHING RETURNING id` (compiled once, sent as a few
        multi-row statements): a storm's thousand gifts are not a thousand round trips to the database."""
        if not gifts:
            return []
        table = cast(Table, GiftRow.__table__)
        held = self.leases.held(now)
        rows = [_row_values(g, now, held) for g in gifts]
        async with self._db.write_session() as session:
            stmt = (
                upsert(session, table)
                .on_conflict_do_nothing(index_elements=["dedup_key"])
                .returning(table.c.id, table.c.dedup_key)
            )
            inserted = {key: gift_id for gift_id, key in await session.execute(stmt, rows)}
        # The first of several with one dedup_key in the batch was inserted; the others are duplicates.
        results: list[Gift | None] = []
        for values in rows:
            gift_id = inserted.pop(values["dedup_key"], None)
            results.append(
                None
                if gift_id is None
                else Gift(
                    id=gift_id,
                    horde_rc=None,
                    horde_response=None,
                    sent_at=None,
                    **{k: v for k, v in values.items() if k not in ("claimed_by", "lease_until")},
                )
            )
        return results

    async def get(self, gift_id: int) -> Gift | None:
        async with self._db.session() as session:
            row = await session.get(GiftRow, gift_id)
            return _gift(row) if row is not None else None

    async def by_dedup_key(self, dedup_key: str) -> Gift | None:
        async with self._db.session() as session:
            row = (
                await session.execute(select(GiftRow).where(GiftRow.dedup_key == dedup_key))
            ).scalar_one_or_none()
            return _gift(row) if row is not None else None

    async def due(self, now: datetime, limit: int = 1000) -> list[Gift]:
        """The oldest due queued gift of each giver (a giver's gifts go out one at a time, in order), among
        the gifts this process may send: its own, and those nobody holds (their process died)."""
        async with self._db.session() as session:
            oldest = (
                select(func.min(GiftRow.id))
                .where(GiftRow.state == QUEUED, GiftRow.next_attempt_at <= now, self.leases.claimable(now))
                .group_by(GiftRow.giver_id)
            )
            rows = (
                await session.execute(
                    select(GiftRow).where(GiftRow.id.in_(oldest)).order_by(GiftRow.id).limit(limit)
                )
            ).scalars()
            return [_gift(r) for r in rows]

    async def work_due(self, now: datetime) -> tuple[bool, bool]:
        """(a pending gift's window has passed, a gift `due` would return is due): one read for the periodic
        check, which most of the time finds neither and then skips both queries."""
        lapsed = exists().where(GiftRow.state == PENDING, GiftRow.expires_at <= now)
        claimable = self.leases.claimable(now)
        due = exists().where(GiftRow.state == QUEUED, GiftRow.next_attempt_at <= now, claimable)
        async with self._db.session() as session:
            found = (await session.execute(select(lapsed, due))).one()
            return bool(found[0]), bool(found[1])

    async def next_work_at(self) -> datetime | None:
        """The earliest time the periodic check can find work in the stored gifts (None: there are no
        queued or pending gifts): a queued gift's next attempt (whoever holds it), a pending gift's end of
        window. For a process alone on the database, which makes every later change itself."""
        queued = select(func.min(GiftRow.next_attempt_at)).where(GiftRow.state == QUEUED).scalar_subquery()
        pending = select(func.min(GiftRow.expires_at)).where(GiftRow.state == PENDING).scalar_subquery()
        async with self._db.session() as session:
            found = (await session.execute(select(queued, pending))).one()
        times = [at for at in found if at is not None]
        return min(times) if times else None

    async def next_due(self, giver_id: int, now: datetime) -> Gift | None:
        """The giver's oldest due queued gift, taken by this process (None when none is due or another
        process holds it). Not while another live process holds an older gift of the giver: the giver's
        gifts go out one at a time and in order, whichever processes recorded them."""
        older = aliased(GiftRow)
        ahead_elsewhere = exists().where(
            older.giver_id == giver_id,
            older.state == QUEUED,
            older.id < GiftRow.id,
            older.claimed_by != self.leases.holder,
            older.lease_until >= now,
        )
        due = and_(
            GiftRow.giver_id == giver_id,
            GiftRow.state == QUEUED,
            GiftRow.next_attempt_at <= now,
            ~ahead_elsewhere,
        )
        claimed = await self.leases.claim(now, due, limit=1)
        return await self.get(claimed[0]) if claimed else None

    async def hold(self, gift_id: int, now: datetime) -> bool:
        """Before a transfer: True while this process holds the queued gift (lease renewed)."""
        return await self.leases.hold(gift_id, now, _STILL_QUEUED)

    async def unheld(self, now: datetime) -> bool:
        """Whether a queued gift waits for a new holder (its process died)."""
        return await self.leases.expired(now, GiftRow.state == QUEUED)

    async def sent_since(self, since: datetime) -> list[tuple[int, int, datetime]]:
        """(giver, receiver, sent at) of every gift sent since `since` (the Horde's reciprocal rule)."""
        async with self._db.session() as session:
            rows = await session.execute(
                select(GiftRow.giver_id, GiftRow.receiver_id, GiftRow.sent_at).where(
                    GiftRow.state == SENT, GiftRow.sent_at >= since
                )
            )
            return [(int(g), int(r), at) for g, r, at in rows if at is not None]

    async def _move(self, gift_id: int, from_states: tuple[str, ...], **values: Any) -> bool:
        async with self._db.write_session() as session:
            result = await session.execute(
                update(GiftRow).where(GiftRow.id == gift_id, GiftRow.state.in_(from_states)).values(**values)
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    async def mark_sent(self, gift_id: int, response: str, now: datetime) -> bool:
        """The Horde confirmed the transfer (counts the attempt)."""
        return await self._move(
            gift_id,
            (QUEUED,),
            state=SENT,
            attempts=GiftRow.attempts + 1,
            horde_response=response,
            horde_rc=None,
            sent_at=now,
            updated_at=now,
            next_attempt_at=None,
            **LeasedRows.released(),
        )

    async def mark_sent_many(self, sent: list[tuple[int, str, datetime]]) -> set[int]:
        """Record several confirmed transfers in one transaction; returns the ids that were still queued.
        Two statements however many gifts (a select, then one executemany update)."""
        if not sent:
            return set()
        async with self._db.write_session() as session:
            ids = [gift_id for gift_id, _r, _at in sent]
            moved = set(
                (
                    await session.scalars(
                        select(GiftRow.id).where(GiftRow.id.in_(ids), GiftRow.state == QUEUED)
                    )
                ).all()
            )
            if moved:
                table = cast(Table, GiftRow.__table__)
                stmt = (
                    update(table)
                    .where(table.c.id == bindparam("gift_id"), table.c.state == QUEUED)
                    .values(
                        state=SENT,
                        attempts=table.c.attempts + 1,
                        horde_response=bindparam("response"),
                        horde_rc=None,
                        sent_at=bindparam("at"),
                        updated_at=bindparam("at"),
                        next_attempt_at=None,
                        **LeasedRows.released(),
                    )
                )
                await session.execute(
                    stmt,
                    [
                        {"gift_id": gift_id, "response": response, "at": at}
                        for gift_id, response, at in sent
                        if gift_id in moved
                    ],
                )
        return moved

    async def mark_failed(
        self, gift_id: int, rc: str | None, response: str, now: datetime, *, attempted: bool = True
    ) -> bool:
        extra: dict[str, Any] = {"attempts": GiftRow.attempts + 1} if attempted else {}
        return await self._move(
            gift_id,
            (QUEUED, PENDING),
            state=FAILED,
            horde_rc=rc,
            horde_response=response,
            updated_at=now,
            next_attempt_at=None,
            **LeasedRows.released(),
            **extra,
        )

    async def retry_at(
        self,
        gift_id: int,
        at: datetime,
        rc: str | None,
        response: str,
        now: datetime,
        *,
        attempted: bool = True,
    ) -> bool:
        """The gift waits until `at`, and why: an attempt failed in a way that is retried (counted), or it
        is held back before any call (`attempted=False`)."""
        extra: dict[str, Any] = {"attempts": GiftRow.attempts + 1} if attempted else {}
        return await self._move(
            gift_id,
            (QUEUED,),
            **extra,
            next_attempt_at=at,
            horde_rc=rc,
            horde_response=response,
            updated_at=now,
        )

    async def back_to_pending(self, gift_id: int, expires_at: datetime, now: datetime) -> bool:
        return await self._move(
            gift_id,
            (QUEUED,),
            state=PENDING,
            expires_at=expires_at,
            next_attempt_at=None,
            updated_at=now,
            **LeasedRows.released(),  # nobody works on a gift waiting for its receiver
        )

    async def release_pending(self, receiver_id: int, now: datetime) -> list[Gift]:
        """The receiver linked: queue their unexpired pending gifts."""
        async with self._db.write_session() as session:
            rows = list(
                (
                    await session.execute(
                        select(GiftRow).where(
                            GiftRow.receiver_id == receiver_id,
                            GiftRow.state == PENDING,
                            or_(GiftRow.expires_at.is_(None), GiftRow.expires_at > now),
                        )
                    )
                ).scalars()
            )
            released = []
            for row in rows:
                result = await session.execute(
                    update(GiftRow)
                    .where(GiftRow.id == row.id, GiftRow.state == PENDING)
                    .values(state=QUEUED, next_attempt_at=now, updated_at=now, **self.leases.held(now))
                )
                if result.rowcount:  # type: ignore[attr-defined]
                    released.append(row.id)
        return [g for g in [await self.get(i) for i in released] if g is not None]

    async def lapse_expired(self, now: datetime) -> list[Gift]:
        """Pending gifts past their window become `lapsed` (each returned once, to tell the giver)."""
        async with self._db.write_session() as session:
            ids = list(
                (
                    await session.execute(
                        select(GiftRow.id).where(GiftRow.state == PENDING, GiftRow.expires_at <= now)
                    )
                ).scalars()
            )
            lapsed = []
            for gift_id in ids:
                result = await session.execute(
                    update(GiftRow)
                    .where(GiftRow.id == gift_id, GiftRow.state == PENDING)
                    .values(state=LAPSED, updated_at=now, horde_rc="ReceiverNotLinked")
                )
                if result.rowcount:  # type: ignore[attr-defined]
                    lapsed.append(gift_id)
        return [g for g in [await self.get(i) for i in lapsed] if g is not None]

    async def history(self, member_id: int, limit: int) -> tuple[list[Gift], list[Gift]]:
        """(most recent gifts sent, most recent gifts received) by a member."""
        async with self._db.session() as session:
            sent = (
                await session.execute(
                    select(GiftRow)
                    .where(GiftRow.giver_id == member_id)
                    .order_by(GiftRow.id.desc())
                    .limit(limit)
                )
            ).scalars()
            received = (
                await session.execute(
                    select(GiftRow)
                    .where(GiftRow.receiver_id == member_id)
                    .order_by(GiftRow.id.desc())
                    .limit(limit)
                )
            ).scalars()
            return [_gift(r) for r in sent], [_gift(r) for r in received]

    async def all_gifts(self) -> list[Gift]:
        async with self._db.session() as session:
            return [_gift(r) for r in (await session.execute(select(GiftRow).order_by(GiftRow.id))).scalars()]

    async def count_state(self, state: str) -> int:
        async with self._db.session() as session:
            return int(
                (
                    await session.execute(
                        select(func.count()).select_from(GiftRow).where(GiftRow.state == state)
                    )
                ).scalar_one()
            )

    # --- notices --------------------------------------------------------------------------------------

    async def claim_notice(self, user_id: int, kind: str, now: datetime, not_since: datetime | None) -> bool:
        """True if this caller may send the notice now: never sent, or last sent before `not_since`
        (None: once ever). Atomic, so two events at once send one DM."""
        async with self._db.write_session() as session:
            stmt = (
                upsert(session, NoticeRow)
                .values(user_id=user_id, kind=kind, sent_at=now)
                .on_conflict_do_nothing(index_elements=["user_id", "kind"])
                .returning(NoticeRow.user_id)
            )
            if (await session.execute(stmt)).scalar_one_or_none() is not None:
                return True
            if not_since is None:
                return False
            result = await session.execute(
                update(NoticeRow)
                .where(
                    and_(NoticeRow.user_id == user_id, NoticeRow.kind == kind, NoticeRow.sent_at <= not_since)
                )
                .values(sent_at=now)
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    async def forget_notice(self, user_id: int, kind: str) -> None:
        async with self._db.write_session() as session:
            row = await session.get(NoticeRow, (user_id, kind))
            if row is not None:
                await session.delete(row)

    async def forget_member(self, user_id: int) -> None:
        """/logout: the member's notices go; their gifts stay as the ledger, with the reasons they wrote
        blanked (the parties they hosted are `PartyRepository`'s)."""
        async with self._db.write_session() as session:
            await session.execute(delete(NoticeRow).where(NoticeRow.user_id == user_id))
            await session.execute(
                update(GiftRow)
                .where(GiftRow.giver_id == user_id, GiftRow.reason.is_not(None))
                .values(reason=None)
            )
