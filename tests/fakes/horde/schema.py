"""Payload schemas (a subset of swagger.json) and a validator wording errors like flask-restx does."""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]

SAMPLERS = [
    "k_dpm_adaptive",
    "k_dpmpp_2s_a",
    "k_euler_a",
    "k_dpm_2_a",
    "dpmsolver",
    "k_dpmpp_sde",
    "k_dpmpp_2m",
    "lcm",
    "k_euler",
    "k_lms",
    "k_heun",
    "k_dpm_fast",
    "k_dpm_2",
    "DDIM",
]
POST_PROCESSORS = [
    "GFPGAN",
    "RealESRGAN_x4plus",
    "RealESRGAN_x2plus",
    "RealESRGAN_x4plus_anime_6B",
    "NMKD_Siax",
    "4x_AnimeSharp",
    "CodeFormers",
    "strip_background",
    "4xNomos8kSC",
    "4xLSDIRplus",
    "4xNomosWebPhoto_RealPLKSR",
    "4xNomos2_realplksr_dysample",
    "4xNomos2_hq_dat2",
    "2xModernSpanimationV1",
    "GFPGANv1.3",
    "RestoreFormer",
]
UPSCALERS = frozenset(
    {
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
    }
)
INTERROGATION_FORMS = ["caption", "interrogation", "nsfw", "vectorize", "palette", "describe", "aesthetic"]
FORM_NAMES = INTERROGATION_FORMS + POST_PROCESSORS
CONTROL_TYPES = ["canny", "hed", "depth", "normal", "openpose", "seg", "scribble", "fakescribbles", "hough"]
SOURCE_PROCESSING = ["img2img", "inpainting", "outpainting", "remix"]
GEN_STATES = ["ok", "censored", "faulted", "csam"]
METADATA_TYPES = [
    "lora",
    "ti",
    "censorship",
    "source_image",
    "source_mask",
    "extra_source_images",
    "batch_index",
    "information",
    "aesthetic_score",
]
METADATA_VALUES = ["download_failed", "parse_failed", "baseline_mismatch", "csam", "nsfw", "see_ref"]


def _int(minimum: int | None = None, maximum: int | None = None, multiple_of: int | None = None) -> Schema:
    schema: Schema = {"type": "integer"}
    if minimum is not None:
        schema["minimum"] = minimum
    if maximum is not None:
        schema["maximum"] = maximum
    if multiple_of is not None:
        schema["multipleOf"] = multiple_of
    return schema


def _num(minimum: float | None = None, maximum: float | None = None) -> Schema:
    schema: Schema = {"type": "number"}
    if minimum is not None:
        schema["minimum"] = minimum
    if maximum is not None:
        schema["maximum"] = maximum
    return schema


def _str(
    min_length: int | None = None, max_length: int | None = None, enum: list[str] | None = None
) -> Schema:
    schema: Schema = {"type": "string"}
    if min_length is not None:
        schema["minLength"] = min_length
    if max_length is not None:
        schema["maxLength"] = max_length
    if enum is not None:
        schema["enum"] = enum
    return schema


def _arr(items: Schema, *, unique: bool = False) -> Schema:
    schema: Schema = {"type": "array", "items": items}
    if unique:
        schema["uniqueItems"] = True
    return schema


def _obj(properties: dict[str, Schema], required: list[str] | None = None) -> Schema:
    schema: Schema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return schema


BOOL: Schema = {"type": "boolean"}
OBJECT: Schema = {"type": "object"}

GEN_METADATA = _obj(
    {"type": _str(enum=METADATA_TYPES), "value": _str(enum=METADATA_VALUES), "ref": _str(max_length=255)},
    ["type", "value"],
)
EXTRA_SOURCE_IMAGE = _obj({"image": _str(min_length=1), "strength": _num()})

