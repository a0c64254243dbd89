"""/text (one answer from a text model) and /chat (a conversation in a thread)."""

from __future__ import annotations

import io
import logging
import re
from functools import partial
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.bot import HordeBot, calls_horde
from bot.errors import UserFacingError
from bot.services.chat import MAX_MESSAGE_CHARS, ChatService
from bot.services.jobs.engine import Progress
from bot.services.limits import (
    MAX_NAME_CHARS,
    MAX_REP_PEN,
    MAX_TEMPERATURE,
    MAX_TEXT_LENGTH,
    MAX_TOP_K,
    MAX_TOP_P,
    MIN_REP_PEN,
    MIN_TEMPERATURE,
    MIN_TEXT_LENGTH,
    MIN_TOP_K,
    MIN_TOP_P,
)
from bot.services.text import TextOptions, TextOutcome, TextService, split_for_discord
from bot.ui.base import BaseDynamicButton, BaseModal
from bot.ui.delivery import (
    SENT_BY_DM,
    CancelInLineButton,
    JobReply,
    Note,
    channel_for,
    errors_stay_private,
    final_nonce,
    keep_reply,
    original_reply,
    report_failure,
    retire_reply,
    show_error_privately,
    show_note,
    show_progress_note,
    waiting_to_send,
)
from bot.ui.errors import render_error
from bot.ui.text import escape_user_text

log = logging.getLogger(__name__)

KIND = "txt"  # in the nonce of a job's final message (`final_nonce`)

DISCORD_LIMIT = 2000


def answer_messages(header: str, answer: str, max_messages: int) -> tuple[list[str], discord.File | None]:
    """The messages (each at most 2000 characters) to show an answer, or a short message and a file."""
    chunks = split_for_discord(f"{header}\n{answer}", DISCORD_LIMIT)
    if len(chunks) <= max_messages:
        return chunks, None
    file = discord.File(io.BytesIO(answer.encode()), filename="answer.txt", description="The model's answer")
    return [f"{header}\nThe answer is {len(answer):,} characters long, so it is attached as a file."], file


def member_line(content: str) -> str:
    """A chat reply's member line: its content less the italic status line below it ("*… is writing…*")."""
    return content.split("\n*", 1)[0]


class ChatReplyButton(BaseDynamicButton, template=r"chat:reply:(?P<session>[0-9]+)"):
    """A "Reply" button under each chat answer; survives restarts (our session id in the custom_id)."""

    def __init__(self, session_id: int) -> None:
        super().__init__(
            discord.ui.Button(
                label="Reply", style=discord.ButtonStyle.primary, custom_id=f"chat:reply:{session_id}"
            )
        )
        self.session_id = session_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> ChatReplyButton:
        return cls(int(match["session"]))

    async def run(self, interaction: discord.Interaction) -> None:
        cog = interaction.client.get_cog("TextCog")  # type: ignore[attr-defined]
        if not isinstance(cog, TextCog):
            raise UserFacingError("Chat is not available right now.")
        session = await cog.chat.get(self.session_id)
        if session is None or not session.active:
            raise UserFacingError("This conversation has ended. Start a new one with `/chat start`.")
        await interaction.response.send_modal(ChatReplyModal(cog, self.session_id))


class ChatReplyModal(BaseModal, title="Reply"):
    message: discord.ui.TextInput[ChatReplyModal] = discord.ui.TextInput(
        label="Your message",
        custom_id="chat:reply:message",
        style=discord.TextStyle.paragraph,
        max_length=MAX_MESSAGE_CHARS,
        required=True,
    )

    def __init__(self, cog: TextCog, session_id: int) -> None:
        super().__init__(f"chat:reply-modal:{session_id}")
        self._cog = cog
        self._session_id = session_id

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await self._cog.say(interaction, self.message.value, session_id=self._session_id)


