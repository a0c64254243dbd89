"""Kudos gifting: emoji reactions and /transfer, exactly once, with an audit trail (issue #5).

How a gift travels:
1. A reaction (or a confirmed /transfer, or a party award) is checked against the rules and **recorded**
   in `kudos_gifts` first. Its `dedup_key` is unique, so a duplicate gateway event, a removed and re-added
   reaction or a double click records nothing new.
2. The send queue (`drain`) takes the oldest due gift of each giver, at most one transfer per second per
   giver (the Horde's limit per key), and calls `POST /v2/kudos/transfer` with an `Idempotency-Key`
   derived from the record: a retry after a timeout can never transfer twice.
3. The answer moves the gift to `sent` or `failed`, or reschedules it (`TooFastKudosTransfers`, the
   limiter's 429, an outage: retried with backoff, never dropped). Queued gifts survive a restart: the
   periodic job picks them up again.

Discord is reached through a `KudosGateway` the cog installs; DMs and log lines through the `Notifier`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import logging
import random
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from bot.clock import Clock
from bot.config import ConfigError, reader
from bot.crypto import KeyDecryptionError
from bot.db.kudos import FAILED, PENDING, QUEUED, SENT, Gift, KudosRepository, NewGift
from bot.db.kudos import LAPSED as LAPSED  # for cogs, which never import bot.db
from bot.db.users import LinkedUser
from bot.errors import InvalidInputError, NotLinkedError, UserFacingError
from bot.horde.client import HordeClient
from bot.horde.errors import HordeError, HordeUnavailable
from bot.horde.models import HordeUser
from bot.notify import Notifier
from bot.scheduler import Scheduler
from bot.services.accounts import AccountService
from bot.services.guild_config import GuildConfigService, emoji_key, render_emoji_key

log = logging.getLogger(__name__)

LINK_CACHE_SECONDS = 300.0  # how long a member's link (or its absence) is remembered between hooks
LINK_CACHE_SIZE = 10_000
INTAKE_PARALLEL = 16  # reaction events processed at once; the rest wait their turn (none is dropped)
MessageOwner = Callable[[int], Awaitable[int | None]]
GiftHook = Callable[[Gift], Awaitable[None]]

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
class KudosSettings:
    pending_days: float = 7.0  # how long a gift waits for an unlinked receiver to /login
    reactor_notice_hours: float = 24.0  # "link your account" DM to an unlinked reactor: at most this often
    error_notice_hours: float = 24.0  # the same failure/delay explained to a giver at most this often
    transfer_interval: float = 1.0  # seconds between two transfers from one giver (the Horde: 1/s per key)
    retry_base: float = 5.0  # first retry delay after a rate limit or an outage, seconds (doubles)
    retry_cap: float = 600.0  # longest retry delay, seconds
    reciprocal_wait: float = 61.0  # TooFastKudosTransfers: the Horde's 60 s reciprocal cooldown, plus 1 s
    check_interval: float = 5.0  # how often queued retries and pending lapses are checked, seconds
    max_parallel: int = 20  # transfers in flight at once (each from a different giver)
    confirm_reaction: str = "✅"  # the bot's reaction on a message once a gift on it is sent ("": none)
    transfer_max: int = 100_000  # largest /transfer amount
    transfer_confirm_seconds: float = 60.0  # the /transfer confirm button expires after this
    transfer_wait_seconds: float = 10.0  # how long /transfer waits to show "sent" before saying "queued"
    history_limit: int = 10  # gifts shown per list in /kudos history
    party_max_hours: float = 72.0  # longest /party duration
    party_max_award: int = 1_000  # largest per-generation party award

    @classmethod
    def from_section(cls, section: Mapping[str, Any]) -> KudosSettings:
        get = reader(section, "kudos")
        d = cls()
        parsed = cls(
            pending_days=get("pending_days", float, d.pending_days),
            reactor_notice_hours=get("reactor_notice_hours", float, d.reactor_notice_hours),
            error_notice_hours=get("error_notice_hours", float, d.error_notice_hours),
            transfer_interval=get("transfer_interval", float, d.transfer_interval),
            retry_base=get("retry_base", float, d.retry_base),
            retry_cap=get("retry_cap", float, d.retry_cap),
            reciprocal_wait=get("reciprocal_wait", float, d.reciprocal_wait),
            check_interval=get("check_interval", float, d.check_interval),
            max_parallel=get("max_parallel", int, d.max_parallel),
            confirm_reaction=get("confirm_reaction", str, d.confirm_reaction),
            transfer_max=get("transfer_max", int, d.transfer_max),
            transfer_confirm_seconds=get("transfer_confirm_seconds", float, d.transfer_confirm_seconds),
            transfer_wait_seconds=get("transfer_wait_seconds", float, d.transfer_wait_seconds),
            history_limit=get("history_limit", int, d.history_limit),
            party_max_hours=get("party_max_hours", float, d.party_max_hours),
            party_max_award=get("party_max_award", int, d.party_max_award),
        )
        positive = (
            "pending_days",
            "transfer_interval",
            "retry_base",
            "retry_cap",
            "check_interval",
            "transfer_confirm_seconds",
            "party_max_hours",
        )
        for name in positive:
            if getattr(parsed, name) <= 0:
                raise ConfigError(f"kudos.{name}", "must be greater than 0")
        for name in (
            "reactor_notice_hours",
            "error_notice_hours",
            "reciprocal_wait",
            "transfer_wait_seconds",
        ):
            if getattr(parsed, name) < 0:
                raise ConfigError(f"kudos.{name}", "must be 0 or more")
        if parsed.transfer_interval < 1.0:
            raise ConfigError("kudos.transfer_interval", "must be at least 1 second (the AI Horde's limit)")
        for name in ("max_parallel", "transfer_max", "history_limit", "party_max_award"):
            if getattr(parsed, name) < 1:
                raise ConfigError(f"kudos.{name}", "must be at least 1")
        if parsed.history_limit > 25:
            raise ConfigError("kudos.history_limit", "must be at most 25")
        return parsed


@dataclass(frozen=True)
class MessageAuthor:
    id: int
    bot: bool


@dataclass(frozen=True)
class ReactionEvent:
    """A raw reaction add, without Discord types."""

    guild_id: int | None
    channel_id: int
    message_id: int
    user_id: int
    emoji_name: str | None
    emoji_id: int | None
    emoji_text: str  # as Discord accepts it back for removing/adding a reaction ("👍", "name:id")
    user_is_bot: bool = False
    message_author_id: int | None = None  # when the gateway event carries it


class KudosGateway(Protocol):
    """What the service needs from Discord (installed by `cogs.kudos`)."""

    def bot_user_id(self) -> int | None: ...

    async def message_author(self, channel_id: int, message_id: int) -> MessageAuthor | None:
        """None when the message is gone or can't be read."""

    async def remove_reaction(self, channel_id: int, message_id: int, emoji: str, user_id: int) -> bool: ...

    async def add_reaction(self, channel_id: int, message_id: int, emoji: str) -> bool: ...

    def display_name(self, guild_id: int | None, user_id: int) -> str: ...


