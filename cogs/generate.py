"""/generate, the "Remix with Horde" message menu, and the buttons on progress and result messages.

Thin: options in, `GenerationService` does the rules; this module renders progress and results. Every
button is a persistent `DynamicItem` whose custom_id carries our job row id (never the Horde's id), so it
keeps working after a restart.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any, cast

import discord
from discord import app_commands
from discord.ext import commands

from bot.bot import HordeBot, calls_horde
from bot.errors import InvalidInputError
from bot.services.generation import (
    CENSORED_NOTICE,
    GeneratedImage,
    GenerationOutcome,
    GenerationService,
    Progress,
    Submitted,
)
from bot.services.generation_options import CONTROL_TYPES, SAMPLERS, GenerateOptions
from bot.services.limits import (
    MAX_CFG,
    MAX_N,
    MAX_NAME_CHARS,
    MAX_OPTION_CHARS,
    MAX_SEED_CHARS,
    MAX_SIDE,
    MAX_STEPS,
    MAX_STRENGTH,
    MIN_CFG,
    MIN_N,
    MIN_SIDE,
    MIN_STEPS,
    MIN_STRENGTH,
)
from bot.services.presets import MAX_NAME as MAX_PRESET_NAME
from bot.ui.base import BaseDynamicButton, BaseModal
from bot.ui.delivery import (
    OUTAGE_NOTICE,
    SENT_BY_DM,
    channel_for,
    errors_stay_private,
    final_nonce,
    has_button,
    keep_reply,
    original_reply,
    retire_reply,
    shown_in,
    waiting_to_send,
)
from bot.ui.embeds import HORDE_COLOUR, format_number
from bot.ui.errors import render_error
from bot.ui.generate_options import describe_options, generate_options
from bot.ui.text import escape_user_text
from bot.ui.uploads import ImageSource

log = logging.getLogger(__name__)

ID = r"[0-9]{1,18}"
KIND = "gen"  # in the nonce of a job's final message (`final_nonce`)
MAX_FILES = 10  # Discord's limit of attachments per message
UPLOAD_HEADROOM = 64 * 1024  # room for the message's JSON and multipart framing within the upload limit
STATE_TITLES = {
    "done": "Generated on the AI Horde",
    "partial": "Partly generated on the AI Horde",
    "cancelled": "Cancelled",
    "failed": "Generation failed",
    "expired": "Generation expired",
}


def _service(interaction: discord.Interaction) -> GenerationService:
    return cast(HordeBot, interaction.client).services.generation


def _cog(interaction: discord.Interaction) -> GenerateCog | None:
    cog = cast(HordeBot, interaction.client).get_cog("GenerateCog")
    return cog if isinstance(cog, GenerateCog) else None


def _channel_is_nsfw(channel: object) -> bool:
    is_nsfw = getattr(channel, "is_nsfw", None)
    return bool(is_nsfw()) if callable(is_nsfw) else False


async def nsfw_allowed_here(interaction: discord.Interaction) -> bool:
    """Whether NSFW may be generated where the member is: the server's policy, the channel, or a DM."""
    return await cast(HordeBot, interaction.client).services.safety.nsfw_allowed(
        guild_id=interaction.guild_id,
        channel_nsfw=_channel_is_nsfw(interaction.channel),
        is_dm=interaction.guild_id is None,
    )


async def model_autocomplete(
    interaction: discord.Interaction, current: str
) -> list[app_commands.Choice[str]]:
    """The `model` option of the generation commands (NSFW models only where NSFW is allowed)."""
    services = cast(HordeBot, interaction.client).services
    allowed = await nsfw_allowed_here(interaction)
    # The catalog is kept refreshed once generation is in use (idempotent): see GenerateCog._start_catalog.
    services.model_catalog.start()
    choices = await services.model_catalog.model_choices(current, nsfw_allowed=allowed)
    return [app_commands.Choice(name=label, value=value) for label, value in choices]


async def preset_autocomplete(
    interaction: discord.Interaction, current: str
) -> list[app_commands.Choice[str]]:
    """The `preset` option: the member's presets and the server's."""
    choices = await cast(HordeBot, interaction.client).services.presets.choices(
        current, user_id=interaction.user.id, guild_id=interaction.guild_id
    )
    return [app_commands.Choice(name=label, value=value) for label, value in choices]


