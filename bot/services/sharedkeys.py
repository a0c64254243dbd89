"""Shared keys: members sponsor others with their kudos, and a guild can pay for its unlinked members.

A shared key is a UUID that works as an API key and spends its owner's kudos up to a limit (API_NOTES §9).
It is a secret: stored encrypted, shown only ephemerally to its owner, never logged.

`resolve()` is how generation, alchemy and text pick the key for a request: in a party's thread whose
host pays, the party's shared key (made for the party, deleted when it ends); else the member's own
linked key, else the guild's shared key, else the anonymous key if the guild allows it. Requests are
checked against a shared key's limits *before* sending, because the Horde answers an over-limit image
request with a bare 500.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from bot.clock import Clock
from bot.crypto import KeyCipher
from bot.db.parties import PartyRepository
from bot.db.sharedkeys import SharedKeyRepository, StoredSharedKey
from bot.errors import InvalidInputError, NotLinkedError, UserFacingError
from bot.horde.cache import TTLCache
from bot.horde.client import HordeClient
from bot.horde.errors import HordeError, HordeUnavailable
from bot.horde.limits import (
    MAX_SHARED_KEY_KUDOS,
    MAX_SHARED_KEY_NAME,
    MAX_SHARED_KEY_PIXELS,
    MAX_SHARED_KEY_STEPS,
    MAX_SHARED_KEY_TOKENS,
    MIN_SHARED_KEY_NAME,
)
from bot.horde.models import ApiKey
from bot.horde.status import SharedKeyDetails, SharedKeyInput
from bot.notify import Notifier
from bot.services import validation
from bot.services.accounts import AccountService
from bot.services.guild_config import GuildConfigService

log = logging.getLogger(__name__)

KeySource = Literal["own", "guild", "anon", "party"]
SHARED_KEY_RCS = ("SharedKeyEmpty", "SharedKeyExpired", "SharedKeyInsufficientKudos")
MAX_KEYS_PER_MEMBER = 10
MAX_SHARED_KEY_DAYS = 3650  # this bot's choice: the Horde sets no upper bound on `expiry`


@dataclass(frozen=True)
class ResolvedKey:
    key: ApiKey
    source: KeySource
    shared: SharedKeyDetails | None = None  # the shared key's limits, when source is "guild" or "party"


@dataclass(frozen=True)
class OwnedSharedKey:
    row: StoredSharedKey
    key: ApiKey
    details: SharedKeyDetails | None  # None: the Horde no longer knows it


# Why the guild's key stopped working, as the member and the log channel read it.
KEY_EMPTY = "has run out of kudos"
KEY_EXPIRED = "has expired"
KEY_GONE = "no longer works (deleted on the AI Horde?)"
KEY_REJECTED = "was rejected by the AI Horde (deleted or revoked?)"


class GuildKeyEmptyError(UserFacingError):
    def __init__(self, why: str = KEY_EMPTY) -> None:
        fix = "top it up" if why == KEY_EMPTY else "set a new one with `/serverkey set`"
        super().__init__(
            f"This server's shared AI Horde key {why}. Link your own account with `/login`, "
            f"or ask an admin to {fix}."
        )


@dataclass(frozen=True)
class SharedKeyRequest:
    """What a member typed in `/sharedkey create` (unchecked: a client can send anything)."""

    name: str
    kudos: int = 5000
    expiry_days: int = -1
    max_image_pixels: int = -1
    max_image_steps: int = -1
    max_text_tokens: int = -1


def check_shared_key(request: SharedKeyRequest) -> SharedKeyInput:
    """The Horde's `SharedKeyInput` from what the member typed, every value within the Horde's limits
    (`bot.horde.limits`); -1 means "no limit", 0 is refused (a key that can do nothing)."""
    name = validation.text(
        request.name, "name", min_chars=MIN_SHARED_KEY_NAME, max_chars=MAX_SHARED_KEY_NAME, single_line=True
    )
    if name is None:
        raise InvalidInputError(
            f"`name` is empty (only spaces): give the key a name of at least {MIN_SHARED_KEY_NAME} "
            "characters."
        )

    def limit(value: object, option: str, high: int) -> int:
        checked = validation.integer(value, option, -1, high)
        if checked == 0:
            raise InvalidInputError(f"`{option}` must be positive, or -1 for no limit.")
        return checked

    return SharedKeyInput(
        name=name,
        kudos=limit(request.kudos, "kudos", MAX_SHARED_KEY_KUDOS),
        expiry=limit(request.expiry_days, "expiry_days", MAX_SHARED_KEY_DAYS),
        max_image_pixels=limit(request.max_image_pixels, "max_image_pixels", MAX_SHARED_KEY_PIXELS),
        max_image_steps=limit(request.max_image_steps, "max_image_steps", MAX_SHARED_KEY_STEPS),
        max_text_tokens=limit(request.max_text_tokens, "max_text_tokens", MAX_SHARED_KEY_TOKENS),
    )


def _expired(details: SharedKeyDetails, now: datetime) -> bool:
    if not details.expiry:
        return False
    try:
        when = datetime.fromisoformat(details.expiry.replace("Z", "+00:00"))
    except ValueError:
        return False
    if when.tzinfo is None:
        when = when.replace(tzinfo=now.tzinfo)
    return when <= now


class SharedKeyService:
    def __init__(
        self,
        repo: SharedKeyRepository,
        horde: HordeClient,
        cipher: KeyCipher,
        accounts: AccountService,
        guild_config: GuildConfigService,
        notifier: Notifier,
        clock: Clock,
        *,
        details_ttl: float = 60.0,
        parties: PartyRepository | None = None,
    ) -> None:
        self._repo = repo
        self._parties = parties
        self._horde = horde
        self._cipher = cipher
        self._accounts = accounts
        self._guild_config = guild_config
        self._notifier = notifier
        self._clock = clock
        self._cache = TTLCache(clock)
        self._details_ttl = details_ttl
        self._reported: set[int] = set()  # guilds told that their key stopped working (until set again)

    # --- resolving the key for a request -------------------------------------------------------------

    async def resolve(
        self, user_id: int, guild_id: int | None, *, channel_id: int | None = None
    ) -> ResolvedKey:
        if channel_id is not None:
            party = await self._party_key(channel_id)
            if party is not None:
                return party
        own = await self._accounts.api_key(user_id)
        if own is not None:
            return ResolvedKey(own, "own")
        if guild_id is not None:
            stored = await self._repo.guild_key(guild_id)
            if stored is not None:
                key = self._cipher.decrypt(stored.key_encrypted)
                details = await self.details(key)
                if details is None:
                    await self.report_guild_key_problem(guild_id, "is no longer known to the AI Horde")
                    raise GuildKeyEmptyError(KEY_GONE)
                if _expired(details, self._clock.now()):
                    await self.report_guild_key_problem(guild_id, KEY_EXPIRED)
                    raise GuildKeyEmptyError(KEY_EXPIRED)
                if details.remaining == 0:
                    await self.report_guild_key_problem(guild_id, KEY_EMPTY)
                    raise GuildKeyEmptyError()
                return ResolvedKey(key, "guild", details)
        config = await self._guild_config.get(guild_id)
        if not config.allow_anonymous:
            raise NotLinkedError(
                "This server requires a linked AI Horde account: use `/login` first "
                "(free keys at https://aihorde.net/register)."
            )
        return ResolvedKey(ApiKey.anonymous(), "anon")

    async def _party_key(self, thread_id: int) -> ResolvedKey | None:
        """The key of the party running in this thread, when its host pays and the key can still pay;
        else None, and the member's own key (or the server's) pays as anywhere else."""
        if self._parties is None:
            return None
        party = await self._parties.paying_party(thread_id)
        if party is None or party.key_encrypted is None:
            return None
        key = self._cipher.decrypt(party.key_encrypted)
        try:
            details = await self.details(key)
        except HordeError:
            return ResolvedKey(key, "party")  # the Horde can't say now: its answer to the request will
        if details is None or _expired(details, self._clock.now()) or details.remaining == 0:
            return None
        return ResolvedKey(key, "party", details)

    async def details(self, key: ApiKey, *, fresh: bool = False) -> SharedKeyDetails | None:
        """The key's details (cached briefly), or None if the Horde does not know it."""
        cache_key = "sk:" + hashlib.sha256(key.reveal().encode()).hexdigest()[:24]
        if fresh:
            self._cache.invalidate(cache_key)

        async def load() -> SharedKeyDetails | None:
            try:
                return await self._horde.shared_key(key.reveal())
            except HordeError as exc:
                if exc.status == 404 and not isinstance(exc, HordeUnavailable):
                    return None
                raise

        return await self._cache.get_or_load(cache_key, self._details_ttl, load)

    @staticmethod
    def check_text(resolved: ResolvedKey, max_length: int) -> None:
        limit = resolved.shared.max_text_tokens if resolved.shared else -1
        if limit != -1 and max_length > limit:
            raise InvalidInputError(
                f"This server's shared key allows at most {limit} tokens per answer: lower `max_length`."
            )

    @staticmethod
    def check_image(resolved: ResolvedKey, width: int, height: int, steps: int) -> None:
        """For image generation: the Horde answers 500 (not 400) when a shared key's limits are exceeded."""
        if resolved.shared is None:
            return
        pixels, max_pixels = width * height, resolved.shared.max_image_pixels
        if max_pixels != -1 and pixels > max_pixels:
            raise InvalidInputError(
                f"This server's shared key allows at most {max_pixels:,} pixels per image "
                f"({width}×{height} is {pixels:,}): choose a smaller size."
            )
        max_steps = resolved.shared.max_image_steps
        if max_steps != -1 and steps > max_steps:
            raise InvalidInputError(f"This server's shared key allows at most {max_steps} steps.")

    async def after_guild_request(self, guild_id: int) -> None:
        """Call when a request paid by the guild's key finished: refresh what is left, tell admins if dry.

        (The key ran dry *during* a request if this finds it empty: the Horde still finishes a request it
        accepted, so the member got the answer, and the next request is refused before it is sent.)
        A key that paid for a request and still has kudos works again: its next failure is reported anew."""
        stored = await self._repo.guild_key(guild_id)
        if stored is None:
            return
        try:
            details = await self.details(self._cipher.decrypt(stored.key_encrypted), fresh=True)
        except HordeError:
            return  # best effort: the next request checks again
        if details is not None and details.remaining == 0:
            await self.report_guild_key_problem(guild_id, KEY_EMPTY)
        elif details is not None:
            self._reported.discard(guild_id)

    async def handle_horde_error(self, exc: HordeError, resolved: ResolvedKey, guild_id: int | None) -> None:
        """Blame the key that paid: mark the error with its source (the member's message names that key,
        see bot.ui.errors) and, when the server's shared key stopped working, tell the log channel once."""
        exc.key_source = resolved.source
        if resolved.source == "party" and (exc.rc in SHARED_KEY_RCS or exc.status == 401):
            # Read again now, so the thread's next request skips it (bot.ui.errors tells the member).
            with contextlib.suppress(HordeError):
                await self.details(resolved.key, fresh=True)
            return
        if resolved.source != "guild" or guild_id is None:
            return
        if exc.rc in SHARED_KEY_RCS:
            why = KEY_EXPIRED if exc.rc == "SharedKeyExpired" else KEY_EMPTY
            await self.details(resolved.key, fresh=True)
            await self.report_guild_key_problem(guild_id, why)
            raise GuildKeyEmptyError(why) from None
        if exc.status == 401 or exc.rc in ("InvalidAPIKey", "SharedKeyInvalid"):
            # Deleted or revoked on the Horde since its details were cached: look again next time.
            await self.details(resolved.key, fresh=True)
            await self.report_guild_key_problem(guild_id, KEY_REJECTED)

    async def report_guild_key_problem(self, guild_id: int, why: str) -> None:
        """Tell the guild's log channel that its shared key stopped working: once, until the key is set
        again (or pays for a request again), however many members run into it meanwhile."""
        if guild_id in self._reported:
            return
        self._reported.add(guild_id)
        await self._notifier.log_to_guild(
            guild_id,
            f"This server's shared AI Horde key {why}: unlinked members can't use it. "
            "Top it up on the AI Horde, or set another with `/serverkey set`.",
            kind="moderation",
        )

    # --- a member's own shared keys -------------------------------------------------------------------

    async def create(
        self, user_id: int, request: SharedKeyRequest
    ) -> tuple[StoredSharedKey, SharedKeyDetails]:
        spec = check_shared_key(request)  # every value first: nothing is sent or stored for a bad one
        key = await self._accounts.require_key(user_id)
        if len(await self._repo.of_owner(user_id)) >= MAX_KEYS_PER_MEMBER:
            raise InvalidInputError(
                f"You already have {MAX_KEYS_PER_MEMBER} shared keys here; "
                "delete one with `/sharedkey delete`."
            )
        details = await self._horde.create_shared_key(spec, key)
        row = await self._repo.add(
            user_id, details.name or spec.name, self._cipher.encrypt(ApiKey(details.id)), self._clock.now()
        )
        log.info("member %s created shared key row %s", user_id, row.id)
        return row, details

    async def mine(self, user_id: int) -> list[OwnedSharedKey]:
        owned = []
        for row in await self._repo.of_owner(user_id):
            key = self._cipher.decrypt(row.key_encrypted)
            owned.append(OwnedSharedKey(row, key, await self.details(key, fresh=True)))
        return owned

    async def owned_rows(self, user_id: int) -> list[StoredSharedKey]:
        """The member's keys as stored (names and our ids; no Horde call)."""
        return await self._repo.of_owner(user_id)

    async def _owned_row(self, user_id: int, row_id: int) -> StoredSharedKey:
        for row in await self._repo.of_owner(user_id):
            if row.id == row_id:
                return row
        raise InvalidInputError("You have no shared key by that name here. `/sharedkey info` lists yours.")

    async def delete(self, user_id: int, row_id: int) -> str:
        row = await self._owned_row(user_id, row_id)
        owner_key = await self._accounts.require_key(user_id)
        shared = self._cipher.decrypt(row.key_encrypted)
        try:
            await self._horde.delete_shared_key(shared.reveal(), owner_key)
        except HordeError as exc:
            if exc.status != 404 or isinstance(exc, HordeUnavailable):
                raise
        await self._repo.delete(row.id)
        self._cache.invalidate()
        return row.name

    async def forget_member(self, user_id: int) -> None:
        """On /logout: forget the member's shared keys (they stay valid on the Horde until deleted there)."""
        await self._repo.forget_member(user_id)

    # --- a party's key -------------------------------------------------------------------------------

    async def create_party_key(
        self, host_id: int, name: str, kudos: int, expiry_days: int
    ) -> tuple[str, SharedKeyDetails]:
        """A shared key of the host's account for a party (`PUT /sharedkeys`): at most `kudos`, expiring on
        its own after `expiry_days` should the bot never get to delete it. Returns it encrypted."""
        spec = check_shared_key(SharedKeyRequest(name=name, kudos=kudos, expiry_days=expiry_days))
        owner = await self._accounts.require_key(host_id)
        details = await self._horde.create_shared_key(spec, owner)
        log.info("member %s created a party shared key", host_id)
        return self._cipher.encrypt(ApiKey(details.id)), details

    async def close_party_key(self, host_id: int, key_encrypted: str) -> int | None:
        """Delete a party's key on the AI Horde; returns the kudos it spent (None if unknown). Best effort:
        when the host's key is gone (/logout) or the Horde can't be reached, the key expires on its own."""
        key = self._cipher.decrypt(key_encrypted)
        spent: int | None = None
        try:
            details = await self.details(key, fresh=True)
            spent = details.utilized if details is not None else None
            owner = await self._accounts.api_key(host_id)
            if details is not None and owner is not None:
                await self._horde.delete_shared_key(key.reveal(), owner)
            elif details is not None:
                log.info("party shared key of member %s not deleted: they logged out (it expires)", host_id)
        except HordeError as exc:
            log.warning(
                "party shared key of member %s not deleted: %s (it expires on its own)", host_id, exc.rc
            )
        self._cache.invalidate()
        return spent

    # --- the guild's key -----------------------------------------------------------------------------

    async def set_guild_key_from_owned(self, guild_id: int, admin_id: int, row_id: int) -> SharedKeyDetails:
        row = await self._owned_row(admin_id, row_id)
        return await self._set_guild_key(guild_id, admin_id, self._cipher.decrypt(row.key_encrypted))

    async def set_guild_key(self, guild_id: int, admin_id: int, raw_key: str) -> SharedKeyDetails:
        try:
            key = ApiKey.parse(raw_key)
        except ValueError:
            raise InvalidInputError(
                "That doesn't look like a shared key (a UUID). Nothing was stored."
            ) from None
        return await self._set_guild_key(guild_id, admin_id, key)

    async def _set_guild_key(self, guild_id: int, admin_id: int, key: ApiKey) -> SharedKeyDetails:
        details = await self.details(key, fresh=True)
        if details is None:
            raise UserFacingError("The AI Horde doesn't know that shared key. Nothing was stored.")
        await self._repo.set_guild_key(
            guild_id, details.name, self._cipher.encrypt(key), admin_id, self._clock.now()
        )
        self._reported.discard(guild_id)
        log.info("guild %s: shared key set by %s", guild_id, admin_id)
        return details

    async def clear_guild_key(self, guild_id: int) -> bool:
        self._reported.discard(guild_id)
        return await self._repo.clear_guild_key(guild_id)

    async def guild_key_details(self, guild_id: int) -> tuple[str, SharedKeyDetails | None] | None:
        stored = await self._repo.guild_key(guild_id)
        if stored is None:
            return None
        return stored.name, await self.details(self._cipher.decrypt(stored.key_encrypted), fresh=True)
