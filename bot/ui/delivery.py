"""Getting a background job's result to the member who asked.

While the interaction token is valid (15 minutes), the result replaces the "working on it" reply. After
that, public results are posted in the channel and private ones are sent by DM. The process that got the
command keeps its interaction in memory (`PendingReplies`) and stores its token with the job, encrypted
(`bot.services.jobs.replies`): another process delivering the job (after a restart or a takeover) rebuilds
the interaction from it (`reopened`) and uses the reply as the first process would.

Once, even when two processes post it (issue #17): a process stopped while posting a job's result leaves
the job `delivering`, and whoever resumes it delivers it again (`again` on the kind's outcome). So every
message that ends a job, in a channel or by DM, is created with the job's nonce (`final_nonce`): Discord's
message create with `enforce_nonce` returns the message the bot already created with that nonce in the
past few minutes instead of creating another ("If another message was created by the same author with the
same nonce, that message will be returned and no new message will be created",
https://discord.com/developers/docs/resources/message#create-message; discord.py sends `enforce_nonce:
true` with every nonce given to `send`). A result shown by editing the interaction's reply is found in
that reply: read through the stored token while it lives (`shown_in_reply`, private replies too), else, for
a public reply, in its channel (`shown_in`). So a result is shown in the reply only while a process taking
the job over would still come in time to read it there (`JobReply.showable`); later it is delivered by the
job's nonce from the start, as that process would deliver it.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol, cast

import discord

from bot.clock import Clock
from bot.services.jobs.replies import LIFETIME, MARGIN, Reply, showable
from bot.ui.errors import handle_interaction_error

log = logging.getLogger(__name__)

# Discord's 15 minutes less the margin for the edit itself: the stored tokens' rule (`ReplyTokens.usable`).
TOKEN_LIFETIME = (LIFETIME - MARGIN).total_seconds()
OUTAGE_NOTICE = (
    "The AI Horde isn't answering right now. Your request is safe: the bot keeps checking and will "
    "show the result here."
)
BACK_NOTICE = "The AI Horde is answering again: still working on it. This message will show the result."


Key = tuple[str, int]  # (what kind of thing, its id): ("text", job id), ("vote", vote id)...


@dataclass
class Pending:
    """A live interaction token, with what its feature wants to keep beside it."""

    interaction: discord.Interaction
    since: float
    context: Any = None


class PendingReplies:
    """The one registry of live interaction tokens (`HordeBot.replies`): background jobs (/generate,
    alchemy, /text, /chat) and ratings being retried. A token is usable for 15 minutes, so each is kept
    while valid and forgotten after; results and notices edit the original reply while it lives. Keys
    are (kind, id), so every feature shares it. Kept in memory only: a restart forgets every token."""

    def __init__(self, clock: Clock, takeover: timedelta) -> None:
        """`takeover`: how late a process taking over a dead one's jobs comes at most
        (`bot.services.leases.LeaseKeeper.takeover`): results are shown in a reply only while it could
        still read them there (`for_job`)."""
        self._clock = clock
        self._takeover = takeover
        self._pending: dict[Key, Pending] = {}

    def add(self, key: Key, interaction: discord.Interaction, context: Any = None) -> None:
        self._pending[key] = Pending(interaction, self._clock.monotonic(), context)
        if len(self._pending) > 1000:
            # Tokens past their lifetime are dropped (jobs that never finished under this process).
            self._pending = {k: v for k, v in self._pending.items() if self._age(v) <= TOKEN_LIFETIME}

    def get(self, key: Key, *, take: bool = False) -> Pending | None:
        """The entry if its token is still usable (`take`: and forget it)."""
        pending = self._pending.pop(key, None) if take else self._pending.get(key)
        if pending is None:
            return None
        if self._age(pending) > TOKEN_LIFETIME:
            self._pending.pop(key, None)
            return None
        return pending

    def peek(self, key: Key) -> discord.Interaction | None:
        """The interaction if its token is still usable (kept for the result)."""
        pending = self.get(key)
        return pending.interaction if pending is not None else None

    def take(self, key: Key) -> discord.Interaction | None:
        """The interaction if its token is still usable; forgets it either way."""
        pending = self.get(key, take=True)
        return pending.interaction if pending is not None else None

    def for_job(
        self,
        bot: discord.Client,
        key: Key,
        reply: Reply | None,
        *,
        channel_id: int | None,
        guild_id: int | None,
    ) -> JobReply:
        """The reply of a job's command, to deliver the job: this process's interaction (forgotten here),
        else the one rebuilt from the token stored with the job (`reopened`: another process got the
        command, before a restart or a takeover)."""
        pending = self.get(key, take=True)
        now = self._clock.now()
        if pending is not None:
            interaction: discord.Interaction | None = pending.interaction
            # By this process's clocks, as the expiry stored with the job (`ReplyTokens.seal`).
            expires_at: datetime | None = now + LIFETIME - timedelta(seconds=self._age(pending))
        else:
            interaction = reopened(bot, reply, channel_id=channel_id, guild_id=guild_id)
            expires_at = reply.expires_at if reply is not None else None
        return JobReply(
            interaction,
            showable=interaction is not None
            and expires_at is not None
            and showable(expires_at, now, self._takeover),
        )

    def _age(self, pending: Pending) -> float:
        return self._clock.monotonic() - pending.since


@dataclass
class JobReply:
    """The command's reply of a job being delivered: `interaction` reads it (None: it can't be), and if
    `showable` the job's result (or end) is shown in it. Not showable (late in its token's life), the
    result goes by the job's nonce from the start, as a process taking the job over would send it should
    this one die right after (`bot.services.jobs.replies.showable`)."""

    interaction: discord.Interaction | None
    showable: bool


# A job's reply once its result (or end) went by DM because the reply was too late in its token's life.
SENT_BY_DM = "Sent to you by DM."


async def retire_reply(replied: JobReply, note: str | None) -> None:
    """After a job's result (or end) went by its nonce while its reply can still be read (late in the
    token's life: not `showable`), the reply stops saying "working on it": `note` replaces it (where the
    result went, or a chat's member line), or, None, the public placeholder is removed (the result is posted
    below it). Never the result itself: a process delivering the job again finds none in the reply and
    sends it by the nonce too, which Discord answers with the first message. Best effort."""
    if replied.interaction is None or replied.showable:
        return
    with contextlib.suppress(discord.HTTPException):
        if note is None:
            await replied.interaction.delete_original_response()
        else:
            await replied.interaction.edit_original_response(
                content=note, embed=None, attachments=[], view=None
            )


class KeepsReplies(Protocol):
    """A job service storing its commands' tokens (`bot.services.jobs.replies`)."""

    async def keep_reply(self, job_id: int, token: str) -> None: ...