class _NoGateway:
    def bot_user_id(self) -> int | None:
        return None

    async def message_author(self, channel_id: int, message_id: int) -> MessageAuthor | None:
        return None

    async def remove_reaction(self, channel_id: int, message_id: int, emoji: str, user_id: int) -> bool:
        return False

    async def add_reaction(self, channel_id: int, message_id: int, emoji: str) -> bool:
        return False

    def display_name(self, guild_id: int | None, user_id: int) -> str:
        return f"member {user_id}"


@dataclass(frozen=True)
class Outcome:
    """What happened to a gift the caller is waiting for."""

    gift: Gift
    why: str | None = None  # failure or delay reason, for the giver


def idempotency_key_for(dedup_key: str) -> str:
    """The Horde `Idempotency-Key` of a gift: a hash of its unique record key (stable across retries and
    restarts; reveals nothing)."""
    return "hordebot-" + hashlib.sha256(dedup_key.encode()).hexdigest()[:40]


def reaction_dedup_key(guild_id: int, message_id: int, giver_id: int, emoji: str) -> str:
    return f"reaction:{guild_id}:{message_id}:{giver_id}:{emoji}"


class KudosService:
    def __init__(
        self,
        repo: KudosRepository,
        accounts: AccountService,
        horde: HordeClient,
        guild_config: GuildConfigService,
        notifier: Notifier,
        scheduler: Scheduler,
        clock: Clock,
        settings: KudosSettings,
    ) -> None:
        self.repo = repo
        self._accounts = accounts
        self._horde = horde
        self._guild_config = guild_config
        self._notifier = notifier
        self._scheduler = scheduler
        self._clock = clock
        self.settings = settings
        self.gateway: KudosGateway = _NoGateway()
        # Resolvers for messages the bot itself posted: message id -> the member it was made for (the
        # generation feature registers `requester_of_message`). The first non-None answer wins.
        self.message_owners: list[MessageOwner] = []
        # Called after a gift is sent / has failed (parties end when the host runs out of kudos).
        self.on_sent: list[GiftHook] = []
        self.on_failed: list[GiftHook] = []
        self._next_slot: dict[int, float] = {}  # giver id -> monotonic time of their next allowed transfer
        self._draining = False
        self._again = False
        self._waiters: dict[int, list[asyncio.Future[Outcome]]] = {}
        self._started = False
        self._intake = asyncio.Semaphore(INTAKE_PARALLEL)
        self._link_cache: dict[int, tuple[float, LinkedUser | None]] = {}
        self._to_insert: list[tuple[NewGift, asyncio.Future[Gift | None]]] = []
        self._insert_lock = asyncio.Lock()
        self._wake_at: float | None = None  # monotonic time of the booked pacing wake-up
        self._confirmed: OrderedDict[int, None] = OrderedDict()  # messages the bot already reacted on
        # Observability for tests and the benchmark: (gift id, monotonic time the transfer call started).
        self.transfer_started: Callable[[Gift, float], None] | None = None

    # --- lifecycle -------------------------------------------------------------------------------------

    def start(self) -> None:
        """Register the periodic job (resumes queued gifts after a restart). Safe to call twice."""
        if self._started:
            return
        self._started = True
        self._scheduler.every("kudos:queue", self.settings.check_interval, self.periodic)

    async def periodic(self) -> None:
        await self.lapse_expired()
        await self.drain()

    def kick(self) -> None:
        """Start draining the queue now (in the background) unless a drain is running already."""
        if self._draining:
            self._again = True
            return
        # Shutting down (RuntimeError): the periodic job resumes the queue after the restart.
        with contextlib.suppress(RuntimeError):
            self._scheduler.spawn(self.drain(), name="kudos:drain")

    # --- reactions -------------------------------------------------------------------------------------

    async def on_reaction(self, event: ReactionEvent) -> Gift | None:
        """A reaction was added. Returns the recorded gift, or None when it gives nothing."""
        if event.guild_id is None or event.user_is_bot:
            return None
        key = emoji_key(event.emoji_name, event.emoji_id)
        config = await self._guild_config.get(event.guild_id)
        amount = config.kudos_emojis.get(key)
        if not amount or amount <= 0:
            return None
        # A storm of reactions is handled a bounded number at a time (database connections, REST calls).
        async with self._intake:
            return await self._gift_for_reaction(event, key, amount)

    async def _gift_for_reaction(self, event: ReactionEvent, key: str, amount: int) -> Gift | None:
        assert event.guild_id is not None
        bot_id = self.gateway.bot_user_id()
        if event.user_id == bot_id:
            return None
        author = await self.gateway.message_author(event.channel_id, event.message_id)
        if author is None:
            return None  # deleted or unreadable message: nothing to pay
        receiver: int | None = author.id
        if author.bot:
            receiver = await self._message_owner(event.message_id) if author.id == bot_id else None
        if receiver is None or receiver == event.user_id:
            return None  # no gifts to bots, no self-gifts
        giver = await self._linked(event.user_id)
        if giver is None:
            await self._unlinked_reactor(event)
            return None
        dedup = reaction_dedup_key(event.guild_id, event.message_id, event.user_id, key)
        return await self.record(
            dedup_key=dedup,
            source="reaction",
            giver_id=event.user_id,
            receiver_id=receiver,
            amount=amount,
            guild_id=event.guild_id,
            channel_id=event.channel_id,
            message_id=event.message_id,
            emoji=key,
        )

    async def _message_owner(self, message_id: int) -> int | None:
        for resolve in self.message_owners:
            try:
                owner = await resolve(message_id)
            except Exception:
                log.exception("kudos: message owner resolver %r failed", resolve)
                continue
            if owner is not None:
                return owner
        return None

    async def _unlinked_reactor(self, event: ReactionEvent) -> None:
        await self.gateway.remove_reaction(
            event.channel_id, event.message_id, event.emoji_text, event.user_id
        )
        if await self._claim_notice(event.user_id, "link-to-gift", self.settings.reactor_notice_hours):
            await self._notifier.dm(
                event.user_id,
                "Your reaction would have gifted kudos, but your AI Horde account isn't linked. "
                "Link it with `/login` to gift kudos with reactions.",
            )

    # --- recording ---------------------------------------------------------------------------------------

    async def record(
        self,
        *,
        dedup_key: str,
        source: str,
        giver_id: int,
        receiver_id: int,
        amount: int,
        guild_id: int | None = None,
        channel_id: int | None = None,
        message_id: int | None = None,
        emoji: str = "",
        reason: str | None = None,
        party_id: int | None = None,
    ) -> Gift | None:
        """Record a gift (once per `dedup_key`) and queue it. None if it was recorded before."""
        if amount <= 0:
            raise InvalidInputError("The amount must be a positive whole number of kudos.")
        if giver_id == receiver_id:
            raise InvalidInputError("You can't gift kudos to yourself.")
        now = self._clock.now()
        receiver = await self._linked(receiver_id)
        state = QUEUED if receiver is not None else PENDING
        gift = await self._insert(
            NewGift(
                dedup_key=dedup_key,
                idempotency_key=idempotency_key_for(dedup_key),
                source=source,
                giver_id=giver_id,
                receiver_id=receiver_id,
                amount=amount,
                state=state,
                guild_id=guild_id,
                channel_id=channel_id,
                message_id=message_id,
                emoji=emoji,
                reason=reason,
                party_id=party_id,
                expires_at=now + timedelta(days=self.settings.pending_days) if state == PENDING else None,
            ),
            now,
        )
        if gift is None:
            return None
        if gift.state == PENDING:
            if await self._claim_notice(receiver_id, "claim-pending", None):
                await self._notifier.dm(
                    receiver_id,
                    f"Someone gifted you kudos on the AI Horde. Link your AI Horde account with `/login` "
                    f"within {self.settings.pending_days:g} days to receive it (and any others waiting "
                    "for you); after that they lapse.",
                )
        else:
            self.kick()
        return gift

    async def _linked(self, discord_id: int) -> LinkedUser | None:
        """`AccountService.linked`, remembered for a few minutes (a storm asks about the same members again
        and again); link and unlink hooks forget the entry at once."""
        now = self._clock.monotonic()
        cached = self._link_cache.get(discord_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        linked = await self._accounts.linked(discord_id)
        self._link_cache[discord_id] = (now + LINK_CACHE_SECONDS, linked)
        if len(self._link_cache) > LINK_CACHE_SIZE:
            self._link_cache.pop(next(iter(self._link_cache)))
        return linked

    async def forget_member(self, discord_id: int) -> None:
        """`AccountService.on_unlinked` hook: the member's link is gone (their gifts stay, as the audit
        trail; queued gifts from them fail with "not linked", gifts to them wait again)."""
        # Remembered as "not linked" (the hook runs just before the row is deleted).
        self._link_cache[discord_id] = (self._clock.monotonic() + LINK_CACHE_SECONDS, None)
        await self.repo.forget_notice(discord_id, "claim-pending")

    async def _insert(self, new: NewGift, now: datetime) -> Gift | None:
        """Group commit: gifts recorded at the same moment share one transaction. The first caller to get
        the lock writes everything waiting; the others usually find their gift already written."""
        future: asyncio.Future[Gift | None] = asyncio.get_running_loop().create_future()
        self._to_insert.append((new, future))
        async with self._insert_lock:
            if not future.done():
                batch, self._to_insert = self._to_insert, []
                try:
                    results = await self.repo.add_many([n for n, _f in batch], now)
                except Exception as exc:
                    for _n, f in batch:
                        if not f.done():
                            f.set_exception(exc)
                else:
                    for (_n, f), result in zip(batch, results, strict=True):
                        if not f.done():
                            f.set_result(result)
        return await future

    async def on_linked(self, discord_id: int, user: HordeUser) -> None:
        """`AccountService.on_linked` hook: deliver the member's pending gifts."""
        del user
        self._link_cache.pop(discord_id, None)
        released = await self.repo.release_pending(discord_id, self._clock.now())
        await self.repo.forget_notice(discord_id, "claim-pending")
        if released:
            log.info("kudos: %d pending gifts released for member %s", len(released), discord_id)
            self.kick()

    async def lapse_expired(self) -> list[Gift]:
        """Pending gifts past their window lapse; each giver is told once per lapsed batch."""
        lapsed = await self.repo.lapse_expired(self._clock.now())
        by_giver: dict[int, list[Gift]] = {}
        for gift in lapsed:
            by_giver.setdefault(gift.giver_id, []).append(gift)
        for giver_id, gifts in by_giver.items():
            total = sum(g.amount for g in gifts)
            names = sorted({self.gateway.display_name(g.guild_id, g.receiver_id) for g in gifts})
            await self._notifier.dm(
                giver_id,
                f"Your gift of {total:,} kudos to {', '.join(names)[:300]} lapsed: they didn't link an "
                f"AI Horde account within {self.settings.pending_days:g} days. "
                "Nothing was taken from your account.",
            )
            for gift in gifts:
                self._resolve(gift, None)
        return lapsed

    # --- the send queue ------------------------------------------------------------------------------------

    async def drain(self) -> None:
        """Send every due gift: givers in parallel, each giver's gifts one per `transfer_interval`."""
        if self._draining:
            self._again = True
            return
        self._draining = True
        try:
            limit = asyncio.Semaphore(self.settings.max_parallel)
            while True:
                self._again = False
                due = await self.repo.due(self._clock.now())
                now_mono = self._clock.monotonic()
                ready: list[Gift] = []
                wait: float | None = None
                for gift in due:
                    slot = self._next_slot.get(gift.giver_id, 0.0)
                    if slot > now_mono:
                        wait = slot - now_mono if wait is None else min(wait, slot - now_mono)
                        continue
                    ready.append(gift)
                if ready:

                    async def send(gift: Gift) -> Gift | None:
                        async with limit:
                            return await self._send(gift)

                    results = await asyncio.gather(*(send(g) for g in ready))
                    await self._record_sent([g for g in results if g is not None])
                    continue
                if wait is not None:
                    # A giver's next slot is in the future: the scheduler wakes the queue then (no task
                    # sleeps meanwhile, so a drain started from any context never lingers).
                    self._wake_later(wait)
                if not self._again:
                    break
        finally:
            self._draining = False

    def _wake_later(self, delay: float) -> None:
        at = self._clock.monotonic() + delay
        if self._wake_at is not None and self._wake_at <= at and self._wake_at > self._clock.monotonic():
            return  # an earlier wake-up is already booked
        self._wake_at = at

        async def wake() -> None:
            self._wake_at = None
            await self.drain()

        self._scheduler.call_later("kudos:pace", delay, wake)

    async def _send(self, gift: Gift) -> Gift | None:
        """One transfer attempt; returns the gift as sent (to be recorded by the caller), else None."""
        now = self._clock.now()
        self._next_slot[gift.giver_id] = self._clock.monotonic() + self.settings.transfer_interval
        receiver = await self._linked(gift.receiver_id)
        if receiver is None:
            # Unlinked since the gift was queued: wait for them again.
            expires = now + timedelta(days=self.settings.pending_days)
            await self.repo.back_to_pending(gift.id, expires, now)
            return None
        try:
            key = await self._accounts.api_key(gift.giver_id)
        except KeyDecryptionError:
            await self._fail(gift, "KeyUnreadable", "stored key unreadable", attempted=False)
            return None
        if key is None:
            await self._fail(gift, "GiverNotLinked", "the giver unlinked their account", attempted=False)
            return None
        if key.is_anonymous:
            await self._fail(gift, "KudosTransferFromAnon", "anonymous key", attempted=False)
            return None
        # The gift was recorded before this call, and one drain sends at a time, so nothing else can be
        # sending it now; the attempt is counted with its outcome (one write per attempt).
        if self.transfer_started is not None:
            self.transfer_started(gift, self._clock.monotonic())
        try:
            result = await self._horde.transfer_kudos(
                key, receiver.horde_username, gift.amount, idempotency_key=gift.idempotency_key
            )
        except HordeUnavailable as exc:
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

    async def _record_sent(self, sent: list[Gift]) -> None:
        if not sent:
            return
        moved = await self.repo.mark_sent_many(
            [(g.id, g.horde_response or "", g.sent_at or self._clock.now()) for g in sent]
        )
        for gift in sent:
            if gift.id not in moved:
                continue
            await self._confirm(gift)
            self._resolve(gift, None)
            for hook in self.on_sent:
                await self._run_hook(hook, gift)

    def _pace_after_call(self, gift: Gift) -> None:
        """The giver's next transfer starts `transfer_interval` after this one *ended*: requests can reach
        the Horde out of order by a few milliseconds, and its limit counts arrivals."""
        slot = self._clock.monotonic() + self.settings.transfer_interval
        self._next_slot[gift.giver_id] = max(self._next_slot.get(gift.giver_id, 0.0), slot)

    def _backoff(self, attempt: int) -> float:
        ceiling = min(self.settings.retry_cap, self.settings.retry_base * (2 ** max(0, attempt - 1)))
        return random.uniform(ceiling / 2, ceiling)

    async def _retry(self, gift: Gift, notice: str | None, exc: HordeError, delay: float) -> None:
        now = self._clock.now()
        at = now + timedelta(seconds=delay)
        await self.repo.retry_at(
            gift.id, at, exc.rc or ("HTTP 429" if exc.is_rate_limit else None), exc.message, now
        )
        log.info("kudos: gift %s delayed %.0fs (%s)", gift.id, delay, exc.rc or exc.status)
        why = DELAY_TEXT.get(notice or "")
        if (
            notice is not None
            and why is not None
            and await self._claim_notice(gift.giver_id, f"delay:{notice}", self.settings.error_notice_hours)
        ):
            await self._notifier.dm(
                gift.giver_id,
                f"Your gift of {gift.amount:,} kudos is delayed because {why}. "
                "It stays queued and will be sent automatically.",
            )
        updated = await self.repo.get(gift.id)
        if updated is not None:
            self._resolve(updated, why or "the AI Horde is busy")
        # Make sure something wakes up for it even if no other event comes.
        self._scheduler.call_later("kudos:retry", delay + 0.01, self.drain)

    async def _fail(self, gift: Gift, rc: str, message: str, *, attempted: bool = True) -> None:
        now = self._clock.now()
        if not await self.repo.mark_failed(gift.id, rc, message, now, attempted=attempted):
            return
        why = FAILURE_TEXT.get(rc, "the AI Horde refused it")
        log.info("kudos: gift %s failed (%s)", gift.id, rc)
        if await self._claim_notice(gift.giver_id, f"failed:{rc}", self.settings.error_notice_hours):
            receiver = self.gateway.display_name(gift.guild_id, gift.receiver_id)
            await self._notifier.dm(
                gift.giver_id,
                f"Your gift of {gift.amount:,} kudos to {receiver} "
                f"was not sent: {why}. Nothing was taken from your account.",
            )
        failed = await self.repo.get(gift.id)
        if failed is not None:
            self._resolve(failed, why)
            for hook in self.on_failed:
                await self._run_hook(hook, failed)

    async def _run_hook(self, hook: GiftHook, gift: Gift) -> None:
        try:
            await hook(gift)
        except Exception:
            log.exception("kudos hook %r failed", hook)

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
            await self.gateway.add_reaction(gift.channel_id, gift.message_id, self.settings.confirm_reaction)
        if gift.guild_id is not None:
            giver = self.gateway.display_name(gift.guild_id, gift.giver_id)
            receiver = self.gateway.display_name(gift.guild_id, gift.receiver_id)
            how = f" with {render_emoji_key(gift.emoji)}" if gift.source == "reaction" and gift.emoji else ""
            if gift.source == "party":
                how = " (generation party award)"
            elif gift.source == "transfer":
                # The reason is the member's own text, escaped when recorded; the log is sent without pings.
                how = f" (/transfer: {gift.reason})" if gift.reason else " (/transfer)"
            await self._notifier.log_to_guild(
                gift.guild_id, f"💝 {giver} gave {gift.amount:,} kudos to {receiver}{how}.", kind="kudos"
            )

    async def _claim_notice(self, user_id: int, kind: str, every_hours: float | None) -> bool:
        now = self._clock.now()
        not_since = None if every_hours is None else now - timedelta(hours=every_hours)
        return await self.repo.claim_notice(user_id, kind, now, not_since)

    # --- waiting for an outcome (/transfer shows "sent" when it is quick) ----------------------------------

    def _resolve(self, gift: Gift, why: str | None) -> None:
        for future in self._waiters.pop(gift.id, []):
            if not future.done():
                future.set_result(Outcome(gift, why))

    async def wait_for(self, gift: Gift, seconds: float) -> Outcome:
        """The gift's next outcome (sent, failed or delayed), or its current state after `seconds`."""
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(gift.id, []).append(future)
        current = await self.repo.get(gift.id)
        if current is not None and current.state in (SENT, FAILED):
            self._resolve(current, current.horde_rc and FAILURE_TEXT.get(current.horde_rc))
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

    # --- /transfer and /kudos history ---------------------------------------------------------------------

    async def check_transfer(
        self, giver_id: int, receiver_id: int, receiver_is_bot: bool, amount: int
    ) -> None:
        """Validate a /transfer before showing the confirm button (raises a message for the member)."""
        if receiver_is_bot:
            raise InvalidInputError("Bots can't receive kudos. Pick a member.")
        if receiver_id == giver_id:
            raise InvalidInputError("You can't gift kudos to yourself. Pick another member.")
        if not 1 <= amount <= self.settings.transfer_max:
            raise InvalidInputError(
                f"The amount must be a whole number from 1 to {self.settings.transfer_max:,} kudos."
            )
        if await self._linked(giver_id) is None:
            raise NotLinkedError("Gifting kudos needs your AI Horde account: link it with `/login` first.")

    async def transfer(
        self,
        *,
        token: int,
        guild_id: int | None,
        channel_id: int | None,
        giver_id: int,
        receiver_id: int,
        amount: int,
        reason: str | None,
    ) -> Gift:
        """A confirmed /transfer; `token` (the confirm message's id) makes a double click one gift."""
        if await self._linked(giver_id) is None:
            raise NotLinkedError("Gifting kudos needs your AI Horde account: link it with `/login` first.")
        dedup = f"transfer:{token}:{giver_id}"
        gift = await self.record(
            dedup_key=dedup,
            source="transfer",
            giver_id=giver_id,
            receiver_id=receiver_id,
            amount=amount,
            guild_id=guild_id,
            channel_id=channel_id,
            reason=reason,
        )
        if gift is None:
            existing = await self.repo.by_dedup_key(dedup)
            if existing is None:
                raise UserFacingError("That transfer could not be recorded; try again.")
            return existing
        return gift

    async def history(self, member_id: int) -> tuple[list[Gift], list[Gift]]:
        return await self.repo.history(member_id, self.settings.history_limit)
