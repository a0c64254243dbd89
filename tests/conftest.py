"""Shared fixtures: a fake AI Horde on 127.0.0.1, settings pointing at it, and the bot under simulation."""

from __future__ import annotations

import fcntl
import importlib.machinery
import logging
import os
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import CodeType
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine

from bot.config import Settings
from tests.fakes.civitai import FakeCivitai
from tests.fakes.horde import FakeHorde
from tests.fakes.ratings import FakeRatings
from tests.harness import Harness, start_harness, stop_harness
from tests.postgres import PostgresServer, SharedPostgres
from tests.support import failure_logs
from tests.support.clock import SkippedTime
from tests.support.settings import make_settings as make_settings  # the tests import it from here


def pytest_configure(config: pytest.Config) -> None:
    _remember_compiled_sources()
    _share_postgres(config)
    config.addinivalue_line("markers", "both_engines: run this test on SQLite and on PostgreSQL")
    config.addinivalue_line(
        "markers", "processes: starts bot processes; one such test at a time over all xdist workers"
    )


def pytest_sessionstart(session: pytest.Session) -> None:
    failure_logs.install(session.config)  # after the logging plugin, which registers in pytest_configure


def _remember_compiled_sources() -> None:
    """Every harness start loads the cogs afresh (discord.py executes an extension's source on each load)
    and Alembic loads each migration from its file. With PYTHONDONTWRITEBYTECODE set there is no .pyc to
    fall back on, and recompiling them costs ~0.7 s a test. Keep each compiled module in memory for the
    session instead: the same code objects a .pyc would give, and nothing is written to disk."""
    if not sys.dont_write_bytecode:
        return
    loader = importlib.machinery.SourceFileLoader
    compile_source = loader.source_to_code
    if getattr(compile_source, "remembers", False):
        return
    compiled: dict[tuple[str, bytes], CodeType] = {}

    def source_to_code(self: Any, data: Any, path: Any, *, _optimize: int = -1) -> CodeType:
        if not isinstance(data, bytes):
            return compile_source(self, data, path, _optimize=_optimize)
        key = (str(path), data)
        code = compiled.get(key)
        if code is None:
            code = compiled[key] = compile_source(self, data, path, _optimize=_optimize)
        return code

    source_to_code.remembers = True  # type: ignore[attr-defined]
    loader.source_to_code = source_to_code  # type: ignore[method-assign]


@pytest.fixture
def horde() -> Iterator[FakeHorde]:
    # Real time, with the short waits the harness skips instead of waiting them out (`SkippedTime`): the
    # fake's limiter and expiry see the pacer's second pass, as they did when it was waited for.
    fake = FakeHorde(clock=SkippedTime.monotonic)
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def ratings(horde: FakeHorde) -> Iterator[FakeRatings]:
    """A fake ratings service whose keys are the fake Horde's; point settings at it with `ratings_url`."""
    fake = FakeRatings(horde=horde)
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def civitai() -> Iterator[FakeCivitai]:
    """A fake CivitAI; point settings at it with `civitai_url` (and the fake Horde's `lora_reference_url`)."""
    fake = FakeCivitai()
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


# Behaviour tests of these modules run twice: on SQLite (the default) and once more on PostgreSQL.
POSTGRES_BEHAVIOUR_MODULES = frozenset({"tests.test_generation", "tests.test_kudos", "tests.test_roles"})
ENGINES = ("sqlite", "postgresql")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that start bot processes run first, in collection order otherwise. They take a lock and run one
    at a time (`_one_process_test_at_a_time`), and the multi-process one is the suite's longest: at the head
    of the first xdist worker's share (`--dist worksteal` hands each worker a contiguous share and steals
    from the end of it) they run one after the other from the start while the other workers run the rest,
    instead of ending the run on one worker alone or holding others at the lock."""

    def order(item: pytest.Item) -> tuple[bool, float]:
        # Among them, the ones allowed the longest (their own `timeout` mark) first.
        timeout = item.get_closest_marker("timeout")
        return item.get_closest_marker("processes") is None, -float(timeout.args[0] if timeout else 0)

    items.sort(key=order)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--database",
        choices=ENGINES,
        default=None,
        help="run every behaviour test (the `settings` fixture) on this engine only",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "engine" not in metafunc.fixturenames:
        return
    chosen = metafunc.config.getoption("--database")
    if metafunc.definition.get_closest_marker("both_engines"):
        engines: tuple[str, ...] = ENGINES  # repository and migration tests: always both engines
    elif chosen:
        engines = (chosen,)
    elif metafunc.module.__name__ in POSTGRES_BEHAVIOUR_MODULES:
        engines = ENGINES
    else:
        engines = ("sqlite",)
    metafunc.parametrize("engine", engines, indirect=True)


@pytest.fixture
def engine(request: pytest.FixtureRequest) -> str:
    return str(getattr(request, "param", "sqlite"))


_SHARED_POSTGRES = pytest.StashKey[SharedPostgres]()
_POSTGRES_FOLDER = "hordebot_postgres_folder"  # in each xdist worker's workerinput


def _share_postgres(config: pytest.Config) -> None:
    """The run's one PostgreSQL server (tests/postgres.py): the session's process makes the folder through
    which every worker finds it, and stops it at the end (`pytest_unconfigure`)."""
    workerinput = getattr(config, "workerinput", None)
    if workerinput is None:
        config.stash[_SHARED_POSTGRES] = SharedPostgres.new_run()
    else:
        folder = Path(workerinput[_POSTGRES_FOLDER])
        config.stash[_SHARED_POSTGRES] = SharedPostgres(folder, prefix=f"{workerinput['workerid']}_")


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist, in the controller, before a worker starts: where the run's PostgreSQL server is found."""
    node.workerinput[_POSTGRES_FOLDER] = str(node.config.stash[_SHARED_POSTGRES].folder)