async def keep_reply(service: KeepsReplies, job_id: int, interaction: discord.Interaction) -> None:
    """Store the command's token with its job, for whichever process delivers it. The job goes on without
    it (delivered by DM or in the channel by another process), so a failure is only logged."""
    try:
        await service.keep_reply(job_id, interaction.token)
    except Exception:
        log.warning("job %s: its reply's token could not be stored", job_id, exc_info=True)


def reopened(
    bot: discord.Client, reply: Reply | None, *, channel_id: int | None, guild_id: int | None
) -> discord.Interaction | None:
    """The interaction of a job's command, rebuilt from the token stored with the job by a process that
    never saw it (after a restart or a takeover): its reply can be read (`original_response`: GET
    /webhooks/{application}/{token}/messages/@original), edited and followed up as by the process that got
    the command. Only those webhook calls work on it: the command was answered long ago, and its member,
    guild and channel are not known beyond their ids."""
    if reply is None or bot.application_id is None or channel_id is None:
        return None
    data = {
        # The id only dates the interaction (`created_at`, `expires_at`): Discord's routes need the token.
        "id": str(discord.utils.time_snowflake(reply.expires_at - LIFETIME)),
        "application_id": str(bot.application_id),
        "type": discord.InteractionType.application_command.value,
        "token": reply.token,
        "version": 1,
        "attachment_size_limit": discord.utils.DEFAULT_FILE_SIZE_LIMIT_BYTES,
    }
    # The bot's connection state, which every interaction discord.py makes holds (`Interaction.followup`
    # builds its webhook from it the same way).
    interaction = discord.Interaction(data=cast(Any, data), state=bot._connection)
    # The reply's channel, for the messages read back (discord.py needs one; the id is enough).
    interaction.channel = cast(Any, bot.get_partial_messageable(channel_id, guild_id=guild_id))
    return interaction


async def original_reply(interaction: discord.Interaction) -> discord.Message | None:
    """The command's reply as Discord shows it now; None when it is gone or the token no longer works."""
    try:
        return await interaction.original_response()
    except discord.HTTPException as exc:
        log.info("a job's reply could not be read (HTTP %s)", exc.status)
        return None


