"""Secrets and integrity at rest (issue #14): key rotation, file modes, log redaction, atomic settings."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import stat
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet

import run
from bot.clock import SystemClock
from bot.config import load_settings
from bot.crypto import KeyCipher, KeyDecryptionError
from bot.db import Database
from bot.db.guild_settings import GuildSettingsRepository
from bot.db.sharedkeys import SharedKeyRepository
from bot.db.users import UserRepository
from bot.horde.models import ApiKey
from bot.logs import SeenSecrets, setup_logging
from bot.services.guild_config import GuildConfigService

NOW = datetime(2026, 1, 1, tzinfo=UTC)
HORDE_KEY = "aB3dE5gH7jK9mN1pQ3sT5v"  # 22 url-safe characters, as the Horde makes them


# --- key rotation ------------------------------------------------------------------------------------------


def test_several_secret_keys_decrypt_old_values_and_encrypt_with_the_newest() -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    token = KeyCipher(old).encrypt(ApiKey(HORDE_KEY))
    both = KeyCipher(f"{new},{old}")
    assert both.decrypt(token).reveal() == HORDE_KEY
    assert not both.is_current(token)
    fresh = both.encrypt(ApiKey(HORDE_KEY))
    assert both.is_current(fresh) and KeyCipher(new).decrypt(fresh).reveal() == HORDE_KEY
    with pytest.raises(KeyDecryptionError):
        KeyCipher(old).decrypt(fresh)


def _write_config(tmp_path: Path) -> Path:
    config = tmp_path / "config.toml"
    config.write_text(
        f'[database]\nurl = "sqlite+aiosqlite:///{tmp_path / "bot.db"}"\n'
        f'[security]\nsecret_key_file = "{tmp_path / "secret.key"}"\n'
    )
    return config


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """run.py sets up the bot's logging on the root logger: put pytest's back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


@pytest.mark.usefixtures("restore_logging")
async def test_rotate_keys_reencrypts_every_stored_key_resumably(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}")
    await db.connect()
    users, shared = UserRepository(db), SharedKeyRepository(db)
    before = KeyCipher(old)
    for i in range(5):
        await users.upsert(
            discord_id=100 + i,
            horde_user_id=i,
            horde_username=f"u{i}",
            api_key_encrypted=before.encrypt(ApiKey(f"{HORDE_KEY[:-1]}{i}")),
            linked_at=NOW,
        )
    await shared.add(100, "fund", before.encrypt(ApiKey("1c5d2a7e-0b4f-4e8a-9d3c-6f1e2b3a4c5d")), NOW)
    await shared.set_guild_key(
        9, "server", before.encrypt(ApiKey("2c5d2a7e-0b4f-4e8a-9d3c-6f1e2b3a4c5d")), 100, NOW
    )
    # A run stopped halfway: one row already re-encrypted.
    first = await users.get(100)
    assert first is not None
    await users.upsert(
        discord_id=100,
        horde_user_id=0,
        horde_username="u0",
        api_key_encrypted=KeyCipher(new).encrypt(ApiKey(f"{HORDE_KEY[:-1]}0")),
        linked_at=NOW,
    )
    await db.close()

    monkeypatch.setenv("DISCORD_TOKEN", "x")
    monkeypatch.setenv("HORDEBOT_SECRET_KEY", f"{new},{old}")
    config = _write_config(tmp_path)
    code = await asyncio.to_thread(
        run.main, ["rotate-keys", "--config", str(config), "--env-file", "/nonexistent"]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "6 re-encrypted with the newest key, 1 already were" in out
    assert "can be removed" in out

    # Only the new key is needed now.
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}")
    await db.connect()
    only_new = KeyCipher(new)
    for i in range(5):
        row = await UserRepository(db).get(100 + i)
        assert row is not None and only_new.decrypt(row.api_key_encrypted).reveal() == f"{HORDE_KEY[:-1]}{i}"
    (fund,) = await SharedKeyRepository(db).of_owner(100)
    assert only_new.decrypt(fund.key_encrypted).reveal().startswith("1c5d2a7e")
    server = await SharedKeyRepository(db).guild_key(9)
    assert server is not None and only_new.decrypt(server.key_encrypted).reveal().startswith("2c5d2a7e")
    await db.close()

    # Again: nothing left to do. With a key missing, the unreadable rows are named and the exit code says so.
    assert await asyncio.to_thread(run.main, ["rotate-keys", "--config", str(config)]) == 0
    assert "0 re-encrypted with the newest key, 7 already were" in capsys.readouterr().out
    monkeypatch.setenv("HORDEBOT_SECRET_KEY", Fernet.generate_key().decode())
    assert await asyncio.to_thread(run.main, ["rotate-keys", "--config", str(config)]) == 1
    out = capsys.readouterr().out
    assert "7 could not be read" in out and "users.api_key_encrypted #100" in out


def test_a_bad_key_among_several_is_named(tmp_path: Path) -> None:
    from bot.config import ConfigError

    config = _write_config(tmp_path)
    good = Fernet.generate_key().decode()
    with pytest.raises(ConfigError, match="key 2 of 2 is not a valid Fernet key"):
        load_settings(config, env={"DISCORD_TOKEN": "x", "HORDEBOT_SECRET_KEY": f"{good}, nope"})


# --- files at rest ----------------------------------------------------------------------------------------


