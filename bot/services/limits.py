"""The AI Horde's limits, for the cogs' declared option ranges: re-exported from `bot.horde.limits` (the one
place they are written down), because cogs talk to the services layer only (import-linter)."""

from __future__ import annotations

from bot.horde.limits import *  # noqa: F403
from bot.horde.limits import __all__ as __all__
