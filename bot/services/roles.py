"""Automated roles: members get the roles their guild's rules give their Horde account.

Rules (per guild, in `GuildConfig`, each optional): linked, worker owner (optionally only workers seen
online in the last day), trusted, kudos tiers (the highest tier that applies). The bot only ever touches
the roles those rules name.

Roles change when a member links or unlinks (`AccountService` hooks), and a background sync re-checks every
linked member periodically:
- members are read from the database a page at a time, in id order, after a persisted cursor: memory stays
  bounded whatever the number of members, and a restart resumes where the sync stopped;
- Horde calls (public `GET /v2/users/{id}`, plus worker look-ups for the online-only rule) are spent from a
  token bucket of `calls_per_minute`, refilled continuously, so calls are spread out; a 429 pauses the sync;
- members who are in no guild with role rules (or left) cost no Horde call;
- a guild where roles can't be managed (no Manage Roles, a role above the bot's, a deleted role) is told
  once in its log channel; the problem is remembered (in the database) so it is neither re-posted every
  sync nor retried in a tight loop.

Discord itself is behind the small `RoleGateway` protocol (implemented in `cogs/roles.py`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from typing import Protocol

from bot.clock import Clock
from bot.config import RolesSettings
from bot.db.roles import RoleProblem, RolesRepository, SyncState
from bot.db.users import LinkedUser, UserRepository
from bot.hooks import Port
from bot.horde.client import HordeClient
from bot.horde.errors import HordeError
from bot.horde.models import HordeUser
from bot.notify import Notifier
from bot.scheduler import ScheduledCall, Scheduler
from bot.services.accounts import AccountService
from bot.services.guild_config import GuildConfig, GuildConfigService
from bot.shards import ALL_SHARDS, ShardScope

log = logging.getLogger(__name__)

# "Online in the last day": the Horde only reports `online` (checked in within 5 minutes), so this is
# measured from the last time the bot saw one of the member's workers online.
ONLINE_WINDOW = timedelta(days=1)
# Key of a guild-wide problem (no Manage Roles): not a role.
GUILD_WIDE = 0
# A member whose Horde look-up keeps failing (not a rate limit) is skipped after this many tries.
MAX_MEMBER_FAILURES = 3


# --- the rules (pure) ------------------------------------------------------------------------------------


def managed_role_ids(config: GuildConfig) -> set[int]:
    """Every role the guild's rules name: the only roles the bot may add or remove."""
    roles = {config.linked_role_id, config.worker_role_id, config.trusted_role_id}
    roles.update(tier.role_id for tier in config.kudos_tiers)
    return {role for role in roles if role is not None}


def needs_horde_data(config: GuildConfig) -> bool:
    """Whether the rules look at the Horde account (the linked rule alone does not)."""
    return bool(config.worker_role_id or config.trusted_role_id or config.kudos_tiers)


def needs_worker_activity(config: GuildConfig) -> bool:
    return bool(config.worker_role_id and config.worker_online_only)


def kudos_tier_role(kudos: float, config: GuildConfig) -> int | None:
    """The role of the highest tier whose threshold the kudos reach (one tier only)."""
    reached = [tier for tier in config.kudos_tiers if kudos >= tier.threshold]
    if not reached:
        return None
    return max(reached, key=lambda tier: tier.threshold).role_id


def desired_roles(user: HordeUser | None, config: GuildConfig, *, worker_online: bool = False) -> set[int]:
    """The managed roles a linked member should have. `user` None: the Horde account is gone, so only
    the linked rule applies. `worker_online`: one of their workers was seen online in the last day."""
    roles: set[int] = set()
    if config.linked_role_id is not None:
        roles.add(config.linked_role_id)
    if user is None:
        return roles
    owns_worker = user.worker_count > 0 and (not config.worker_online_only or worker_online)
    if config.worker_role_id is not None and owns_worker:
        roles.add(config.worker_role_id)
    if config.trusted_role_id is not None and user.trusted:
        roles.add(config.trusted_role_id)
    tier = kudos_tier_role(user.kudos, config)
    if tier is not None:
        roles.add(tier)
    return roles


# --- the Discord side, as a protocol ---------------------------------------------------------------------


class ProblemKind(StrEnum):
    NO_MANAGE_ROLES = "no_manage_roles"
    ROLE_TOO_HIGH = "role_too_high"
    ROLE_MANAGED = "role_managed"
    ROLE_DELETED = "role_deleted"
    FORBIDDEN = "forbidden"