# --- rendering ------------------------------------------------------------------------------------------


def _eta(seconds: int) -> str:
    if seconds <= 0:
        return "soon"
    if seconds < 90:
        return f"about {seconds} s"
    return f"about {round(seconds / 60)} min"


def _waited(seconds: float) -> str:
    if seconds < 60:
        return f"{int(seconds)} s"
    return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"


def progress_embed(prompt: str, progress: Progress | None, submitted: Submitted | None) -> discord.Embed:
    embed = discord.Embed(
        title="Generating on the AI Horde…",
        description=escape_user_text(prompt, 1000),
        colour=HORDE_COLOUR,
    )
    if progress is None or progress.position is not None:
        n = submitted.n if submitted is not None else progress.n if progress is not None else 1
        position = progress.position if progress is not None else submitted.position if submitted else None
        status = waiting_to_send(position) if position is not None else "Queued"
        embed.add_field(name="Status", value=status, inline=True)
        embed.add_field(name="Images", value=f"0 of {n} finished", inline=True)
        if submitted is not None and position is None:
            embed.add_field(name="Kudos", value=format_number(submitted.kudos), inline=True)
        return embed
    if progress.outage:
        embed.add_field(name="Status", value=OUTAGE_NOTICE, inline=False)
        embed.add_field(name="Waiting for", value=_waited(progress.waited), inline=True)
        return embed
    status = "Working on it" if progress.processing else f"Queue position {progress.queue_position}"
    if not progress.is_possible:
        status += " (no worker can take it right now)"
    embed.add_field(name="Status", value=status, inline=True)
    embed.add_field(name="ETA", value=_eta(progress.wait_time), inline=True)
    embed.add_field(
        name="Images",
        value=f"{progress.finished} of {progress.n} finished, {progress.processing} in progress",
        inline=True,
    )
    embed.add_field(name="Kudos", value=format_number(progress.kudos), inline=True)
    if progress.waited >= 1:
        embed.add_field(name="Waiting for", value=_waited(progress.waited), inline=True)
    if progress.stuck:
        hint = "No worker has taken this request yet."
        if progress.free_models:
            names = ", ".join(f"`{escape_user_text(m, 100)}`" for m in progress.free_models)
            hint += f" Models with free workers right now: {names}."
        embed.add_field(name="Note", value=hint, inline=False)
    return embed


def _notices(job_notice: str | None, anonymous: bool) -> list[str]:
    lines = []
    if job_notice:
        lines.append(job_notice)
    if anonymous:
        lines.append(
            "Sent with the anonymous key: link your own with `/login` to skip the queue and earn kudos."
        )
    return lines


def result_content(outcome: GenerationOutcome) -> str:
    lines: list[str] = []
    job = outcome.job
    if outcome.state in ("failed", "expired"):
        reason = render_error(outcome.exception) if outcome.exception is not None else None
        lines.append(f"**{STATE_TITLES[outcome.state]}:** {reason or outcome.error}")
    elif outcome.state == "cancelled":
        shown = len(outcome.delivered)
        lines.append(
            f"**Cancelled.** {shown} finished image{'s' if shown != 1 else ''} "
            f"of {outcome.requested} {'are' if shown != 1 else 'is'} shown."
            if shown
            else "**Cancelled** before it was sent to the AI Horde: nothing was charged."
            if job.horde_id is None
            else "**Cancelled** before any image was finished."
        )
    elif outcome.error:
        lines.append(outcome.error)
    for image in outcome.images:
        if image.censored:
            lines.append(f"Image {image.index + 1}: {CENSORED_NOTICE}.")
        elif image.failed:
            lines.append(f"Image {image.index + 1}: could not be downloaded from the AI Horde.")
    if outcome.state in ("done", "partial"):
        lines += _notices(job.notice, False)
    return "\n".join(lines)[:2000]


