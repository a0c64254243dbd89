"""Linking Discord members to AI Horde accounts."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from bot.clock import Clock
from bot.crypto import KeyCipher, KeyDecryptionError
from bot.db.users import LinkedUser, UserRepository
from bot.errors import InvalidInputError, NotLinkedError, UserFacingError
from bot.hooks import Hook
from bot.horde.client import HordeClient
from bot.horde.errors import HordeError
from bot.horde.models import ApiKey, HordeUser

log = logging.getLogger(__name__)

# A forget step deletes one feature's data about a member; it returns what it could not remove (in words
# for the member), or None.
ForgetFn = Callable[[int], Awaitable[Sequence[str] | None]]


@dataclass(frozen=True)
class ForgetStep:
    what: str  # what the step deletes, as the member reads it when the step fails: "your image generations"
    run: ForgetFn


@dataclass(frozen=True)
class UnlinkResult:
    was_linked: bool
    problems: list[str] = field(default_factory=list)  # what could not be removed, for the member


BAD_KEY = (
    "The AI Horde doesn't recognise that API key. Copy it again from https://aihorde.net/register "
    "and run `/login` once more. Nothing was stored."
)


class KeyNoLongerValidError(UserFacingError):
    def __init__(self) -> None:
        super().__init__(
            "Your linked API key no longer works on the AI Horde (revoked or reset?). "
            "Link a new one with `/login`."
        )


class AccountService:
    def __init__(self, users: UserRepository, horde: HordeClient, cipher: KeyCipher, clock: Clock) -> None:
        self._users = users
        self._horde = horde
        self._cipher = cipher
        self._clock = clock
        # Other features react to linking (pending gifts, roles). Every feature that stores a member's id
        # registers a forget step (`forget`): /logout runs them all (the member-data contract,
        # `bot.db.member_data`).
        self.on_linked: Hook[[int, HordeUser], None] = Hook("accounts.on_linked")
        self.forget_steps: list[ForgetStep] = []

    def forget(self, what: str, run: ForgetFn) -> None:
        """Register a /logout step; `what` names the data for the member if the step fails."""
        self.forget_steps.append(ForgetStep(what, run))

    async def link(self, discord_id: int, raw_key: str) -> HordeUser:
        """Validate a key with the Horde and store it encrypted. Nothing is stored on failure."""
        try:
            key = ApiKey.parse(raw_key)
        except ValueError:
            raise InvalidInputError(
                "That doesn't look like an AI Horde API key (10 or more letters, digits, `-` or `_`). "
                "Nothing was stored."
            ) from None
        if key.is_anonymous:
            raise InvalidInputError("The anonymous key `0000000000` can't be linked: use your own key.")
        try:
            user = await self._horde.find_user(key)
        except HordeError as exc:
            if exc.rc in ("InvalidAPIKey", "UserNotFound"):
                raise UserFacingError(BAD_KEY) from None
            raise
        if "(Shared Key" in user.username:
            # A shared key answers find_user as its owner ("alice#2 (Shared Key: name)"). Linked as one's own
            # key, its limits would go unchecked (the Horde answers 500 to images over them, API_NOTES §9).
            raise InvalidInputError(
                "That is a shared key, not your own API key: `/login` needs your own key. A server manager "
                "can let a shared key pay for members with `/serverkey set`. Nothing was stored."
            )
        await self._users.upsert(
            discord_id=discord_id,
            horde_user_id=user.id,
            horde_username=user.username,
            api_key_encrypted=self._cipher.encrypt(key),
            linked_at=self._clock.now(),
        )
        log.info("member %s linked Horde user %s", discord_id, user.id)
        # A follow-up feature failing must not undo or hide a successful link (`Hook.emit` logs it).
        await self.on_linked.emit(discord_id, user)
        return user

    async def unlink(self, discord_id: int) -> UnlinkResult:
        """Delete the key, then everything else the bot keeps about the member.

        The key goes first and on its own: whatever fails afterwards, the key is gone. Each other step is
        guarded, so one failing (Discord refusing a role change, a database hiccup) neither stops the others
        nor hides itself: the member is told what could not be removed. Runs for members who never linked
        too (a server's shared key lets them generate, gift and chat)."""
        was_linked = await self._users.delete(discord_id)
        if was_linked:
            log.info("member %s unlinked", discord_id)
        problems: list[str] = []
        for step in self.forget_steps:
            try:
                problems.extend(await step.run(discord_id) or ())
            except Exception:
                log.exception("forgetting member %s: step %r failed", discord_id, step.what)
                problems.append(f"{step.what}: could not be deleted just now (run `/logout` again later)")
        return UnlinkResult(was_linked, problems)

    async def linked(self, discord_id: int) -> LinkedUser | None:
        return await self._users.get(discord_id)

    async def linked_many(self, discord_ids: list[int]) -> dict[int, LinkedUser]:
        """The links of several members in one query (the unlinked are missing)."""
        return await self._users.get_many(discord_ids)

    async def api_key(self, discord_id: int) -> ApiKey | None:
        """The member's key, or None if not linked. A key that can't be decrypted is an error, not None."""
        row = await self._users.get(discord_id)
        if row is None:
            return None
        return self.key_of(row)

    def key_of(self, linked: LinkedUser) -> ApiKey:
        """The key of a link already read (a caller that keeps links in memory saves the query)."""
        try:
            return self._cipher.decrypt(linked.api_key_encrypted)
        except KeyDecryptionError:
            log.error(
                "stored key of member %s cannot be decrypted (secret key changed or value corrupted)",
                linked.discord_id,
            )
            raise

    async def require_key(self, discord_id: int) -> ApiKey:
        key = await self.api_key(discord_id)
        if key is None:
            raise NotLinkedError()
        return key

    async def me(self, discord_id: int) -> HordeUser:
        """The member's own account, read with their key (includes private fields)."""
        key = await self.require_key(discord_id)
        try:
            user = await self._horde.find_user(key)
        except HordeError as exc:
            if exc.rc in ("InvalidAPIKey", "UserNotFound"):
                raise KeyNoLongerValidError() from None
            raise
        row = await self._users.get(discord_id)
        if row is not None and row.horde_username != user.username:
            await self._users.update_username(discord_id, user.username)
        return user

    async def public_profile(self, discord_id: int) -> HordeUser | None:
        """Another member's public account view, or None if they have not linked."""
        row = await self._users.get(discord_id)
        if row is None:
            return None
        return await self._horde.get_user(row.horde_user_id)