def pytest_unconfigure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput") and _SHARED_POSTGRES in config.stash:
        config.stash[_SHARED_POSTGRES].stop()  # every worker has finished


@pytest.fixture(scope="session")
def postgres(request: pytest.FixtureRequest) -> PostgresServer:
    """The run's throwaway PostgreSQL server, started when a test first needs it, stopped at the run's end.

    Under CI (CI set) a missing PostgreSQL fails the test: CI must test both engines, never skip one."""
    server = request.config.stash[_SHARED_POSTGRES].server()
    if server is None:
        if os.environ.get("CI", "").lower() not in ("", "0", "false"):
            pytest.fail("PostgreSQL is not installed on the CI machine (.ci/run installs it with apt-get)")
        pytest.skip("PostgreSQL is not installed on this machine (CI installs it and fails without it)")
    return server


@pytest.fixture
def db_url(engine: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh database at the migration head on the test's engine."""
    if engine == "postgresql":
        server: PostgresServer = request.getfixturevalue("postgres")
        url = server.new_database()
        yield url
        server.drop_database(url)  # after the bot closed it (the harness depends on this fixture)
        return
    yield f"sqlite+aiosqlite:///{tmp_path / 'hordebot.db'}"


@pytest.fixture
def settings(tmp_path: Path, horde: FakeHorde, db_url: str) -> Settings:
    return make_settings(tmp_path, horde.base_url, database_url=db_url)


@pytest.fixture
async def harness(
    settings: Settings, horde: FakeHorde, caplog: pytest.LogCaptureFixture
) -> AsyncIterator[Harness]:
    caplog.set_level(logging.DEBUG)
    h = await start_harness(settings)
    try:
        yield h
        violations = spec_violations(h)
        sent = h.sent_text()
    finally:
        await stop_harness(h)
    assert not violations, "requests that break Discord's API schema:\n" + "\n".join(violations)
    # No API key may ever leave the bot: not in a log line, not in anything sent to Discord.
    for key in issued_keys(horde):
        assert key not in caplog.text, "an API key appeared in the logs"
        if key in h.shown_to_owner:
            continue  # a test checked it went only to its owner, ephemerally (a new shared key)
        assert key not in sent, "an API key was sent to Discord"


def issued_keys(horde: FakeHorde) -> list[str]:
    """Every secret the fake Horde handed out: user API keys and shared keys (the anonymous key is public)."""
    keys = [u.apikey for u in horde.users.values() if u.id != 0 and u.apikey]
    keys += list(horde.shared_keys)
    return keys


def spec_violations(h: Harness) -> list[str]:
    from tests.support.discord_spec import get_spec_validator

    validator = get_spec_validator()
    problems: list[str] = []
    for request in h.rest_requests():
        for problem in validator.validate(request.method, request.path, request.json, request.params):
            problems.append(problem)
    return problems


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> Any:
    """Run the test body on the simulator's virtual clock (as simcord's own plugin does for its fixture)."""
    harnesses = [v for v in getattr(item, "funcargs", {}).values() if isinstance(v, Harness)]
    if len(harnesses) == 1:
        with harnesses[0].time_context():
            return (yield)
    return (yield)


@pytest.fixture(autouse=True)
def _one_process_test_at_a_time(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """Tests marked `processes` start real bot processes (and PostgreSQL): two of them at once on the two
    xdist workers of a 2-core CI machine would starve each other's processes. A lock file shared by the
    workers (their temp folders have one parent) lets one run at a time; the rest of the suite goes on."""
    if request.node.get_closest_marker("processes") is None:
        yield
        return
    lock_path = tmp_path_factory.getbasetemp().parent / "hordebot-processes.lock"
    with lock_path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture(autouse=True)
def _no_api_key_in_logs(request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Issue #2's "no API key appears in any log output of the test run", for every test with a fake Horde
    (not only those using the `harness` fixture): every log record at every level is checked, and every
    SQL statement's parameters (what aiosqlite's DEBUG trace showed, see `_sql_parameters`)."""
    caplog.set_level(logging.DEBUG)
    # aiosqlite traces each call into its thread at DEBUG, two records each (~3,000 in a kudos test), and
    # capturing them was a quarter of a behaviour test's CPU. What they showed of the bot's data is the
    # statements' parameters, which `_sql_parameters` keeps for the check below instead.
    caplog.set_level(logging.INFO, logger="aiosqlite")
    horde: FakeHorde | None = request.getfixturevalue("horde") if "horde" in request.fixturenames else None
    with _sql_parameters() as parameters:
        yield
    if horde is None:
        return
    logged = "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.get_records("call"))
    logged += "\n" + caplog.text
    logged += "\n" + "\n".join(map(repr, parameters))
    for key in issued_keys(horde):
        assert key not in logged, f"an API key appeared in the logs of {request.node.name}"


@contextmanager
def _sql_parameters() -> Iterator[list[Any]]:
    """The parameters of every SQL statement any engine runs meanwhile (kept as they are, formatted only
    if a check reads them)."""
    kept: list[Any] = []

    def keep(
        _conn: Any, _cursor: Any, _statement: str, parameters: Any, _context: Any, _executemany: bool
    ) -> None:
        kept.append(parameters)

    event.listen(Engine, "before_cursor_execute", keep)
    try:
        yield kept
    finally:
        event.remove(Engine, "before_cursor_execute", keep)
