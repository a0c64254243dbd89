"""Sending recorded gifts: one lane per giver, the Horde's limits and its reciprocal rule, the outcome
told to the giver (steps 2-4 of `bot.services.kudos`).

Each giver has a *lane*: a task started the moment their gift is recorded, which sends the giver's due
gifts oldest first, at most one transfer per `transfer_interval` (the Horde's limit per key), with an
`Idempotency-Key` derived from the record. Lanes of different givers run side by side (up to
`max_parallel` calls at once, oldest gift first). A lane ends when nothing is due or its next slot is in
the future; the scheduler wakes it then, so no task sleeps meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import heapq
import itertools
import json
import logging
import random
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta

from bot.clock import Clock
from bot.config import KudosSettings
from bot.crypto import KeyDecryptionError
from bot.db.group_commit import GroupCommit
from bot.db.kudos import FAILED, SENT, Gift, KudosRepository
from bot.hooks import Hook, Port
from bot.horde.client import HordeClient
from bot.horde.errors import HordeError, HordeUnavailable
from bot.horde.pacer import key_id
from bot.notify import Notifier
from bot.scheduler import Scheduler
from bot.services.accounts import AccountService
from bot.services.guild_config import render_emoji_key
from bot.services.kudos.gateway import KudosGateway
from bot.services.kudos.links import MemberLinks

log = logging.getLogger(__name__)

# Why a transfer failed, as the giver is told (the Horde's rc -> a sentence that says what to do).
FAILURE_TEXT: dict[str, str] = {
    "KudosTransferNotEnough": "you don't have enough kudos on the AI Horde for it",
    "InvalidAPIKey": "your linked AI Horde API key no longer works (revoked or reset?): link a new one "
    "with `/login`",
    "GiverNotLinked": "your AI Horde account is no longer linked: link it with `/login`",
    "KudosTransferToSelf": "you both use the same AI Horde account",
    "InvalidTargetUsername": "the receiver's AI Horde account no longer exists",
    "KudosTransferFromAnon": "the anonymous key can't send kudos",
    "KudosTransferToAnon": "the anonymous account can't receive kudos",
    "EducationCannotSendKudos": "education accounts can't send kudos",
    "SourceAccountFlagged": "your AI Horde account is flagged: contact the Horde moderators",
    "TargetAccountFlagged": "the receiver's AI Horde account is flagged",
    "FaultWhenKudosSending": "the AI Horde refused it (contact the Horde moderators)",
    "FaultWhenKudosReceiving": "the AI Horde refused it for the receiver's account",
    "DeletedUser": "one of the AI Horde accounts is being deleted",
    "KeyUnreadable": "the bot can't read your stored key: link it again with `/login`",
}
DELAY_TEXT: dict[str, str] = {
    "TooFastKudosTransfers": "the receiver sent you kudos less than a minute ago and the AI Horde makes "
    "you wait a minute before sending back",
    "outage": "the AI Horde can't be reached right now",
}


@dataclass(frozen=True)
class Outcome:
    """What happened to a gift the caller is waiting for."""

    gift: Gift
    why: str | None = None  # failure or delay reason, for the giver


class OldestFirst:
    """At most `limit` holders at once; the others are let in by their `order` (a gift's id: the order
    gifts were recorded), not by when they asked. In a storm every giver's lane asks for a transfer slot
    again each second: in arrival order a giver's first gift queued behind the follow-ups of every giver
    who started earlier; oldest first, it goes before any gift recorded after it."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._busy = 0
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []  # a heap: (order, arrival, waiter)
        self._arrivals = itertools.count()

    @contextlib.asynccontextmanager
    async def slot(self, order: int) -> AsyncIterator[None]:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (order, next(self._arrivals), waiter))
        self._let_in()
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self._release()  # let in, then cancelled before using it: the slot passes on
            raise  # (a waiter cancelled in line is skipped when its turn comes)
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        self._busy -= 1
        self._let_in()

    def _let_in(self) -> None:
        while self._waiting and self._busy < self._limit:
            _order, _arrival, waiter = heapq.heappop(self._waiting)
            if waiter.done():
                continue
            self._busy += 1
            waiter.set_result(None)


