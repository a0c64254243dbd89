"""The roles rules and service without Discord: the rules as pure functions, settings validation, and
Discord refusals the simulator can't produce (its cache never disagrees with it), through a gateway double.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bot.app import build_runtime, build_services
from bot.config import ConfigError
from bot.db.roles import RolesRepository
from bot.horde.models import HordeUser
from bot.notify import LogKind
from bot.services import Services
from bot.services.guild_config import GuildConfig, KudosTier
from bot.services.roles import (
    ProblemKind,
    RoleActionError,
    RolesService,
    RolesSettings,
    desired_roles,
    kudos_tier_role,
    managed_role_ids,
)
from tests.conftest import make_settings
from tests.fakes.horde import FakeHorde
from tests.support.clock import TestClock
from tests.support.runtime import runtime_of

GUILD = 1456074443980800009
ROLE = 1456074443980800100


def user(**fields: object) -> HordeUser:
    return HordeUser.model_validate({"username": "alice#1", "id": 1, **fields})


# --- the rules ---------------------------------------------------------------------------------------------


def test_highest_applicable_tier_only_whatever_the_order() -> None:
    config = GuildConfig(
        kudos_tiers=[
            KudosTier(threshold=1000, role_id=2),
            KudosTier(threshold=0, role_id=1),
            KudosTier(threshold=50_000, role_id=3),
        ]
    )
    assert kudos_tier_role(999.9, config) == 1
    assert kudos_tier_role(1000, config) == 2
    assert kudos_tier_role(10**6, config) == 3
    assert desired_roles(user(kudos=5000), config) == {2}


def test_rules_combine_and_only_name_configured_roles() -> None:
    config = GuildConfig(linked_role_id=10, worker_role_id=11, trusted_role_id=12)
    assert desired_roles(user(worker_count=2, trusted=True), config) == {10, 11, 12}
    assert desired_roles(user(), config) == {10}
    # The Horde no longer knows the account: only the linked rule still applies.
    assert desired_roles(None, config) == {10}
    assert managed_role_ids(config) == {10, 11, 12}
    assert managed_role_ids(GuildConfig()) == set()


def test_online_only_worker_rule() -> None:
    config = GuildConfig(worker_role_id=11, worker_online_only=True)
    assert desired_roles(user(worker_count=1), config, worker_online=False) == set()
    assert desired_roles(user(worker_count=1), config, worker_online=True) == {11}
    assert desired_roles(user(worker_count=0), config, worker_online=True) == set()


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("interval", 10),
        ("calls_per_minute", 0),
        ("batch_size", 0),
        ("batch_size", 5000),
        ("step_seconds", 0),
        ("problem_retry_seconds", -1),
        ("members_intent", "yes"),
    ],
)
def test_bad_settings_name_the_key(key: str, value: object) -> None:
    with pytest.raises(ConfigError) as raised:
        RolesSettings.from_section({key: value})
    assert f"roles.{key}" in str(raised.value)


def test_default_settings() -> None:
    settings = RolesSettings.from_section({})
    assert settings.interval == 3600 and settings.batch_size == 100 and not settings.members_intent


# --- Discord refusing a change ------------------------------------------------------------------------------


@dataclass
class RecordingNotifier:
    logged: list[tuple[int, str, str]] = field(default_factory=list)

    async def log_to_guild(self, guild_id: int, text: str, *, kind: LogKind = "moderation") -> bool:
        self.logged.append((guild_id, text, kind))
        return True

    async def dm(self, user_id: int, text: str, *, nonce: str | None = None) -> bool:
        return False


@dataclass
class RefusingGateway:
    """A guild whose cache looks fine but where Discord refuses every role change (or fails)."""

    members: dict[int, set[int]]
    error: Exception
    attempts: int = 0

    def ready(self) -> bool:
        return True

    def guild_ids(self) -> list[int]:
        return [GUILD]

    async def member_roles(self, guild_id: int, discord_id: int) -> frozenset[int] | None:
        roles = self.members.get(discord_id)
        return frozenset(roles) if roles is not None else None

    def role_problem(self, guild_id: int, role_id: int) -> ProblemKind | None:
        return None

    async def add_role(self, guild_id: int, discord_id: int, role_id: int) -> None:
        self.attempts += 1
        raise self.error

    async def remove_role(self, guild_id: int, discord_id: int, role_id: int) -> None:
        self.attempts += 1
        raise self.error


@pytest.fixture
def clock() -> TestClock:
    return TestClock()


@pytest.fixture
async def services(tmp_path: Path, horde: FakeHorde, clock: TestClock) -> AsyncIterator[Services]:
    built = build_services(build_runtime(make_settings(tmp_path, horde.base_url), clock=clock))
    await built.start()
    try:
        yield built
    finally:
        await built.close()


def roles_service(services: Services, notifier: RecordingNotifier, **settings: Any) -> RolesService:
    return RolesService(
        RolesRepository(runtime_of(services).db),
        runtime_of(services).users,
        services.accounts,
        runtime_of(services).horde,
        services.guild_config,
        notifier,
        services.scheduler,
        services.clock,
        RolesSettings(interval=60, step_seconds=1, problem_retry_seconds=600, **settings),
    )


async def run_steps(service: RolesService, clock: TestClock, seconds: int) -> None:
    for _ in range(seconds):
        clock.t += 1
        await service.sync_step()


async def test_discord_refusing_is_logged_once_and_retried_slowly(
    services: Services, horde: FakeHorde, clock: TestClock
) -> None:
    await services.guild_config.update(GUILD, linked_role_id=ROLE)
    for discord_id in (11, 12, 13):
        await services.accounts.link(discord_id, horde.add_user(f"m{discord_id}").apikey or "")
    notifier = RecordingNotifier()
    service = roles_service(services, notifier)
    gateway = RefusingGateway({11: set(), 12: set(), 13: set()}, RoleActionError(ProblemKind.FORBIDDEN))
    service.gateway.plug(gateway)  # nothing ticks the scheduler here: steps are driven by hand
    await run_steps(service, clock, 300)  # five passes inside the retry window
    assert gateway.attempts == 1
    assert len(notifier.logged) == 1
    assert notifier.logged[0][2] == "roles" and f"<@&{ROLE}>" in notifier.logged[0][1]
    await run_steps(service, clock, 400)  # past the retry window: tried again, not re-posted
    assert 2 <= gateway.attempts <= 3
    assert len(notifier.logged) == 1


async def test_transient_discord_failure_neither_crashes_nor_counts_as_a_problem(
    services: Services, horde: FakeHorde, clock: TestClock
) -> None:
    await services.guild_config.update(GUILD, linked_role_id=ROLE)
    await services.accounts.link(11, horde.add_user("m11").apikey or "")
    notifier = RecordingNotifier()
    service = roles_service(services, notifier)
    gateway = RefusingGateway({11: set()}, RuntimeError("503 Service Unavailable"))
    service.gateway.plug(gateway)
    await run_steps(service, clock, 130)  # three passes
    assert gateway.attempts == 3
    assert notifier.logged == []
    assert service.stats.passes_finished >= 2


def test_example_config_matches_the_defaults() -> None:
    from cryptography.fernet import Fernet

    from bot.config import load_settings

    example = Path(__file__).resolve().parent.parent / "config.example.toml"
    env = {"DISCORD_TOKEN": "x", "HORDEBOT_SECRET_KEY": Fernet.generate_key().decode()}
    settings = load_settings(example, env=env)
    assert RolesSettings.from_section(settings.section("roles")) == RolesSettings()