def result_embed(outcome: GenerationOutcome) -> discord.Embed:
    job = outcome.job
    embed = discord.Embed(
        title=STATE_TITLES.get(outcome.state, "Generation"),
        description=escape_user_text(outcome.prompt, 1500),
        colour=HORDE_COLOUR,
    )
    params = outcome.params
    images = outcome.images
    models = sorted({i.model for i in images if i.model}) or ([job.model] if job.model else [])
    if models:
        embed.add_field(name="Model", value=escape_user_text(", ".join(models), 1000), inline=True)
    if job.style:
        embed.add_field(name="Style", value=escape_user_text(job.style, 200), inline=True)
    seeds = [i.seed for i in images if i.seed]
    if seeds:
        embed.add_field(name="Seed", value=escape_user_text(", ".join(seeds), 1000), inline=True)
    if params.get("width") and params.get("height"):
        embed.add_field(name="Size", value=f"{params['width']}×{params['height']}", inline=True)
    if params.get("steps"):
        embed.add_field(name="Steps", value=str(params["steps"]), inline=True)
    workers = sorted({i.worker_name for i in images if i.worker_name})
    if workers:
        embed.add_field(name="Worker", value=escape_user_text(", ".join(workers), 1000), inline=True)
    embed.add_field(name="Kudos", value=format_number(outcome.kudos), inline=True)
    embed.set_footer(text=f"Generation #{job.id}" + (" · anonymous key" if job.anonymous else ""))
    return embed


def _image_files(outcome: GenerationOutcome, images: list[GeneratedImage]) -> list[discord.File]:
    alt = f"AI image: {outcome.prompt}"[:1024]
    return [
        discord.File(
            io.BytesIO(image.data),
            filename=f"generation_{outcome.job.id}_{image.index + 1}.webp",
            description=alt,
        )
        for image in images
        if image.data is not None
    ]


@dataclass
class UploadPlan:
    """Which images go in the result message, which in follow-ups, and which Discord won't take."""

    first: list[GeneratedImage]
    more: list[list[GeneratedImage]]
    too_large: list[GeneratedImage]
    budget: int


def plan_uploads(outcome: GenerationOutcome, limit: int) -> UploadPlan:
    """Batches of at most 10 images and `limit` bytes (the server's upload limit, less room for the
    message itself), in order; an image larger than the limit alone can't be posted at all."""
    budget = max(1, limit - UPLOAD_HEADROOM)
    batches: list[list[GeneratedImage]] = []
    too_large: list[GeneratedImage] = []
    current: list[GeneratedImage] = []
    size = 0
    for image in outcome.delivered:
        n = len(image.data or b"")
        if n > budget:
            too_large.append(image)
            continue
        if current and (len(current) >= MAX_FILES or size + n > budget):
            batches.append(current)
            current, size = [], 0
        current.append(image)
        size += n
    if current:
        batches.append(current)
    return UploadPlan(batches[0] if batches else [], batches[1:], too_large, budget)


def result_files(
    outcome: GenerationOutcome, grid: bytes | None = None, images: list[GeneratedImage] | None = None
) -> list[discord.File]:
    alt = f"AI image: {outcome.prompt}"[:1024]
    files = _image_files(outcome, outcome.delivered[:MAX_FILES] if images is None else images)
    if grid is not None and len(files) < MAX_FILES:
        files.append(discord.File(io.BytesIO(grid), filename=grid_filename(outcome), description=alt))
    return files


def overflow_messages(
    outcome: GenerationOutcome, batches: list[list[GeneratedImage]] | None = None
) -> list[tuple[str, list[discord.File]]]:
    """Images that don't fit in the result message (Discord: 10 attachments and an upload limit per
    message), as follow-up messages."""
    if batches is None:
        rest = outcome.delivered[MAX_FILES:]
        batches = [rest[i : i + MAX_FILES] for i in range(0, len(rest), MAX_FILES)]
    return [
        (
            f"More images of generation #{outcome.job.id} "
            f"({batch[0].index + 1}–{batch[-1].index + 1} of {outcome.requested}).",
            _image_files(outcome, batch),
        )
        for batch in batches
    ]


def grid_filename(outcome: GenerationOutcome) -> str:
    return f"generation_{outcome.job.id}_grid.webp"