def has_button(message: discord.Message, button_id: str) -> bool:
    """The message carries the button `custom_id` (one only a job's final message has)."""
    return any(
        getattr(item, "custom_id", None) == button_id
        for row in message.components
        for item in getattr(row, "children", ())
    )


def waiting_to_send(position: int) -> str:
    return f"Waiting to be sent to the AI Horde (position {position})"


@dataclass
class Note:
    """What a text or alchemy job's reply says while it runs: `working` once sent, `waiting(N)` in line."""

    working: str
    waiting: Callable[[int], str]
    shown: str = ""
    in_line: bool = False  # the reply shows a place in line (the next plain progress replaces it)


async def show_note(
    interaction: discord.Interaction,
    note: Note,
    kind: str,
    job_id: int,
    *,
    position: int | None,
    outage: bool = False,
    recovered: bool = False,
) -> None:
    """A text or alchemy job's progress in its reply: its place in line (with Cancel), the outage notice
    and its end, or the "working on it" note once it is sent. Only changes are edited in."""
    view: discord.ui.View | None = None
    if position is not None:
        content = note.waiting(position)
        view = discord.ui.View(timeout=None)
        view.add_item(CancelInLineButton(kind, job_id))
    elif outage:
        content = OUTAGE_NOTICE
    elif recovered:
        content = BACK_NOTICE
    elif note.in_line or not note.shown:
        content = note.working
    else:
        return  # the reply already says what a member needs (working on it, or the Horde is back)
    if content == note.shown:
        return
    try:
        await interaction.edit_original_response(content=content, view=view)
    except discord.HTTPException as exc:
        # The job is on its way regardless (e.g. Discord rate-limited this edit): the result still comes.
        log.info("%s job %s: the reply could not be updated (HTTP %s)", kind, job_id, exc.status)
        return
    note.shown = content
    note.in_line = position is not None


class JobProgress(Protocol):
    """What a job's progress (`bot.services.jobs.engine.Progress`) tells its reply."""

    @property
    def job(self) -> Any: ...
    @property
    def position(self) -> int | None: ...
    @property
    def outage(self) -> bool: ...
    @property
    def recovered(self) -> bool: ...


async def show_progress_note(replies: PendingReplies, kind: str, progress: JobProgress) -> None:
    """A text or alchemy job's progress in its reply, while its token lives (`show_note`)."""
    job_id = progress.job.id
    pending = replies.get((kind, job_id))
    if pending is None or not isinstance(pending.context, Note):
        return
    await show_note(
        pending.interaction,
        pending.context,
        kind,
        job_id,
        position=progress.position,
        outage=progress.outage,
        recovered=progress.recovered,
    )


class Cancellable(Protocol):
    async def cancel(self, job_id: int, user_id: int) -> bool: ...


