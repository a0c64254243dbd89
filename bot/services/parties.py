"""Generation parties: a host awards kudos to everyone who generates with a Horde style in the party's
thread, for their first or for every generation, until the party ends (issue #5).

Two options of issue #16: the host may pay for the thread's generations with a shared key made for the
party (`SharedKeyService.create_party_key`; `resolve()` picks it in the thread; deleted when the party
ends, and the kudos it spent are shown in the end notice), and a word list every awarded prompt must
contain (a prompt without it is still generated, but not awarded, and the member is told privately).

Awards are ordinary gifts (`KudosService.record`, source "party"), so they are exactly-once, queued at
1/s per host key, retried on rate limits and outages, and audited. The generation feature calls
`on_generation(GenerationCompleted)`; Discord (the thread) is reached through a `PartyGateway`.
"""

from __future__ import annotations

import logging
import math
import re
from datetime import datetime, timedelta
from typing import Protocol

from bot.clock import Clock
from bot.db.kudos import Gift
from bot.db.parties import Party, PartyRepository
from bot.errors import InvalidInputError, NotLinkedError, PermissionDeniedError
from bot.hooks import Port
from bot.horde.errors import HordeError
from bot.horde.limits import MAX_SHARED_KEY_KUDOS
from bot.scheduler import ScheduledCall, Scheduler
from bot.services import validation
from bot.services.accounts import AccountService
from bot.services.generation import GenerationCompleted
from bot.services.kudos import KudosService, KudosSettings
from bot.services.model_catalog import ModelCatalog
from bot.services.sharedkeys import SharedKeyService
from bot.shards import ALL_SHARDS, ShardScope

log = logging.getLogger(__name__)

MAX_PARTY_NAME = 80  # the thread's name shows it; Discord allows 100
MAX_WORDS = 10  # words a prompt must contain: a theme, not a password
MAX_WORD_CHARS = 40
MAX_WORDS_CHARS = 500  # the option's length


def _whole_in(value: object, low: int, high: int) -> bool:
    """A whole number (not a bool, not text: a client can send anything) within [low, high]."""
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def parse_words(raw: str | None) -> tuple[str, ...]:
    """`dragon, castle` → ("dragon", "castle"): comma-separated words or phrases, case-insensitive."""
    text = validation.text(raw, "words", max_chars=MAX_WORDS_CHARS, single_line=True)
    if text is None:
        return ()
    words: list[str] = []
    for part in text.split(","):
        word = " ".join(part.split()).casefold()
        if not word or word in words:
            continue
        if len(word) > MAX_WORD_CHARS:
            raise InvalidInputError(
                f"Each of the party's words can be at most {MAX_WORD_CHARS} characters (got {len(word)})."
            )
        words.append(word)
    if not words:
        raise InvalidInputError("`words` is empty: give the words prompts must contain, comma-separated.")
    if len(words) > MAX_WORDS:
        raise InvalidInputError(f"A party can ask for at most {MAX_WORDS} words (got {len(words)}).")
    return tuple(words)


def missing_words(prompt: str, words: tuple[str, ...]) -> list[str]:
    """The party's words the prompt lacks: each must appear as a whole word (or phrase), in any case, in
    the prompt itself (not in the negative prompt after `###`)."""
    positive = prompt.split("###", 1)[0].casefold()
    return [w for w in words if re.search(rf"(?<!\w){re.escape(w)}(?!\w)", positive) is None]


# Gift failures that mean the host can't pay any more awards: the party ends.
HOST_CANT_PAY = frozenset({"KudosTransferNotEnough", "InvalidAPIKey", "GiverNotLinked", "KeyUnreadable"})
ENDED_BY = {
    "time": "The party is over: its time is up. Thanks for generating!",
    "host": "The host ended the party. Thanks for generating!",
    "moderator": "A moderator ended the party.",
    "out_of_kudos": "The party ended: the host ran out of kudos (or their AI Horde key stopped working), "
    "so no more awards can be paid.",
    "host_left": "The party ended: the host unlinked their AI Horde account, so no more awards can be paid.",
}