async def grid_for(
    service: GenerationService, outcome: GenerationOutcome, plan: UploadPlan | None = None
) -> bytes | None:
    """A preview of several images side by side, shown in the result embed (None for one image, or
    when there is no room for one more attachment in the result message)."""
    shown = outcome.delivered[:MAX_FILES] if plan is None else plan.first
    images = [image.data for image in shown if image.data is not None]
    if len(images) < 2 or len(images) >= MAX_FILES or (plan is not None and plan.more):
        return None
    try:
        grid = await service.grid_preview(images)
    except Exception:
        log.info("generation job %s: the grid preview could not be made", outcome.job.id, exc_info=True)
        return None
    if grid is not None and plan is not None and sum(map(len, images)) + len(grid) > plan.budget:
        return None
    return grid


def too_large_lines(plan: UploadPlan) -> list[str]:
    return [
        f"Image {image.index + 1}: too large to post here ({len(image.data or b'') / 1024 / 1024:.1f} MB; "
        f"this server allows {(plan.budget + UPLOAD_HEADROOM) // 1024 // 1024} MB per message)."
        for image in plan.too_large
    ]


def progress_view(job_id: int) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(CancelButton(job_id))
    return view


def result_view(outcome: GenerationOutcome) -> discord.ui.View | None:
    view = discord.ui.View(timeout=None)
    job_id = outcome.job.id
    view.add_item(RegenerateButton(job_id))
    if outcome.delivered:
        view.add_item(DeleteButton(job_id))
    if outcome.rating_id is not None:
        from cogs.ratings import generation_rate_button

        view.add_item(generation_rate_button(outcome.rating_id))
    return view


# --- persistent buttons ---------------------------------------------------------------------------------


class _GenerationButton(BaseDynamicButton, template=r"(?!x)x"):
    """A button on a generation's message: `gen:<action>:<job row id>`, parsed back after a restart."""

    def __init__(
        self,
        job_id: int,
        action: str,
        label: str,
        style: discord.ButtonStyle,
        emoji: str | None = None,
    ) -> None:
        super().__init__(
            discord.ui.Button(label=label, emoji=emoji, style=style, custom_id=f"gen:{action}:{job_id}")
        )
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> Any:
        return cls(int(match["job"]))  # type: ignore[call-arg]


