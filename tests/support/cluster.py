"""Several ``run.py`` processes on one PostgreSQL database, each running its own shards against the fake
Discord, all calling the fake Horde: the world of issue #17's two-process test (tests/smoke/test_scale.py)
and of bench/scale.py.

Servers are placed on shards by Discord's formula (one or more per shard); in each, some members make one
generation each and thank some authors with a kudos emoji on their messages. Everything is done as members
would: `/login` forms, `/config kudos-emoji add`, `/generate`, reactions.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import tomllib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.discord_server import (
    FakeChannel,
    FakeDiscord,
    FakeGuild,
    FakeInteraction,
    FakeMember,
    FakeMessage,
)
from tests.fakes.discord_server import snowflake_on_shard as guild_id_on_shard
from tests.fakes.horde import FakeHorde, FakeUser
from tests.support.run_py import (
    DISCORD_TOKEN,
    BotProcess,
    bot_env,
    run_bot,
    smoke_config,
    write_config,
)

KUDOS_EMOJI = "👍"
GIFT = 1  # kudos per reaction
LEASE_SECONDS = 3  # the shortest lease: a dead process's work is taken over within seconds
# How long the processes may take to start: import, migrate (one at a time on PostgreSQL), sync the commands
# and connect every shard. Not a timing assertion: a loaded 2-core machine once needed more than 60 s (several
# processes started at once); the wait ends as soon as every shard is connected.
READY_TIMEOUT = 300.0
ROOT = Path(__file__).resolve().parent.parent.parent


def compose_processes() -> dict[str, dict[str, dict[str, Any]]]:
    """The bot processes of the repository's docker-compose.yml, each with the config file the compose file
    mounts for it (`--config` of its command), read as the process would read it. No Docker engine runs
    here: tests start these processes as plain `run.py` processes with these configs."""
    yaml = importlib.import_module("yaml")  # PyYAML (dev dependency)
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    processes: dict[str, dict[str, dict[str, Any]]] = {}
    for name, service in services.items():
        command = service.get("command") or []
        if command[:2] != ["python", "run.py"]:
            continue
        mounts = dict(v.split(":")[:2][::-1] for v in service["volumes"] if v.startswith("./"))
        with (ROOT / mounts[command[command.index("--config") + 1]]).open("rb") as fh:
            processes[name] = tomllib.load(fh)
    return processes


@dataclass
class Server:
    """A Discord server on one shard: members who generate and give, authors whose messages they thank."""

    shard: int
    guild: FakeGuild
    channel: FakeChannel
    members: list[FakeMember]
    authors: list[FakeMember]
    posts: list[FakeMessage] = field(default_factory=list)

    def prompt(self, member: FakeMember) -> str:
        # Zero-padded and closed, so that no prompt is part of another ("member 1" of "member 10").
        return f"scale test (shard {self.shard}, member {self.members.index(member):03d})"

    @property
    def prompts(self) -> list[str]:
        return [self.prompt(m) for m in self.members]


@dataclass
class Cluster:
    fake: FakeDiscord
    horde: FakeHorde
    servers: list[Server]
    accounts: dict[int, FakeUser]  # Discord member id -> their AI Horde account
    processes: dict[str, BotProcess] = field(default_factory=dict)

    # -- what members see --------------------------------------------------------------------------------

    def results(self, prompt: str) -> list[FakeMessage]:
        """The messages showing this prompt's images (the finished reply, or the post after a takeover)."""
        return [m for m in self.fake.messages if not m.deleted and m.attachments and prompt in m.text]

    def delivered(self) -> dict[str, int]:
        """How many result messages each prompt has."""
        return {p: len(self.results(p)) for s in self.servers for p in s.prompts}

    def received(self) -> dict[int, float]:
        """Kudos each author received on the Horde (the fake pays a transfer once per idempotency key)."""
        return {a.id: self.accounts[a.id].kudos_details["received"] for s in self.servers for a in s.authors}

    def expected_received(self) -> dict[int, float]:
        return {a.id: GIFT * len(s.members) for s in self.servers for a in s.authors}

    def horde_prompts(self) -> list[str]:
        """The prompt of every image request the fake Horde was sent."""
        return [r.prompt for r in self.horde.jobs]

    # -- waiting -----------------------------------------------------------------------------------------

    killed: set[str] = field(default_factory=set)

    async def kill(self, name: str) -> None:
        """kill -9 one process: it stops mid-work, leaving its leases to expire."""
        self.killed.add(name)
        await self.processes[name].kill()

    async def until(
        self, check: Callable[[], bool | Awaitable[bool]], what: str | Callable[[], str], timeout: float
    ) -> float:
        """Until ``check()`` is true (it may be a coroutine); fails with the processes' output if one dies
        (other than one killed on purpose) or time runs out. ``what`` may be a function, asked when the wait
        fails (to say what was still missing then). Returns the seconds waited."""
        loop = asyncio.get_running_loop()
        started = loop.time()

        async def done() -> bool:
            result = check()
            return bool(await result) if inspect.isawaitable(result) else bool(result)

        def waiting_for() -> str:
            return what() if callable(what) else what

        while not await done():
            for name, process in self.processes.items():
                if process.proc.returncode is not None and name not in self.killed:
                    pytest.fail(
                        f"{name} exited with {process.proc.returncode} while waiting for {waiting_for()}\n"
                        f"{process.report()}"
                    )
            if loop.time() - started > timeout:
                pytest.fail(f"timed out after {timeout}s waiting for {waiting_for()}\n{self.describe()}")
            await asyncio.sleep(0.1)
        return loop.time() - started

    def describe(self) -> str:
        delivered = self.delivered()
        lines = [
            f"results: {sum(1 for n in delivered.values() if n == 1)} of {len(delivered)} posted once, "
            f"{sum(1 for n in delivered.values() if n > 1)} more than once",
            f"kudos received: {sum(self.received().values())} of {sum(self.expected_received().values())}",
            self.fake.describe(),
        ]
        dms = [m for m in self.fake.messages if m.guild_id is None and not m.deleted]
        lines += [f"DM: {m.text[:150]!r}" for m in dms[-5:]]
        for name, process in self.processes.items():
            tail = "".join((process.stdout + process.stderr)[-15:])
            lines.append(f"--- {name} (last lines) ---\n{tail}")
        return "\n".join(lines)


