"""Showing member-supplied text safely."""

from __future__ import annotations

import discord


def escape_user_text(text: str, limit: int | None = None) -> str:
    """Markdown- and mention-escaped, optionally shortened with an ellipsis.

    Messages are also sent with mentions disabled; escaping keeps `@everyone` from even looking like a ping.
    """
    escaped = discord.utils.escape_mentions(discord.utils.escape_markdown(text))
    if limit is not None and len(escaped) > limit:
        escaped = escaped[: max(0, limit - 1)].rstrip("\\") + "…"
    return escaped