class PartyGateway(Protocol):
    async def post(self, thread_id: int, text: str) -> bool: ...

    async def close(self, thread_id: int) -> bool: ...


class _NoGateway:
    async def post(self, thread_id: int, text: str) -> bool:
        return False

    async def close(self, thread_id: int) -> bool:
        return False


def _fmt_ts(when: datetime) -> str:
    return f"<t:{int(when.timestamp())}:F> (<t:{int(when.timestamp())}:R>)"


class PartyService:
    def __init__(
        self,
        repo: PartyRepository,
        kudos: KudosService,
        accounts: AccountService,
        scheduler: Scheduler,
        clock: Clock,
        settings: KudosSettings,
        styles: ModelCatalog,
        *,
        shards: ShardScope = ALL_SHARDS,
        keys: SharedKeyService | None = None,
    ) -> None:
        self._keys = keys  # to make and delete the party's shared key (the `pay` option)
        self._styles = styles
        self._shards = shards
        self._repo = repo
        self._kudos = kudos
        self._accounts = accounts
        self._scheduler = scheduler
        self._clock = clock
        self.settings = settings
        self.gateway: Port[PartyGateway] = Port("parties.gateway", _NoGateway())  # the cog plugs Discord in
        self._end_check: ScheduledCall | None = None
        # Whether a party of this process's servers may be running: the end check reads the parties only
        # then. True from the start (parties stored before it are found by the first check); a check
        # that finds none makes it False, unless a party was opened meanwhile (`_opened` counts them).
        self._maybe_running = True
        self._opened = 0

    def start(self) -> None:
        """Run the end-time check and listen for gifts that failed (the host may be out of kudos). Safe to
        call twice; `stop` undoes it."""
        if self._end_check is not None:
            return
        self._kudos.on_failed.subscribe(self._on_gift_failed)
        self._end_check = self._scheduler.every("parties:end", self.settings.check_interval, self.end_due)

    def stop(self) -> None:
        if self._end_check is not None:
            self._end_check.cancel()
            self._end_check = None
        self._kudos.on_failed.unsubscribe(self._on_gift_failed)

    # --- starting and ending -------------------------------------------------------------------------

    async def open(
        self,
        *,
        guild_id: int,
        channel_id: int,
        host_id: int,
        name: str,
        style: str,
        award: int,
        duration_minutes: int,
        recurring: bool,
        pay: int | None = None,
        words: str | None = None,
    ) -> Party:
        """Validate and record a new party (the cog then opens its thread and calls `attach_thread`).

        `pay`: the host pays the thread's generations with a shared key of theirs made now, holding at
        most this many kudos. `words`: what every awarded prompt must contain."""
        checked_name = validation.text(name, "name", max_chars=MAX_PARTY_NAME, single_line=True)
        if checked_name is None:
            raise InvalidInputError("Give the party a name.")
        checked_style = validation.text(style, "style", max_chars=200, single_line=True) or ""
        if len(checked_style) < 3:
            raise InvalidInputError("Give the AI Horde style's name (at least 3 characters).")
        name, style = checked_name, checked_style
        if not _whole_in(award, 1, self.settings.party_max_award):
            raise InvalidInputError(
                f"The award must be from 1 to {self.settings.party_max_award:,} kudos per generation."
            )
        max_minutes = int(self.settings.party_max_hours * 60)
        if not _whole_in(duration_minutes, 1, max_minutes):
            raise InvalidInputError(f"The duration must be from 1 to {max_minutes:,} minutes.")
        required = parse_words(words)
        if pay is not None and not _whole_in(pay, 1, MAX_SHARED_KEY_KUDOS):
            raise InvalidInputError(
                f"`pay` is the most kudos the party's generations may cost you: from 1 to "
                f"{MAX_SHARED_KEY_KUDOS:,}."
            )
        if pay is not None and self._keys is None:
            raise InvalidInputError("Paying for a party's generations is not available on this bot.")
        if await self._accounts.linked(host_id) is None:
            raise NotLinkedError("Hosting a party pays awards from your AI Horde account: `/login` first.")
        style = await self._style_name(style)
        for party in await self._repo.active(guild_id):
            if party.host_id == host_id:
                raise InvalidInputError(
                    f"You are already hosting **{party.name}**: end it with `/party end` first."
                )
        key_encrypted: str | None = None
        if pay is not None and self._keys is not None:
            # Made last, once everything else is known good; it expires on its own a day after the party
            # should the bot never get to delete it (e.g. the host logs out first).
            days = math.ceil(duration_minutes / 1440) + 1
            key_encrypted, _details = await self._keys.create_party_key(host_id, f"Party: {name}", pay, days)
        now = self._clock.now()
        try:
            party = await self._repo.add(
                guild_id=guild_id,
                channel_id=channel_id,
                host_id=host_id,
                name=name,
                style=style,
                award=award,
                recurring=recurring,
                started_at=now,
                ends_at=now + timedelta(minutes=duration_minutes),
                words=required,
                key_encrypted=key_encrypted,
                key_kudos=pay if key_encrypted is not None else None,
            )
        except Exception:
            if key_encrypted is not None and self._keys is not None:
                await self._keys.close_party_key(host_id, key_encrypted)
            raise
        self._opened += 1
        self._maybe_running = True
        return party

    async def _style_name(self, wanted: str) -> str:
        """The style as the Horde names it (generations are matched by that name; the autocomplete sends
        its id). As typed when the Horde can't be asked right now."""
        try:
            found = await self._styles.find_style(wanted)
        except HordeError:
            return wanted
        if found is None:
            raise InvalidInputError(
                f"Unknown AI Horde style `{wanted}`. Pick one from the list that appears as you type."
            )
        return found.name

    async def attach_thread(self, party: Party, thread_id: int) -> Party:
        await self._repo.set_thread(party.id, thread_id)
        updated = await self._repo.get(party.id)
        assert updated is not None
        return updated

    async def cancel_unopened(self, party: Party) -> None:
        """The thread could not be created: the party never started (its key, if any, is deleted)."""
        if await self._repo.end(party.id, "no_thread", self._clock.now()):
            await self._close_key(party)

    def rules_text(self, party: Party, escaped_name: str, escaped_style: str) -> str:
        per = "every generation" if party.recurring else "your first generation"
        lines = [
            f"🎉 **{escaped_name}**, a generation party hosted by <@{party.host_id}>",
            f"Generate in this thread with the AI Horde style **{escaped_style}** and receive "
            f"**{party.award:,}** kudos from the host for {per}.",
        ]
        if party.words:
            listed = ", ".join(f"**{escape_words(w)}**" for w in party.words)
            lines.append(f"Awarded prompts must contain: {listed}.")
        if party.key_kudos is not None:
            lines.append(
                f"The host pays for the generations made here (up to **{party.key_kudos:,}** kudos in all)."
            )
        lines += [
            "Link your AI Horde account with `/login` to receive awards (unlinked members' awards wait "
            f"{self.settings.pending_days:g} days for them).",
            f"Ends {_fmt_ts(party.ends_at)}, or earlier if the host runs out of kudos or ends it "
            "with `/party end`.",
        ]
        return "\n".join(lines)

    async def end(self, *, thread_id: int | None, guild_id: int, user_id: int, moderator: bool) -> Party:
        """`/party end` in the party's thread (or anywhere, for the host's own party)."""
        parties = await self._repo.active(guild_id)
        party = next((p for p in parties if thread_id is not None and p.thread_id == thread_id), None)
        if party is None:
            party = next((p for p in parties if p.host_id == user_id), None)
        if party is None:
            raise InvalidInputError("There is no running party here. Use `/party end` in the party's thread.")
        if party.host_id != user_id and not moderator:
            raise PermissionDeniedError("Only the host or a moderator can end this party.")
        reason = "host" if party.host_id == user_id else "moderator"
        await self._finish(party, reason)
        return party

    async def forget_member(self, user_id: int) -> None:
        """/logout step: end the parties the member hosts, with the notice in their threads, then forget
        every party they hosted."""
        for party in await self._repo.active():
            if party.host_id == user_id:
                await self._finish(party, "host_left")
        await self._repo.forget_member(user_id)

    async def end_due(self) -> None:
        """End the parties whose time is up. Parties are opened here (a server's commands come to the
        process of its shard), so while none runs there is nothing to read until one is opened."""
        if not self._maybe_running:
            return
        opened = self._opened
        now = self._clock.now()
        # Only this process's servers: another process ends (and posts in) the parties of its shards.
        mine = [party for party in await self._repo.active() if self._shards.owns(party.guild_id)]
        if not mine and self._opened == opened:
            self._maybe_running = False
        for party in mine:
            if party.ends_at <= now:
                await self._finish(party, "time")

    async def _finish(self, party: Party, reason: str) -> None:
        if not await self._repo.end(party.id, reason, self._clock.now()):
            return  # already ended: its notice was posted then
        log.info("party %s ended (%s)", party.id, reason)
        spent = await self._close_key(party)
        if party.thread_id is not None:
            notice = ENDED_BY.get(reason, "The party ended.")
            if party.key_kudos is not None:
                notice += (
                    f"\nThe host paid **{spent:,}** kudos for the generations made here."
                    if spent is not None
                    else "\nThe host paid for the generations made here (the AI Horde couldn't say how much)."
                )
            await self.gateway.get().post(party.thread_id, notice)
            await self.gateway.get().close(party.thread_id)

    async def _close_key(self, party: Party) -> int | None:
        """Delete the party's shared key and keep what it spent; None when it had none (or it is unknown)."""
        if party.key_encrypted is None or self._keys is None:
            return party.kudos_spent
        spent = await self._keys.close_party_key(party.host_id, party.key_encrypted)
        await self._repo.drop_key(party.id, spent)
        return spent

    async def _on_gift_failed(self, gift: Gift) -> None:
        if gift.party_id is None or gift.horde_rc not in HOST_CANT_PAY:
            return
        party = await self._repo.get(gift.party_id)
        if party is not None and party.state == "active":
            await self._finish(party, "out_of_kudos")

    # --- awards ------------------------------------------------------------------------------------------

    async def on_generation(self, event: GenerationCompleted) -> Gift | None:
        """A generation was delivered: award it if it was made in a running party's thread with its style."""
        if event.guild_id is None or event.images < 1 or not event.style:
            return None
        now = self._clock.now()
        for party in await self._repo.active(event.guild_id):
            if party.thread_id != event.channel_id or party.ends_at <= now:
                continue
            if party.style.casefold() != event.style.strip().casefold():
                continue
            if event.user_id == party.host_id:
                return None  # no self-awards
            if party.words and missing_words(event.prompt, party.words):
                return None  # generated, not awarded: the member was told when they sent it
            dedup = (
                f"party:{party.id}:job:{event.job_id}"
                if party.recurring
                else f"party:{party.id}:member:{event.user_id}"
            )
            return await self._kudos.record(
                dedup_key=dedup,
                source="party",
                giver_id=party.host_id,
                receiver_id=event.user_id,
                amount=party.award,
                guild_id=party.guild_id,
                channel_id=event.channel_id,
                message_id=event.message_id,
                party_id=party.id,
            )
        return None

    async def prompt_note(
        self, *, guild_id: int | None, channel_id: int | None, user_id: int, prompt: str
    ) -> str | None:
        """For the member, privately, when a prompt sent in a party's thread won't be awarded for lacking
        the party's words (it is generated all the same). None otherwise."""
        if guild_id is None or channel_id is None:
            return None
        for party in await self._repo.active(guild_id):
            if party.thread_id != channel_id or not party.words or user_id == party.host_id:
                continue
            missing = missing_words(prompt, party.words)
            if missing:
                listed = ", ".join(f"`{escape_words(w)}`" for w in missing)
                return (
                    f"Your image is on its way, but it won't be awarded: this party's prompts must contain "
                    f"{listed}. Add {'it' if len(missing) == 1 else 'them'} to your next prompt."
                )
        return None


def escape_words(word: str) -> str:
    """A party word as shown in Discord: no markdown or mentions can come through."""
    return re.sub(r"[\\`*_~|<>@#:]", "", word)