class CancelButton(_GenerationButton, template=rf"gen:cancel:(?P<job>{ID})"):
    def __init__(self, job_id: int) -> None:
        super().__init__(job_id, "cancel", "Cancel", discord.ButtonStyle.danger)

    async def run(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        result = await _service(interaction).cancel(self.job_id, interaction.user.id)
        if result.already_finished:
            text = "This generation has already finished (or was cancelled): nothing to cancel."
        else:
            text = "Cancelled. Whatever was finished is shown on the message."
        await interaction.followup.send(text, ephemeral=True)


class RegenerateButton(_GenerationButton, template=rf"gen:regen:(?P<job>{ID})"):
    def __init__(self, job_id: int) -> None:
        super().__init__(job_id, "regen", "Regenerate", discord.ButtonStyle.primary, emoji="🔁")

    async def run(self, interaction: discord.Interaction) -> None:
        services = cast(HordeBot, interaction.client).services
        # A private generation's result (and so its button) is an ephemeral message: known without a
        # database read, so the acknowledgement goes first (the job is read after it).
        message = interaction.message
        private = bool(message is not None and message.flags.ephemeral)
        await interaction.response.defer(ephemeral=private, thinking=True)
        job = await services.generation.job(self.job_id)  # in memory while in flight, else one row
        cog = _cog(interaction)
        if cog is None:
            raise InvalidInputError("Image generation is not available right now.")

        async def submit() -> tuple[Submitted, str]:
            # Buttons are not commands: the safety gate the tree runs for /generate is run here.
            await services.safety.gate(user_id=interaction.user.id, guild_id=interaction.guild_id)
            submitted = await services.generation.regenerate(
                self.job_id,
                user_id=interaction.user.id,
                guild_id=interaction.guild_id,
                channel_id=interaction.channel_id,
                channel_nsfw=_channel_is_nsfw(interaction.channel),
                is_dm=interaction.guild_id is None,
            )
            prompt = job.payload.get("prompt", "") if job is not None else ""
            return submitted, str(prompt).split("###", 1)[0]

        if private:
            submitted, prompt = await submit()
        else:
            async with errors_stay_private(interaction):
                submitted, prompt = await submit()
        await cog.show_submitted(interaction, submitted, prompt)


class DeleteButton(_GenerationButton, template=rf"gen:delete:(?P<job>{ID})"):
    def __init__(self, job_id: int) -> None:
        super().__init__(job_id, "delete", "Delete", discord.ButtonStyle.secondary, emoji="🗑️")

    async def run(self, interaction: discord.Interaction) -> None:
        permissions = interaction.permissions
        moderator = bool(permissions.manage_messages) if permissions is not None else False
        await _service(interaction).check_delete(self.job_id, interaction.user.id, moderator=moderator)
        await interaction.response.defer()
        await interaction.delete_original_response()


DYNAMIC_ITEMS = (CancelButton, RegenerateButton, DeleteButton)


# --- the Remix modal ------------------------------------------------------------------------------------


class RemixModal(BaseModal, title="Remix with Horde"):
    prompt: discord.ui.TextInput[RemixModal] = discord.ui.TextInput(
        label="Prompt", custom_id="prompt", style=discord.TextStyle.paragraph, max_length=4000
    )
    strength: discord.ui.TextInput[RemixModal] = discord.ui.TextInput(
        label="Strength (0.01-1: how much to change)",
        custom_id="strength",
        required=False,
        max_length=5,
        placeholder="0.6",
    )

    def __init__(self, cog: GenerateCog, image: ImageSource) -> None:
        super().__init__("remix:modal")
        self.cog = cog
        self.image = image

    async def on_submit(self, interaction: discord.Interaction) -> None:
        raw = (self.strength.value or "").strip()
        try:
            strength = float(raw) if raw else None
        except ValueError:
            raise InvalidInputError(
                f"Strength must be a number between 0.01 and 1 (got {raw[:10]})."
            ) from None
        options = GenerateOptions(prompt=self.prompt.value, strength=strength)
        await self.cog.run(interaction, options, self.image)


# --- the cog --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Shown:
    """Kept beside a /generate's interaction token in the registry: what its progress message shows."""

    prompt: str
    submitted: Submitted


@dataclass(frozen=True)
class _OpenInteraction:
    """A job's interaction whose token still answers, with what its progress message shows."""

    interaction: discord.Interaction
    prompt: str
    submitted: Submitted


class GenerateCog(commands.Cog):
    def __init__(self, bot: HordeBot) -> None:
        self.bot = bot
        self.service: GenerationService = bot.services.generation
        self.pending = bot.replies  # keys ("image", job id)
        self.remix_menu = calls_horde(app_commands.ContextMenu(name="Remix with Horde", callback=self.remix))

    async def cog_load(self) -> None:
        self.service.deliver.plug(self.deliver)
        self.service.show_progress.plug(self.show_progress)
        self.bot.tree.add_command(self.remix_menu)
        resumed = await self.service.resume()
        if resumed:
            log.info("resumed %d generation jobs", resumed)

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self.remix_menu.name, type=self.remix_menu.type)
        self.service.engine.stop()
        self.service.deliver.unplug(self.deliver)
        self.service.show_progress.unplug(self.show_progress)

    # --- commands ---------------------------------------------------------------------------------

    @calls_horde
    @app_commands.command(name="generate", description="Generate images with the AI Horde")
    @describe_options()
    async def generate(
        self,
        interaction: discord.Interaction,
        prompt: app_commands.Range[str, 1, MAX_OPTION_CHARS],
        negative: app_commands.Range[str, 1, MAX_OPTION_CHARS] | None = None,
        model: app_commands.Range[str, 1, MAX_NAME_CHARS] | None = None,
        style: app_commands.Range[str, 1, MAX_NAME_CHARS] | None = None,
        width: app_commands.Range[int, MIN_SIDE, MAX_SIDE] | None = None,
        height: app_commands.Range[int, MIN_SIDE, MAX_SIDE] | None = None,
        steps: app_commands.Range[int, MIN_STEPS, MAX_STEPS] | None = None,
        cfg: app_commands.Range[float, MIN_CFG, MAX_CFG] | None = None,
        sampler: app_commands.Range[str, 1, 100] | None = None,
        seed: app_commands.Range[str, 1, MAX_SEED_CHARS] | None = None,
        n: app_commands.Range[int, MIN_N, MAX_N] | None = None,
        karras: bool | None = None,
        hires_fix: bool | None = None,
        tiling: bool | None = None,
        post_processing: app_commands.Range[str, 1, 1000] | None = None,
        image: discord.Attachment | None = None,
        strength: app_commands.Range[float, MIN_STRENGTH, MAX_STRENGTH] | None = None,
        control_type: app_commands.Range[str, 1, 100] | None = None,
        nsfw: bool = False,
        private: bool = False,
        preset: app_commands.Range[str, 1, MAX_PRESET_NAME] | None = None,
    ) -> None:
        options = generate_options(
            prompt,
            negative=negative,
            model=model,
            style=style,
            width=width,
            height=height,
            steps=steps,
            cfg=cfg,
            sampler=sampler,
            seed=seed,
            n=n,
            karras=karras,
            hires_fix=hires_fix,
            tiling=tiling,
            post_processing=post_processing,
            strength=strength,
            control_type=control_type,
            nsfw=nsfw,
            private=private,
        )
        await self.run(interaction, options, image, preset=preset)

    generate.autocomplete("model")(model_autocomplete)
    generate.autocomplete("preset")(preset_autocomplete)

    @generate.autocomplete("style")
    async def style_autocomplete(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        self._start_catalog()
        catalog = self.bot.services.model_catalog
        categories = (await catalog.category_choices(current))[:5]
        choices = (await catalog.style_choices(current))[: 25 - len(categories)] + categories
        return [app_commands.Choice(name=label, value=value) for label, value in choices]

    @generate.autocomplete("sampler")
    async def sampler_autocomplete(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        return _enum_choices(SAMPLERS, current)

    @generate.autocomplete("control_type")
    async def control_autocomplete(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        return _enum_choices(CONTROL_TYPES, current)

    async def remix(self, interaction: discord.Interaction, message: discord.Message) -> None:
        images = [a for a in message.attachments if _is_image(a)]
        if not images:
            raise InvalidInputError("That message has no image attached. Use it on a message with an image.")
        await interaction.response.send_modal(RemixModal(self, images[0]))

    # --- the flow ---------------------------------------------------------------------------------

    def _start_catalog(self) -> None:
        """Keep the model/style catalog refreshed once /generate is in use (idempotent). Not at load: a
        bot nobody generates with sends the Horde no catalog requests; lookups load on demand anyway."""
        self.bot.services.model_catalog.start()

    async def run(
        self,
        interaction: discord.Interaction,
        options: GenerateOptions,
        image: ImageSource | None,
        mask: ImageSource | None = None,
        *,
        preset: str | None = None,
    ) -> None:
        # Always acknowledge first: a slow or failing Horde must never leave "did not respond".
        await interaction.response.defer(ephemeral=options.private, thinking=True)
        self._start_catalog()
        if options.private:
            submitted = await self._submit(interaction, options, image, mask, preset)
        else:
            async with errors_stay_private(interaction):
                submitted = await self._submit(interaction, options, image, mask, preset)
        await self.show_submitted(interaction, submitted, options.prompt)
        # In a party's thread: a prompt without the party's words is generated, not awarded. Say so now.
        note = await self.bot.services.parties.prompt_note(
            guild_id=interaction.guild_id,
            channel_id=interaction.channel_id,
            user_id=interaction.user.id,
            prompt=options.prompt,
        )
        if note is not None:
            await interaction.followup.send(note, ephemeral=True)

    def _download(self, attachment: ImageSource | None) -> Callable[[], Awaitable[bytes]] | None:
        if attachment is None:
            return None
        limit = self.service.settings.max_upload_bytes
        if attachment.size > limit:
            # Refused before downloading: no point fetching a file that is too large anyway.
            raise InvalidInputError(
                f"That file is {attachment.size / 1024 / 1024:.1f} MB; images may be at most "
                f"{limit // 1024 // 1024} MB."
            )
        return attachment.read  # downloaded by the service once the member's slot is reserved

    async def _submit(
        self,
        interaction: discord.Interaction,
        options: GenerateOptions,
        image: ImageSource | None,
        mask: ImageSource | None = None,
        preset: str | None = None,
    ) -> Submitted:
        # The preset's options where the member typed none (each use is checked again by the builder).
        options = await self.bot.services.presets.apply(
            preset, options, user_id=interaction.user.id, guild_id=interaction.guild_id
        )
        source = self._download(image)
        mask_source = self._download(mask)
        return await self.service.submit(
            options,
            user_id=interaction.user.id,
            guild_id=interaction.guild_id,
            channel_id=interaction.channel_id,
            channel_nsfw=_channel_is_nsfw(interaction.channel),
            is_dm=interaction.guild_id is None,
            source_image=source,
            mask_image=mask_source,
        )

    async def show_submitted(
        self, interaction: discord.Interaction, submitted: Submitted, prompt: str
    ) -> None:
        self.pending.add(("image", submitted.job_id), interaction, _Shown(prompt, submitted))
        await keep_reply(self.service, submitted.job_id, interaction)
        content = "\n".join(_notices(submitted.notice, submitted.anonymous)) or None
        try:
            message = await interaction.edit_original_response(
                content=content,
                embed=progress_embed(prompt, None, submitted),
                view=progress_view(submitted.job_id),
            )
        except discord.HTTPException:
            log.info("generation job %s: could not show progress", submitted.job_id)
            return
        await self.service.attach_message(submitted.job_id, message.id)

    def _interaction(self, job_id: int) -> _OpenInteraction | None:
        pending = self.pending.get(("image", job_id))
        if pending is None or not isinstance(pending.context, _Shown):
            return None
        return _OpenInteraction(pending.interaction, pending.context.prompt, pending.context.submitted)

    async def show_progress(self, progress: Progress) -> None:
        job = progress.job
        live = self._interaction(job.id)
        prompt = live.prompt if live is not None else str(job.payload.get("prompt", "")).split("###", 1)[0]
        embed = progress_embed(prompt, progress, live.submitted if live is not None else None)
        try:
            if live is not None:
                await live.interaction.edit_original_response(embed=embed)
            elif not job.private and job.message_id is not None:
                channel = await channel_for(self.bot, job.channel_id)
                if channel is not None and hasattr(channel, "get_partial_message"):
                    await channel.get_partial_message(job.message_id).edit(embed=embed)
        except discord.HTTPException as exc:
            # A 429 (or a deleted message) on a progress edit is harmless: the next update tries again.
            log.info("generation job %s: progress edit failed (%s)", job.id, exc.status)

    async def deliver(self, outcome: GenerationOutcome) -> int | None:
        job = outcome.job
        plan = plan_uploads(outcome, self._upload_limit(job.guild_id))
        content = "\n".join([result_content(outcome), *too_large_lines(plan)]).strip()[:2000] or None
        embed = result_embed(outcome)
        if job.payload.get("source_processing"):
            # img2img: say how long Regenerate can repeat it (the source is kept apart, briefly).
            embed.add_field(name="Source image", value=self.service.source_note, inline=False)
        grid = await grid_for(self.service, outcome, plan)
        if grid is not None:
            embed.set_image(url=f"attachment://{grid_filename(outcome)}")
        view = result_view(outcome)
        replied = self.pending.for_job(
            self.bot, ("image", job.id), outcome.reply, channel_id=job.channel_id, guild_id=job.guild_id
        )
        interaction = replied.interaction
        if interaction is not None and outcome.again:
            # A stopped process may have shown it in the reply already (private ones too).
            original = await original_reply(interaction)
            if original is not None and has_button(original, f"gen:regen:{job.id}"):
                return original.id
        if interaction is not None and replied.showable:
            try:
                edited = await interaction.edit_original_response(
                    content=content,
                    embed=embed,
                    attachments=result_files(outcome, grid, plan.first),
                    view=view,
                )
                for text, files in overflow_messages(outcome, plan.more):
                    await self._send_more(
                        job.id,
                        interaction.followup.send(
                            content=text,
                            files=files,
                            ephemeral=job.private,
                            allowed_mentions=discord.AllowedMentions.none(),
                        ),
                    )
                return edited.id
            except discord.HTTPException as exc:
                log.info(
                    "generation job %s: the original reply is gone (%s); posting instead", job.id, exc.status
                )
        if not job.private:
            channel = await channel_for(self.bot, job.channel_id)
            if channel is not None:
                if outcome.again:
                    # The stopped process may have shown it in the progress message (a post in the channel
                    # is found by its nonce instead).
                    shown = await shown_in(channel, job.message_id, f"gen:regen:{job.id}")
                    if shown is not None:
                        return shown
                try:
                    message = await channel.send(
                        content=content,
                        embed=embed,
                        files=result_files(outcome, grid, plan.first),
                        view=view if view is not None else discord.utils.MISSING,
                        allowed_mentions=discord.AllowedMentions.none(),
                        nonce=final_nonce(KIND, job.id),
                    )
                    for part, (text, files) in enumerate(overflow_messages(outcome, plan.more), start=1):
                        await self._send_more(
                            job.id,
                            channel.send(
                                content=text,
                                files=files,
                                allowed_mentions=discord.AllowedMentions.none(),
                                nonce=final_nonce(KIND, job.id, part),
                            ),
                        )
                    # Retired after the post: a progress message without its Cancel button means the
                    # result is below it.
                    await self._retire_progress(channel, job.message_id)
                    return message.id
                except discord.HTTPException as exc:
                    log.info("generation job %s: could not post in the channel (%s)", job.id, exc.status)
        if await self._dm(outcome, content, embed, grid, plan) and job.private:
            await retire_reply(replied, SENT_BY_DM)
        return None

    def _upload_limit(self, guild_id: int | None) -> int:
        """Bytes a message may upload: the server's limit (boosts raise it), Discord's default in DMs."""
        guild = self.bot.get_guild(guild_id) if guild_id is not None else None
        limit = getattr(guild, "filesize_limit", None)
        return limit if isinstance(limit, int) and limit > 0 else discord.utils.DEFAULT_FILE_SIZE_LIMIT_BYTES

    async def _send_more(self, job_id: int, sending: Awaitable[object]) -> None:
        """A follow-up message of images past the first 10: one failing doesn't undo the delivery."""
        try:
            await sending
        except discord.HTTPException as exc:
            log.info("generation job %s: extra images could not be posted (%s)", job_id, exc.status)

    async def _retire_progress(self, channel: discord.abc.Messageable, message_id: int | None) -> None:
        """After a restart the old progress message still has its Cancel button: mark it finished."""
        if message_id is None or not hasattr(channel, "get_partial_message"):
            return
        with contextlib.suppress(discord.HTTPException):
            await channel.get_partial_message(message_id).edit(
                content="Finished: the result is below.", embed=None, view=None
            )

    async def _dm(
        self,
        outcome: GenerationOutcome,
        content: str | None,
        embed: discord.Embed,
        grid: bytes | None,
        plan: UploadPlan,
    ) -> bool:
        job = outcome.job
        where = (
            ""
            if job.private
            else "I couldn't post in the channel where you asked (deleted or no access), so here it is.\n"
        )
        try:
            user = self.bot.get_user(job.user_id) or await self.bot.fetch_user(job.user_id)
            await user.send(
                content=(where + (content or ""))[:2000] or None,
                embed=embed,
                files=result_files(outcome, grid, plan.first),
                allowed_mentions=discord.AllowedMentions.none(),
                nonce=final_nonce(KIND, job.id),
            )
            for part, (text, files) in enumerate(overflow_messages(outcome, plan.more), start=1):
                await self._send_more(
                    job.id,
                    user.send(
                        content=text,
                        files=files,
                        allowed_mentions=discord.AllowedMentions.none(),
                        nonce=final_nonce(KIND, job.id, part),
                    ),
                )
        except discord.HTTPException:
            log.info("generation job %s: the result could not be delivered at all", job.id)
            return False
        return True


def _enum_choices(values: tuple[str, ...], current: str) -> list[app_commands.Choice[str]]:
    needle = current.strip().casefold()
    return [app_commands.Choice(name=v, value=v) for v in values if needle in v.casefold()][:25]


def _is_image(attachment: discord.Attachment) -> bool:
    if (attachment.content_type or "").startswith("image/"):
        return True
    return PurePath(attachment.filename).suffix.lower() in (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp")


async def setup(bot: HordeBot) -> None:
    bot.add_dynamic_items(*DYNAMIC_ITEMS)
    await bot.add_cog(GenerateCog(bot))
