"""Start hordebot: `python run.py [--config config.toml] [--env-file .env]`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

import discord
from dotenv import load_dotenv

from bot.app import apply_discord_endpoints, create_bot
from bot.config import ConfigError, load_settings
from bot.db import DatabaseStartupError
from bot.logs import setup_logging

log = logging.getLogger("hordebot")


async def _serve(settings_path: str) -> int:
    settings = load_settings(settings_path)
    setup_logging(settings.log_level, secrets=(settings.discord.token, settings.security.secret_key))
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
    bot = create_bot(settings)
    loop = asyncio.get_running_loop()
    closing: list[asyncio.Task[None]] = []

    def request_stop() -> None:
        if not closing:
            log.info("shutting down")
            closing.append(loop.create_task(bot.close()))

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, request_stop)
    try:
        async with bot:
            # Open (and migrate) the database before connecting to Discord: a bad database fails fast.
            await bot.services.start()
            await bot.start(settings.discord.token)
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the hordebot Discord bot.")
    parser.add_argument("--config", default="config.toml", help="path to config.toml (default: %(default)s)")
    parser.add_argument("--env-file", default=".env", help="file with secrets (default: %(default)s)")
    args = parser.parse_args(argv)
    # Real environment variables win over .env, so containers can inject secrets directly.
    load_dotenv(args.env_file, override=False)
    try:
        return asyncio.run(_serve(args.config))
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
