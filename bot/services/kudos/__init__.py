"""Kudos gifting: emoji reactions and /transfer, exactly once, with an audit trail (issue #5).

How a gift travels:
1. A reaction (or a confirmed /transfer, or a party award) is checked against the rules and **recorded**
   in `kudos_gifts` first. Its `dedup_key` is unique, so a duplicate gateway event, a removed and re-added
   reaction or a double click records nothing new.
2. Each giver has a *lane*: a task started the moment their gift is recorded, which sends the giver's due
   gifts oldest first, at most one transfer per second (the Horde's limit per key), with
   `POST /v2/kudos/transfer` and an `Idempotency-Key` derived from the record: a retry after a timeout can
   never transfer twice. Lanes of different givers run side by side (up to `max_parallel` calls at once),
   so a giver's first gift never waits behind other givers' gifts.
3. A gift back to someone whose own transfer to the giver is under a minute old (or still on its way) is
   never sent to be refused (the Horde answers 400 `TooFastKudosTransfers`): it is held until the minute
   has passed. The bot knows every transfer it made (and reads the last minute's back at start-up).
4. The answer moves the gift to `sent` or `failed`, or reschedules it (a transfer made outside the bot
   that trips the same rule, the limiter's 429, an outage: retried with backoff, never dropped). Queued
   gifts survive a restart: the periodic job picks them up again.

The periodic job reads the queue every `check_interval`. A process alone on its database
(`Database.alone`: SQLite, whose file is locked to one process) writes every gift itself, so after a check
that finds nothing to do it knows when the next thing is due (the earliest retry time or end of a pending
window stored) and skips the reads until then, or until it records, releases or reschedules a gift. On
PostgreSQL other processes record gifts too: the job reads every time.

Here: the rules for recording (steps 1 and 3's bookkeeping of who may gift whom, /transfer, history,
pending gifts). Sending (steps 2-4) is `sending.GiftSender`'s; who is linked, `links.MemberLinks`'s.
Discord is reached through a `KudosGateway` (`gateway`) the cog installs; DMs and log lines through the
`Notifier`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta

from bot.clock import Clock
from bot.config import KudosSettings
from bot.db.group_commit import GroupCommit
from bot.db.kudos import FAILED, LAPSED, PENDING, QUEUED, SENT, Gift, KudosRepository, NewGift
from bot.errors import InvalidInputError, NotLinkedError, UserFacingError
from bot.hooks import Hook, Port
from bot.horde.client import HordeClient
from bot.horde.models import HordeUser
from bot.notify import Notifier
from bot.scheduler import ScheduledCall, Scheduler
from bot.services.accounts import AccountService
from bot.services.guild_config import GuildConfigService, emoji_key
from bot.services.kudos.gateway import KudosGateway, MessageAuthor, NoGateway, ReactionEvent
from bot.services.kudos.links import MemberLinks
from bot.services.kudos.sending import DELAY_TEXT, FAILURE_TEXT, GiftSender, OldestFirst, Outcome

log = logging.getLogger(__name__)

INTAKE_PARALLEL = 16  # reaction events processed at once; the rest wait their turn (none is dropped)


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
        *,
        takeovers: Hook[[], object] | None = None,
        alone: Callable[[], bool] = lambda: False,
    ) -> None:
        """`alone`: whether no other process can use the database while this one runs
        (`Database.alone`, known once it is connected)."""
        self.repo = repo
        self._accounts = accounts
        self._horde = horde
        self._guild_config = guild_config
        self._notifier = notifier
        self._scheduler = scheduler
        self._clock = clock
        self.settings = settings
        self.gateway: Port[KudosGateway] = Port("kudos.gateway", NoGateway())  # the cog plugs Discord in
        # Resolvers for messages the bot itself posted: message id -> the member it was made for (the
        # generation feature registers `requester_of_message`). The first non-None answer wins.
        self.message_owners: Hook[[int], int | None] = Hook("kudos.message_owners")
        # Called after a gift is sent / has failed (parties end when the host runs out of kudos).
        self.on_sent: Hook[[Gift], None] = Hook("kudos.on_sent")
        self.on_failed: Hook[[Gift], None] = Hook("kudos.on_failed")
        self._links = MemberLinks(accounts, clock)
        self._sender = GiftSender(
            repo,
            self._links,
            accounts,
            horde,
            notifier,
            scheduler,
            clock,
            settings,
            gateway=self.gateway,
            on_sent=self.on_sent,
            on_failed=self.on_failed,
            on_rescheduled=self._queue_changed,
        )
        self._periodic: ScheduledCall | None = None
        # Alone on the database, the periodic check rests after finding nothing: `_resting` until
        # `_rest_until` (None: until a change), or until this process writes a gift that may be due sooner
        # (`_queue_changed`, counted in `_changes`: a check that read before the change doesn't rest).
        self._alone = alone
        self._resting = False
        self._rest_until: datetime | None = None
        self._changes = 0
        # The lease keeper's word that another process's gifts wait for a holder: heard while the queue
        # runs, answered as after a restart (`drain`).
        self._takeovers = takeovers
        self._intake = asyncio.Semaphore(INTAKE_PARALLEL)
        self._giver_turns: dict[int, tuple[asyncio.Lock, list[int]]] = {}
        self._inserts: GroupCommit[NewGift, Gift | None] = GroupCommit()

    # --- lifecycle -------------------------------------------------------------------------------------

    def start(self) -> None:
        """Register the periodic job (resumes queued gifts after a restart). Safe to call twice; `stop`
        undoes it."""
        if self._periodic is None:
            self._periodic = self._scheduler.every("kudos:queue", self.settings.check_interval, self.periodic)
            if self._takeovers is not None:
                self._takeovers.subscribe(self.drain)

    def stop(self) -> None:
        if self._periodic is not None:
            self._periodic.cancel()
            self._periodic = None
            if self._takeovers is not None:
                self._takeovers.unsubscribe(self.drain)

    async def periodic(self) -> None:
        now = self._clock.now()
        if self._resting and (self._rest_until is None or now < self._rest_until):
            self._sender.forget_old_transfers()
            return
        changes = self._changes
        # One read first: most checks find no lapsed and no due gift, and then run neither query (the check
        # runs every few seconds in every process).
        lapsed, due = await self.repo.work_due(now)
        if lapsed:
            await self.lapse_expired()
        self._sender.forget_old_transfers()
        if due or lapsed:  # after telling the givers of lapsed gifts, time has passed: look again
            await self.drain()
        elif self._alone():
            await self._rest(changes, now)

    async def _rest(self, changes: int, now: datetime) -> None:
        """Nothing to do, and no other process writes gifts: rest until the earliest stored time. Not
        when that time has passed (a dead predecessor's gift whose lease runs yet: it is read again at
        each check, as before), nor when a gift was written since the check began."""
        until = await self.repo.next_work_at()
        if self._changes == changes and (until is None or until > now):
            self._resting, self._rest_until = True, until

    def _queue_changed(self) -> None:
        """A gift was recorded, released or rescheduled (after its write): the next check reads."""
        self._changes += 1
        self._resting = False

    async def drain(self) -> None:
        """Send every giver's due gifts (after a restart, a retry time, an outage, a takeover)."""
        await self._sender.drain()

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
        # One giver's reactions are recorded in the order they came (their gifts then go out in that
        # order, one a second): a later one whose lookups happened to be quicker would otherwise be
        # recorded, and sent, first, and the giver's first gift wait a second for each that overtook it.
        async with self._giver_turn(event.user_id):
            # A storm of reactions is looked into a bounded number at a time (REST calls, link lookups);
            # the gifts are then recorded together (one transaction for all that are waiting, however many).
            async with self._intake:
                receiver = await self._receiver_for_reaction(event)
            if receiver is None:
                return None
            return await self.record(
                dedup_key=reaction_dedup_key(event.guild_id, event.message_id, event.user_id, key),
                source="reaction",
                giver_id=event.user_id,
                receiver_id=receiver,
                amount=amount,
                guild_id=event.guild_id,
                channel_id=event.channel_id,
                message_id=event.message_id,
                emoji=key,
            )

    @contextlib.asynccontextmanager
    async def _giver_turn(self, giver_id: int) -> AsyncIterator[None]:
        """One giver's reactions one at a time, in arrival order (asyncio.Lock is first come, first
        served); forgotten once nobody waits."""
        turn = self._giver_turns.get(giver_id)
        if turn is None:
            turn = self._giver_turns[giver_id] = (asyncio.Lock(), [0])
        lock, users = turn
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if not users[0]:
                del self._giver_turns[giver_id]

    async def _receiver_for_reaction(self, event: ReactionEvent) -> int | None:
        """Whom the reaction gifts (None: nobody; an unlinked reactor is told)."""
        bot_id = self.gateway.get().bot_user_id()
        if event.user_id == bot_id:
            return None
        author = await self.gateway.get().message_author(event.channel_id, event.message_id)
        if author is None:
            return None  # deleted or unreadable message: nothing to pay
        receiver: int | None = author.id
        if author.bot:
            receiver = await self._message_owner(event.message_id) if author.id == bot_id else None
        if receiver is None or receiver == event.user_id:
            return None  # no gifts to bots, no self-gifts
        giver = await self._links.get(event.user_id)
        if giver is None:
            await self._unlinked_reactor(event)
            return None
        return receiver

    async def _message_owner(self, message_id: int) -> int | None:
        return await self.message_owners.first(message_id)

    async def _unlinked_reactor(self, event: ReactionEvent) -> None:
        await self.gateway.get().remove_reaction(
            event.channel_id, event.message_id, event.emoji_text, event.user_id
        )
        if await self._sender.claim_notice(event.user_id, "link-to-gift", self.settings.reactor_notice_hours):
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
        receiver = await self._links.get(receiver_id)
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
        self._queue_changed()
        if gift.state == PENDING:
            if await self._sender.claim_notice(receiver_id, "claim-pending", None):
                await self._notifier.dm(
                    receiver_id,
                    f"Someone gifted you kudos on the AI Horde. Link your AI Horde account with `/login` "
                    f"within {self.settings.pending_days:g} days to receive it (and any others waiting "
                    "for you); after that they lapse.",
                )
        else:
            self._sender.hand_over(gift)
        return gift

    async def forget_member(self, discord_id: int) -> None:
        """/logout step: the member's link is gone (their gifts stay, as the ledger, reasons blanked;
        queued gifts from them fail with "not linked", gifts to them wait again); their DM bookkeeping and
        the parties they hosted are deleted (`PartyService.forget_member` ends a running one first)."""
        self._links.unlinked(discord_id)
        await self.repo.forget_member(discord_id)

    async def _insert(self, new: NewGift, now: datetime) -> Gift | None:
        """Group commit: gifts recorded at the same moment share one transaction."""
        return await self._inserts.submit(new, lambda batch: self.repo.add_many(batch, now))

    async def on_linked(self, discord_id: int, user: HordeUser) -> None:
        """`AccountService.on_linked` hook: deliver the member's pending gifts."""
        del user
        self._links.linked_now(discord_id)
        released = await self.repo.release_pending(discord_id, self._clock.now())
        if released:
            self._queue_changed()
        await self.repo.forget_notice(discord_id, "claim-pending")
        if released:
            log.info("kudos: %d pending gifts released for member %s", len(released), discord_id)
            self._sender.start_sending()

    async def lapse_expired(self) -> list[Gift]:
        """Pending gifts past their window lapse; each giver is told once per lapsed batch."""
        lapsed = await self.repo.lapse_expired(self._clock.now())
        by_giver: dict[int, list[Gift]] = {}
        for gift in lapsed:
            by_giver.setdefault(gift.giver_id, []).append(gift)
        for giver_id, gifts in by_giver.items():
            total = sum(g.amount for g in gifts)
            names = sorted({self.gateway.get().display_name(g.guild_id, g.receiver_id) for g in gifts})
            await self._notifier.dm(
                giver_id,
                f"Your gift of {total:,} kudos to {', '.join(names)[:300]} lapsed: they didn't link an "
                f"AI Horde account within {self.settings.pending_days:g} days. "
                "Nothing was taken from your account.",
            )
            for gift in gifts:
                self._sender.resolve(gift, None)
        return lapsed

    async def wait_for(self, gift: Gift, seconds: float) -> Outcome:
        """The gift's next outcome (sent, failed or delayed), or its current state after `seconds`."""
        return await self._sender.wait_for(gift, seconds)

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
        if await self._links.get(giver_id) is None:
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
        if await self._links.get(giver_id) is None:
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


# The gift states and `Gift` too: cogs never import bot.db.
__all__ = [
    "DELAY_TEXT",
    "FAILED",
    "FAILURE_TEXT",
    "LAPSED",
    "PENDING",
    "QUEUED",
    "SENT",
    "Gift",
    "KudosGateway",
    "KudosService",
    "KudosSettings",
    "MessageAuthor",
    "OldestFirst",
    "Outcome",
    "ReactionEvent",
    "idempotency_key_for",
    "reaction_dedup_key",
]