class GiftSender:
    def __init__(
        self,
        repo: KudosRepository,
        links: MemberLinks,
        accounts: AccountService,
        horde: HordeClient,
        notifier: Notifier,
        scheduler: Scheduler,
        clock: Clock,
        settings: KudosSettings,
        *,
        gateway: Port[KudosGateway],
        on_sent: Hook[[Gift], None],
        on_failed: Hook[[Gift], None],
        on_rescheduled: Callable[[], None] = lambda: None,
    ) -> None:
        """`on_rescheduled`: called after a gift's next attempt or pending window is written (the periodic
        check of a process alone on its database rests until the earliest of them)."""
        self.repo = repo
        self._links = links
        self._accounts = accounts
        self._horde = horde
        self._notifier = notifier
        self._scheduler = scheduler
        self._clock = clock
        self.settings = settings
        self._gateway = gateway
        self._on_sent = on_sent
        self._on_failed = on_failed
        self._on_rescheduled = on_rescheduled
        self._next_slot: dict[int, float] = {}  # giver id -> monotonic time of their next allowed transfer
        self._lanes: dict[int, asyncio.Task[None]] = {}  # giver id -> the task sending their gifts
        self._lane_must_recheck: set[int] = set()  # givers with a gift recorded while their lane was looking
        # Gifts just recorded, handed to their giver's lane without a query (the database stays the
        # truth: a lane that finds none here asks it, after a restart or a retry time).
        self._fresh: dict[int, deque[Gift]] = {}
        # Gifts a lane read from the database before their recorder handed them over (a query can see a
        # gift the moment it is committed): never sent a second time from memory.
        self._taken_from_db: OrderedDict[int, None] = OrderedDict()
        self._wakes: dict[int, float] = {}  # giver id -> monotonic time of their booked lane wake-up
        self._calls = OldestFirst(settings.max_parallel)  # transfer calls in flight, oldest gift first
        # The Horde refuses a gift back within a minute of a transfer the other way: when each
        # (giver, receiver) pair last transferred (monotonic clock), and the pairs with a call on its way.
        self._last_transfer: dict[tuple[int, int], float] = {}
        self._transferring: set[tuple[int, int]] = set()
        self._recent_loaded = False
        self._recent_lock = asyncio.Lock()
        self._sent_marks: GroupCommit[Gift, bool] = GroupCommit()
        self._waiters: dict[int, list[asyncio.Future[Outcome]]] = {}
        self._confirmed: OrderedDict[int, None] = OrderedDict()  # messages the bot already reacted on

    def hand_over(self, gift: Gift) -> None:
        """A gift just recorded as queued: its giver's lane sends it (without reading it back)."""
        self._fresh.setdefault(gift.giver_id, deque()).append(gift)
        self.start_sending(gift.giver_id)

    def start_sending(self, giver_id: int | None = None) -> None:
        """Send due gifts now, in the background: one giver's (their lane), or everyone's (`drain`)."""
        if giver_id is not None:
            self._start_lane(giver_id)
            return
        # Shutting down (RuntimeError): the periodic job resumes the queue after the restart.
        with contextlib.suppress(RuntimeError):
            self._scheduler.spawn(self.drain(), name="kudos:drain")

    # --- the send queue ------------------------------------------------------------------------------------

    async def drain(self) -> None:
        """Start the lane of every giver with a due gift (after a restart, a retry time, an outage)."""
        due = await self.repo.due(self._clock.now())
        for giver_id in dict.fromkeys(g.giver_id for g in due):
            self._start_lane(giver_id)

    def _start_lane(self, giver_id: int) -> None:
        lane = self._lanes.get(giver_id)
        if lane is not None and not lane.done():
            self._lane_must_recheck.add(giver_id)  # it looks for due gifts once more before it ends
            return
        # Shutting down (RuntimeError): the periodic job resumes the queue after the restart.
        with contextlib.suppress(RuntimeError):
            self._lanes[giver_id] = self._scheduler.spawn(self._lane(giver_id), name="kudos:lane")

    async def _lane(self, giver_id: int) -> None:
        """Send the giver's due gifts, oldest first, one per `transfer_interval`. Ends when none is due or
        the next slot is in the future (the scheduler wakes the lane then: no task sleeps meanwhile)."""
        try:
            await self._load_recent_transfers()
            while True:
                self._lane_must_recheck.discard(giver_id)
                wait = self._next_slot.get(giver_id, 0.0) - self._clock.monotonic()
                if wait > 0:
                    self._wake_lane_later(giver_id, wait)
                    return
                gift = self._take_fresh(giver_id)
                if gift is None:
                    gift = await self.repo.next_due(giver_id, self._clock.now())
                    if gift is not None:
                        self._drop_fresh(gift)
                if gift is None:
                    if giver_id in self._lane_must_recheck:
                        continue  # a gift was recorded while we looked
                    return
                hold = self._reciprocal_hold(gift)
                if hold > 0:
                    await self._delay(
                        gift,
                        "TooFastKudosTransfers",
                        "TooFastKudosTransfers",
                        "held: the receiver transferred kudos to the giver less than a minute ago",
                        hold,
                        attempted=False,
                    )
                    continue
                # Claimed before the first await, so the receiver's lane holds a gift back meanwhile.
                pair = (gift.giver_id, gift.receiver_id)
                self._transferring.add(pair)
                try:
                    async with self._calls.slot(gift.id):
                        sent = await self._send(gift)
                finally:
                    self._transferring.discard(pair)
                if sent is not None:
                    await self._record_sent(sent)
        finally:
            if self._lanes.get(giver_id) is asyncio.current_task():
                del self._lanes[giver_id]

    def _take_fresh(self, giver_id: int) -> Gift | None:
        fresh = self._fresh.get(giver_id)
        while fresh:
            gift = fresh.popleft()
            if gift.id in self._taken_from_db:
                del self._taken_from_db[gift.id]
                continue
            return gift
        self._fresh.pop(giver_id, None)
        return None

    def _drop_fresh(self, gift: Gift) -> None:
        """The lane found this gift in the database first: it must not be sent again from memory (it may
        be handed over only now, after the query saw it committed)."""
        fresh = self._fresh.get(gift.giver_id)
        if fresh and any(g.id == gift.id for g in fresh):
            self._fresh[gift.giver_id] = deque(g for g in fresh if g.id != gift.id)
            return
        self._taken_from_db[gift.id] = None
        while len(self._taken_from_db) > 4096:
            self._taken_from_db.popitem(last=False)

    def _wake_lane_later(self, giver_id: int, delay: float) -> None:
        at = self._clock.monotonic() + delay
        booked = self._wakes.get(giver_id)
        if booked is not None and self._clock.monotonic() < booked <= at:
            return  # an earlier wake-up is already booked

        self._wakes[giver_id] = at

        async def wake() -> None:
            if self._wakes.get(giver_id) == at:
                del self._wakes[giver_id]
            self._start_lane(giver_id)

        self._scheduler.call_later("kudos:pace", delay, wake)

    # --- the Horde's reciprocal rule -------------------------------------------------------------------

    async def _load_recent_transfers(self) -> None:
        """Once per process: the transfers of the last minute, from before a restart."""
        if self._recent_loaded:
            return
        async with self._recent_lock:
            if self._recent_loaded:
                return
            now = self._clock.now()
            since = now - timedelta(seconds=self.settings.reciprocal_wait)
            for giver_id, receiver_id, at in await self.repo.sent_since(since):
                ago = (now - at).total_seconds()
                self._note_transfer(giver_id, receiver_id, self._clock.monotonic() - ago)
            self._recent_loaded = True

    def _note_transfer(self, giver_id: int, receiver_id: int, at: float) -> None:
        last = self._last_transfer.get((giver_id, receiver_id))
        if last is None or at > last:
            self._last_transfer[(giver_id, receiver_id)] = at

    def _reciprocal_hold(self, gift: Gift) -> float:
        """Seconds until the Horde accepts this gift: it refuses a transfer to someone whose own transfer
        to the giver is less than a minute old, so one still on its way counts as made just now."""
        wait = self.settings.reciprocal_wait
        back = (gift.receiver_id, gift.giver_id)
        if wait <= 0:
            return 0.0
        if back in self._transferring:
            return wait
        last = self._last_transfer.get(back)
        if last is None:
            return 0.0
        return max(0.0, wait - (self._clock.monotonic() - last))

    def forget_old_transfers(self) -> None:
        before = self._clock.monotonic() - self.settings.reciprocal_wait
        for pair, at in list(self._last_transfer.items()):
            if at < before:
                del self._last_transfer[pair]

    async def _send(self, gift: Gift) -> Gift | None:
        """One transfer attempt; returns the gift as sent (to be recorded by the caller), else None."""
        now = self._clock.now()
        self._next_slot[gift.giver_id] = self._clock.monotonic() + self.settings.transfer_interval
        receiver = await self._links.get(gift.receiver_id)
        if receiver is None:
            # Unlinked since the gift was queued: wait for them again.
            expires = now + timedelta(days=self.settings.pending_days)
            await self.repo.back_to_pending(gift.id, expires, now)
            self._on_rescheduled()
            return None
        # From the link cache (forgotten at once on /login and /logout): no query per transfer.
        giver = await self._links.get(gift.giver_id)
        if giver is None:
            await self._fail(gift, "GiverNotLinked", "the giver unlinked their account", attempted=False)
            return None
        try:
            key = self._accounts.key_of(giver)
        except KeyDecryptionError:
            await self._fail(gift, "KeyUnreadable", "stored key unreadable", attempted=False)
            return None
        if key.is_anonymous:
            await self._fail(gift, "KudosTransferFromAnon", "anonymous key", attempted=False)
            return None
        # The Horde's limits per key (1 a second, 90 an hour) are the pacer's: when the key's slot is
        # taken, the lane comes back then rather than wait in the pacer's line ahead of other givers.
        busy = self._horde.pacer.next_free("kudos", key_id(key.reveal()))
        if busy > 0:
            self._next_slot[gift.giver_id] = max(
                self._next_slot.get(gift.giver_id, 0.0), self._clock.monotonic() + busy
            )
            return None
        # The gift was recorded before this call, and only the giver's lane sends their gifts, so nothing
        # else in this process can be sending it now; the lease says no other process is (one that took it
        # over while this one stalled sends it instead). The attempt is counted with its outcome.
        if not await self.repo.hold(gift.id, now):
            log.info("kudos: gift %s is another process's now", gift.id)
            return None
        pair = (gift.giver_id, gift.receiver_id)
        try:
            result = await self._horde.transfer_kudos(
                key, receiver.horde_username, gift.amount, idempotency_key=gift.idempotency_key
            )
        except HordeUnavailable as exc:
            # It may have been applied before the connection failed: count it for the reciprocal rule.
            self._note_transfer(*pair, self._clock.monotonic())
            self._pace_after_call(gift)
            await self._retry(gift, "outage", exc, self._backoff(gift.attempts + 1))
            return None
        except HordeError as exc:
            self._pace_after_call(gift)
            if exc.is_rate_limit:
                delay = exc.retry_after if exc.retry_after is not None else self._backoff(gift.attempts + 1)
                self._next_slot[gift.giver_id] = self._clock.monotonic() + max(delay, 1.0)
                await self._retry(gift, None, exc, delay)
            elif exc.rc == "TooFastKudosTransfers":
                # A transfer the bot didn't make (the Horde's website, another bot) tripped the rule.
                await self._retry(gift, "TooFastKudosTransfers", exc, self.settings.reciprocal_wait)
            elif exc.rc == "MaintenanceMode":
                await self._retry(gift, "outage", exc, self._backoff(gift.attempts + 1))
            elif exc.status == 401:
                await self._fail(gift, "InvalidAPIKey", exc.message)
            else:
                await self._fail(gift, exc.rc or f"HTTP {exc.status}", exc.message)
            return None
        self._pace_after_call(gift)
        done = self._clock.now()
        self._note_transfer(*pair, self._clock.monotonic())
        response = json.dumps({"transferred": result.transferred})
        # Written with the rest of this round in one transaction (`_record_sent`). If the bot dies before
        # that, the gift is sent again with the same Idempotency-Key and the Horde applies it once.
        return dataclasses.replace(
            gift,
            state=SENT,
            attempts=gift.attempts + 1,
            horde_response=response,
            horde_rc=None,
            sent_at=done,
            updated_at=done,
            next_attempt_at=None,
        )

    async def _record_sent(self, gift: Gift) -> None:
        """Write "sent" (group commit: lanes finishing together share one transaction), then confirm."""
        if not await self._sent_marks.submit(gift, self._mark_sent):
            return
        await self._confirm(gift)
        self.resolve(gift, None)
        await self._on_sent.emit(gift)

    async def _mark_sent(self, gifts: list[Gift]) -> list[bool]:
        moved = await self.repo.mark_sent_many(
            [(g.id, g.horde_response or "", g.sent_at or self._clock.now()) for g in gifts]
        )
        return [g.id in moved for g in gifts]

    def _pace_after_call(self, gift: Gift) -> None:
        """The giver's next transfer starts `transfer_interval` after this one *ended*: requests can reach
        the Horde out of order by a few milliseconds, and its limit counts arrivals."""
        slot = self._clock.monotonic() + self.settings.transfer_interval
        self._next_slot[gift.giver_id] = max(self._next_slot.get(gift.giver_id, 0.0), slot)

    def _backoff(self, attempt: int) -> float:
        ceiling = min(self.settings.retry_cap, self.settings.retry_base * (2 ** max(0, attempt - 1)))
        return random.uniform(ceiling / 2, ceiling)

    async def _retry(self, gift: Gift, notice: str | None, exc: HordeError, delay: float) -> None:
        rc = exc.rc or ("HTTP 429" if exc.is_rate_limit else None)
        await self._delay(gift, notice, rc, exc.message, delay)

    async def _delay(
        self,
        gift: Gift,
        notice: str | None,
        rc: str | None,
        message: str,
        delay: float,
        *,
        attempted: bool = True,
    ) -> None:
        """The gift waits `delay` seconds (the giver told why, at most once per `error_notice_hours`)."""
        now = self._clock.now()
        at = now + timedelta(seconds=delay)
        await self.repo.retry_at(gift.id, at, rc, message, now, attempted=attempted)
        self._on_rescheduled()
        log.info("kudos: gift %s delayed %.0fs (%s)", gift.id, delay, rc)
        why = DELAY_TEXT.get(notice or "")
        if (
            notice is not None
            and why is not None
            and await self.claim_notice(gift.giver_id, f"delay:{notice}", self.settings.error_notice_hours)
        ):
            await self._notifier.dm(
                gift.giver_id,
                f"Your gift of {gift.amount:,} kudos is delayed because {why}. "
                "It stays queued and will be sent automatically.",
            )
        updated = await self.repo.get(gift.id)
        if updated is not None:
            self.resolve(updated, why or "the AI Horde is busy")
        # Make sure something wakes up for it even if no other event comes.
        self._wake_lane_later(gift.giver_id, delay + 0.01)

    async def _fail(self, gift: Gift, rc: str, message: str, *, attempted: bool = True) -> None:
        now = self._clock.now()
        if not await self.repo.mark_failed(gift.id, rc, message, now, attempted=attempted):
            return
        why = FAILURE_TEXT.get(rc, "the AI Horde refused it")
        log.info("kudos: gift %s failed (%s)", gift.id, rc)
        if await self.claim_notice(gift.giver_id, f"failed:{rc}", self.settings.error_notice_hours):
            receiver = self._gateway.get().display_name(gift.guild_id, gift.receiver_id)
            await self._notifier.dm(
                gift.giver_id,
                f"Your gift of {gift.amount:,} kudos to {receiver} "
                f"was not sent: {why}. Nothing was taken from your account.",
            )
        failed = await self.repo.get(gift.id)
        if failed is not None:
            self.resolve(failed, why)
            await self._on_failed.emit(failed)

    async def _confirm(self, gift: Gift) -> None:
        """A bot reaction on the message (one, however many gifts) and a line in the kudos log channel."""
        if (
            gift.source == "reaction"
            and gift.channel_id
            and gift.message_id
            and self.settings.confirm_reaction
            and gift.message_id not in self._confirmed
        ):
            # One bot reaction per message, however many gifts: remembered so a storm sends one request.
            self._confirmed[gift.message_id] = None
            while len(self._confirmed) > 4096:
                self._confirmed.popitem(last=False)
            await self._gateway.get().add_reaction(
                gift.channel_id, gift.message_id, self.settings.confirm_reaction
            )
        if gift.guild_id is not None:
            giver = self._gateway.get().display_name(gift.guild_id, gift.giver_id)
            receiver = self._gateway.get().display_name(gift.guild_id, gift.receiver_id)
            how = f" with {render_emoji_key(gift.emoji)}" if gift.source == "reaction" and gift.emoji else ""
            if gift.source == "party":
                how = " (generation party award)"
            elif gift.source == "transfer":
                # The reason is the member's own text, escaped when recorded; the log is sent without pings.
                how = f" (/transfer: {gift.reason})" if gift.reason else " (/transfer)"
            await self._notifier.log_to_guild(
                gift.guild_id, f"💝 {giver} gave {gift.amount:,} kudos to {receiver}{how}.", kind="kudos"
            )

    async def claim_notice(self, user_id: int, kind: str, every_hours: float | None) -> bool:
        now = self._clock.now()
        not_since = None if every_hours is None else now - timedelta(hours=every_hours)
        return await self.repo.claim_notice(user_id, kind, now, not_since)

    # --- waiting for an outcome (/transfer shows "sent" when it is quick) ----------------------------------

    def resolve(self, gift: Gift, why: str | None) -> None:
        for future in self._waiters.pop(gift.id, []):
            if not future.done():
                future.set_result(Outcome(gift, why))

    async def wait_for(self, gift: Gift, seconds: float) -> Outcome:
        """The gift's next outcome (sent, failed or delayed), or its current state after `seconds`."""
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(gift.id, []).append(future)
        current = await self.repo.get(gift.id)
        if current is not None and current.state in (SENT, FAILED):
            self.resolve(current, current.horde_rc and FAILURE_TEXT.get(current.horde_rc))
        try:
            return await asyncio.wait_for(future, seconds)
        except TimeoutError:
            latest = await self.repo.get(gift.id)
            return Outcome(latest or gift, None)
        finally:
            waiters = self._waiters.get(gift.id)
            if waiters and future in waiters:
                waiters.remove(future)
                if not waiters:
                    self._waiters.pop(gift.id, None)


__all__ = ["DELAY_TEXT", "FAILURE_TEXT", "GiftSender", "OldestFirst", "Outcome"]
