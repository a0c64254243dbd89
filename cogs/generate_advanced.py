"""/generate-advanced: /generate with the power-user fields (LoRAs, TIs, QR code, inpainting, workers...).

Discord allows 25 options per command and /generate is near that, so the fields of issue #16 live here;
the rules are the same service (`GenerationService.submit` → `RequestBuilder` → `generation_extras`), and
the progress, result and buttons are /generate's.
"""

from __future__ import annotations

from typing import cast

import discord
from discord import app_commands
from discord.ext import commands

from bot.bot import HordeBot, calls_horde
from bot.errors import InvalidInputError
from bot.services.generation_extras import (
    MAX_LORAS_CHARS,
    MAX_QR_POSITION_CHARS,
    MAX_QR_TEXT,
    MAX_TIS_CHARS,
    MAX_WORKERS_CHARS,
)
from bot.services.limits import MAX_NAME_CHARS
from bot.services.presets import MAX_NAME as MAX_PRESET_NAME
from bot.ui.generate_options import SPEED_CHOICES, describe_options, generate_options
from cogs.generate import GenerateCog, model_autocomplete, nsfw_allowed_here, preset_autocomplete


async def lora_autocomplete(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
    """The `loras` field: the Horde's curated LoRAs and CivitAI's search for the entry being typed (NSFW
    ones only where NSFW is allowed); picking one puts its CivitAI id after the entries already typed."""
    services = cast(HordeBot, interaction.client).services
    allowed = await nsfw_allowed_here(interaction)
    choices = await services.loras.choices(current, nsfw_allowed=allowed)
    return [app_commands.Choice(name=label, value=value) for label, value in choices]


class GenerateAdvancedCog(commands.Cog):
    def __init__(self, bot: HordeBot) -> None:
        self.bot = bot

    @calls_horde
    @app_commands.command(
        name="generate-advanced",
        description="Generate with LoRAs, textual inversions, QR codes, inpainting and other power options",
    )
    @describe_options(
        # No `negative` option here (the command has Discord's 25 options): the prompt carries it.
        prompt="What to draw; add ### and what to keep out (the negative prompt)",
        image="A source image (img2img, or what to inpaint/outpaint)",
        # No `hires_fix` option here either: giving its strength turns it on.
        hires_fix_denoising_strength="Turns on hires fix with this second-pass denoising (0.01-1)",
    )
    @app_commands.choices(
        source_processing=[
            app_commands.Choice(name="img2img (default)", value="img2img"),
            app_commands.Choice(name="inpainting (repaint the masked area)", value="inpainting"),
            app_commands.Choice(name="outpainting (extend into the transparent area)", value="outpainting"),
        ],
        speed=SPEED_CHOICES,
    )
    async def generate_advanced(
        self,
        interaction: discord.Interaction,
        prompt: app_commands.Range[str, 1, 6000],
        model: app_commands.Range[str, 1, MAX_NAME_CHARS] | None = None,
        loras: app_commands.Range[str, 1, MAX_LORAS_CHARS] | None = None,
        tis: app_commands.Range[str, 1, MAX_TIS_CHARS] | None = None,
        clip_skip: app_commands.Range[int, 1, 12] | None = None,
        n: app_commands.Range[int, 1, 20] | None = None,
        seed: app_commands.Range[str, 1, 256] | None = None,
        seed_variation: app_commands.Range[int, 1, 1000] | None = None,
        size: app_commands.Range[str, 3, 20] | None = None,
        steps: app_commands.Range[int, 1, 500] | None = None,
        hires_fix_denoising_strength: app_commands.Range[float, 0.01, 1.0] | None = None,
        post_processing: app_commands.Range[str, 1, 300] | None = None,
        facefixer_strength: app_commands.Range[float, 0.0, 1.0] | None = None,
        transparent: bool | None = None,
        qr_code: app_commands.Range[str, 1, MAX_QR_TEXT] | None = None,
        qr_position: app_commands.Range[str, 3, MAX_QR_POSITION_CHARS] | None = None,
        image: discord.Attachment | None = None,
        mask: discord.Attachment | None = None,
        source_processing: str | None = None,
        strength: app_commands.Range[float, 0.01, 1.0] | None = None,
        workers: app_commands.Range[str, 1, MAX_WORKERS_CHARS] | None = None,
        speed: str | None = None,
        allow_downgrade: bool | None = None,
        nsfw: bool = False,
        preset: app_commands.Range[str, 1, MAX_PRESET_NAME] | None = None,
    ) -> None:
        options = generate_options(
            prompt,
            model=model,
            size=size,
            steps=steps,
            seed=seed,
            n=n,
            hires_fix=True if hires_fix_denoising_strength is not None else None,
            post_processing=post_processing,
            strength=strength,
            nsfw=nsfw,
            loras=loras,
            tis=tis,
            clip_skip=clip_skip,
            hires_fix_denoising_strength=hires_fix_denoising_strength,
            facefixer_strength=facefixer_strength,
            seed_variation=seed_variation,
            transparent=transparent,
            workers=workers,
            speed=speed,
            allow_downgrade=allow_downgrade,
            qr_code=qr_code,
            qr_position=qr_position,
            source_processing=source_processing,
        )
        cog = self.bot.get_cog("GenerateCog")
        if not isinstance(cog, GenerateCog):
            raise InvalidInputError("Image generation is not available right now.")
        await cog.run(interaction, options, image, mask, preset=preset)

    generate_advanced.autocomplete("loras")(lora_autocomplete)
    generate_advanced.autocomplete("model")(model_autocomplete)
    generate_advanced.autocomplete("preset")(preset_autocomplete)


async def setup(bot: HordeBot) -> None:
    await bot.add_cog(GenerateAdvancedCog(bot))
