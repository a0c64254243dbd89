"""What a `Services` was built from, for tests."""

from __future__ import annotations

from bot.runtime import Runtime
from bot.services import Services


def runtime_of(services: Services) -> Runtime:
    """The database, Horde client, HTTP client and settings `services` were built from: tests read the
    database to check what the bot stored, or call the Horde with the bot's own client. Cogs never see it
    (tests/test_wiring.py); behaviour tests reach it as `harness.runtime`."""
    return services._runtime