async def test_database_and_generated_secret_files_are_private(tmp_path: Path) -> None:
    old_umask = os.umask(0o022)  # the usual default: files would be 0644
    try:
        settings = load_settings(_write_config(tmp_path), env={"DISCORD_TOKEN": "x"})
        assert settings.security.secret_key_generated
        db = Database(settings.database.url)
        await db.connect()
        await UserRepository(db).get(1)
        await db.close()
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE((tmp_path / "secret.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "bot.db").stat().st_mode) == 0o600
    for extra in ("bot.db-wal", "bot.db-shm"):
        if (tmp_path / extra).exists():
            assert stat.S_IMODE((tmp_path / extra).stat().st_mode) & 0o077 == 0


# --- log redaction ----------------------------------------------------------------------------------------


@pytest.fixture
def bot_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[SeenSecrets, io.StringIO]]:
    """The bot's own logging set-up (run.py's), its stderr a buffer; pytest's logging restored afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    seen, out = SeenSecrets(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", out)
    setup_logging("DEBUG", secrets=("discord-token-value-123",), seen=seen)
    try:
        yield seen, out
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


class Holder:
    def __init__(self, key: str) -> None:
        self.key = key

    def __repr__(self) -> str:
        return f"Holder(key={self.key!r})"


async def test_no_key_reaches_the_log_in_any_form(bot_logging: tuple[SeenSecrets, io.StringIO]) -> None:
    seen, out = bot_logging
    log = logging.getLogger("hordebot.test")
    log.setLevel(logging.DEBUG)  # pytest sets the root's level for each test phase
    # A key the bot sent in a header, of no recognisable shape: redacted because it was seen.
    odd_key = "plainlowercasekeyvalue"[:-3] + "xyz"
    client = httpx.AsyncClient(transport=httpx.MockTransport(lambda _r: httpx.Response(200)))
    seen.attach(client)
    await client.get("http://horde.invalid/api/v2/find_user", headers={"apikey": odd_key})
    await client.aclose()

    log.info("a bare key %s in a message", HORDE_KEY)
    log.info("as a dict: %s", {"value": HORDE_KEY})
    log.info("as a repr: %r", Holder(HORDE_KEY))
    log.info("%(value)s by name", {"value": HORDE_KEY})
    log.warning("seen in a header earlier: %s", odd_key)
    try:
        raise RuntimeError(f"the Horde refused {HORDE_KEY} and {odd_key}")
    except RuntimeError:
        log.exception("with exc_info")
    try:
        raise ValueError({"apikey": HORDE_KEY})
    except ValueError as exc:
        log.error("passed as exc_info", exc_info=exc)
    record = logging.LogRecord("hordebot.test", logging.ERROR, __file__, 1, "pre-formatted", None, None)
    record.exc_text = f"Traceback ...\nValueError: {HORDE_KEY}"
    log.handle(record)
    log.info("with a stack %s", "here", stack_info=True, extra={})
    stack_record = logging.LogRecord("hordebot.test", logging.INFO, __file__, 1, "stack", None, None)
    stack_record.stack_info = f"Stack (most recent call last):\n  key = {HORDE_KEY}"
    log.handle(stack_record)
    log.info("discord token discord-token-value-123")

    err = out.getvalue()
    assert err.count("***") >= 10, err
    for secret in (HORDE_KEY, odd_key, "discord-token-value-123"):
        assert secret not in err, f"{secret} leaked:\n{err}"
    # The redaction keeps the rest readable, and leaves ordinary words and Discord ids alone.
    assert "RuntimeError: the Horde refused ***" in err and "Traceback" in err
    log.info("generation_rating_item 1456074443980800036 done")
    assert "generation_rating_item 1456074443980800036 done" in out.getvalue()


# --- per-server settings ------------------------------------------------------------------------------------


async def test_concurrent_updates_of_a_new_server_all_land(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}")
    await db.connect()
    try:
        service = GuildConfigService(GuildSettingsRepository(db), SystemClock())
        guild = 4242
        changes: list[dict[str, Any]] = [
            {"cooldown_seconds": 15},
            {"max_n": 2},
            {"log_channel_id": 77},
            {"allow_anonymous": False},
            {"blocked_words": ["spoon"]},
            {"default_steps": 20},
        ]
        await asyncio.gather(*(service.update(guild, **c) for c in changes))
        # Read back from the database, not the cache.
        stored = await GuildConfigService(GuildSettingsRepository(db), SystemClock()).get(guild)
        assert stored.cooldown_seconds == 15 and stored.max_n == 2 and stored.log_channel_id == 77
        assert stored.allow_anonymous is False and stored.blocked_words == ["spoon"]
        assert stored.default_steps == 20
        # Two first-ever writes of one document at once (two processes, or no lock): no UNIQUE error.
        repo = GuildSettingsRepository(db)
        await asyncio.gather(repo.save(5151, {"max_n": 1}, NOW), repo.save(5151, {"max_n": 3}, NOW))
        assert (await repo.get(5151))["max_n"] in (1, 3)
    finally:
        await db.close()


def test_rotate_keys_is_in_manage_sh_and_readme() -> None:
    root = Path(__file__).resolve().parents[1]
    assert "rotate-keys)" in (root / "manage.sh").read_text()
    readme = (root / "README.md").read_text()
    assert "./manage.sh rotate-keys" in readme and "python run.py rotate-keys" in readme
