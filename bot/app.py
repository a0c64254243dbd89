"""The factory: settings in, a fully wired bot out. No globals, no work at import time."""

from __future__ import annotations

import discord
import httpx
import yarl

from bot.bot import HordeBot
from bot.clock import Clock, SystemClock
from bot.config import Settings
from bot.crypto import KeyCipher
from bot.db import Database
from bot.db.guild_settings import GuildSettingsRepository
from bot.db.ratings import RatingsRepository
from bot.db.users import UserRepository
from bot.horde.client import HordeClient, build_http_client
from bot.horde.ratings import RatingsClient
from bot.scheduler import Scheduler
from bot.services import Services
from bot.services.accounts import AccountService
from bot.services.guild_config import GuildConfigService
from bot.services.ratings import RatingsService, client_config, load_ratings_settings
from bot.ui.notifier import DiscordNotifier


def build_services(
    settings: Settings, *, clock: Clock | None = None, http: httpx.AsyncClient | None = None
) -> Services:
    clock = clock or SystemClock()
    http = http or build_http_client(settings.horde)
    db = Database(settings.database.url)
    horde = HordeClient(http, settings.horde, clock)
    cipher = KeyCipher(settings.security.secret_key)
    users = UserRepository(db)
    guild_settings = GuildSettingsRepository(db)
    guild_config = GuildConfigService(guild_settings, clock)
    accounts = AccountService(users, horde, cipher, clock)
    scheduler = Scheduler(clock)
    ratings_settings = load_ratings_settings(settings)
    ratings = RatingsService(
        RatingsRepository(db),
        RatingsClient(http, client_config(settings, ratings_settings), clock, horde),
        accounts,
        scheduler,
        clock,
        ratings_settings,
    )
    return Services(
        settings=settings,
        clock=clock,
        http=http,
        horde=horde,
        db=db,
        cipher=cipher,
        scheduler=scheduler,
        users=users,
        guild_settings=guild_settings,
        accounts=accounts,
        guild_config=guild_config,
        notifier=DiscordNotifier(guild_config),
        ratings=ratings,
    )


def create_bot(
    settings: Settings,
    *,
    clock: Clock | None = None,
    http: httpx.AsyncClient | None = None,
    cogs: list[str] | None = None,
) -> HordeBot:
    return HordeBot(build_services(settings, clock=clock, http=http), cogs=cogs)


def apply_discord_endpoints(settings: Settings) -> None:
    """Point discord.py at a Discord-compatible server (self-hosted or a test double).

    discord.py reads these as class attributes, so this is process-wide: call it from the entry point only.
    """
    if settings.discord.api_base_url:
        discord.http.Route.BASE = settings.discord.api_base_url
    if settings.discord.gateway_url:
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(settings.discord.gateway_url)
