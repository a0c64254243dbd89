"""Typed shapes of interrogation ("alchemy") requests and results (API_NOTES §6)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from bot.horde.models import HordeRequest, HordeResponse

# Every form name the Horde accepts (swagger `ModelInterrogationFormStable.name`).
CAPTION = "caption"
INTERROGATION = "interrogation"
NSFW = "nsfw"
UPSCALERS = (
    "RealESRGAN_x4plus",
    "RealESRGAN_x2plus",
    "RealESRGAN_x4plus_anime_6B",
    "NMKD_Siax",
    "4x_AnimeSharp",
    "4xNomos8kSC",
    "4xLSDIRplus",
    "4xNomosWebPhoto_RealPLKSR",
    "4xNomos2_realplksr_dysample",
    "4xNomos2_hq_dat2",
    "2xModernSpanimationV1",
)
FACE_FIXERS = ("GFPGAN", "CodeFormers", "GFPGANv1.3", "RestoreFormer")
STRIP_BACKGROUND = "strip_background"
IMAGE_FORMS = (*UPSCALERS, *FACE_FIXERS, STRIP_BACKGROUND)


class InterrogationFormRequest(HordeRequest):
    name: str
    payload: dict[str, str] | None = None


class InterrogationRequest(HordeRequest):
    """`POST /interrogate/async` body. `source_image` is base64 WebP (or an http(s) URL)."""

    source_image: str
    forms: list[InterrogationFormRequest]
    slow_workers: bool = True


class HordeWarning(HordeResponse):
    code: str = ""
    message: str = ""


class RequestAccepted(HordeResponse):
    """The 202 answer of every `*/async` endpoint. `id` is a capability: never show it publicly."""

    id: str
    kudos: float | None = None
    message: str | None = None
    warnings: list[HordeWarning] = Field(default_factory=list)


class InterrogationFormStatus(HordeResponse):
    form: str
    state: str = "waiting"
    result: dict[str, Any] | None = None


class InterrogationStatus(HordeResponse):
    """`GET /interrogate/status/{id}`: overall state plus one entry per form."""

    state: str = "waiting"
    forms: list[InterrogationFormStatus] = Field(default_factory=list)

    @property
    def finished(self) -> bool:
        """Nothing more will happen: every form is done, faulted or cancelled."""
        return bool(self.forms) and all(f.state in ("done", "faulted", "cancelled") for f in self.forms)


class Tag(HordeResponse):
    text: str
    confidence: float = 0.0