class CancelInLineButton(
    discord.ui.DynamicItem[discord.ui.Button[discord.ui.View]],
    template=r"job:cancel:(?P<kind>text|alchemy):(?P<job>[0-9]{1,18})",
):
    """Cancel on a text or alchemy job's reply; survives restarts (our row id in the custom_id)."""

    def __init__(self, kind: str, job_id: int) -> None:
        super().__init__(
            discord.ui.Button(
                label="Cancel", style=discord.ButtonStyle.danger, custom_id=f"job:cancel:{kind}:{job_id}"
            )
        )
        self.kind = kind
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> CancelInLineButton:
        return cls(match["kind"], int(match["job"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        try:
            await interaction.response.defer(ephemeral=True, thinking=True)
            # The service of this kind (`bot.services.Services.text` / `.alchemy`).
            service: Cancellable = getattr(interaction.client.services, self.kind)  # type: ignore[attr-defined]
            if await service.cancel(self.job_id, interaction.user.id):
                text = "Cancelled."
            else:
                text = "This request has already finished (or was cancelled): nothing to cancel."
            await interaction.followup.send(text, ephemeral=True)
        except Exception as exc:
            await handle_interaction_error(interaction, exc)


def final_nonce(kind: str, job_id: int, part: int = 0) -> str:
    """The nonce of a job's final message (`part` numbers the messages after the first: each needs its
    own, or it would be answered with the first). Unique per job, stable across processes; Discord's
    nonces are at most 25 characters."""
    return f"job-{kind}-{job_id}" + (f"-{part}" if part else "")


def with_nonce(nonce: str | None) -> dict[str, Any]:
    """`send`'s nonce argument, when there is one. Left out, discord.py makes a random nonce per message;
    never pass `MISSING` (it would be sent as the text "...": one nonce for every message, and with
    `enforce_nonce` Discord would answer each later one with the first)."""
    return {"nonce": nonce} if nonce is not None else {}


async def shown_in(channel: discord.abc.Messageable, message_id: int | None, button_id: str) -> int | None:
    """`message_id` when that message (a job's public reply) already carries the button (`custom_id`) only
    the job's final message has: a stopped process showed the result there. None if not, or unreadable."""
    if message_id is None or not hasattr(channel, "fetch_message"):
        return None
    try:
        message = await channel.fetch_message(message_id)
    except discord.HTTPException:
        return None
    return message.id if has_button(message, button_id) else None


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
    replied: JobReply,
    text: str,
    *,
    placeholder_public: bool,
    keep: str | None = None,
    view: discord.ui.View | None = None,
    again: bool = False,
    told: Callable[[], Awaitable[object]] | None = None,
    told_before: bool = False,
) -> bool:
    """A background job's failure, shown only to the member who asked (errors are always ephemeral).

    A private placeholder simply becomes the error. A public one ("Writing…") is completed, the error
    follows as an ephemeral message, then the placeholder is removed, or, with `keep`, replaced by `keep` (a
    chat keeps the member's line). False when the interaction is gone (restart, expired token, Discord
    refusing) or too late in its life (`JobReply.showable`): the caller then uses DMs, with the job's nonce.

    `again`: a stopped process may have told it already (the job was found `delivering` with its ending). A
    private placeholder showing the error, or a public one already removed (the error followed it), means
    it was told, so nothing is sent. The ephemeral error after a public reply can be neither read back nor
    sent idempotently (a followup takes no nonce), so `told` records it on the job right after it is sent,
    before the placeholder is removed; `told_before`: a stopped process recorded that, and only the
    placeholder is left to remove.
    """
    if again and told_before:
        if keep is None and replied.interaction is not None:
            with contextlib.suppress(discord.HTTPException):
                await replied.interaction.delete_original_response()
        return True
    interaction = replied.interaction
    if interaction is None:
        return False
    try:
        if again and keep is None:
            try:
                original = await interaction.original_response()
            except discord.NotFound:
                if placeholder_public:
                    return True  # removed after the error followed it: told
                raise
            if not placeholder_public and original.content == text:
                return True  # the private placeholder became the error: told
        if not replied.showable:
            return False
        if not placeholder_public:
            await interaction.edit_original_response(content=text, attachments=[], view=None)
            return True
        await interaction.edit_original_response(
            content=keep if keep is not None else "…",
            view=view if keep is not None and view is not None else discord.utils.MISSING,
        )
        await interaction.followup.send(text, ephemeral=True)
    except discord.HTTPException as exc:
        log.info("could not show a job's error through its interaction (HTTP %s)", exc.status)
        return False
    await _record_told(told)
    if keep is None:
        # Removed last: a reply found removed by whoever tells this again means the error was sent. Told
        # now, whatever Discord answers.
        with contextlib.suppress(discord.HTTPException):
            await interaction.delete_original_response()
    return True


async def _record_told(told: Callable[[], Awaitable[object]] | None) -> None:
    """The error is told: a failure to record it only risks telling it twice after a stop, so it is logged."""
    if told is None:
        return
    try:
        await told()
    except Exception:
        log.warning("a job's told end could not be recorded", exc_info=True)


class DirectMessage(Protocol):
    def __call__(self, user_id: int, text: str, *, nonce: str | None = None) -> Awaitable[bool]: ...


async def report_failure(
    bot: discord.Client,
    dm: DirectMessage,
    *,
    user_id: int,
    channel_id: int | None,
    text: str,
    public: bool,
    nonce: str | None = None,
) -> bool:
    """A failure whose interaction is gone: by DM (private); only if DMs are closed and the request was
    public anyway, in the channel (mentions are disabled bot-wide, so this pings nobody). `nonce`: the
    job's `final_nonce`."""
    where = f" (asked in <#{channel_id}>)" if channel_id else ""
    if await dm(user_id, f"Your AI Horde request{where} failed: {text}", nonce=nonce):
        return True
    channel = await channel_for(bot, channel_id) if public else None
    if channel is None:
        return False
    try:
        await channel.send(f"<@{user_id}>, your AI Horde request failed: {text}"[:2000], **with_nonce(nonce))
    except discord.HTTPException:
        return False
    return True
