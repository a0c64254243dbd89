"""Start hordebot: `python run.py [--config config.toml] [--env-file .env]`.

`python run.py rotate-keys` re-encrypts every stored key with the newest HORDEBOT_SECRET_KEY and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Coroutine
from typing import Any

import discord
from dotenv import load_dotenv

from bot.app import apply_discord_endpoints, create_bot, freeze_startup_heap
from bot.config import ConfigError, Settings, load_settings, split_secret_keys
from bot.crypto import KeyCipher
from bot.db import Database, DatabaseStartupError
from bot.db.key_rotation import KeyRotationRepository
from bot.logs import RedactSecrets, setup_logging
from bot.malloc import limit_arenas
from bot.services.key_rotation import rotate_keys

log = logging.getLogger("hordebot")


async def _serve(settings_path: str) -> int:
    settings = load_settings(settings_path)
    redactor = _logging(settings)
    for moved in settings.moved_keys:
        log.warning("%s", moved)
    if settings.security.secret_key_generated:
        log.warning(
            "generated a new HORDEBOT_SECRET_KEY in %s (mode 0600); back it up: stored API keys can't be "
            "read without it",
            settings.security.secret_key_file,
        )
    apply_discord_endpoints(settings)
    # The bot never joins voice; don't warn about missing voice libraries at every start.
    discord.VoiceClient.warn_nacl = False
    discord.VoiceClient.warn_dave = False
    bot = create_bot(settings, seen_secrets=redactor.seen)
    stop = asyncio.Event()

    def request_stop() -> None:
        if not stop.is_set():
            log.info("shutting down")
            stop.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, request_stop)
    try:
        # Leaving this block closes the bot, however it is left (`HordeBot.close`: members' events first).
        async with bot:
            # Open (and migrate) the database before connecting to Discord: a bad database fails fast. A
            # stop asked meanwhile waits for the migration: a database left half-migrated is worse.
            await bot.services.start()
            freeze_startup_heap()
            await _until_stopped(bot.start(settings.discord.token), stop)
    except discord.LoginFailure:
        log.error("Discord rejected DISCORD_TOKEN: check the bot token in .env")
        return 1
    except discord.PrivilegedIntentsRequired:
        log.error("enable the required privileged intents for the bot in the Discord developer portal")
        return 1
    except DatabaseStartupError as exc:
        log.error("database: %s", exc)
        return 1
    return 0


async def _until_stopped(running: Coroutine[Any, Any, None], stop: asyncio.Event) -> None:
    """Run the bot (`running`: its login, then its connection to Discord) until it ends by itself (its error
    propagates) or `stop` is set, wherever it is: logging in, syncing the commands, connecting the shards,
    or running. It is not closed from here but cancelled, and the caller closes it: a close() while it still
    starts pulled its HTTP session from under the command sync (a traceback), or left a shard retrying
    to connect on a closed session."""
    if stop.is_set():
        running.close()
        return
    started = asyncio.ensure_future(running)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({started, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        if not started.done():
            started.cancel()
            # What the cancelled start-up raises on its way out is not the run's error: it was told to stop.
            await asyncio.gather(started, return_exceptions=True)
    if not started.cancelled():
        started.result()


def _logging(settings: Settings) -> RedactSecrets:
    return setup_logging(
        settings.log_level,
        secrets=(settings.discord.token, *split_secret_keys(settings.security.secret_key)),
    )


async def _rotate_keys(settings_path: str) -> int:
    settings = load_settings(settings_path)
    _logging(settings)
    cipher = KeyCipher(settings.security.secret_key)
    # Safe while the bot runs (conditional updates), so not refused by the bot's SQLite lock.
    db = Database(settings.database.url, exclusive=False)
    try:
        await db.connect()
        report = await rotate_keys(KeyRotationRepository(db), cipher)
    except DatabaseStartupError as exc:
        log.error("database: %s", exc)
        return 1
    finally:
        await db.close()
    print(report.summary())
    if report.unreadable or report.changed_meanwhile:
        return 1
    if cipher.key_count > 1:
        print("Every stored key now uses the first key: the others can be removed from HORDEBOT_SECRET_KEY.")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the hordebot Discord bot.")
    parser.add_argument(
        "command",
        nargs="?",
        default="run",
        choices=("run", "rotate-keys"),
        help="run: start the bot (default); rotate-keys: re-encrypt stored keys with the newest secret key",
    )
    parser.add_argument("--config", default="config.toml", help="path to config.toml (default: %(default)s)")
    parser.add_argument("--env-file", default=".env", help="file with secrets (default: %(default)s)")
    args = parser.parse_args(argv)
    limit_arenas()  # before any thread starts (bot/malloc.py says why)
    # Real environment variables win over .env, so containers can inject secrets directly.
    load_dotenv(args.env_file, override=False)
    try:
        if args.command == "rotate-keys":
            return asyncio.run(_rotate_keys(args.config))
        return asyncio.run(_serve(args.config))
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
