"""Alchemy: "Describe image" (message menu), /describe, /upscale, /facefix, /nsfwcheck."""

from __future__ import annotations

import io
import logging
from functools import partial
from pathlib import PurePath

import discord
from discord import app_commands
from discord.ext import commands

from bot.bot import HordeBot, calls_horde
from bot.errors import InvalidInputError
from bot.services.alchemy import Action, AlchemyOutcome, AlchemyService, form_label, forms
from bot.services.jobs.engine import Progress
from bot.ui.delivery import (
    SENT_BY_DM,
    CancelInLineButton,
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
from bot.ui.uploads import ImageSource

log = logging.getLogger(__name__)

KIND = "alc"  # in the nonce of a job's final message (`final_nonce`)

UPSCALER_CHOICES = [app_commands.Choice(name=name, value=name) for name in forms.UPSCALERS]
FIXER_CHOICES = [app_commands.Choice(name=name, value=name) for name in forms.FACE_FIXERS]
WORKING = {
    "describe": "Describing your image on the AI Horde…",
    "upscale": "Upscaling your image on the AI Horde…",
    "facefix": "Fixing faces in your image on the AI Horde…",
    "nsfwcheck": "Checking the image on the AI Horde…",
    "strip_background": "Removing the background of your image on the AI Horde…",
}
VERBS = {"upscale": "Upscaled", "facefix": "Faces fixed", "strip_background": "Background removed"}
SUFFIXES = {"upscale": "upscaled", "facefix": "facefixed", "strip_background": "nobg"}
MAX_TAGS_SHOWN = 15


def alt_text(caption: str) -> str:
    """A caption as alt text: a capitalised sentence."""
    text = " ".join(caption.split())
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".!?" else text + "."


def render_outcome(outcome: AlchemyOutcome) -> str:
    if not outcome.ok:
        shown = render_error(outcome.exception) if outcome.exception is not None else None
        return shown or str(outcome.error)
    lines: list[str] = []
    if outcome.action == "describe":
        if outcome.caption:
            lines.append(f"**Alt text:** {escape_user_text(alt_text(outcome.caption), 1500)}")
        if outcome.tags:
            shown = ", ".join(
                f"{escape_user_text(t.text, 60)} ({t.confidence:.0%})" for t in outcome.tags[:MAX_TAGS_SHOWN]
            )
            lines.append(f"**Tags:** {shown}")
    elif outcome.action == "nsfwcheck":
        if outcome.nsfw is True:
            lines.append("**NSFW check:** the AI Horde's classifier flags this image as NSFW.")
        elif outcome.nsfw is False:
            lines.append("**NSFW check:** the AI Horde's classifier does not flag this image.")
    else:
        verb = VERBS.get(outcome.action, "Processed")
        if outcome.image is not None:
            lines.append(f"{verb} with {outcome.image_form}.")
        elif outcome.image_url:
            lines.append(
                f"{verb} with {outcome.image_form}, but the file is too large to attach here. "
                f"Download it within 30 minutes: {outcome.image_url}"
            )
    if outcome.failed_forms:
        names = ", ".join(form_label(f) for f in outcome.failed_forms)
        lines.append(f"(The {names} could not be finished by the AI Horde's workers.)")
    return "\n".join(lines) or "The AI Horde finished, but sent nothing to show."


def tags_text(outcome: AlchemyOutcome) -> str:
    """Every tag with the model's confidence, most confident first: the detailed interrogation."""
    lines = ["tag\tconfidence"] + [f"{' '.join(t.text.split())}\t{t.confidence:.4f}" for t in outcome.tags]
    return "\n".join(lines) + "\n"


def result_file(outcome: AlchemyOutcome) -> discord.File | None:
    stem = PurePath(outcome.filename).stem[:60] or "image"
    if outcome.action == "describe" and outcome.tags:
        return discord.File(
            io.BytesIO(tags_text(outcome).encode()),
            filename=f"{stem}_tags.tsv",
            description=f"All {len(outcome.tags)} tags of {outcome.filename[:60]} with their confidence"[
                :1024
            ],
        )
    if outcome.image is None:
        return None
    suffix = SUFFIXES.get(outcome.action, "processed")
    return discord.File(
        io.BytesIO(outcome.image),
        filename=f"{stem}_{suffix}.webp",
        description=f"{outcome.filename[:60]}, processed with {outcome.image_form}"[:1024],
    )


class AlchemyCog(commands.Cog):
    def __init__(self, bot: HordeBot) -> None:
        self.bot = bot
        self.alchemy: AlchemyService = bot.services.alchemy
        self.pending = bot.replies  # keys ("alchemy", job id)
        self.describe_menu = calls_horde(
            app_commands.ContextMenu(name="Describe image", callback=self.describe_message)
        )

    async def cog_load(self) -> None:
        self.alchemy.deliver.plug(self.deliver)
        self.alchemy.show_progress.plug(self.show_progress)
        self.bot.add_dynamic_items(CancelInLineButton)
        self.bot.tree.add_command(self.describe_menu)
        resumed = await self.alchemy.resume()
        if resumed:
            log.info("resumed %d alchemy jobs", resumed)

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self.describe_menu.name, type=self.describe_menu.type)
        self.alchemy.engine.stop()
        self.alchemy.deliver.unplug(self.deliver)
        self.alchemy.show_progress.unplug(self.show_progress)

    # --- commands ---------------------------------------------------------------------------------

    async def describe_message(self, interaction: discord.Interaction, message: discord.Message) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        images = [
            a
            for a in message.attachments
            if (a.content_type or "").startswith("image/") or _looks_like_image(a)
        ]
        if not images:
            raise InvalidInputError("That message has no image attached. Use it on a message with an image.")
        await self._run(interaction, images[0], "describe", public=False)

    @calls_horde
    @app_commands.command(name="describe", description="Alt text (a caption) for an image, from the AI Horde")
    @app_commands.describe(
        image="The image to describe",
        tags="Also list tags with the model's confidence (all of them in an attached file)",
        public="Show the answer to everyone (default: only you)",
    )
    async def describe(
        self,
        interaction: discord.Interaction,
        image: discord.Attachment,
        tags: bool = False,
        public: bool = False,
    ) -> None:
        await interaction.response.defer(ephemeral=not public, thinking=True)
        await self._run(interaction, image, "describe", public=public, tags=tags)

    @calls_horde
    @app_commands.command(name="upscale", description="Upscale an image on the AI Horde")
    @app_commands.describe(image="The image to upscale", upscaler="Which upscaler (default: RealESRGAN x4)")
    @app_commands.choices(upscaler=UPSCALER_CHOICES)
    async def upscale(
        self, interaction: discord.Interaction, image: discord.Attachment, upscaler: str | None = None
    ) -> None:
        await interaction.response.defer(thinking=True)
        await self._run(interaction, image, "upscale", public=True, upscaler=upscaler)

    @calls_horde
    @app_commands.command(name="facefix", description="Fix faces in an image on the AI Horde")
    @app_commands.describe(image="The image to fix", fixer="Which face fixer (default: CodeFormers)")
    @app_commands.choices(fixer=FIXER_CHOICES)
    async def facefix(
        self, interaction: discord.Interaction, image: discord.Attachment, fixer: str | None = None
    ) -> None:
        await interaction.response.defer(thinking=True)
        await self._run(interaction, image, "facefix", public=True, fixer=fixer)

    @calls_horde
    @app_commands.command(
        name="strip-background", description="Remove the background of an image on the AI Horde"
    )
    @app_commands.describe(image="The image (the result is transparent where the background was)")
    async def strip_background(self, interaction: discord.Interaction, image: discord.Attachment) -> None:
        await interaction.response.defer(thinking=True)
        await self._run(interaction, image, "strip_background", public=True)

    @calls_horde
    @app_commands.command(
        name="nsfwcheck", description="Moderators: ask the AI Horde whether an image is NSFW"
    )
    @app_commands.describe(image="The image to check")
    @app_commands.default_permissions(manage_messages=True)
    @app_commands.guild_only()
    async def nsfwcheck(self, interaction: discord.Interaction, image: discord.Attachment) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        await self._run(interaction, image, "nsfwcheck", public=False)

    async def _run(
        self,
        interaction: discord.Interaction,
        attachment: ImageSource,
        action: Action,
        *,
        public: bool,
        tags: bool = False,
        upscaler: str | None = None,
        fixer: str | None = None,
    ) -> None:
        if public:
            async with errors_stay_private(interaction):
                job_id = await self._submit(interaction, attachment, action, public, tags, upscaler, fixer)
        else:
            job_id = await self._submit(interaction, attachment, action, public, tags, upscaler, fixer)
        note = Note(
            f"{WORKING[action]} This message will show the result (usually within a minute).",
            lambda n: f"{waiting_to_send(n)}. This message will show the result.",
        )
        self.pending.add(("alchemy", job_id), interaction, note)
        await keep_reply(self.alchemy, job_id, interaction)
        # The job is on its way regardless: a refused edit (e.g. a Discord 429) is logged, not an error.
        await show_note(interaction, note, "alchemy", job_id, position=self.alchemy.position(job_id))

    async def show_progress(self, progress: Progress) -> None:
        await show_progress_note(self.pending, "alchemy", progress)

    # For other cogs (the "Describe avatar" user menu): the same flow as the commands.
    run_action = _run

    async def _submit(
        self,
        interaction: discord.Interaction,
        attachment: ImageSource,
        action: Action,
        public: bool,
        tags: bool,
        upscaler: str | None,
        fixer: str | None,
    ) -> int:
        # The options first (no download, no Horde call for a bad one); the service checks them again.
        self.alchemy.forms_for(action, tags=tags, upscaler=upscaler, fixer=fixer)
        limit = self.alchemy.settings.max_upload_bytes
        if attachment.size > limit:
            # Refused before downloading: no point fetching a file that is too large anyway.
            raise InvalidInputError(
                f"That file is {attachment.size / 1024 / 1024:.1f} MB; images may be at most "
                f"{limit // 1024 // 1024} MB."
            )
        # Checked and converted once: the NSFW check and the request send the same image.
        source_image = await self.alchemy.prepare(await attachment.read())
        if action == "describe":
            # Guilds can have images checked for NSFW before a caption is shown (`alchemy_nsfw_check`).
            await self.bot.services.safety.check_image_safe(
                guild_id=interaction.guild_id,
                user_id=interaction.user.id,
                source_image=source_image,
                channel_nsfw=_channel_is_nsfw(interaction.channel),
                is_dm=interaction.guild_id is None,
            )
        return await self.alchemy.submit(
            user_id=interaction.user.id,
            guild_id=interaction.guild_id,
            channel_id=interaction.channel_id,
            source_image=source_image,
            filename=attachment.filename,
            action=action,
            public=public,
            tags=tags,
            upscaler=upscaler,
            fixer=fixer,
        )

    # --- results ----------------------------------------------------------------------------------

    async def deliver(self, outcome: AlchemyOutcome) -> None:
        text = render_outcome(outcome)
        file = result_file(outcome)
        # Another process than the one that got the command (a restart, a takeover): the stored token.
        replied = self.pending.for_job(
            self.bot,
            ("alchemy", outcome.job_id),
            outcome.reply,
            channel_id=outcome.channel_id,
            guild_id=outcome.guild_id,
        )
        interaction = replied.interaction
        if not outcome.ok:
            # Errors are only for the member who asked, even when the result would have been public.
            shown = await show_error_privately(
                replied,
                text,
                placeholder_public=outcome.public,
                again=outcome.again,
                told=partial(self.alchemy.told, outcome.job_id),
                told_before=outcome.job.told_at is not None,
            )
            if shown:
                return
            if await report_failure(
                self.bot,
                self.bot.services.notifier.dm,
                user_id=outcome.user_id,
                channel_id=outcome.channel_id,
                text=text,
                public=outcome.public,
                nonce=final_nonce(KIND, outcome.job_id),
            ):
                await retire_reply(replied, None if outcome.public else SENT_BY_DM)
            else:
                log.info("alchemy job %s: the error could not be delivered", outcome.job_id)
            return
        if interaction is not None and outcome.again:
            # A stopped process may have shown it in the reply already (private ones too).
            original = await original_reply(interaction)
            if original is not None and original.content == text:
                return
        if interaction is not None and replied.showable:
            try:
                await interaction.edit_original_response(
                    content=text, attachments=[file] if file is not None else []
                )
                return
            except discord.HTTPException:
                log.info("alchemy job %s: the original reply is gone; posting instead", outcome.job_id)
                file = result_file(outcome)
        if outcome.public:
            channel = await channel_for(self.bot, outcome.channel_id)
            if channel is not None:
                try:
                    await channel.send(
                        f"<@{outcome.user_id}>, your request is done:\n{text}",
                        file=file if file is not None else discord.utils.MISSING,
                        nonce=final_nonce(KIND, outcome.job_id),
                    )
                    await retire_reply(replied, None)
                    return
                except discord.HTTPException:
                    log.info("alchemy job %s: could not post in the channel", outcome.job_id)
        if await self.bot.services.notifier.dm(
            outcome.user_id, text[:2000], nonce=final_nonce(KIND, outcome.job_id)
        ):
            await retire_reply(replied, SENT_BY_DM)
        else:
            log.info("alchemy job %s: result could not be delivered", outcome.job_id)


def _channel_is_nsfw(channel: object) -> bool:
    """Age-restricted channel (threads follow their parent)."""
    is_nsfw = getattr(channel, "is_nsfw", None)
    return bool(is_nsfw()) if callable(is_nsfw) else False


def _looks_like_image(attachment: discord.Attachment) -> bool:
    return PurePath(attachment.filename).suffix.lower() in (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp")


async def setup(bot: HordeBot) -> None:
    await bot.add_cog(AlchemyCog(bot))