class TextCog(commands.Cog):
    chat_group = app_commands.Group(
        name="chat", description="Talk with an AI Horde text model in a thread", guild_only=True
    )

    def __init__(self, bot: HordeBot) -> None:
        self.bot = bot
        self.text: TextService = bot.services.text
        self.chat: ChatService = bot.services.chat
        self.pending = bot.replies  # keys ("text", job id)

    async def cog_load(self) -> None:
        self.text.deliver.plug(self.deliver)
        self.text.show_progress.plug(self.show_progress)
        self.bot.add_dynamic_items(ChatReplyButton, CancelInLineButton)
        resumed = await self.text.resume()
        if resumed:
            log.info("resumed %d text jobs", resumed)

    async def cog_unload(self) -> None:
        self.bot.remove_dynamic_items(ChatReplyButton)
        self.text.engine.stop()
        self.text.deliver.unplug(self.deliver)
        self.text.show_progress.unplug(self.show_progress)

    async def model_autocomplete(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        names = await self.text.model_names(current)
        return [app_commands.Choice(name=n[:100], value=n[:100]) for n in names[:25]]

    # --- /text ------------------------------------------------------------------------------------

    @calls_horde
    @app_commands.command(name="text", description="Ask an AI Horde text model")
    @app_commands.describe(
        prompt="What to write about, or the start of the text",
        model="A text model (default: any available)",
        max_length="Longest answer, in tokens (16-4096)",
        temperature="Randomness, 0-5 (lower: more focused)",
        top_p="Nucleus sampling, 0.001-1",
        top_k="Top-k sampling, 0-200",
        rep_pen="Repetition penalty, 1-3",
        public="Show the answer to everyone (default: yes)",
    )
    @app_commands.autocomplete(model=model_autocomplete)
    async def text_command(
        self,
        interaction: discord.Interaction,
        prompt: app_commands.Range[str, 1, 6000],
        model: app_commands.Range[str, 1, MAX_NAME_CHARS] | None = None,
        max_length: app_commands.Range[int, MIN_TEXT_LENGTH, MAX_TEXT_LENGTH] | None = None,
        temperature: app_commands.Range[float, MIN_TEMPERATURE, MAX_TEMPERATURE] | None = None,
        top_p: app_commands.Range[float, MIN_TOP_P, MAX_TOP_P] | None = None,
        top_k: app_commands.Range[int, MIN_TOP_K, MAX_TOP_K] | None = None,
        rep_pen: app_commands.Range[float, MIN_REP_PEN, MAX_REP_PEN] | None = None,
        public: bool = True,
    ) -> None:
        await interaction.response.defer(ephemeral=not public, thinking=True)
        async with errors_stay_private(interaction):
            job_id = await self.text.submit(
                user_id=interaction.user.id,
                guild_id=interaction.guild_id,
                channel_id=interaction.channel_id,
                prompt=prompt,
                options=TextOptions(
                    model=model,
                    max_length=max_length,
                    temperature=temperature,
                    top_p=top_p,
                    top_k=top_k,
                    rep_pen=rep_pen,
                ),
                public=public,
            )
        await self._shown(
            interaction,
            job_id,
            Note(
                "Writing on the AI Horde… the answer will appear here.",
                lambda n: f"{waiting_to_send(n)}. The answer will appear here.",
            ),
        )

    # --- /chat ------------------------------------------------------------------------------------

    @calls_horde
    @chat_group.command(name="start", description="Start a conversation with a text model in a new thread")
    @app_commands.describe(
        model="The text model to talk with", persona="Who the bot should be (default: a helpful assistant)"
    )
    @app_commands.autocomplete(model=model_autocomplete)
    async def chat_start(
        self,
        interaction: discord.Interaction,
        model: app_commands.Range[str, 1, MAX_NAME_CHARS],
        persona: app_commands.Range[str, 1, 1000] | None = None,
    ) -> None:
        channel = interaction.channel
        if not isinstance(channel, discord.TextChannel):
            raise UserFacingError("Start a chat in a server text channel (not in a thread or DM).")
        await interaction.response.defer(ephemeral=True, thinking=True)
        # The values first (no safety check, no Horde call, no thread for a bad one).
        model, persona = self.chat.check_start(model, persona)
        if persona:
            # The persona goes into every prompt of the conversation and is shown in the thread.
            await self.bot.services.safety.check_prompt(
                guild_id=interaction.guild_id,
                user_id=interaction.user.id,
                prompt=persona,
                channel_id=interaction.channel_id,
            )
        context, answer, persona_text = await self.chat.prepare(model, persona)
        thread = await channel.create_thread(
            name=f"Chat with {model}"[:100],
            type=discord.ChannelType.public_thread,
            auto_archive_duration=1440,
        )
        session = await self.chat.open(
            guild_id=interaction.guild_id,
            thread_id=thread.id,
            owner_id=interaction.user.id,
            model=model,
            max_context_length=context,
            max_length=answer,
            persona=persona_text,
        )
        view = discord.ui.View(timeout=None)
        view.add_item(ChatReplyButton(session.id))
        await thread.send(
            f"{interaction.user.mention} started a conversation with **{escape_user_text(model, 100)}**.\n"
            f"Persona: {escape_user_text(persona_text, 1000)}\n"
            "Talk with `/chat say` here, or press **Reply**. `/chat end` ends it.",
            view=view,
        )
        await interaction.followup.send(f"Your conversation is in {thread.mention}.", ephemeral=True)

    @calls_horde
    @chat_group.command(name="say", description="Say something in this chat thread")
    @app_commands.describe(message="Your message")
    async def chat_say(
        self, interaction: discord.Interaction, message: app_commands.Range[str, 1, MAX_MESSAGE_CHARS]
    ) -> None:
        await self.say(interaction, message, session_id=None)

    @chat_group.command(name="end", description="End the conversation in this thread")
    async def chat_end(self, interaction: discord.Interaction) -> None:
        # Acknowledged first (the session is read from the database); a refusal stays private.
        await interaction.response.defer(thinking=True)
        async with errors_stay_private(interaction):
            session = await self.chat.session_for_thread(interaction.channel_id)
            perms = interaction.permissions
            await self.chat.end(
                session, interaction.user.id, can_manage=perms.manage_threads or perms.manage_messages
            )
        await interaction.followup.send("This conversation has ended. Thanks for chatting!")

    async def say(self, interaction: discord.Interaction, message: str, *, session_id: int | None) -> None:
        await interaction.response.defer(thinking=True)
        async with errors_stay_private(interaction):
            if session_id is not None:
                # The Reply button's modal is not a command, so the command tree's safety gate didn't run.
                await self.bot.services.safety.gate(
                    user_id=interaction.user.id, guild_id=interaction.guild_id
                )
            if session_id is None:
                session = await self.chat.session_for_thread(interaction.channel_id)
            else:
                found = await self.chat.get(session_id)
                if found is None:
                    raise UserFacingError("This conversation no longer exists.")
                session = found
            job_id = await self.chat.say(
                session,
                author_id=interaction.user.id,
                author_name=interaction.user.display_name,
                message=message,
                channel_id=interaction.channel_id or session.thread_id,
            )
        speaker = escape_user_text(interaction.user.display_name, 80)
        said = f"**{speaker}:** {escape_user_text(message, 1800)}"
        await self._shown(
            interaction,
            job_id,
            Note(f"{said}\n*{self.chat.bot_name} is writing…*", lambda n: f"{said}\n*{waiting_to_send(n)}…*"),
        )

    async def _shown(self, interaction: discord.Interaction, job_id: int, note: Note) -> None:
        """The job's reply: its place in line (with Cancel), or the "working on it" note. The job is on
        its way regardless, so a refused edit (e.g. a Discord 429) is logged, not shown as an error."""
        self.pending.add(("text", job_id), interaction, note)
        await keep_reply(self.text, job_id, interaction)
        await show_note(interaction, note, "text", job_id, position=self.text.position(job_id))

    async def show_progress(self, progress: Progress) -> None:
        await show_progress_note(self.pending, "text", progress)

    # --- results ----------------------------------------------------------------------------------

    async def deliver(self, outcome: TextOutcome) -> None:
        # Another process than the one that got the command (a restart, a takeover): the stored token.
        replied = self.pending.for_job(
            self.bot,
            ("text", outcome.job_id),
            outcome.reply,
            channel_id=outcome.channel_id,
            guild_id=outcome.guild_id,
        )
        interaction = replied.interaction
        view: discord.ui.View | None = None
        if outcome.chat_session_id is not None:
            view = discord.ui.View(timeout=None)
            view.add_item(ChatReplyButton(outcome.chat_session_id))
        if not outcome.ok:
            await self._deliver_error(replied, outcome, view)
            return
        model = escape_user_text(outcome.model or "a text model", 100)
        if outcome.chat_session_id is not None:
            header = f"**{self.chat.bot_name}** ({model}):"
        else:
            header = f"**{model}** answered “{escape_user_text(outcome.prompt, 150)}”:"
        messages, file = answer_messages(header, outcome.text or "", self.text.settings.split_messages)
        if (
            interaction is not None
            and outcome.again
            and await self._shown_in_reply(interaction, outcome, messages)
        ):
            return
        if (
            interaction is not None
            and replied.showable
            and await self._via_interaction(interaction, outcome, messages, file, view)
        ):
            return
        if outcome.public or outcome.chat_session_id is not None:
            channel = await channel_for(self.bot, outcome.channel_id)
            if channel is not None:
                try:
                    for index, content in enumerate(messages):
                        last = index == len(messages) - 1
                        await channel.send(
                            content,
                            file=file if last and file is not None else discord.utils.MISSING,
                            view=view if last and view is not None else discord.utils.MISSING,
                            nonce=final_nonce(KIND, outcome.job_id, index),
                        )
                    await self._retire_reply(replied, outcome, by_dm=False)
                    return
                except discord.HTTPException:
                    log.info("text job %s: could not post in the channel", outcome.job_id)
        if await self.bot.services.notifier.dm(
            outcome.user_id, messages[0][:2000], nonce=final_nonce(KIND, outcome.job_id)
        ):
            await self._retire_reply(replied, outcome, by_dm=True)
        else:
            log.info("text job %s: result could not be delivered", outcome.job_id)

    async def _retire_reply(self, replied: JobReply, outcome: TextOutcome, *, by_dm: bool) -> None:
        """The answer went by the job's nonce late in its token's life (`retire_reply`): a chat's reply
        keeps the member's line, a public one posted below is removed, else it says the DM has it."""
        if replied.interaction is None or replied.showable:
            return
        note: str | None = SENT_BY_DM if by_dm else None
        if outcome.chat_session_id is not None:
            original = await original_reply(replied.interaction)
            note = member_line(original.content) if original is not None else None
            if not note:
                return
        await retire_reply(replied, note)

    async def _deliver_error(
        self, replied: JobReply, outcome: TextOutcome, view: discord.ui.View | None
    ) -> None:
        """Errors are only for the member who asked, whether the request was public or not."""
        error = (render_error(outcome.exception) if outcome.exception is not None else None) or str(
            outcome.error
        )
        keep: str | None = None
        if replied.interaction is not None and outcome.chat_session_id is not None:
            try:
                # The member's line stays in the thread (without "writing…"), with the Reply button.
                keep = member_line((await replied.interaction.original_response()).content) or None
            except discord.HTTPException:
                replied.interaction = None
        placeholder_public = outcome.public or outcome.chat_session_id is not None
        if await show_error_privately(
            replied,
            error,
            placeholder_public=placeholder_public,
            keep=keep,
            view=view,
            again=outcome.again,
            told=partial(self.text.told, outcome.job_id),
            told_before=outcome.job.told_at is not None,
        ):
            return
        if await report_failure(
            self.bot,
            self.bot.services.notifier.dm,
            user_id=outcome.user_id,
            channel_id=outcome.channel_id,
            text=error,
            public=placeholder_public,
            nonce=final_nonce(KIND, outcome.job_id),
        ):
            # A chat keeps the member's line; a public reply is removed once the error was told.
            await retire_reply(
                replied, keep if keep is not None else None if placeholder_public else SENT_BY_DM
            )
        else:
            log.info("text job %s: the error could not be delivered", outcome.job_id)

    async def _shown_in_reply(
        self, interaction: discord.Interaction, outcome: TextOutcome, messages: list[str]
    ) -> bool:
        """A stopped process may have shown the answer in the reply already (private ones too): its first
        message is there, or, in a chat, the reply was cut back to the member's line before the answer
        followed it (`_via_interaction`)."""
        original = await original_reply(interaction)
        if original is None:
            return False
        if messages[0] in original.content:
            return True
        return outcome.chat_session_id is not None and "\n*" not in original.content

    async def _via_interaction(
        self,
        interaction: discord.Interaction,
        outcome: TextOutcome,
        messages: list[str],
        file: discord.File | None,
        view: discord.ui.View | None,
    ) -> bool:
        try:
            first = messages[0]
            if outcome.chat_session_id is not None:
                # Keep the member's line visible above the answer.
                original = await interaction.original_response()
                said = member_line(original.content)
                if len(said) + len(first) + 1 <= DISCORD_LIMIT and len(messages) == 1:
                    first = f"{said}\n{first}"
                    messages = [first]
                else:
                    await interaction.edit_original_response(content=said)
                    for index, content in enumerate(messages):
                        last = index == len(messages) - 1
                        await interaction.followup.send(
                            content,
                            ephemeral=False,
                            file=file if last and file is not None else discord.utils.MISSING,
                            view=view if last and view is not None else discord.utils.MISSING,
                        )
                    return True
            single = len(messages) == 1
            await interaction.edit_original_response(
                content=first,
                attachments=[file] if single and file is not None else [],
                view=view if single and view is not None else None,
            )
            for index, content in enumerate(messages[1:], start=1):
                last = index == len(messages) - 1
                await interaction.followup.send(
                    content,
                    ephemeral=not outcome.public,
                    file=file if last and file is not None else discord.utils.MISSING,
                    view=view if last and view is not None else discord.utils.MISSING,
                )
            return True
        except discord.HTTPException:
            log.info("text job %s: the interaction is gone; posting instead", outcome.job_id)
            return False


async def setup(bot: HordeBot) -> None:
    await bot.add_cog(TextCog(bot))
