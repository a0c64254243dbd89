"""Safety rules around every request the bot sends to the Horde (issue #4).

The prompt filter itself lives in `bot.safety`; this service applies it with the guild's own blocked
terms, decides where NSFW is allowed, and handles the Horde's own rejections as incidents.

Contract used by other features (keep these signatures stable):
- `check_prompt(...)`: call before any Horde call that carries a prompt; raises `PromptRefusedError`
  (or `RateLimitedError` for a member on a safety cooldown, or while the Horde has the bot's IP timed out).
- `nsfw_allowed(...)`: whether a request may go out with `nsfw: true`.
- `on_horde_rejection(...)`: call when the Horde answers `CorruptPrompt` or `TimeoutIP`.
- `check_horde_available()` / `ip_blocked_until()`: the bot-wide pause while the Horde times out the IP.
- `gate(...)`: everything a Horde-calling command must pass before it runs (cooldown, IP pause, rate
  limits); the command tree calls it for every command marked with `bot.bot.calls_horde`.
- `check_image_safe(...)`: the alchemy `nsfw` classifier on an image, when the guild enabled it.

A refused prompt is a *strike*. A strike less than `strike_window` seconds after the previous strike's
cooldown ended moves a step further along `cooldown_steps`; after a quiet window the steps start again.
Strikes and IP pauses are stored (`bot.db.safety`), so a restart keeps them. Where several bot processes
share the database (issue #17), the gate also reads the member's and the bot's running pauses from it, so a
member paused in one process is paused in all, and so is every process while the Horde times out their IP;
in the same statement it counts the request against the server's and the member's per-minute limits,
stored, so each holds over every process (a server's commands reach one process, but for a moment while
its shard moves to another). SQLite's one process counts both in memory.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path

from bot.clock import Clock
from bot.config import SafetySettings
from bot.db.safety import RequestPace, SafetyRepository
from bot.errors import RateLimitedError, UserFacingError
from bot.notify import Notifier
from bot.safety import PromptFilter
from bot.services.guild_config import GuildConfigService

log = logging.getLogger(__name__)

REFUSED = "This prompt can't be generated here. Please change it and try again."
IMAGE_REFUSED = (
    "This image can't be used here: the AI Horde's classifier flags it as NSFW, and this channel "
    "doesn't allow NSFW content."
)
# The Horde's own rejections that count as incidents.
INCIDENT_CODES = frozenset({"CorruptPrompt", "TimeoutIP"})
LOG_PROMPT_CHARS = 1500


class PromptRefusedError(UserFacingError):
    def __init__(self, message: str = REFUSED) -> None:
        super().__init__(message)


class ImageRefusedError(UserFacingError):
    def __init__(self, message: str = IMAGE_REFUSED) -> None:
        super().__init__(message)


def wait_text(seconds: float) -> str:
    """'45 seconds', '5 minutes', '24 hours': how long a member must wait, rounded up."""
    seconds = max(1, math.ceil(seconds))
    if seconds < 60:
        return f"{seconds} second{'s' if seconds != 1 else ''}"
    minutes = math.ceil(seconds / 60)
    if minutes < 120:
        return f"{minutes} minute{'s' if minutes != 1 else ''}"
    hours = math.ceil(seconds / 3600)
    return f"{hours} hours"


def code_block(text: str, limit: int = LOG_PROMPT_CHARS) -> str:
    """Member text shown verbatim in a code block: no markdown, no mentions, no way to close the block."""
    cleaned = text.replace("`", "ˋ")
    if len(cleaned) > limit:
        # Both ends: a chat prompt starts with the persona and ends with the member's latest line.
        half = (limit - 3) // 2
        cleaned = cleaned[:half] + " … " + cleaned[-half:]
    return f"```\n{cleaned or ' '}\n```"


class _Bucket:
    """A token bucket: `capacity` requests at once, refilled at `rate` per second."""

    __slots__ = ("capacity", "rate", "tokens", "updated")

    def __init__(self, capacity: int, rate: float, now: float) -> None:
        self.capacity = capacity
        self.rate = rate
        self.tokens = float(capacity)
        self.updated = now

    def refill(self, now: float) -> None:
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now

    def wait(self) -> float:
        """Seconds until one token is available (0: now). Call `refill` first."""
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate


# (user_id, guild_id, source_image, timeout): the alchemy `nsfw` form's verdict on an image already prepared
# for its request (base64 WebP, as a Horde request carries it), None: no answer.
NsfwClassifier = Callable[[int, int | None, str, float], Awaitable[bool | None]]


def request_paces(settings: SafetySettings) -> tuple[RequestPace, RequestPace]:
    """A member's and a server's per-minute limits, counted on a shared database (`SafetyRepository.gate`)."""
    return (
        RequestPace(settings.user_burst, timedelta(seconds=60 / settings.user_per_minute)),
        RequestPace(settings.guild_burst, timedelta(seconds=60 / settings.guild_per_minute)),
    )


class SafetyService:
    def __init__(
        self,
        prompt_filter: PromptFilter,
        guild_config: GuildConfigService,
        notifier: Notifier,
        clock: Clock,
        repo: SafetyRepository | None = None,
        settings: SafetySettings | None = None,
        *,
        nsfw_classifier: NsfwClassifier | None = None,
    ) -> None:
        """`nsfw_classifier`: runs the Horde's `nsfw` interrogation form on an image (the alchemy feature's
        `AlchemyService.classify_nsfw`)."""
        self._filter = prompt_filter
        self._guild_config = guild_config
        self._notifier = notifier
        self._clock = clock
        self._repo = repo
        self.settings = settings or SafetySettings()
        # Members' running cooldowns, all read from the database once (`load`) and kept in step by
        # `_strike`, the only writer: on SQLite (one process) the gate in front of every Horde command never
        # waits for a query (under load that read queued behind the jobs' writes and delayed the defer by
        # ~0.5 s). Processes sharing a database add what the others stored (`_gate_shared`).
        self._cooldowns: dict[int, datetime] = {}
        self._cooldowns_loaded = False
        self._ip_until: datetime | None = None
        self._ip_loaded = False
        self._user_buckets: dict[int, _Bucket] = {}
        self._guild_buckets: dict[int, _Bucket] = {}
        self._nsfw_classifier = nsfw_classifier

    def warm_up(self) -> None:
        """Compile the word lists now rather than on the first member's request."""
        self._filter.warm_up()

    async def load(self) -> None:
        """Read the running cooldowns and the bot-wide IP pause (start-up, before any command)."""
        await self._load_cooldowns()
        await self.ip_blocked_until()

    async def _load_cooldowns(self) -> None:
        if self._cooldowns_loaded:
            return
        stored = await self._repo.cooldowns_after(self._clock.now()) if self._repo is not None else {}
        for user_id, until in stored.items():
            current = self._cooldowns.get(user_id)
            self._cooldowns[user_id] = until if current is None or until > current else current
        self._cooldowns_loaded = True

    # --- prompts ----------------------------------------------------------------------------------------

    async def check_prompt(
        self,
        *,
        guild_id: int | None,
        user_id: int,
        prompt: str,
        negative: str | None = None,
        channel_id: int | None = None,
    ) -> None:
        await self.check_cooldown(user_id)
        config = await self._guild_config.get(guild_id)
        verdict = self._filter.check(prompt, negative or "", config.blocked_words)
        if verdict.allowed:
            return
        reason = verdict.reason or "csam"
        log.warning(
            "Refused a prompt (%s) from user %s in guild %s: %r (negative %r)",
            reason,
            user_id,
            guild_id,
            prompt[:LOG_PROMPT_CHARS],
            (negative or "")[:LOG_PROMPT_CHARS],
        )
        cooldown = await self._strike(user_id, guild_id, reason, minimum=0)
        if guild_id is not None:
            what = "a prompt matching this server's blocked words" if reason == "custom" else "a prompt"
            lines = [
                f"**Safety:** refused {what} from <@{user_id}> (user id {user_id})"
                + (f" in <#{channel_id}>" if channel_id else "")
                + (f"; they are paused for {wait_text(cooldown)}." if cooldown else "."),
                "Prompt:" + code_block(prompt, 900),
            ]
            if negative:
                lines.append("Negative prompt:" + code_block(negative, 500))
            await self._notifier.log_to_guild(guild_id, "\n".join(lines), kind="moderation")
        message = REFUSED
        if cooldown:
            message += f" Your requests are paused for {wait_text(cooldown)}."
        raise PromptRefusedError(message)

    async def check_cooldown(self, user_id: int) -> None:
        """RateLimitedError while the member is on a safety cooldown."""
        until = await self.cooldown_until(user_id)
        now = self._clock.now()
        if until is not None and until > now:
            left = (until - now).total_seconds()
            raise RateLimitedError(
                f"Your requests are paused after refused prompts. Try again in {wait_text(left)}.",
                retry_after=left,
            )

    async def cooldown_until(self, user_id: int) -> datetime | None:
        """When the member's latest cooldown ends (None: none since start-up or running at start-up). From
        memory: one query for everyone the first time."""
        if not self._cooldowns_loaded:
            await self._load_cooldowns()
        return self._cooldowns.get(user_id)

    async def _gate_shared(self, user_id: int, guild_id: int | None) -> None:
        """The gate where several processes share the database (issue #17). Another may have paused this
        member (their refused prompts reached it) or every process (the Horde timed out the IP they share)
        since this one read the database, and the member's and the server's requests through every process
        count against their one per-minute limit each (a server's commands reach one process, but for a
        moment while its shard moves to another). One statement per command, for these processes only: it
        reads both pauses and, when neither runs, counts the request against the server's and the member's
        stored pace."""
        assert self._repo is not None
        s = self.settings
        member, server_pace = request_paces(s)
        server = (guild_id, server_pace) if guild_id is not None else None
        found = await self._repo.gate(user_id, self._clock.now(), member, server)
        self._merge_pauses(user_id, found.member, found.ip)
        await self.check_cooldown(user_id)
        await self.check_horde_available()
        self._refuse_if_waiting(found.wait, found.server_wait)

    def _merge_pauses(self, user_id: int, member: datetime | None, ip: datetime | None) -> None:
        """Pauses another process stored join memory, as this process's own strikes and pauses do."""
        current = self._cooldowns.get(user_id)
        if member is not None and (current is None or member > current):
            self._cooldowns[user_id] = member
        self._merge_ip_pause(ip)

    def _merge_ip_pause(self, ip: datetime | None) -> None:
        if ip is not None and (self._ip_until is None or ip > self._ip_until):
            self._ip_until = ip

    def _window_start(self) -> datetime:
        return self._clock.now() - timedelta(seconds=self.settings.strike_window)

    async def _strike(self, user_id: int, guild_id: int | None, reason: str, *, minimum: int) -> int:
        """Record a strike; returns the member's new cooldown in seconds."""
        now = self._clock.now()
        level = 0
        last = await self._repo.last_strike(user_id) if self._repo is not None else None
        if last is not None and last.cooldown_until >= self._window_start():
            level = last.level + 1
        steps = self.settings.cooldown_steps
        seconds = max(steps[min(level, len(steps) - 1)], minimum)
        until = now + timedelta(seconds=seconds)
        if self._repo is not None:
            await self._repo.add_strike(
                user_id=user_id, guild_id=guild_id, reason=reason, level=level, now=now, cooldown_until=until
            )
            await self._repo.prune_strikes(now - timedelta(seconds=self.settings.strike_window))
        current = self._cooldowns.get(user_id)
        self._cooldowns[user_id] = until if current is None or until > current else current
        return seconds

    # --- NSFW -------------------------------------------------------------------------------------------

    async def nsfw_allowed(self, *, guild_id: int | None, channel_nsfw: bool, is_dm: bool) -> bool:
        if is_dm or guild_id is None:
            return self.settings.allow_nsfw_in_dms
        config = await self._guild_config.get(guild_id)
        return config.nsfw_policy == "nsfw_channels" and channel_nsfw

    async def check_image_safe(
        self,
        *,
        guild_id: int | None,
        user_id: int,
        source_image: str,
        channel_nsfw: bool,
        is_dm: bool,
    ) -> None:
        """ImageRefusedError for an NSFW image where NSFW isn't allowed, if the guild asks for this check.

        For img2img sources and `/describe` inputs, as their request sends them (`source_image`: base64
        WebP, already checked and converted; the check converts nothing again). Runs the Horde's alchemy
        `nsfw` form (through `nsfw_classifier`) only when the guild enabled `alchemy_nsfw_check` and the
        channel doesn't allow NSFW anyway. The admins asked for the check, so an unanswered one refuses the
        image too.
        """
        config = await self._guild_config.get(guild_id)
        if not config.alchemy_nsfw_check:
            return
        if await self.nsfw_allowed(guild_id=guild_id, channel_nsfw=channel_nsfw, is_dm=is_dm):
            return
        if self._nsfw_classifier is None:
            log.warning("alchemy NSFW check enabled in guild %s but no classifier is wired", guild_id)
            return
        verdict = await self._nsfw_classifier(
            user_id, guild_id, source_image, self.settings.image_check_timeout
        )
        if verdict is None:
            raise UserFacingError(
                "This server checks images for NSFW content before use, and the AI Horde's check didn't "
                "answer in time. Please try again later."
            )
        if verdict:
            log.info("NSFW check refused an image from user %s in guild %s", user_id, guild_id)
            raise ImageRefusedError()

    # --- the Horde's own rejections -----------------------------------------------------------------

    async def on_horde_rejection(
        self,
        *,
        guild_id: int | None,
        user_id: int,
        prompt: str,
        negative: str | None,
        rc: str,
        retry_after: float | None = None,
    ) -> None:
        log.warning(
            "The Horde rejected a prompt (%s) from user %s in guild %s: %r",
            rc,
            user_id,
            guild_id,
            prompt[:LOG_PROMPT_CHARS],
        )
        if rc not in INCIDENT_CODES:
            return
        cooldown = await self._strike(user_id, guild_id, rc, minimum=self.settings.incident_cooldown)
        pause = await self._pause_horde(rc, retry_after)
        self._append_review(rc, prompt, negative)
        if guild_id is not None:
            lines = [
                f"**Safety incident:** the AI Horde rejected a prompt from <@{user_id}> (user id {user_id}, "
                f"`{rc}`). They are paused for {wait_text(cooldown)}; the bot sends no AI Horde requests "
                f"for {wait_text(pause)}.",
                "Prompt:" + code_block(prompt, 900),
            ]
            if negative:
                lines.append("Negative prompt:" + code_block(negative, 500))
            await self._notifier.log_to_guild(guild_id, "\n".join(lines), kind="moderation")

    async def note_ip_timeout(self, retry_after: float | None = None) -> None:
        """The Horde answered `TimeoutIP` to a request without a prompt (alchemy): pause, no one to blame."""
        await self._pause_horde("TimeoutIP", retry_after)

    async def _pause_horde(self, rc: str, retry_after: float | None) -> float:
        """Stop sending requests while the Horde times out the bot's IP; returns the pause in seconds."""
        now = self._clock.now()
        earlier = 0
        if self._repo is not None:
            since = now - timedelta(seconds=self.settings.ip_timeout_window)
            earlier = len(await self._repo.ip_timeouts_since(since))
        steps = self.settings.ip_timeout_steps
        seconds = retry_after if retry_after else float(steps[min(earlier, len(steps) - 1)])
        until = now + timedelta(seconds=seconds)
        if self._repo is not None:
            await self._repo.add_ip_timeout(rc=rc, now=now, until=until)
        if self._ip_until is None or until > self._ip_until:
            self._ip_until = until
        log.warning("pausing AI Horde requests for %.0f s after %s", seconds, rc)
        return seconds

    def _append_review(self, rc: str, prompt: str, negative: str | None) -> None:
        """One JSON line per incident, for maintainers to add to the filter's test corpus."""
        line = json.dumps(
            {"time": self._clock.now().isoformat(), "rc": rc, "prompt": prompt, "negative": negative or ""},
            ensure_ascii=False,
        )
        path = Path(self.settings.review_file)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a", encoding="utf-8") as fh:
                fh.write(line + "\n")
        except OSError as exc:
            log.error("could not append to the safety review file %s: %s", path, exc)

    async def ip_blocked_until(self) -> datetime | None:
        """When the bot may send Horde requests again (None: it may now)."""
        if not self._ip_loaded and self._repo is not None:
            since = self._clock.now() - timedelta(seconds=self.settings.ip_timeout_window)
            stored = max((t.until for t in await self._repo.ip_timeouts_since(since)), default=None)
            if stored is not None and (self._ip_until is None or stored > self._ip_until):
                self._ip_until = stored
            self._ip_loaded = True
        if self._ip_until is not None and self._ip_until <= self._clock.now():
            self._ip_until = None
        return self._ip_until

    async def check_horde_available(self) -> None:
        """RateLimitedError while the bot holds back after the Horde timed out its IP."""
        until = await self.ip_blocked_until()
        if until is not None:
            left = (until - self._clock.now()).total_seconds()
            raise RateLimitedError(
                "The AI Horde has paused requests from this bot after a rejected prompt. "
                f"Try again in {wait_text(left)}.",
                retry_after=left,
            )

    async def check_before_sending(self) -> None:
        """Before a job that waited in line is sent (the job engines' `horde_pause`): RateLimitedError while
        the Horde has the bot's IP timed out, as for a new command. Where several processes share the
        database the pause may be another's, heard after this job was accepted: read from it first."""
        if self._repo is not None and self._repo.shared:
            self._merge_ip_pause(await self._repo.ip_paused_until(self._clock.now()))
        await self.check_horde_available()

    # --- rate limits ----------------------------------------------------------------------------------

    def take_request(self, *, user_id: int, guild_id: int | None) -> None:
        """Spend one request from the member's and the guild's buckets, or RateLimitedError."""
        now = self._clock.monotonic()
        s = self.settings
        user = self._user_buckets.get(user_id)
        if user is None:
            user = self._user_buckets[user_id] = _Bucket(s.user_burst, s.user_per_minute / 60, now)
        user.refill(now)
        guild = self._guild_bucket(guild_id, now)
        self._refuse_if_waiting(user.wait(), guild.wait() if guild is not None else 0.0)
        user.tokens -= 1
        if guild is not None:
            guild.tokens -= 1
        if len(self._user_buckets) > 10000:
            self._forget_full_buckets(now)

    def _guild_bucket(self, guild_id: int | None, now: float) -> _Bucket | None:
        """The server's bucket, refilled (None in DMs): in memory, for one process (on a shared database the
        server's pace is stored, as its members' are: `_gate_shared`)."""
        if guild_id is None:
            return None
        guild = self._guild_buckets.get(guild_id)
        if guild is None:
            s = self.settings
            guild = self._guild_buckets[guild_id] = _Bucket(s.guild_burst, s.guild_per_minute / 60, now)
        guild.refill(now)
        return guild

    @staticmethod
    def _refuse_if_waiting(user_wait: float, guild_wait: float) -> None:
        """RateLimitedError while the member (first) or the server must wait."""
        if user_wait > 0:
            raise RateLimitedError(
                f"You're sending requests too fast. Try again in {wait_text(user_wait)}.",
                retry_after=user_wait,
            )
        if guild_wait > 0:
            raise RateLimitedError(
                "This server is sending too many AI Horde requests right now. "
                f"Try again in {wait_text(guild_wait)}.",
                retry_after=guild_wait,
            )

    def _forget_full_buckets(self, now: float) -> None:
        for buckets in (self._user_buckets, self._guild_buckets):
            for key, bucket in list(buckets.items()):
                bucket.refill(now)
                if bucket.tokens >= bucket.capacity:
                    del buckets[key]

    async def forget_member(self, discord_id: int) -> None:
        """/logout: the member's request pace, stored and in memory (a running safety cooldown stays)."""
        self._user_buckets.pop(discord_id, None)
        if self._repo is not None:
            await self._repo.forget_member(discord_id)

    async def gate(self, *, user_id: int, guild_id: int | None) -> None:
        """Everything a command that calls the Horde must pass before it runs."""
        if self._repo is not None and self._repo.shared:
            await self._gate_shared(user_id, guild_id)
            return
        await self.check_cooldown(user_id)
        await self.check_horde_available()
        self.take_request(user_id=user_id, guild_id=guild_id)
