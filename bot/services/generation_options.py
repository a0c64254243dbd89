"""From `/generate` options to a checked `ImageRequest`: defaults, limits, enums, styles, NSFW, img2img.

Precedence: the member's options, then the guild's settings (`GuildConfig`), then `[generation]` in
config.toml, then the model family's native size / the Horde's defaults. Every limit the Horde enforces
(API_NOTES §4, swagger `GenerationInputStable`) is checked here first, with a short message naming the
option, so a bad value never costs a round trip (or, for a shared key over its limits, a Horde 500).
Limits set by the server owner or guild (max steps, pixels, n) are checked on what will really run.

Styles. The request names the style (`style: <id>`) and the Horde applies it: the style's prompt template
gets the member's prompt in `{p}` and negative in `{np}`, and its params replace the member's except `n`
and, when the style leaves them unset, width/height (API_NOTES §10). We send the style rather than expand
it ourselves because a style's params may carry LoRAs/TIs and other fields this bot does not model, the
Horde credits the style's author, and later edits of the style apply. The same merge is mirrored here to
check the result against this server's limits and to fill `params` with what will run (for the embed).
Options the style would silently override are refused, naming them, so nobody wonders why they were ignored.
"""

from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass, field

from bot.config import GenerationDefaults
from bot.errors import InvalidInputError
from bot.horde.alchemy import UPSCALERS
from bot.horde.client import HordeClient
from bot.horde.errors import HordeError
from bot.horde.generation import (
    CONTROL_TYPES,
    POST_PROCESSORS,
    SAMPLERS,
    ImageParams,
    ImageRequest,
    ImageStyle,
)
from bot.horde.limits import (
    MAX_CFG,
    MAX_N,
    MAX_NAME_CHARS,
    MAX_PROMPT_CHARS,
    MAX_SEED_CHARS,
    MAX_SIDE,
    MAX_STEPS,
    MAX_STRENGTH,
    MIN_SIDE,
    MIN_STRENGTH,
    SIDE_STEP,
)
from bot.services import validation
from bot.services.generation_extras import ExtraOptions, apply_extras
from bot.services.guild_config import GuildConfig, GuildConfigService
from bot.services.images import ImageWorker, PreparedImage, Upload
from bot.services.loras import LoraService
from bot.services.model_catalog import CATEGORY_PREFIX, CatalogModel, ModelCatalog

# The Horde's schema limits live in `bot.horde.limits` (one source for checks and declared options).
# Extras that live in `params`, which a style replaces (top-level ones like `workers` survive a style).
STYLE_PARAM_EXTRAS = (
    "loras",
    "tis",
    "clip_skip",
    "hires_fix_denoising_strength",
    "facefixer_strength",
    "seed_variation",
    "transparent",
    "qr_code",
    "qr_position",
)
HORDE_DEFAULT_STEPS = 30
HORDE_DEFAULT_SIDE = 512
NEGATIVE_SEPARATOR = "###"


@dataclass(frozen=True)
class GenerateOptions:
    """What a member typed in `/generate` (None: not given)."""

    prompt: str
    negative: str | None = None
    model: str | None = None
    style: str | None = None
    width: int | None = None
    height: int | None = None
    steps: int | None = None
    cfg: float | None = None
    sampler: str | None = None
    seed: str | None = None
    n: int | None = None
    karras: bool | None = None
    hires_fix: bool | None = None
    tiling: bool | None = None
    post_processing: str | None = None  # comma-separated
    strength: float | None = None
    control_type: str | None = None
    nsfw: bool = False
    private: bool = False
    # The power-user fields of /generate-advanced and presets (LoRAs, TIs, QR code, inpainting...).
    extras: ExtraOptions = field(default_factory=ExtraOptions)


def _valid_cfg(value: float) -> bool:
    return 0 <= value <= MAX_CFG and _decimals_ok(value)


def _decimals_ok(value: float) -> bool:
    return abs(value * 100 - round(value * 100)) < 1e-6


