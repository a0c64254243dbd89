"""The options of /generate, /generate-advanced and /preset save, from Discord to `GenerateOptions`.

The three commands take many of the same options. What each option says in Discord's command picker is
written once here (`OPTION_DESCRIPTIONS`, applied with `describe_options`), and one builder
(`generate_options`) turns what a member typed into the service's `GenerateOptions`, so a new option is
described and mapped in one place: a command only declares it in its signature and passes it on.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from collections.abc import Callable
from typing import Any, TypeVar

from discord import app_commands

from bot.errors import InvalidInputError
from bot.services.generation_extras import ExtraOptions
from bot.services.generation_options import GenerateOptions

F = TypeVar("F", bound=Callable[..., Any])

# One description per option (Discord: at most 100 characters each). A command whose option means
# something else there says so in `describe_options(...)`.
OPTION_DESCRIPTIONS = {
    "prompt": "What to draw",
    "negative": "What to keep out of the picture",
    "model": "The model (start typing to search)",
    "style": "A Horde style (sets its own model and settings), or a category: one of its styles at random",
    "width": "Width in pixels, a multiple of 64",
    "height": "Height in pixels, a multiple of 64",
    "size": "WIDTHxHEIGHT in pixels, multiples of 64 (e.g. 1024x768)",
    "steps": "Sampling steps",
    "cfg": "How closely to follow the prompt (0-100, at most 2 decimals)",
    "sampler": "Sampler",
    "seed": "Seed (any text; same seed + settings = same image)",
    "seed_variation": "With several images: add this to the seed for each next image (1-1000)",
    "n": "How many images",
    "karras": "Karras noise schedule",
    "hires_fix": "Hires fix (two-pass for large sizes)",
    "hires_fix_denoising_strength": "Hires fix second-pass denoising (0.01-1)",
    "tiling": "Seamless tiling",
    "post_processing": "Face fixers/upscalers, comma-separated (at most one upscaler)",
    "facefixer_strength": "How strongly GFPGAN/CodeFormers fix faces (0-1)",
    "loras": "LoRAs (type to search), comma-separated: name or CivitAI id[=model[/clip]]; version:ID",
    "tis": "Textual inversions, comma-separated: name or id[=strength]; neg:name for the negative",
    "clip_skip": "CLIP layers to skip (1-12)",
    "transparent": "Transparent background (Layer Diffuse; SD 1.5 and SDXL models)",
    "qr_code": "Text or URL to hide in the picture as a working QR code (SD 1.5 and SDXL models)",
    "qr_position": "Where the QR code goes: X,Y in pixels from the top-left corner (default: centred)",
    "image": "A source image (img2img)",
    "mask": "Inpainting mask, same size as the image: white = repaint (else the image's transparent area)",
    "source_processing": "What to do with the image",
    "strength": "img2img denoising strength (0.01-1)",
    "control_type": "ControlNet type (needs an image)",
    "workers": "Only these workers, comma-separated ids or names (at most 5)",
    "speed": "Which workers may take it",
    "allow_downgrade": "If you lack the kudos up front, shrink steps/size instead of failing",
    "nsfw": "Allow NSFW (only in NSFW channels; elsewhere it is censored)",
    "private": "Only you see the progress and the images",
    "preset": "A saved preset (/preset save): its options, where you typed none",
}

# Which workers may take a generation: one list for /generate-advanced and /preset save, so a preset saves
# exactly the values the command accepts.
SPEED_CHOICES = [
    app_commands.Choice(name="fast workers only (costs more kudos, paid up front)", value="fast"),
    app_commands.Choice(name="any worker (default)", value="any"),
    app_commands.Choice(name="also extra-slow workers (may take long)", value="extra_slow"),
]

_NOT_OPTIONS = ("self", "interaction")
_EXTRA_FIELDS = frozenset(field.name for field in dataclasses.fields(ExtraOptions))
SIZE = re.compile(r"^\s*(\d{1,5})\s*[x×X*,]\s*(\d{1,5})\s*$")


def describe_options(**own: str) -> Callable[[F], F]:
    """`app_commands.describe` for every option of the command, from `OPTION_DESCRIPTIONS`; `own` gives
    what this command says differently and its options of its own. An option described nowhere is an
    error when the module is imported, not a blank line in Discord."""

    def decorate(func: F) -> F:
        names = [name for name in inspect.signature(func).parameters if name not in _NOT_OPTIONS]
        missing = [name for name in names if name not in own and name not in OPTION_DESCRIPTIONS]
        if missing:
            raise TypeError(f"{func.__qualname__}: no description for {', '.join(missing)}")
        shared = {name: OPTION_DESCRIPTIONS[name] for name in names if name in OPTION_DESCRIPTIONS}
        return app_commands.describe(**{**shared, **own})(func)

    return decorate


def parse_size(raw: str | None) -> tuple[int | None, int | None]:
    """`1024x768` → (1024, 768); the builder checks the range and the multiple of 64."""
    if raw is None or not raw.strip():
        return None, None
    match = SIZE.match(raw)
    if match is None:
        raise InvalidInputError(
            f"`size` is WIDTHxHEIGHT in pixels, e.g. `1024x768` (got `{raw.strip()[:20]}`)."
        )
    return int(match[1]), int(match[2])


def speed_flags(speed: str | None) -> tuple[bool | None, bool | None]:
    """(slow_workers, extra_slow_workers) for the `speed` choice."""
    if speed == "fast":
        return False, None
    if speed == "extra_slow":
        return None, True
    return None, None


def generate_options(
    prompt: str = "",
    *,
    size: str | None = None,
    speed: str | None = None,
    source_processing: str | None = None,
    **given: Any,
) -> GenerateOptions:
    """What a member typed, as the service's options: `size` and `speed` are turned into the fields they
    stand for, img2img (the default) is no `source_processing`, and the power-user fields go to
    `ExtraOptions`. `given` holds the other options by their field names."""
    if size is not None:
        given["width"], given["height"] = parse_size(size)
    given["slow_workers"], given["extra_slow_workers"] = speed_flags(speed)
    given["source_processing"] = None if source_processing == "img2img" else source_processing
    extras = {name: given.pop(name) for name in list(given) if name in _EXTRA_FIELDS}
    return GenerateOptions(prompt=prompt, **given, extras=ExtraOptions(**extras))
