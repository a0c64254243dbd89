"""hordebot: a Discord bot for the AI Horde."""

import sys

__version__ = "0.1.0"

# httpx imports its command-line client (httpx/__init__.py: `from ._main import main`) whenever click,
# rich and pygments are installed, as in a development virtualenv (import-linter brings them): ~5 MiB of
# modules kept for the bot's whole run, never used. Marked unavailable before httpx is first imported, so
# httpx takes the fallback it has for installs without them (its `except ImportError`). An install with
# only the bot's own dependencies has none of the three, and is unchanged.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