def _model_defaults(
    model: CatalogModel | None, steps: int, cfg: float, sampler: str
) -> tuple[int, float, str]:
    """The server's default steps, CFG and sampler moved within what the model's reference entry requires
    (e.g. Flux Schnell: 3-8 steps, CFG 1-4, k_euler): a default that renders badly is no default."""
    if model is None:
        return steps, cfg, sampler
    if model.min_steps is not None and steps < model.min_steps:
        steps = model.min_steps
    if model.max_steps is not None and steps > model.max_steps:
        steps = model.max_steps
    if model.min_cfg is not None and cfg < model.min_cfg:
        cfg = model.min_cfg
    if model.max_cfg is not None and cfg > model.max_cfg:
        cfg = model.max_cfg
    usable = [name for name in model.samplers if name in SAMPLERS]
    if usable and sampler not in usable:
        sampler = usable[0]
    return steps, cfg, sampler


def _fit(width: float, height: float, pixels: int) -> tuple[int, int]:
    """The size with this aspect ratio, in multiples of 64, as large as possible within `pixels`."""
    scale = math.sqrt(pixels / (width * height))
    w = max(MIN_SIDE, min(MAX_SIDE, int(width * scale) // SIDE_STEP * SIDE_STEP))
    h = max(MIN_SIDE, min(MAX_SIDE, int(height * scale) // SIDE_STEP * SIDE_STEP))
    while w * h > pixels and (w > MIN_SIDE or h > MIN_SIDE):
        if w >= h and w > MIN_SIDE:
            w -= SIDE_STEP
        else:
            h -= SIDE_STEP
    return w, h


def _example_size(pixels: int) -> str:
    side = min(MAX_SIDE, max(MIN_SIDE, math.isqrt(pixels) // SIDE_STEP * SIDE_STEP))
    return f"{side}×{side}"


def _names(values: tuple[str, ...] | list[str]) -> str:
    return ", ".join(values)


def _parse_post_processing(raw: str | None) -> list[str] | None:
    if raw is None:
        return None
    wanted = [part.strip() for part in raw.split(",") if part.strip()]
    if not wanted:
        return None
    canonical = {p.casefold(): p for p in POST_PROCESSORS}
    unknown = [p for p in wanted if p.casefold() not in canonical]
    if unknown:
        shown = ", ".join(validation.quoted(p, 40) for p in unknown[:5])
        raise InvalidInputError(f"Unknown post-processing: {shown}. Choose from: {_names(POST_PROCESSORS)}.")
    chosen: list[str] = []
    for part in wanted:
        name = canonical[part.casefold()]
        if name not in chosen:
            chosen.append(name)
    upscalers = [p for p in chosen if p in UPSCALERS]
    if len(upscalers) > 1:
        raise InvalidInputError(f"Use at most 1 upscaler at a time (got {_names(upscalers)}).")
    return chosen


def _enum(value: str | None, allowed: tuple[str, ...], what: str) -> str | None:
    if value is None or not value.strip():
        return None
    canonical = {a.casefold(): a for a in allowed}
    found = canonical.get(value.strip().casefold())
    if found is None:
        raise InvalidInputError(
            f"Unknown {what} {validation.quoted(value, 40)}. Choose one of: {_names(allowed)}."
        )
    return found


def _check_side(value: int | None, what: str) -> None:
    if value is None:
        return
    _whole(value, f"{what} must be a whole number of pixels, a multiple of 64 from 64 to 3072.")
    if not MIN_SIDE <= value <= MAX_SIDE:
        raise InvalidInputError(f"{what} must be between 64 and 3072 pixels (got {value}).")
    if value % SIDE_STEP:
        raise InvalidInputError(f"{what} must be a multiple of 64 (got {value}).")


def _whole(value: object, message: str) -> None:
    """What a client sent for an integer option really is one (a hostile client can send anything)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError(message)


def _finite(value: object, message: str) -> None:
    """A number option is a real, finite number: NaN and infinities pass every `<=` check otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidInputError(message)


def check_options(options: GenerateOptions, *, has_image: bool) -> GenerateOptions:
    """Every option checked on its own, before anything else happens (no Horde call, no database write,
    no download): types, text, ranges of the Horde's schema, names of samplers and the like. Returns the
    options tidied (text stripped, blank text as None, names as the Horde spells them). The limits of this
    server, the model and the style are checked by `RequestBuilder.build`."""
    texts = {
        "negative": validation.text(options.negative, "negative", max_chars=MAX_PROMPT_CHARS),
        "model": validation.text(options.model, "model", max_chars=MAX_NAME_CHARS, single_line=True),
        "style": validation.text(options.style, "style", max_chars=MAX_NAME_CHARS, single_line=True),
        "seed": validation.text(options.seed, "seed", max_chars=10_000, single_line=True),
        "post_processing": validation.text(
            options.post_processing, "post_processing", max_chars=1000, single_line=True
        ),
        "sampler": validation.text(options.sampler, "sampler", max_chars=100, single_line=True),
        "control_type": validation.text(
            options.control_type, "control_type", max_chars=100, single_line=True
        ),
    }
    prompt = validation.text(options.prompt, "prompt", max_chars=10_000) or ""
    if not prompt:
        raise InvalidInputError("The prompt is empty: describe the picture you want.")
    if texts["negative"] and NEGATIVE_SEPARATOR in prompt:
        raise InvalidInputError(
            "Put the negative prompt either after `###` in the prompt or in `negative`, not both."
        )
    for name in ("karras", "hires_fix", "tiling", "nsfw", "private"):
        value = getattr(options, name)
        if value is not None and not isinstance(value, bool):
            raise InvalidInputError(f"`{name}` must be true or false.")
    if not has_image:
        if options.strength is not None:
            raise InvalidInputError("`strength` only applies with an `image` (it is the img2img denoising).")
        if texts["control_type"] is not None:
            raise InvalidInputError("`control_type` needs an `image` for ControlNet to follow.")
    sampler = _enum(texts["sampler"], SAMPLERS, "sampler")
    control_type = _enum(texts["control_type"], CONTROL_TYPES, "control type")
    _parse_post_processing(texts["post_processing"])
    _check_side(options.width, "Width")
    _check_side(options.height, "Height")
    if options.steps is not None:
        _whole(options.steps, f"Steps must be a whole number from 1 to {MAX_STEPS}.")
        if not 1 <= options.steps <= MAX_STEPS:
            raise InvalidInputError(f"Steps must be between 1 and {MAX_STEPS} (got {options.steps}).")
    if options.cfg is not None:
        _finite(options.cfg, "CFG must be a number from 0 to 100, with at most 2 decimals.")
        if not 0 <= options.cfg <= MAX_CFG:
            raise InvalidInputError(f"CFG must be between 0 and 100 (got {options.cfg:g}).")
        if not _decimals_ok(options.cfg):
            raise InvalidInputError(f"CFG can have at most 2 decimals (got {options.cfg!r}).")
    if options.n is not None:
        _whole(options.n, f"n must be a whole number of images from 1 to {MAX_N}.")
        if not 1 <= options.n <= MAX_N:
            raise InvalidInputError(f"n must be between 1 and {MAX_N} images (got {options.n}).")
    if options.strength is not None:
        _finite(options.strength, "Strength must be a number between 0.01 and 1.")
        if not MIN_STRENGTH <= options.strength <= MAX_STRENGTH:
            raise InvalidInputError(f"Strength must be between 0.01 and 1 (got {options.strength:g}).")
    seed = texts["seed"]
    if seed is not None and len(seed) > MAX_SEED_CHARS:
        raise InvalidInputError(f"The seed can be at most {MAX_SEED_CHARS} characters (got {len(seed)}).")
    return dataclasses.replace(
        options,
        prompt=prompt,
        negative=texts["negative"],
        model=texts["model"],
        style=texts["style"],
        seed=seed,
        post_processing=texts["post_processing"],
        sampler=sampler,
        control_type=control_type,
    )


class RequestBuilder:
    def __init__(
        self,
        catalog: ModelCatalog,
        guild_config: GuildConfigService,
        settings: GenerationDefaults,
        *,
        horde: HordeClient,
        images: ImageWorker,
        loras: LoraService | None = None,
    ) -> None:
        self._images = images  # converts an img2img source once the request's size is known
        self._loras = loras  # checks each LoRA on CivitAI as the Horde's workers would
        self._catalog = catalog
        self._guild_config = guild_config
        self.settings = settings
        self._horde = horde  # to find named workers (`workers`)
        self._random = random.Random()  # a style category's pick

    async def models_with_free_workers(self, *, exclude: str | None, limit: int) -> list[str]:
        """Models whose workers have nothing queued right now (from the catalog's cached list), most
        workers first: what a member stuck in a queue could switch to. Empty when nobody knows."""
        try:
            models = await self._catalog.models()
        except HordeError:
            return []
        free = [m.name for m in models if m.workers > 0 and m.queued == 0 and m.name != exclude]
        return free[:limit]

    async def build(
        self,
        options: GenerateOptions,
        *,
        guild_id: int | None,
        nsfw_allowed: bool,
        source_image: Upload | None = None,
        mask_image: Upload | None = None,
    ) -> ImageRequest:
        """The request to send, or InvalidInputError with the first problem found.

        An image (and its mask) is converted here, once the request's size is known: the worker resizes
        its source to that size, so a larger upload is sent shrunk to it (`prepare_image`'s `fit`)."""
        options = check_options(options, has_image=source_image is not None)
        guild = await self._guild_config.get(guild_id)
        s = self.settings
        positive, negative = options.prompt, options.negative or ""
        self._check_nsfw(options, guild, nsfw_allowed)
        sampler, control_type, seed = options.sampler, options.control_type, options.seed
        post_processing = _parse_post_processing(options.post_processing)
        max_steps, max_n, max_pixels = self._server_limits(options, guild)

        style = await self._style(options)
        if style is not None:
            self._check_style_conflicts(options, style, nsfw_allowed and guild.nsfw_policy != "off")
        model = await self._model(options, guild, style)
        if style is None and model is not None:
            self._check_model_nsfw(model, guild, nsfw_allowed)

        n = options.n if options.n is not None else min(s.default_n, max_n)
        # The model the defaults are fitted to: the chosen one, else the one most likely to run the request.
        fitted = model if model is not None or style is not None else await self._likely_model(options, guild)
        width, height = self._size(options, guild, fitted, style, source_image, max_pixels)
        if style is not None:
            params = self._style_params(style, n, width, height, max_steps)
        else:
            base_steps = min(guild.default_steps or s.default_steps, max_steps)
            default_steps, default_cfg, default_sampler = _model_defaults(
                fitted, base_steps, s.default_cfg, s.default_sampler
            )
            steps = options.steps if options.steps is not None else min(default_steps, max_steps)
            params = ImageParams(
                sampler_name=sampler or default_sampler,
                cfg_scale=options.cfg if options.cfg is not None else default_cfg,
                steps=steps,
                n=n,
                width=width,
                height=height,
                seed=seed,
                karras=options.karras if options.karras is not None else s.default_karras,
                hires_fix=options.hires_fix,
                tiling=options.tiling,
                post_processing=post_processing,
                control_type=control_type,
                clip_skip=model.clip_skip if model is not None else None,
            )
            if source_image is not None:
                params.denoising_strength = (
                    options.strength if options.strength is not None else s.default_strength
                )
        if model is not None and control_type is not None and not model.supports_controlnet:
            family = f"{model.baseline} models like " if model.baseline else ""
            raise InvalidInputError(f"ControlNet (`control_type`) does not work with {family}`{model.name}`.")
        if model is not None and options.hires_fix and not model.supports_hires_fix:
            raise InvalidInputError(f"`hires_fix` does not work with `{model.name}`; leave it out.")

        prompt = f"{positive}{NEGATIVE_SEPARATOR}{negative}" if negative else positive
        self._check_prompt_length(prompt, positive, negative, style)
        if style is not None:
            models = list(style.models)
        elif model is not None:
            models = [model.name]
        else:
            # A model the catalog could not check (Horde down) goes out as named; none means any model.
            wanted = (options.model or "").strip() or guild.default_model or s.default_model
            models = [wanted] if wanted else []
        style_ref = None
        if style is not None:
            style_ref = style.id or style.name
        elif options.style and options.style.strip():
            style_ref = options.style.strip()  # the catalog is down: the Horde will say if it is unknown
        fit = (params.width or width, params.height or height)
        source = await self._convert(source_image, fit)
        mask = await self._convert(mask_image, fit)
        request = ImageRequest(
            prompt=prompt,
            params=params,
            nsfw=options.nsfw,
            censor_nsfw=not options.nsfw,
            replacement_filter=True,
            models=models,
            source_image=source.as_base64() if source is not None else None,
            source_processing="img2img" if source is not None else None,
            style=style_ref,
        )
        await apply_extras(
            request,
            options.extras,
            horde=self._horde,
            model=model,
            source_image=source,
            mask_image=mask,
        )
        if self._loras is not None and request.params.loras:
            nsfw_here = nsfw_allowed and guild.nsfw_policy != "off"
            await self._loras.check(request.params.loras, nsfw_allowed=nsfw_here)
        return request

    async def _convert(self, upload: Upload | None, fit: tuple[int, int]) -> PreparedImage | None:
        if upload is None:
            return None
        # The header passed its checks already (`inspect_image`): these limits are the upload's own.
        return await self._images.prepare(
            upload.data, max_bytes=len(upload.data), max_side=max(upload.width, upload.height), fit=fit
        )

    async def precheck(
        self, options: GenerateOptions, *, guild_id: int | None, has_image: bool
    ) -> GenerateOptions:
        """Everything about the options that needs neither the AI Horde nor the source image: run first,
        so a bad value is refused before any download, safety check, Horde call or database write.
        `build` checks all of it again (cheap) along with the model, the style and the image."""
        options = check_options(options, has_image=has_image)
        self._server_limits(options, await self._guild_config.get(guild_id))
        return options

    def _server_limits(self, options: GenerateOptions, guild: GuildConfig) -> tuple[int, int, int]:
        """This server's limits (the guild's setting, else config.toml), checked on what was asked."""
        s = self.settings
        max_steps = guild.max_steps or s.max_steps
        max_n = guild.max_n or s.max_n
        max_pixels = guild.max_pixels or s.max_pixels
        if options.steps is not None and options.steps > max_steps:
            raise InvalidInputError(f"Steps can be at most {max_steps} on this server (got {options.steps}).")
        if options.n is not None and options.n > max_n:
            raise InvalidInputError(f"You can ask for at most {max_n} images at once here (got {options.n}).")
        return max_steps, max_n, max_pixels

    # --- parts -------------------------------------------------------------------------------------------

    async def style_name(self, style: str | None) -> str | None:
        """The name of a built request's `style` (an id once resolved), for events and messages; the value
        as sent when the catalog can't say (the Horde was unreachable at build time)."""
        if not style:
            return None
        try:
            found = await self._catalog.find_style(style)
        except HordeError:
            found = None
        return found.name if found is not None else style

    @staticmethod
    def _check_model_nsfw(model: CatalogModel, guild: GuildConfig, nsfw_allowed: bool) -> None:
        """A model the reference tags NSFW only where NSFW is allowed: the autocomplete hides it elsewhere,
        and a name typed by hand gets the same answer."""
        if not model.nsfw:
            return
        if guild.nsfw_policy == "off":
            raise InvalidInputError(
                f"`{model.name}` is an NSFW model and NSFW generation is turned off on this server: "
                "pick another model from the list that appears as you type."
            )
        if not nsfw_allowed:
            raise InvalidInputError(
                f"`{model.name}` is an NSFW model: it can only be used in NSFW (age-restricted) channels. "
                "Try again in one, or pick another model from the list that appears as you type."
            )

    @staticmethod
    def _check_nsfw(options: GenerateOptions, guild: GuildConfig, nsfw_allowed: bool) -> None:
        if not options.nsfw:
            return
        if guild.nsfw_policy == "off":
            raise InvalidInputError("NSFW generation is turned off on this server.")
        if not nsfw_allowed:
            raise InvalidInputError(
                "NSFW generation is only allowed in NSFW channels (age-restricted); try again in one."
            )

    async def _style(self, options: GenerateOptions) -> ImageStyle | None:
        wanted = (options.style or "").strip()
        if not wanted:
            return None
        if wanted.casefold().startswith(CATEGORY_PREFIX):
            return await self._category_style(wanted[len(CATEGORY_PREFIX) :].strip())
        try:
            style = await self._catalog.find_style(wanted)
        except HordeError:
            return None  # can't check now: sent by name, the Horde decides
        if style is None:
            raise InvalidInputError(
                f"Unknown style `{wanted}`. Pick one from the list that appears as you type."
            )
        return style

    async def _category_style(self, name: str) -> ImageStyle:
        """A style category (the Horde's style collection): one of its styles, picked at random."""
        try:
            collection = await self._catalog.find_collection(name)
        except HordeError:
            raise InvalidInputError(
                "The AI Horde's style categories can't be read right now: pick a single style instead."
            ) from None
        if collection is None:
            raise InvalidInputError(
                f"Unknown style category `{name[:100]}`. Pick one from the list that appears as you type."
            )
        if not collection.styles:
            raise InvalidInputError(f"The style category `{collection.name}` has no styles yet.")
        picked = self._random.choice(collection.styles)
        try:
            style = await self._catalog.find_style(picked.id or picked.name)
        except HordeError:
            style = None
        if style is None:
            # Not among the public styles this bot lists: the Horde applies it by id.
            style = ImageStyle(id=picked.id, name=picked.name or picked.id)
        return style

    @staticmethod
    def _check_style_conflicts(options: GenerateOptions, style: ImageStyle, nsfw_allowed: bool) -> None:
        if style.nsfw and not nsfw_allowed:
            raise InvalidInputError(f"The style `{style.name}` is NSFW: use it in an NSFW channel.")
        given = {
            "model": options.model,
            "steps": options.steps,
            "cfg": options.cfg,
            "sampler": options.sampler,
            "seed": options.seed,
            "karras": options.karras,
            "hires_fix": options.hires_fix,
            "tiling": options.tiling,
            "post_processing": options.post_processing,
            "strength": options.strength,
            "control_type": options.control_type,
        }
        given.update({name: True for name in options.extras.given() if name in STYLE_PARAM_EXTRAS})
        if style.params.width is not None:
            given["width"] = options.width
        if style.params.height is not None:
            given["height"] = options.height
        overridden = [name for name, value in given.items() if value is not None and str(value).strip()]
        if overridden:
            listed = ", ".join(f"`{name}`" for name in overridden)
            raise InvalidInputError(
                f"The style `{style.name}` sets its own model and settings, so {listed} would be ignored: "
                "leave them out (with a style you choose the prompt, `n` and the size if the style has none)."
            )

    async def _model(
        self, options: GenerateOptions, guild: GuildConfig, style: ImageStyle | None
    ) -> CatalogModel | None:
        """The served model to use; None for "any model" or when the catalog can't say."""
        typed = (options.model or "").strip()
        if style is not None:
            name = style.models[0] if style.models else ""
        else:
            name = typed or guild.default_model or self.settings.default_model or ""
        if not name:
            return None
        try:
            found = await self._catalog.find_model(name)
        except HordeError:
            return None  # the catalog is unavailable: let the Horde decide
        if found is not None or style is not None:
            return found
        if not typed:
            raise InvalidInputError(
                f"No worker serves this server's default model `{name}` right now: pick one with `model`."
            )
        if await self._catalog.reference_entry(name) is not None:
            raise InvalidInputError(
                f"No worker serves `{name}` right now. Pick a model from the list that appears as you type."
            )
        raise InvalidInputError(f"Unknown model `{name}`. Pick one from the list that appears as you type.")

    async def _likely_model(self, options: GenerateOptions, guild: GuildConfig) -> CatalogModel | None:
        """With no model asked for anywhere (option, server default, config), the request goes to any
        worker: the model most likely to run it is the one most workers serve (the catalog lists the
        busiest first), so the default size and steps are fitted to its family (SD 1.5 512², SDXL and
        later 1024²) instead of always 512². None when a model was named or the catalog can't say."""
        if (options.model or "").strip() or guild.default_model or self.settings.default_model:
            return None
        try:
            models = await self._catalog.models()
        except HordeError:
            return None
        return next((m for m in models if m.native_size is not None), None)

    def _size(
        self,
        options: GenerateOptions,
        guild: GuildConfig,
        model: CatalogModel | None,
        style: ImageStyle | None,
        source_image: Upload | None,
        max_pixels: int,
    ) -> tuple[int, int]:
        s = self.settings
        native = (model.native_size if model is not None else None) or HORDE_DEFAULT_SIDE
        default_w = guild.default_width or s.default_width or native
        default_h = guild.default_height or s.default_height or native
        style_w = style.params.width if style is not None else None
        style_h = style.params.height if style is not None else None
        if options.width is None and options.height is None and style_w is None and style_h is None:
            if source_image is not None:
                # Keep the image's shape: its aspect ratio at the default size's pixel count.
                width, height = _fit(
                    source_image.width, source_image.height, min(default_w * default_h, max_pixels)
                )
            else:
                width, height = default_w, default_h
            if width * height > max_pixels:
                width, height = _fit(width, height, max_pixels)
            return width, height
        width = style_w or options.width or default_w
        height = style_h or options.height or default_h
        if width * height > max_pixels:
            where = (
                f"The style `{style.name}` makes" if style is not None and (style_w or style_h) else "That is"
            )
            raise InvalidInputError(
                f"{where} {width}×{height} = {width * height:,} pixels; the limit here is {max_pixels:,} "
                f"(for example {_example_size(max_pixels)})."
            )
        return width, height

    @staticmethod
    def _style_params(style: ImageStyle, n: int, width: int, height: int, max_steps: int) -> ImageParams:
        """What the Horde will run: the style's params, with the member's n and size (API_NOTES §10)."""
        params = style.params.model_copy(deep=True)
        steps = params.steps if params.steps is not None else HORDE_DEFAULT_STEPS
        if steps > max_steps:
            raise InvalidInputError(
                f"The style `{style.name}` uses {steps} steps; the limit on this server is {max_steps}."
            )
        params.n = n
        params.width = width
        params.height = height
        return params

    @staticmethod
    def _check_prompt_length(prompt: str, positive: str, negative: str, style: ImageStyle | None) -> None:
        sent = prompt
        if style is not None:
            filled_negative = f" {NEGATIVE_SEPARATOR} {negative}" if negative else ""
            sent = style.prompt.replace("{p}", positive).replace("{np}", filled_negative)
        if len(sent) >= MAX_PROMPT_CHARS:
            what = (
                "With the style, the prompt is" if style is not None else "The prompt and negative prompt are"
            )
            raise InvalidInputError(
                f"{what} {len(sent):,} characters long; the AI Horde takes fewer than {MAX_PROMPT_CHARS:,}."
            )
