"""Getting a background job's result to the member who asked.

While the interaction token is valid (15 minutes), the result replaces the "working on it" reply. After
that, or after a restart (tokens are kept in memory only, never stored), public results are posted in the
channel and private ones are sent by DM.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import discord

from bot.clock import Clock

log = logging.getLogger(__name__)

TOKEN_LIFETIME = 14 * 60  # Discord's is 15 min; keep a margin for the edit itself
OUTAGE_NOTICE = (
    "The AI Horde isn't answering right now. Your request is safe: the bot keeps checking and will "
    "show the result here."
)
BACK_NOTICE = "The AI Horde is answering again: still working on it. This message will show the result."


@dataclass
class Pending:
    """A live interaction token of a job, with what its feature wants to keep beside it."""

    interaction: discord.Interaction
    since: float
    context: Any = None


class PendingReplies:
    """The registry of live interaction tokens of background jobs (/generate, alchemy, /text): a token
    is usable for 15 minutes, so each is kept while valid and forgotten after; results and notices edit
    the original reply while it lives. Kept in memory only: a restart forgets every token."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._pending: dict[int, Pending] = {}

    def add(self, job_id: int, interaction: discord.Interaction, context: Any = None) -> None:
        self._pending[job_id] = Pending(interaction, self._clock.monotonic(), context)
        if len(self._pending) > 1000:
            # Tokens past their lifetime are dropped (jobs that never finished under this process).
            now = self._clock.monotonic()
            self._pending = {k: v for k, v in self._pending.items() if now - v.since <= TOKEN_LIFETIME}

    def get(self, job_id: int, *, take: bool = False) -> Pending | None:
        """The job's entry if its token is still usable (`take`: and forget it)."""
        pending = self._pending.pop(job_id, None) if take else self._pending.get(job_id)
        if pending is None:
            return None
        if self._clock.monotonic() - pending.since > TOKEN_LIFETIME:
            self._pending.pop(job_id, None)
            return None
        return pending

    def peek(self, job_id: int) -> discord.Interaction | None:
        """The job's interaction if its token is still usable (kept for the result)."""
        pending = self.get(job_id)
        return pending.interaction if pending is not None else None

    async def show_outage(self, job_id: int, outage: bool) -> None:
        """The Horde stopped (True) or resumed (False) answering this job's polls: say so in its reply."""
        interaction = self.peek(job_id)
        if interaction is None:
            return
        try:
            await interaction.edit_original_response(content=OUTAGE_NOTICE if outage else BACK_NOTICE)
        except discord.HTTPException as exc:
            log.info("job %s: the outage notice could not be shown (HTTP %s)", job_id, exc.status)

    def take(self, job_id: int) -> discord.Interaction | None:
        """The job's interaction if its token is still usable; forgets it either way."""
        pending = self.get(job_id, take=True)
        return pending.interaction if pending is not None else None


async def channel_for(bot: discord.Client, channel_id: int | None) -> discord.abc.Messageable | None:
    if channel_id is None:
        return None
    channel = bot.get_channel(channel_id)
    if channel is None:
        try:
            channel = await bot.fetch_channel(channel_id)
        except discord.HTTPException:
            return None
    return channel if isinstance(channel, discord.abc.Messageable) else None


@asynccontextmanager
async def errors_stay_private(interaction: discord.Interaction) -> AsyncIterator[None]:
    """For commands that defer publicly: an error must still reach only the member.

    After a public defer, Discord turns the first followup into the public "thinking" message, whatever
    its ephemeral flag, and a still-"thinking" original cannot simply be deleted and followed up. So on
    error the placeholder is completed with an ellipsis and deleted; the shared error handler's followup
    is then a fresh, ephemeral message.
    """
    try:
        yield
    except Exception:
        with contextlib.suppress(discord.HTTPException):
            await interaction.edit_original_response(content="…")
            await interaction.delete_original_response()
        raise


async def show_error_privately(
    interaction: discord.Interaction | None,
    text: str,
    *,
    placeholder_public: bool,
    keep: str | None = None,
    view: discord.ui.View | None = None,
) -> bool:
    """A background job's failure, shown only to the member who asked (errors are always ephemeral).

    A private placeholder simply becomes the error. A public one ("Writing…") is removed, or, with `keep`,
    replaced by `keep` (a chat keeps the member's line), and the error follows as an ephemeral message.
    False when the interaction is gone (restart, expired token, Discord refusing): the caller then uses DMs.
    """
    if interaction is None:
        return False
    try:
        if not placeholder_public:
            await interaction.edit_original_response(content=text, attachments=[], view=None)
            return True
        if keep is not None:
            await interaction.edit_original_response(
                content=keep, view=view if view is not None else discord.utils.MISSING
            )
        else:
            await interaction.edit_original_response(content="…")
            await interaction.delete_original_response()
        await interaction.followup.send(text, ephemeral=True)
        return True
    except discord.HTTPException as exc:
        log.info("could not show a job's error through its interaction (HTTP %s)", exc.status)
        return False


async def report_failure(
    bot: discord.Client,
    dm: Callable[[int, str], Awaitable[bool]],
    *,
    user_id: int,
    channel_id: int | None,
    text: str,
    public: bool,
) -> bool:
    """A failure whose interaction is gone: by DM (private); only if DMs are closed and the request was
    public anyway, in the channel (mentions are disabled bot-wide, so this pings nobody)."""
    where = f" (asked in <#{channel_id}>)" if channel_id else ""
    if await dm(user_id, f"Your AI Horde request{where} failed: {text}"):
        return True
    channel = await channel_for(bot, channel_id) if public else None
    if channel is None:
        return False
    try:
        await channel.send(f"<@{user_id}>, your AI Horde request failed: {text}"[:2000])
    except discord.HTTPException:
        return False
    return True