IMAGE_PARAMS = _obj(
    {
        "sampler_name": _str(enum=SAMPLERS),
        "cfg_scale": _num(0, 100),
        "denoising_strength": _num(0.01, 1.0),
        "hires_fix_denoising_strength": _num(0.01, 1.0),
        "height": _int(64, 3072, 64),
        "width": _int(64, 3072, 64),
        "post_processing": _arr(_str(enum=POST_PROCESSORS), unique=True),
        "karras": BOOL,
        "tiling": BOOL,
        "hires_fix": BOOL,
        "clip_skip": _int(1, 12),
        "facefixer_strength": _num(0, 1.0),
        "loras": _arr(
            _obj(
                {
                    "name": _str(1, 255),
                    "model": _num(-5.0, 5.0),
                    "clip": _num(-5.0, 5.0),
                    "inject_trigger": _str(1, 30),
                    "is_version": BOOL,
                },
                ["name"],
            )
        ),
        "tis": _arr(
            _obj(
                {
                    "name": _str(1, 255),
                    "inject_ti": _str(enum=["prompt", "negprompt"]),
                    "strength": _num(-5.0, 5.0),
                },
                ["name"],
            )
        ),
        "special": OBJECT,
        "workflow": _str(enum=["qr_code"]),
        "transparent": BOOL,
        "seed": _str(),
        "seed_variation": _int(1, 1000),
        "control_type": _str(enum=CONTROL_TYPES),
        "image_is_control": BOOL,
        "return_control_map": BOOL,
        "extra_texts": _arr(_obj({"text": _str(min_length=1), "reference": _str(min_length=3)})),
        "steps": _int(1, 500),
        "n": _int(1, 20),
    }
)

IMAGE_INPUT = _obj(
    {
        "prompt": _str(min_length=1),
        "params": IMAGE_PARAMS,
        "nsfw": BOOL,
        "trusted_workers": BOOL,
        "validated_backends": BOOL,
        "slow_workers": BOOL,
        "extra_slow_workers": BOOL,
        "censor_nsfw": BOOL,
        "workers": _arr(_str()),
        "worker_blacklist": BOOL,
        "models": _arr(_str()),
        "source_image": _str(),
        "source_processing": _str(enum=SOURCE_PROCESSING),
        "source_mask": _str(),
        "extra_source_images": _arr(EXTRA_SOURCE_IMAGE),
        "r2": BOOL,
        "shared": BOOL,
        "replacement_filter": BOOL,
        "dry_run": BOOL,
        "proxied_account": _str(),
        "disable_batching": BOOL,
        "allow_downgrade": BOOL,
        "webhook": _str(10, 1024),
        "style": _str(3, 1024),
    },
    ["prompt"],
)

TEXT_PARAMS = _obj(
    {
        "n": _int(1, 20),
        "max_context_length": _int(80, 1048576),
        "max_length": _int(16, 4096),
        "frmtadsnsp": BOOL,
        "frmtrmblln": BOOL,
        "frmtrmspch": BOOL,
        "frmttriminc": BOOL,
        "rep_pen": _num(1, 3),
        "rep_pen_range": _int(0, 4096),
        "rep_pen_slope": _num(0, 10),
        "singleline": BOOL,
        "temperature": _num(0, 5.0),
        "tfs": _num(0.0, 1.0),
        "top_a": _num(0.0, 1.0),
        "top_k": _int(0, 200),
        "top_p": _num(0.001, 1.0),
        "typical": _num(0.0, 1.0),
        "sampler_order": _arr(_int()),
        "use_default_badwordsids": BOOL,
        "stop_sequence": _arr(_str()),
        "min_p": _num(0.0, 1.0),
        "smoothing_factor": _num(0.0, 10.0),
        "dynatemp_range": _num(0.0, 5.0),
        "dynatemp_exponent": _num(0.0, 5.0),
    }
)

TEXT_INPUT = _obj(
    {
        "prompt": _str(),
        "params": TEXT_PARAMS,
        "softprompt": _str(min_length=1),
        "trusted_workers": BOOL,
        "validated_backends": BOOL,
        "slow_workers": BOOL,
        "extra_slow_workers": BOOL,
        "workers": _arr(_str()),
        "worker_blacklist": BOOL,
        "models": _arr(_str()),
        "dry_run": BOOL,
        "proxied_account": _str(),
        "extra_source_images": _arr(EXTRA_SOURCE_IMAGE),
        "disable_batching": BOOL,
        "allow_downgrade": BOOL,
        "webhook": _str(),
        "style": _str(3, 1024),
    }
)

INTERROGATION_INPUT = _obj(
    {
        "forms": _arr(_obj({"name": _str(enum=FORM_NAMES), "payload": OBJECT}, ["name"])),
        "source_image": _str(),
        "slow_workers": BOOL,
        "webhook": _str(10, 1024),
    }
)

SHAREDKEY_INPUT = _obj(
    {
        "kudos": _int(-1, 50000000),
        "expiry": _int(-1),
        "name": _str(3, 255),
        "max_image_pixels": _int(-1, 4194304),
        "max_image_steps": _int(-1, 500),
        "max_text_tokens": _int(-1, 500),
    }
)

