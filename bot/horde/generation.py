"""Typed shapes of image generation (swagger `GenerationInputStable`, `RequestStatusStable`; API_NOTES §4).

Send requests with `ImageRequest.payload()`; the API key travels in a header, never in these models.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from bot.horde.alchemy import FACE_FIXERS, STRIP_BACKGROUND, UPSCALERS
from bot.horde.models import HordeRequest, HordeResponse, RequestProgress

SAMPLERS = (
    "k_euler_a",
    "k_euler",
    "k_dpmpp_2m",
    "k_dpmpp_sde",
    "k_dpmpp_2s_a",
    "k_dpm_2_a",
    "k_dpm_2",
    "k_dpm_fast",
    "k_dpm_adaptive",
    "k_lms",
    "k_heun",
    "dpmsolver",
    "lcm",
    "DDIM",
)
CONTROL_TYPES = ("canny", "hed", "depth", "normal", "openpose", "seg", "scribble", "fakescribbles", "hough")
# The Horde's post-processors are one list (bot.horde.alchemy): alchemy runs them alone, a generation after
# drawing. A generation takes at most one of the UPSCALERS (the others fix faces or remove the background).
POST_PROCESSORS = (*FACE_FIXERS, *UPSCALERS, STRIP_BACKGROUND)
SourceProcessing = Literal["img2img", "inpainting", "outpainting", "remix"]
ANONYMOUS_KEY = "0000000000"


class Lora(HordeResponse):
    """One of `params.loras` (≤5): a CivitAI model id or name, or with `is_version` a version id."""

    name: str
    model: float | None = None  # strength on the SD model, -5..5 (the Horde's default 1)
    clip: float | None = None  # strength on CLIP, -5..5
    is_version: bool | None = None


class TextualInversion(HordeResponse):
    """One of `params.tis` (≤20); `inject_ti` adds it to the prompt or negative prompt at `strength`."""

    name: str
    inject_ti: Literal["prompt", "negprompt"] | None = None
    strength: float | None = None


class ExtraText(HordeResponse):
    """One of `params.extra_texts`: text a workflow uses, by `reference` (e.g. `qr_code`, `x_offset`)."""

    text: str
    reference: str


class ImageParams(HordeResponse):
    sampler_name: str | None = None
    cfg_scale: float | None = None
    denoising_strength: float | None = None
    hires_fix_denoising_strength: float | None = None
    seed: str | None = None
    height: int | None = None
    width: int | None = None
    post_processing: list[str] | None = None
    karras: bool | None = None
    tiling: bool | None = None
    hires_fix: bool | None = None
    clip_skip: int | None = None
    control_type: str | None = None
    image_is_control: bool | None = None
    steps: int | None = None
    n: int | None = None
    facefixer_strength: float | None = None
    seed_variation: int | None = None
    loras: list[Lora] | None = None
    tis: list[TextualInversion] | None = None
    transparent: bool | None = None
    workflow: Literal["qr_code"] | None = None
    extra_texts: list[ExtraText] | None = None


class ImageRequest(HordeRequest):
    """`POST /generate/async` body."""

    prompt: str  # "positive###negative"
    params: ImageParams = Field(default_factory=ImageParams)
    nsfw: bool = False
    censor_nsfw: bool = True
    models: list[str] = Field(default_factory=list)
    source_image: str | None = None  # base64 WebP
    source_processing: SourceProcessing | None = None
    r2: bool = True
    shared: bool | None = None
    replacement_filter: bool = True
    trusted_workers: bool | None = None
    slow_workers: bool | None = None
    extra_slow_workers: bool | None = None
    allow_downgrade: bool | None = None
    workers: list[str] | None = None  # worker ids (≤5) allowed to take the request
    source_mask: str | None = None  # base64 WebP; for inpainting/outpainting (else the source's alpha)
    style: str | None = None

    def payload(self) -> dict[str, object]:
        return self.model_dump(exclude_none=True)


class ImageCheck(RequestProgress):
    """`GET /generate/check/{id}`: the cheap poll (2 per second per IP)."""


class GenerationMetadata(HordeResponse):
    type: str = ""
    value: str = ""
    ref: str | None = None


class ImageGeneration(HordeResponse):
    img: str = ""  # an R2 URL (valid 30 minutes: download, never post it) or base64 WebP
    seed: str = ""
    id: str = ""
    censored: bool = False
    worker_id: str | None = None
    worker_name: str | None = None
    model: str | None = None
    state: str = "ok"
    gen_metadata: list[GenerationMetadata] = Field(default_factory=list)

    @property
    def is_url(self) -> bool:
        return self.img.startswith(("http://", "https://"))


class ImageStatus(ImageCheck):
    """`GET /generate/status/{id}`: carries the images; at most 10 calls a minute per request id."""

    generations: list[ImageGeneration] = Field(default_factory=list)
    shared: bool | None = None


class StyleShort(HordeResponse):
    name: str = ""
    id: str = ""


class StyleCollection(HordeResponse):
    """One entry of `GET /collections`: a named set of styles (the other Horde bot's "style categories")."""

    id: str = ""
    name: str
    type: str = "image"
    info: str | None = None
    styles: list[StyleShort] = Field(default_factory=list)
    use_count: int = 0


class ImageStyle(HordeResponse):
    """One entry of `GET /styles/image` (prompt template uses `{p}` and `{np}`)."""

    id: str = ""
    name: str
    info: str | None = None
    prompt: str = "{p}{np}"
    params: ImageParams = Field(default_factory=ImageParams)
    models: list[str] = Field(default_factory=list)
    nsfw: bool = False
    tags: list[str] = Field(default_factory=list)
    use_count: int = 0
    creator: str | None = None