def build_world(
    fake: FakeDiscord, horde: FakeHorde, *, shard_count: int, members: int, authors: int
) -> Cluster:
    """One server per shard, each with `members` members (one generation each, one gift per author) and
    `authors` authors, every one with an AI Horde account."""
    servers: list[Server] = []
    accounts: dict[int, FakeUser] = {}
    for shard in range(shard_count):
        guild = fake.add_guild(f"Shard {shard}", guild_id=guild_id_on_shard(shard, shard_count))
        channel = fake.add_channel(guild.id, "general")
        people = [fake.add_member(guild.id, f"s{shard}m{i}") for i in range(members)]
        writers = [fake.add_member(guild.id, f"s{shard}a{i}") for i in range(authors)]
        for person in (*people, *writers):
            accounts[person.id] = horde.add_user(person.user.username, kudos=1000)
        servers.append(Server(shard, guild, channel, people, writers))
    return Cluster(fake, horde, servers, accounts)


def process_config(
    tmp_path: Path,
    cluster: Cluster,
    database_url: str,
    *,
    name: str,
    shard_count: int,
    shard_ids: Sequence[int],
    processes: int,
    deployed: Mapping[str, Mapping[str, Any]] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> Path:
    """config.example.toml for one of several processes: its shards, the shared database, the short lease,
    and limits opened up so that the members' bursts are never refused (pacing is not under test here).
    `deployed` is a shipped config (docker-compose.yml's) laid over it first; only what can't work on this
    machine is replaced: the database's host name and the paths under the container's /data. `overrides`
    (a test's own settings) are laid over it last."""
    assert cluster.horde.base_url is not None
    config = smoke_config(tmp_path, cluster.fake, cluster.horde.base_url)
    for section, table in (deployed or {}).items():
        config.setdefault(section, {}).update(table)
    if deployed:
        config["security"]["secret_key_file"] = str(tmp_path / f"{name}-secret.key")
        config["safety"]["review_file"] = str(tmp_path / f"{name}-safety_review.txt")
    config["discord"].update(shard_count=shard_count, shard_ids=list(shard_ids))
    config["database"]["url"] = database_url
    config["database"].update(lease_seconds=LEASE_SECONDS, process_id=name)
    config["horde_pacer"].update(processes=processes, image_per_second=60, kudos_per_second=60)
    config["generation_jobs"].update(
        cooldown_seconds=0, min_interval=1.0, max_interval=2.0, backoff_max=2.0, max_per_guild=1000
    )
    config["safety"].update(user_burst=100, guild_burst=10_000, guild_per_minute=10_000.0)
    config["kudos"].update(check_interval=1.0, max_parallel=100)
    config["scheduler"]["tick_seconds"] = 0.25
    config.setdefault("logging", {})["level"] = "INFO"
    for section, table in (overrides or {}).items():
        config.setdefault(section, {}).update(table)
    return write_config(tmp_path / f"{name}.toml", config)


@contextlib.asynccontextmanager
async def start_processes(
    tmp_path: Path,
    cluster: Cluster,
    database_url: str,
    layout: Mapping[str, Sequence[int]],
    secret_key: str,
    deployed: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> AsyncIterator[dict[str, BotProcess]]:
    """Start one `run.py` per entry of `layout` (name -> its shard ids, of `len(servers)` shards), all at
    once, and wait until every shard is connected and the commands are synced. `deployed` gives a process
    its shipped config (`compose_processes()`); `overrides`, settings of the test for every process."""
    count = len(cluster.servers)
    env = bot_env(DISCORD_TOKEN=DISCORD_TOKEN, HORDEBOT_SECRET_KEY=secret_key)
    async with contextlib.AsyncExitStack() as stack:
        for name, ids in layout.items():
            config = process_config(
                tmp_path,
                cluster,
                database_url,
                name=name,
                shard_count=count,
                shard_ids=ids,
                processes=len(layout),
                deployed=(deployed or {}).get(name),
                overrides=overrides,
            )
            cluster.processes[name] = await stack.enter_async_context(run_bot(config, tmp_path, env))
        await cluster.until(
            lambda: not not_ready(cluster, layout), lambda: not_ready(cluster, layout), READY_TIMEOUT
        )
        yield cluster.processes


def not_ready(cluster: Cluster, layout: Mapping[str, Sequence[int]]) -> str:
    """What keeps the processes of `layout` from being ready, each by name (empty once they all are): the
    members' commands not synced yet, and each process's shards without a gateway connection."""
    missing = []
    synced = {command["name"] for command in cluster.fake.commands().values()}
    if not {"generate", "login"} <= synced:
        missing.append("the commands synced (/generate, /login)")
    connected = {shard for shard, _ in cluster.fake.connected_shards}
    for name, ids in layout.items():
        if waiting := sorted(set(ids) - connected):
            missing.append(f"{name}'s shard{'s' if len(waiting) > 1 else ''} {waiting} connected")
    return ", ".join(missing)


# -- members' actions -------------------------------------------------------------------------------------


STEP = 120.0  # seconds one member's step may take on a loaded 2-core machine before the test gives up


async def answered(cluster: Cluster, interaction: FakeInteraction) -> str:
    """The text of the bot's finished answer to an interaction."""

    def reply() -> FakeMessage | None:
        return next((m for m in interaction.messages if not m.loading and not m.deleted), None)

    await cluster.until(lambda: reply() is not None, f"an answer to {interaction!r}", STEP)
    answer = reply()
    assert answer is not None
    return answer.text


async def acknowledged(cluster: Cluster, interaction: FakeInteraction) -> None:
    await cluster.until(lambda: interaction.callback is not None, f"a callback to {interaction!r}", STEP)


async def set_up(cluster: Cluster) -> None:
    """Each server's owner maps the kudos emoji; every member and author links their Horde account; each
    author writes the message the members will thank them for."""
    fake = cluster.fake

    async def login(server: Server, member: FakeMember) -> None:
        shown = await fake.send_slash(server.guild.id, server.channel.id, member.id, "login")
        await acknowledged(cluster, shown)
        submitted = await fake.submit_modal(shown, {"login:apikey": cluster.accounts[member.id].apikey or ""})
        text = await answered(cluster, submitted)
        assert "linked" in text.lower(), text

    async def server_ready(server: Server) -> None:
        config = await fake.send_slash(
            server.guild.id,
            server.channel.id,
            fake.owner.id,
            "config kudos-emoji add",
            {"emoji": KUDOS_EMOJI, "amount": GIFT},
        )
        await answered(cluster, config)
        await asyncio.gather(*(login(server, m) for m in (*server.members, *server.authors)))
        for author in server.authors:
            server.posts.append(await fake.post_message(server.channel.id, author.id, f"{author.id} helps"))

    await asyncio.gather(*(server_ready(s) for s in cluster.servers))


async def generate_all(cluster: Cluster) -> None:
    """Every member of every server runs /generate once, all at the same time."""
    fake = cluster.fake

    async def generate(server: Server, member: FakeMember) -> None:
        asked = await fake.send_slash(
            server.guild.id, server.channel.id, member.id, "generate", {"prompt": server.prompt(member)}
        )
        await acknowledged(cluster, asked)

    await asyncio.gather(*(generate(s, m) for s in cluster.servers for m in s.members))


async def thank_all(cluster: Cluster, servers: Iterable[Server] | None = None) -> None:
    """Every member reacts with the kudos emoji on every author's message of their server."""
    fake = cluster.fake
    await asyncio.gather(
        *(
            fake.add_reaction(post, KUDOS_EMOJI, member.id)
            for server in (servers if servers is not None else cluster.servers)
            for member in server.members
            for post in server.posts
        )
    )


def finish(horde: FakeHorde, prompts: Iterable[str]) -> int:
    """Workers finish the requests with these prompts (those not finished yet); returns how many."""
    wanted = set(prompts)
    done = 0
    for request in horde.jobs:
        if request.prompt in wanted and not request.done:
            horde.finish(request.id)
            done += 1
    return done