AESTHETICS_INPUT = _obj(
    {
        "best": _str(36, 36),
        "ratings": _arr(
            _obj({"id": _str(36, 36), "rating": _int(1, 10), "artifacts": _int(0, 5)}, ["id", "rating"]),
        ),
    }
)

TRANSFER_INPUT = _obj({"username": _str(), "amount": _int()})

_POP_COMMON: dict[str, Schema] = {
    "name": _str(),
    "priority_usernames": _arr(_str()),
    "nsfw": BOOL,
    "models": _arr(_str(3, 255)),
    "bridge_agent": _str(max_length=1000),
    "threads": _int(1, 50),
    "require_upfront_kudos": BOOL,
    "amount": _int(1, 20),
    "extra_slow_worker": BOOL,
}
IMAGE_POP_INPUT = _obj(
    {
        **_POP_COMMON,
        "max_pixels": _int(),
        "blacklist": _arr(_str()),
        "allow_img2img": BOOL,
        "allow_painting": BOOL,
        "allow_unsafe_ipaddr": BOOL,
        "allow_post_processing": BOOL,
        "allow_controlnet": BOOL,
        "allow_sdxl_controlnet": BOOL,
        "allow_lora": BOOL,
        "limit_max_steps": BOOL,
    }
)
TEXT_POP_INPUT = _obj(
    {**_POP_COMMON, "max_length": _int(), "max_context_length": _int(), "softprompts": _arr(_str())}
)
INTERROGATION_POP_INPUT = _obj(
    {
        "name": _str(),
        "priority_usernames": _arr(_str()),
        "forms": _arr(_str(enum=FORM_NAMES)),
        "amount": _int(),
        "bridge_agent": _str(max_length=1000),
        "threads": _int(1, 100),
        "max_tiles": _int(1, 256),
    }
)
IMAGE_SUBMIT_INPUT = _obj(
    {
        "id": _str(),
        "generation": _str(),
        "state": _str(enum=GEN_STATES),
        "seed": _int(),
        "censored": BOOL,
        "gen_metadata": _arr(GEN_METADATA),
    },
    ["id", "seed"],
)
TEXT_SUBMIT_INPUT = _obj(
    {"id": _str(), "generation": _str(), "state": _str(enum=GEN_STATES), "gen_metadata": _arr(OBJECT)},
    ["id"],
)
INTERROGATION_SUBMIT_INPUT = _obj(
    {"id": _str(), "result": OBJECT, "state": _str(enum=GEN_STATES)},
    ["id"],
)

_TYPE_CHECKS = {
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "integer": lambda v: (
        (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer())
    ),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
}


def validate(instance: Any, schema: Schema) -> dict[str, str]:
    """Return flask-restx style ``{"dotted.path": "message"}`` errors (empty when valid)."""
    errors: dict[str, str] = {}
    _validate(instance, schema, [], errors)
    return errors


def _validate(instance: Any, schema: Schema, path: list[str], errors: dict[str, str]) -> None:
    key = ".".join(path)
    expected = schema.get("type")
    if expected is not None and not _TYPE_CHECKS[expected](instance):
        errors[key] = f"{instance!r} is not of type '{expected}'"
        return
    if "enum" in schema and instance not in schema["enum"]:
        errors[key] = f"{instance!r} is not one of {schema['enum']!r}"
    if expected in ("integer", "number"):
        if "minimum" in schema and instance < schema["minimum"]:
            errors[key] = f"{instance!r} is less than the minimum of {schema['minimum']!r}"
        if "maximum" in schema and instance > schema["maximum"]:
            errors[key] = f"{instance!r} is greater than the maximum of {schema['maximum']!r}"
        if "multipleOf" in schema and instance % schema["multipleOf"]:
            errors[key] = f"{instance!r} is not a multiple of {schema['multipleOf']!r}"
    if expected == "string":
        if "minLength" in schema and len(instance) < schema["minLength"]:
            errors[key] = f"{instance!r} is too short"
        if "maxLength" in schema and len(instance) > schema["maxLength"]:
            errors[key] = f"{instance!r} is too long"
    if expected == "array":
        if schema.get("uniqueItems") and len({repr(item) for item in instance}) != len(instance):
            errors[key] = f"{instance!r} has non-unique elements"
        if "items" in schema:
            for index, item in enumerate(instance):
                _validate(item, schema["items"], [*path, str(index)], errors)
    if expected == "object":
        for name in schema.get("required", []):
            if name not in instance:
                errors[key] = f"{name!r} is a required property"
        for name, sub in schema.get("properties", {}).items():
            if name in instance and instance[name] is not None:
                _validate(instance[name], sub, [*path, name], errors)