class RoleActionError(Exception):
    """Discord refused a role change for a lasting reason (permissions, hierarchy, deleted role)."""

    def __init__(self, kind: ProblemKind, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


class MemberGoneError(Exception):
    """The member left the guild between the check and the change."""


class RoleGateway(Protocol):
    def ready(self) -> bool:
        """The Discord connection is up and the guild list is known."""

    def guild_ids(self) -> list[int]:
        """Guilds the bot is in."""

    async def member_roles(self, guild_id: int, discord_id: int) -> frozenset[int] | None:
        """The member's role ids in the guild, or None if they are not in it (left)."""

    def role_problem(self, guild_id: int, role_id: int) -> ProblemKind | None:
        """Why the bot can't manage this role there, judged from what it knows (no request)."""

    async def add_role(self, guild_id: int, discord_id: int, role_id: int) -> None:
        """Raises RoleActionError or MemberGoneError."""

    async def remove_role(self, guild_id: int, discord_id: int, role_id: int) -> None:
        """Raises RoleActionError or MemberGoneError."""


# --- the service -----------------------------------------------------------------------------------------


@dataclass
class SyncStats:
    """Figures of the background sync since start-up (for logs, tests and the benchmark)."""

    passes_finished: int = 0
    pages: int = 0
    largest_page: int = 0
    members_checked: int = 0
    members_skipped: int = 0
    horde_calls: int = 0
    roles_added: int = 0
    roles_removed: int = 0


@dataclass
class _Target:
    guild_id: int
    config: GuildConfig
    current: frozenset[int]


class _HordePause(Exception):
    def __init__(self, seconds: float) -> None:
        super().__init__(f"pause {seconds}s")
        self.seconds = seconds


@dataclass
class _Bucket:
    """Token bucket for Horde calls: `rate` per second, at most `burst` saved up; may go into debt
    (a member's worker look-ups are not cut in half), which later steps pay back by waiting."""

    rate: float
    burst: float
    tokens: float
    updated: float | None = None

    def refill(self, now: float) -> None:
        if self.updated is None or now < self.updated:
            # First use, or a clock that was swapped under us (tests): start counting from now.
            self.updated = now
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now


@dataclass
class _ProblemBook:
    loaded: bool = False
    items: dict[tuple[int, int], RoleProblem] = field(default_factory=dict)


class RolesService:
    def __init__(
        self,
        repo: RolesRepository,
        users: UserRepository,
        accounts: AccountService,
        horde: HordeClient,
        guild_config: GuildConfigService,
        notifier: Notifier,
        scheduler: Scheduler,
        clock: Clock,
        settings: RolesSettings,
        *,
        shards: ShardScope = ALL_SHARDS,
    ) -> None:
        self._repo = repo
        self._shards = shards
        self._users = users
        self._accounts = accounts
        self._horde = horde
        self._guild_config = guild_config
        self._notifier = notifier
        self._scheduler = scheduler
        self._clock = clock
        self.settings = settings
        self.stats = SyncStats()
        self.gateway: Port[RoleGateway | None] = Port("roles.gateway", None)  # the cog plugs Discord in
        self._job: ScheduledCall | None = None
        self._state: SyncState | None = None
        self._paused_until = 0.0
        self._failures: dict[int, int] = {}
        self._problems = _ProblemBook()
        rate = settings.calls_per_minute / 60.0
        burst = max(1.0, rate * settings.step_seconds)
        self._bucket = _Bucket(rate=rate, burst=burst, tokens=burst)

    # --- wiring ------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the background sync (it waits for `gateway` to be plugged in and ready)."""
        if self._job is None:
            self._job = self._scheduler.every("roles-sync", self.settings.step_seconds, self.sync_step)

    def stop(self) -> None:
        if self._job is not None:
            self._job.cancel()
            self._job = None

    # --- link / unlink hooks -----------------------------------------------------------------------------

    async def on_linked(self, discord_id: int, user: HordeUser) -> None:
        """Grant (and remove) roles right after a link, from the account the link just read."""
        targets = await self._targets(discord_id, await self._rule_guilds())
        if not targets:
            return
        try:
            await self._apply(discord_id, user, targets)
        except _HordePause as pause:
            # Worker look-ups were rate-limited: the background sync finishes the job later.
            self._paused_until = self._clock.monotonic() + pause.seconds
            log.info(
                "roles: member %s linked while the Horde is rate-limiting; the sync will finish", discord_id
            )

    async def forget_member(self, discord_id: int) -> list[str]:
        """/logout: remove every managed role the member has, in every guild they are in. Returns the roles
        that could not be removed, with why, for the member."""
        problems: list[str] = []
        for target in await self._targets(discord_id, await self._rule_guilds()):
            managed = managed_role_ids(target.config)
            for role_id in sorted(managed & target.current):
                await self._change(target.guild_id, discord_id, role_id, add=False, problems=problems)
        return problems

    # --- background sync ---------------------------------------------------------------------------------

    async def sync_step(self) -> None:
        """One step of the background sync: at most one page of members, within the call budget."""
        gateway = self.gateway.get()
        if gateway is None or not gateway.ready():
            return
        if self._clock.monotonic() < self._paused_until:
            return
        guilds = await self._rule_guilds()
        if not guilds:
            return  # no guild has role rules: nothing to sync, no pass to run
        state = await self._load_state()
        now = self._clock.now()
        if not self._pass_running(state):
            if state.pass_started_at is not None and now < state.pass_started_at + timedelta(
                seconds=self.settings.interval
            ):
                return
            state = SyncState(cursor=0, pass_started_at=now, last_finished_at=state.last_finished_at)
            await self._save_state(state)
            log.info("roles: sync pass started")
        page = await self._users.iter_page(state.cursor, self.settings.batch_size)
        self.stats.pages += 1
        self.stats.largest_page = max(self.stats.largest_page, len(page))
        if not page:
            await self._save_state(
                SyncState(cursor=0, pass_started_at=state.pass_started_at, last_finished_at=now)
            )
            self.stats.passes_finished += 1
            log.info("roles: sync pass finished")
            return
        cursor = state.cursor
        try:
            for linked in page:
                if not await self._sync_member(linked, guilds):
                    break
                cursor = linked.discord_id
        finally:
            if cursor != state.cursor:
                await self._save_state(SyncState(cursor, state.pass_started_at, state.last_finished_at))

    async def _sync_member(self, linked: LinkedUser, guilds: list[tuple[int, GuildConfig]]) -> bool:
        """Bring one member's roles up to date. False: stop here (out of budget or paused)."""
        targets = await self._targets(linked.discord_id, guilds)
        if not targets:
            self.stats.members_skipped += 1
            return True
        user: HordeUser | None = None
        if any(needs_horde_data(t.config) for t in targets):
            self._bucket.refill(self._clock.monotonic())
            if self._bucket.tokens < 1:
                return False
            try:
                user = await self._fetch_user(linked)
            except _HordePause as pause:
                self._paused_until = self._clock.monotonic() + pause.seconds
                return False
            except HordeError as exc:
                failures = self._failures.get(linked.discord_id, 0) + 1
                self._failures = {linked.discord_id: failures}
                if failures < MAX_MEMBER_FAILURES:
                    log.warning("roles: Horde look-up of member %s failed (%s)", linked.discord_id, exc)
                    self._paused_until = self._clock.monotonic() + self.settings.step_seconds
                    return False
                log.warning(
                    "roles: skipping member %s this pass: Horde look-ups keep failing", linked.discord_id
                )
                self._failures = {}
                self.stats.members_skipped += 1
                return True
        self._failures = {}
        try:
            await self._apply(linked.discord_id, user, targets)
        except _HordePause as pause:
            self._paused_until = self._clock.monotonic() + pause.seconds
            return False
        self.stats.members_checked += 1
        return True

    @staticmethod
    def _pass_running(state: SyncState) -> bool:
        if state.pass_started_at is None:
            return False
        return state.last_finished_at is None or state.last_finished_at < state.pass_started_at

    async def _load_state(self) -> SyncState:
        if self._state is None:
            self._state = await self._repo.sync_state()
        return self._state

    async def _save_state(self, state: SyncState) -> None:
        await self._repo.save_sync_state(state)
        self._state = state

    # --- Horde look-ups ----------------------------------------------------------------------------------

    def _spend(self) -> None:
        self._bucket.refill(self._clock.monotonic())
        self._bucket.tokens -= 1
        self.stats.horde_calls += 1

    async def _fetch_user(self, linked: LinkedUser) -> HordeUser | None:
        """The member's public account (None if the Horde no longer knows it)."""
        self._spend()
        try:
            return await self._horde.get_user(linked.horde_user_id)
        except HordeError as exc:
            if exc.is_rate_limit:
                raise _HordePause(exc.retry_after or 60.0) from None
            if exc.rc == "UserNotFound":
                return None
            raise

    async def _worker_online(self, discord_id: int, user: HordeUser) -> bool:
        """Whether one of the user's workers was online in the last day (checks them now, stopping at the
        first online one; falls back to when the bot last saw one online)."""
        if user.worker_count <= 0:
            return False
        now = self._clock.now()
        worker_ids = user.worker_ids
        if worker_ids is None:
            # The public view hides worker ids unless the owner made them public: ask with their key.
            worker_ids = await self._own_worker_ids(discord_id)
        for worker_id in worker_ids:
            self._spend()
            try:
                worker = await self._horde.worker(worker_id)
            except HordeError as exc:
                if exc.is_rate_limit:
                    raise _HordePause(exc.retry_after or 60.0) from None
                continue
            if worker.online:
                await self._repo.mark_worker_seen(user.id, now)
                return True
        seen = await self._repo.worker_seen(user.id)
        return seen is not None and now - seen <= ONLINE_WINDOW

    async def _own_worker_ids(self, discord_id: int) -> list[str]:
        try:
            key = await self._accounts.api_key(discord_id)
        except Exception:
            return []
        if key is None:
            return []
        self._spend()
        try:
            own = await self._horde.find_user(key)
        except HordeError as exc:
            if exc.is_rate_limit:
                raise _HordePause(exc.retry_after or 60.0) from None
            return []
        return list(own.worker_ids or [])

    # --- applying ----------------------------------------------------------------------------------------

    async def _rule_guilds(self) -> list[tuple[int, GuildConfig]]:
        """The bot's guilds that have at least one role rule, with their settings."""
        gateway = self.gateway.get()
        if gateway is None:
            return []
        found = []
        for guild_id in gateway.guild_ids():
            if not self._shards.owns(guild_id):
                continue  # another process's shard: it syncs that server's roles
            config = await self._guild_config.get(guild_id)
            if managed_role_ids(config):
                found.append((guild_id, config))
        return found

    async def _targets(self, discord_id: int, guilds: list[tuple[int, GuildConfig]]) -> list[_Target]:
        gateway = self.gateway.get()
        if gateway is None:
            return []
        targets = []
        for guild_id, config in guilds:
            current = await gateway.member_roles(guild_id, discord_id)
            if current is not None:
                targets.append(_Target(guild_id, config, current))
        return targets

    async def _apply(self, discord_id: int, user: HordeUser | None, targets: list[_Target]) -> None:
        worker_online: bool | None = None
        for target in targets:
            config = target.config
            online = False
            if user is not None and needs_worker_activity(config):
                if worker_online is None:
                    worker_online = await self._worker_online(discord_id, user)
                online = worker_online
            desired = desired_roles(user, config, worker_online=online)
            managed = managed_role_ids(config)
            for role_id in sorted(desired - target.current):
                if not await self._change(target.guild_id, discord_id, role_id, add=True):
                    break
            for role_id in sorted((managed - desired) & target.current):
                if not await self._change(target.guild_id, discord_id, role_id, add=False):
                    break

    async def _change(
        self, guild_id: int, discord_id: int, role_id: int, *, add: bool, problems: list[str] | None = None
    ) -> bool:
        """Add or remove one role. False: the member left the guild (stop changing their roles there).
        A change that did not happen is described in `problems` when given (for the member)."""
        gateway = self.gateway.get()
        if gateway is None:
            return False
        if await self._recently_failed(guild_id, role_id):
            if problems is not None:
                problems.append(member_problem_text(None, role_id))
            return True
        kind = gateway.role_problem(guild_id, role_id)
        if kind is not None:
            await self._note_problem(guild_id, role_id, kind)
            if problems is not None:
                problems.append(member_problem_text(kind, role_id))
            return True
        try:
            if add:
                await gateway.add_role(guild_id, discord_id, role_id)
            else:
                await gateway.remove_role(guild_id, discord_id, role_id)
        except MemberGoneError:
            return False
        except RoleActionError as exc:
            await self._note_problem(guild_id, role_id, exc.kind, exc.detail)
            if problems is not None:
                problems.append(member_problem_text(exc.kind, role_id))
            return True
        except Exception as exc:
            if problems is not None:
                problems.append(member_problem_text(None, role_id))
            # Transient (Discord 5xx, network): not a configuration problem; a later sync retries.
            log.warning(
                "roles: changing role %s of member %s in guild %s failed: %r",
                role_id,
                discord_id,
                guild_id,
                exc,
            )
            return True
        if add:
            self.stats.roles_added += 1
        else:
            self.stats.roles_removed += 1
        await self._clear_problems(guild_id, role_id)
        return True

    # --- problems: told once, retried slowly -------------------------------------------------------------

    async def _book(self) -> dict[tuple[int, int], RoleProblem]:
        if not self._problems.loaded:
            self._problems.items = {(p.guild_id, p.role_id): p for p in await self._repo.problems()}
            self._problems.loaded = True
        return self._problems.items

    async def _recently_failed(self, guild_id: int, role_id: int) -> bool:
        book = await self._book()
        retry = timedelta(seconds=self.settings.problem_retry_seconds)
        now = self._clock.now()
        for key in ((guild_id, GUILD_WIDE), (guild_id, role_id)):
            problem = book.get(key)
            if problem is not None and now - problem.noted_at < retry:
                return True
        return False

    async def _note_problem(self, guild_id: int, role_id: int, kind: ProblemKind, detail: str = "") -> None:
        key_role = GUILD_WIDE if kind is ProblemKind.NO_MANAGE_ROLES else role_id
        book = await self._book()
        known = book.get((guild_id, key_role))
        problem = RoleProblem(guild_id, key_role, kind.value, self._clock.now())
        book[(guild_id, key_role)] = problem
        await self._repo.save_problem(problem)
        if known is not None and known.reason == kind.value:
            return  # already told: remembered, not re-posted
        log.warning("roles: guild %s role %s: %s %s", guild_id, role_id, kind.value, detail)
        await self._notifier.log_to_guild(guild_id, problem_text(kind, role_id), kind="roles")

    async def _clear_problems(self, guild_id: int, role_id: int) -> None:
        book = await self._book()
        for key in ((guild_id, GUILD_WIDE), (guild_id, role_id)):
            if book.pop(key, None) is not None:
                await self._repo.clear_problem(*key)


def member_problem_text(kind: ProblemKind | None, role_id: int) -> str:
    """Why a role of the member's stayed, told to the member (the server's admins see `problem_text`)."""
    why = (
        {
            ProblemKind.NO_MANAGE_ROLES: "the bot lacks the Manage Roles permission there",
            ProblemKind.ROLE_TOO_HIGH: "the role is above the bot's own role",
            ProblemKind.ROLE_MANAGED: "the role is managed by an integration",
            ProblemKind.ROLE_DELETED: "the role no longer exists",
        }.get(kind, "Discord refused the change")
        if kind is not None
        else "Discord refused the change"
    )
    return f"the role <@&{role_id}> ({why}): ask a server admin to remove it"


def problem_text(kind: ProblemKind, role_id: int) -> str:
    """The log-channel message for a role problem (role mentions don't ping: mentions are disabled)."""
    role = f"<@&{role_id}>"
    retry = "I'll try again at a later sync; this message is not repeated."
    if kind is ProblemKind.NO_MANAGE_ROLES:
        return (
            "Automated roles: I don't have the **Manage Roles** permission here, so I can't grant or "
            f"remove the configured roles. Give my role that permission. {retry}"
        )
    if kind is ProblemKind.ROLE_TOO_HIGH:
        return (
            f"Automated roles: the role {role} is not below my highest role, so I can't grant or remove "
            f"it. Move my role above it in Server Settings → Roles. {retry}"
        )
    if kind is ProblemKind.ROLE_MANAGED:
        return (
            f"Automated roles: the role {role} is managed by an integration and can't be given by a bot. "
            "Choose another role with `/config`."
        )
    if kind is ProblemKind.ROLE_DELETED:
        return (
            f"Automated roles: the configured role with id {role_id} no longer exists. Choose another "
            "role with `/config`, or clear the rule."
        )
    return f"Automated roles: Discord refused to change the role {role} (missing access). {retry}"
