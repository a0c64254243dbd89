"""What the services are built from, and what cogs never see."""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from bot.clock import Clock
from bot.config import Settings
from bot.crypto import KeyCipher
from bot.db import Database
from bot.db.guild_settings import GuildSettingsRepository
from bot.db.leases import Lease
from bot.db.users import UserRepository
from bot.horde.client import HordeClient


@dataclass
class Runtime:
    """The settings, the one HTTP client, the database and the repositories several services share, the
    Horde client and the key cipher. `bot.app.build_runtime` makes it, `build_services` builds the services
    from it and keeps it for their start and close; the bot reads its Discord settings from it. Cogs reach
    none of it: they call services (tests/test_wiring.py checks)."""

    settings: Settings
    clock: Clock
    http: httpx.AsyncClient
    db: Database
    horde: HordeClient
    cipher: KeyCipher
    users: UserRepository
    guild_settings: GuildSettingsRepository
    # Who this process is in the claims on shared work, and how long a claim lasts (`bot.db.leases`).
    lease: Lease

    async def start(self) -> None:
        """Connect the database (migrating it). Safe to call twice."""
        if not self.db.connected:
            await self.db.connect()

    async def close(self) -> None:
        await self.http.aclose()
        await self.db.close()
