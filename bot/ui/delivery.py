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
class _Pending:
    interaction: discord.Interaction
    since: float


class PendingReplies:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._pending: dict[int, _Pending] = {}

    def add(self, job_id: int, interaction: discord.Interaction) -> None:
        self._pending[job_id] = _Pending(interaction, self._clock.monotonic())

    def peek(self, job_id: int) -> discord.Interaction | None:
        """The job's interaction if its token is still usable (kept for the result)."""
        pending = self._pending.get(job_id)
        if pending is None or self._clock.monotonic() - pending.since > TOKEN_LIFETIME:
            return None
        return pending.interaction

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
        pending = self._pending.pop(job_id, None)
        if pending is None or self._clock.monotonic() - pending.since > TOKEN_LIFETIME:
            return None
        return pending.interaction


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
