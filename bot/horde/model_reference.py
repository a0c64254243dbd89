"""The Horde's image model reference: what each model is (baseline, NSFW, description, requirements).

It is a JSON file kept outside the API (`horde.model_reference_url`, by default on GitHub), keyed by model
name. `GET /status/models` only says which models have workers right now; this file says what they are.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

log = logging.getLogger(__name__)

# Baselines as the reference spells them -> a short label and the model family's native square size.
_BASELINES: dict[str, tuple[str, int]] = {
    "stable diffusion 1": ("SD 1.5", 512),
    "stable diffusion 2": ("SD 2", 768),
    "stable diffusion 2 512": ("SD 2", 512),
    "stable_diffusion_xl": ("SDXL", 1024),
    "stable_cascade": ("Cascade", 1024),
    "flux_1": ("Flux", 1024),
    "flux_schnell": ("Flux", 1024),
    "flux_dev": ("Flux", 1024),
    "qwen_image": ("Qwen", 1024),
    "z_image_turbo": ("Z-Image", 1024),
}
# ControlNet is not available for these families (API_NOTES §4: `control_type`).
NO_CONTROLNET_FAMILIES = ("SDXL", "Cascade", "Flux", "Qwen", "Z-Image")


class ModelReferenceEntry(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    name: str
    baseline: str = ""
    nsfw: bool = False
    description: str = ""
    inpainting: bool = False
    style: str | None = None
    tags: list[str] = Field(default_factory=list)
    features_not_supported: list[str] = Field(default_factory=list)
    requirements: dict[str, Any] = Field(default_factory=dict)

    @property
    def baseline_label(self) -> str | None:
        known = _BASELINES.get(self.baseline.lower())
        if known is not None:
            return known[0]
        return self.baseline or None

    @property
    def native_size(self) -> int | None:
        known = _BASELINES.get(self.baseline.lower())
        return known[1] if known is not None else None

    def _int_requirement(self, key: str, low: int, high: int) -> int | None:
        value = self.requirements.get(key)
        if isinstance(value, bool) or not isinstance(value, int):
            return None
        return value if low <= value <= high else None

    def _float_requirement(self, key: str) -> float | None:
        value = self.requirements.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 100:
            return None
        return float(value)

    @property
    def min_steps(self) -> int | None:
        return self._int_requirement("min_steps", 1, 500)

    @property
    def max_steps(self) -> int | None:
        return self._int_requirement("max_steps", 1, 500)

    @property
    def cfg_range(self) -> tuple[float | None, float | None]:
        """(min, max) CFG the model works with: `cfg_scale` pins both, `min/max_cfg_scale` bound it."""
        pinned = self._float_requirement("cfg_scale")
        if pinned is not None:
            return pinned, pinned
        return self._float_requirement("min_cfg_scale"), self._float_requirement("max_cfg_scale")

    @property
    def samplers(self) -> tuple[str, ...]:
        value = self.requirements.get("samplers")
        return tuple(s for s in value if isinstance(s, str)) if isinstance(value, list) else ()

    @property
    def clip_skip(self) -> int | None:
        value = self.requirements.get("clip_skip")
        return value if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 12 else None


def parse_model_reference(body: Any) -> dict[str, ModelReferenceEntry]:
    """Entries keyed by case-folded name. A malformed entry is skipped, not fatal: the file is hand-edited."""
    if not isinstance(body, Mapping):
        raise ValueError("the model reference is not a JSON object")
    entries: dict[str, ModelReferenceEntry] = {}
    for key, raw in body.items():
        if not isinstance(raw, Mapping):
            continue
        try:
            entry = ModelReferenceEntry.model_validate({"name": str(key), **raw})
        except ValidationError:
            log.debug("model reference entry %r skipped: malformed", key)
            continue
        entries[entry.name.casefold()] = entry
    return entries
