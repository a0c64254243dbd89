"""Image generation endpoints: async/check/status/rate and the worker's pop/submit (API_NOTES §4, §12)."""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections import Counter
from typing import Any

from tests.fakes.horde import errors as err
from tests.fakes.horde.core import REQUEST_TTL, ApiRequest, ApiResponse, ok
from tests.fakes.horde.generation import GenerationMixin
from tests.fakes.horde.images import decode_source_image, image_size
from tests.fakes.horde.records import (
    FakeSharedKey,
    FakeUser,
    FakeWorker,
    GenRequest,
    ImageRequest,
    Job,
    RequestKind,
)
from tests.fakes.horde.schema import (
    AESTHETICS_INPUT,
    IMAGE_INPUT,
    IMAGE_POP_INPUT,
    IMAGE_SUBMIT_INPUT,
    UPSCALERS,
)

MAX_PROMPT_WORDS = 7500
UPFRONT_MAX_STEPS = 50
UPFRONT_MAX_PIXELS = 1024 * 1024
NO_WORKER_WARNING = (
    "No workers are currently available to fulfil this request. "
    f"It will expire in {REQUEST_TTL // 60} minutes unless a worker appears."
)
KUDOS_UPFRONT_MESSAGE = (
    "Due to heavy demand, for requests over {pixels} pixels or over {steps} steps, the client needs to "
    "already have the required kudos. This request requires {kudos} kudos to fulfil."
)


def _dry_run_key(params: dict[str, Any], models: list[str]) -> str:
    payload = dict(params)
    payload["models"] = models
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


class ImageMixin(GenerationMixin):
    # ---- pricing -------------------------------------------------------------------------------------
    def _baseline_multiplier(self, models: list[str]) -> float:
        best = 1.0
        for name in models:
            if name in self.model_multipliers:
                best = max(best, self.model_multipliers[name])
                continue
            lowered = name.lower()
            if "qwen" in lowered:
                best = max(best, 12.0)
            elif "flux" in lowered or "z-image" in lowered or "z_image" in lowered:
                best = max(best, 8.0)
            elif "cascade" in lowered:
                best = max(best, 4.0)
            elif re.search(r"(^|[^a-z])(sd)?xl([^a-z]|$)", lowered) or "sdxl" in lowered:
                best = max(best, 2.0)
        return best

    @staticmethod
    def _image_kudos(params: dict[str, Any], has_source: bool) -> float:
        """Per-image kudos: 10 for 512x512 at 50 steps, scaled linearly (6.0 at the 30-step default)."""
        width = int(params.get("width", 512))
        height = int(params.get("height", 512))
        steps = int(params.get("steps", 30))
        kudos = 10.0 * (width * height) / (512 * 512) * steps / 50
        if params.get("hires_fix"):
            kudos *= 1.5
        kudos *= 1 + 0.2 * len(params.get("post_processing") or [])
        kudos += len(params.get("loras") or []) + 0.5 * len(params.get("tis") or [])
        if params.get("control_type"):
            kudos *= 3
        if has_source:
            kudos *= 0.9
        return round(max(kudos, 1.0), 2)

    # ---- checks --------------------------------------------------------------------------------------
    def _check_prompt(self, body: dict[str, Any]) -> None:
        prompt: str = body["prompt"]
        if len(prompt.split()) > MAX_PROMPT_WORDS:
            raise err.bad_request(
                "InvalidPromptSize", "Too large prompt. Please reduce the amount of tokens contained."
            )
        for pattern in self.corrupt_prompt_patterns:
            if re.search(pattern, prompt, re.IGNORECASE):
                if body.get("replacement_filter", True) and len(prompt) < 7000:
                    body["prompt"] = re.sub(pattern, "", prompt, flags=re.IGNORECASE)
                    prompt = body["prompt"]
                    continue
                raise err.bad_request(
                    "CorruptPrompt",
                    "This prompt appears to violate our terms of service and will be reported. "
                    "Please contact us if you think this is an error.",
                )

    @staticmethod
    def _check_source_image(value: str, max_side: int = 3072) -> None:
        if value.startswith(("http://", "https://")):
            return
        data = decode_source_image(value)
        size = image_size(data) if data is not None else None
        if size is None:
            raise err.bad_request("ImageValidationFailed", err.IMAGE_VALIDATION_MESSAGE)
        if size[0] * size[1] > max_side * max_side:
            raise err.bad_request(
                "SourceImageResolutionExceeded",
                f"Source image resolution cannot exceed {max_side}x{max_side}.",
            )

    def _baseline(self, model: str) -> str:
        """The model reference's baseline of `model` ("" when unknown), as the Horde looks it up."""
        entry = (self.model_reference or {}).get(model)
        return str(entry.get("baseline", "")) if isinstance(entry, dict) else ""

    def _check_image_params(self, body: dict[str, Any], params: dict[str, Any]) -> None:
        cfg = params.get("cfg_scale")
        if cfg is not None and round(float(cfg), 2) != float(cfg):
            raise err.bad_request("BadCFGDecimals", "cfg_scale can only be up to 2 decimals.")
        loras = params.get("loras") or []
        if len(loras) > 5:
            raise err.bad_request("TooManyLoras", "You cannot request more than 5 loras per generation.")
        for lora in loras:
            if lora.get("is_version") and not str(lora["name"]).isdigit():
                raise err.bad_request("BadLoraVersion", "Lora version id has to be an integer.")
        if len(params.get("tis") or []) > 20:
            raise err.bad_request(
                "TooManyTIs", "You cannot request more than 20 Textual Inversions per generation."
            )
        # Checked against the model reference when one is served (the real Horde always has it).
        models = body.get("models") or [] if self.model_reference is not None else []
        baselines = [self._baseline(name) for name in models]
        if params.get("transparent") is True and any(
            b not in ("stable_diffusion_xl", "stable diffusion 1") for b in baselines
        ):
            raise err.bad_request(
                "InvalidTransparencyModel",
                "Generating Transparent images is only possible for Stable Diffusion 1.5 and XL models.",
            )
        if params.get("workflow") == "qr_code" and not all(
            b in ("stable diffusion 1", "stable_diffusion_xl") for b in baselines
        ):
            # The rc really ends with a dot upstream (ParamValidator.validate_image_params).
            raise err.bad_request(
                "ControlNetMismatch.", "QR Code controlnet only works with SD 1.5 and SDXL models currently"
            )
        if sum(1 for pp in params.get("post_processing") or [] if pp in UPSCALERS) > 1:
            raise err.bad_request("TooManyUpscalers", "Cannot use more than 1 upscaler at a time.")
        if params.get("control_type") and not body.get("source_image"):
            raise err.bad_request("ControlNetSourceMissing", "Controlnet Requires a source image.")
        if body.get("source_mask") and not body.get("source_image"):
            raise err.bad_request(
                "SourceMaskUnnecessary",
                "Please do not pass a source_mask unless you are sending a source_image as well",
            )
        if body.get("source_image"):
            self._check_source_image(body["source_image"])
        extra = body.get("extra_source_images") or []
        for item in extra:
            self._check_source_image(item["image"])

    def _apply_style(self, body: dict[str, Any], params: dict[str, Any], user: FakeUser) -> tuple[str, float]:
        """Fold ``style`` (an id or name) into prompt/params/models; returns (style id, extra kudos)."""
        wanted = body["style"]
        style = self.styles.get(wanted)
        if style is None:
            for candidate in self.styles.values():
                full = f"{candidate['creator']}::style::{candidate['name']}"
                if wanted in (candidate["name"], full):
                    style = candidate
                    break
        if style is None:
            raise err.horde_error(404, "StyleNotFound", f"Style with ID '{wanted}' not found.")
        positive, _sep, negative = body["prompt"].partition("###")
        np_text = f" ### {negative.strip()}" if negative.strip() else ""
        body["prompt"] = style["prompt"].replace("{p}", positive.strip()).replace("{np}", np_text)
        styled = dict(style.get("params") or {})
        for dimension in ("width", "height"):
            if dimension not in styled and dimension in params:
                styled[dimension] = params[dimension]
        styled["n"] = params.get("n", 1)
        params.clear()
        params.update(styled)
        if style.get("models"):
            body["models"] = list(style["models"])
        style["use_count"] += 1
        return style["id"], (0.0 if style["creator"] == user.username else 2.0)

    def _check_shared_key_limits(self, shared: FakeSharedKey, params: dict[str, Any], styled: bool) -> None:
        pixels = int(params.get("width", 512)) * int(params.get("height", 512))
        steps = int(params.get("steps", 30))
        too_many_pixels = shared.max_image_pixels != -1 and pixels > shared.max_image_pixels
        too_many_steps = shared.max_image_steps != -1 and steps > shared.max_image_steps
        if not (too_many_pixels or too_many_steps):
            return
        if not styled:  # upstream bug: AttributeError (existing_style) at stable.py:340
            raise err.internal_server_error()
        what = "pixels" if too_many_pixels else "steps"
        raise err.bad_request("BadRequest", f"This shared key does not allow this many {what}.")

    @staticmethod
    def _needs_upfront(body: dict[str, Any], params: dict[str, Any]) -> bool:
        steps = int(params.get("steps", 30))
        pixels = int(params.get("width", 512)) * int(params.get("height", 512))
        sampler = params.get("sampler_name", "k_euler_a")
        return (
            steps > UPFRONT_MAX_STEPS
            or pixels > UPFRONT_MAX_PIXELS
            or (sampler == "lcm" and steps > 10)
            or (bool(params.get("control_type")) and steps > 20)
            or body.get("slow_workers", True) is False
        )

    def _serving_workers(self, kind: str, models: list[str]) -> list[FakeWorker]:
        return [
            worker
            for worker in self.workers.values()
            if worker.type == kind and worker.online and (not models or set(models) & set(worker.models))
        ]

    def _check_concurrency(self, user: FakeUser, kind: str, n: int) -> None:
        waiting = sum(
            r.waiting
            for r in self._requests.values()
            if isinstance(r, GenRequest) and r.kind == kind and r.user_id == user.id and not r.done
        )
        if waiting + n > user.concurrency:
            if user.is_anon:
                message = (
                    "Too many anonymous requests on using the AI Horde currently "
                    f"({waiting + n}/{user.concurrency}). Please consider getting a personal API key at "
                    "https://aihorde.net/register which will also provide higher priority."
                )
            else:
                message = (
                    f"Parallel requests ({waiting + n}) exceeded user limit ({user.concurrency}). "
                    "Please try again later or request to increase your concurrency."
                )
            raise err.horde_error(429, "TooManyPrompts", message)

    def _check_common(self, req: ApiRequest, body: dict[str, Any], user: FakeUser, n: int) -> None:
        if self.maintenance_mode:
            raise err.bad_request(
                "MaintenanceMode", "AI Horde has entered maintenance mode. Please try again later."
            )
        webhook = body.get("webhook")
        if webhook and not str(webhook).startswith("https://"):
            raise err.bad_request("BadRequest", "webhooks need to point to an https endpoint.")
        if body.get("proxied_account") and not user.service:
            raise err.bad_request(
                "OnlyServiceAccountProxy", "Only service accounts can provide a proxied_account value."
            )
        extra = body.get("extra_source_images") or []
        if len(extra) > 5:
            raise err.bad_request(
                "TooManyExtraSourceImages", "You can send a maximum of 5 extra source images."
            )
        if len(extra) > 1 and not user.trusted:
            raise err.bad_request(
                "MoreThanMinExtraSourceImage",
                "Only trusted users and patrons can send more than 1 extra source images.",
            )
        if user.education or user.trusted or user.service:
            self.whitelisted_ips[req.remote] = self.now() + 24 * 3600
        if body.get("prompt") == "":
            raise err.bad_request("MissingPrompt", "You cannot specify an empty prompt.")
        if n > 1 and body.get("disable_batching") and not user.trusted:
            raise err.bad_request(
                "RequiresTrust", "Only trusted users and patreon supporters can disable batching."
            )
        for worker_id in body.get("workers") or []:
            if worker_id not in self.workers:
                raise err.horde_error(404, "WorkerNotFound", f"Worker with ID '{worker_id}' not found.")

    # ---- POST /v2/generate/async ---------------------------------------------------------------------
    def _ep_image_async(self, req: ApiRequest) -> ApiResponse:
        body = dict(self._body(req, IMAGE_INPUT))
        params: dict[str, Any] = dict(body.get("params") or {})
        models = list(body.get("models") or [])
        cache_key = _dry_run_key(params, models)
        if body.get("dry_run") and cache_key in self.dry_run_cache:
            return ok({"kudos": self.dry_run_cache[cache_key]})
        user, shared = self._auth(req)
        if shared is not None and not (body.get("allow_downgrade") and shared.kudos != -1):
            self._check_shared_key(shared)
        n = int(params.get("n", 1))
        self._check_common(req, body, user, n)
        self._check_concurrency(user, "image", n)
        self._check_prompt(body)
        self._check_image_params(body, params)
        style_id: str | None = None
        style_kudos = 0.0
        if body.get("style"):
            style_id, style_kudos = self._apply_style(body, params, user)
            models = list(body.get("models") or [])
        if shared is not None:
            self._check_shared_key_limits(shared, params, styled=style_id is not None)
        kudos = self._image_kudos(params, bool(body.get("source_image")))
        cost = round(kudos * self._baseline_multiplier(models), 2)
        total = round(cost * n + 1 + style_kudos, 2)
        if self._needs_upfront(body, params) and user.kudos < total:
            if body.get("allow_downgrade"):
                params["steps"] = min(int(params.get("steps", 30)), UPFRONT_MAX_STEPS)
                while int(params.get("width", 512)) * int(params.get("height", 512)) > UPFRONT_MAX_PIXELS:
                    params["width"] = max(64, int(params.get("width", 512)) - 64)
                    params["height"] = max(64, int(params.get("height", 512)) - 64)
                kudos = self._image_kudos(params, bool(body.get("source_image")))
                cost = round(kudos * self._baseline_multiplier(models), 2)
                total = round(cost * n + 1 + style_kudos, 2)
            else:
                raise err.horde_error(
                    403,
                    "KudosUpfront",
                    KUDOS_UPFRONT_MESSAGE.format(
                        pixels=UPFRONT_MAX_PIXELS, steps=UPFRONT_MAX_STEPS, kudos=total
                    ),
                )
        if body.get("dry_run"):
            self.dry_run_cache[cache_key] = total
            return ok({"kudos": total})
        now = self.now()
        request = ImageRequest(
            id=self._new_id(),
            kind="image",
            user_id=user.id,
            # A copy of the containers only: the strings (a base64 source of megabytes) are shared with
            # the call record, not held twice.
            payload=copy.deepcopy(req.body),
            prompt=body["prompt"],
            params=params,
            models=models,
            n=n,
            remaining=n,
            kudos=kudos,
            cost_per_gen=cost,
            created_at=now,
            expires_at=now + REQUEST_TTL,
            sharedkey_id=shared.id if shared else None,
            r2=body.get("r2", True),
            nsfw=body.get("nsfw", False),
            censor_nsfw=body.get("censor_nsfw", False),
            trusted_workers=body.get("trusted_workers", False),
            slow_workers=body.get("slow_workers", True),
            workers=list(body.get("workers") or []),
            worker_blacklist=body.get("worker_blacklist", False),
            style_id=style_id,
            ip=req.remote,
        )
        self._requests[request.id] = request
        user.records["request"]["image"] += n
        user.records["usage"]["megapixelsteps"] += round(
            int(params.get("width", 512))
            * int(params.get("height", 512))
            * int(params.get("steps", 30))
            * n
            / 1e6,
            2,
        )
        response: dict[str, Any] = {"id": request.id, "kudos": kudos}
        if not self._serving_workers("image", models):
            # The real server repeats the warning as the answer's `message` (transcript 29).
            response["message"] = NO_WORKER_WARNING
            response["warnings"] = [{"code": "NoAvailableWorker", "message": NO_WORKER_WARNING}]
        return ok(response, 202)

    # ---- GET /v2/generate/check/{id}, GET|DELETE /v2/generate/status/{id} ----------------------------
    def _image_by_id(self, request_id: str) -> ImageRequest:
        self._sweep()
        request = self._requests.get(request_id)
        if not isinstance(request, ImageRequest):
            raise err.request_not_found(request_id)
        return request

    def _ep_image_check(self, req: ApiRequest) -> ApiResponse:
        request = self._image_by_id(req.params["id"])
        self._autopilot(request)
        return ok(self._status_body(request, full=False))

    def _ep_image_status(self, req: ApiRequest) -> ApiResponse:
        request = self._image_by_id(req.params["id"])
        if req.method == "DELETE":
            self._cancel_request(request)
        else:
            self._autopilot(request)
        return ok(self._status_body(request, full=True))

    # ---- POST /v2/generate/rate/{id} -----------------------------------------------------------------
    def _ep_image_rate(self, req: ApiRequest) -> ApiResponse:
        body = self._body(req, AESTHETICS_INPUT)
        request = self._image_by_id(req.params["id"])
        if not request.done:
            raise err.bad_request("AestheticsNotCompleted", "You can only rate a completed request.")
        if request.rated:
            raise err.bad_request(
                "AestheticsAlreadyExist", "Aesthetics have already been submitted for this request."
            )
        gen_ids = {job.id for job in request.generations}
        best = body.get("best")
        ratings = body.get("ratings") or []
        if best is None and not ratings:
            raise err.bad_request("AestheticsMissing", "You need to provide either a best image or ratings.")
        if best is not None:
            if len(gen_ids) < 2:
                raise err.bad_request(
                    "AestheticsSolo", "You cannot select a best image out of a single image."
                )
            if best not in gen_ids:
                raise err.bad_request("ProcGenNotFound", f"Image with ID '{best}' not found in this request.")
        seen: set[str] = set()
        for rating in ratings:
            if rating["id"] not in gen_ids:
                raise err.bad_request(
                    "ProcGenNotFound", f"Image with ID '{rating['id']}' not found in this request."
                )
            if rating["id"] in seen:
                raise err.bad_request("AestheticsDuplicate", "You cannot rate the same image twice.")
            seen.add(rating["id"])
        reward = (4.0 if best is not None else 0.0) + 5.0 * len(ratings)
        reward = round(max(0.0, min(reward, request.consumed_kudos - 1)), 2)
        request.rated = True
        user = self.users.get(request.user_id)
        if user is not None and not user.is_anon:
            user.kudos += reward
            user.kudos_details["awarded"] += reward
        return ok({"reward": reward, "message": "OK"})

    # ---- worker side ---------------------------------------------------------------------------------
    def _worker_from_pop(self, req: ApiRequest, body: dict[str, Any], kind: RequestKind) -> FakeWorker:
        user, _shared = self._auth(req, allow_shared=False)
        if user.is_anon:
            raise err.horde_error(
                403, "AnonForbiddenWorker", "Anonymous user is forbidden from running workers"
            )
        name = body.get("name") or f"{user.alias}-worker"
        worker = next((w for w in self.workers.values() if w.name == name), None)
        if worker is None:
            worker = FakeWorker(
                id=self._new_id(), name=name, type=kind, owner_id=user.id, trusted=user.trusted
            )
            self.workers[worker.id] = worker
            user.worker_ids.append(worker.id)
            user.worker_count += 1
        elif worker.owner_id not in (None, user.id):
            raise err.horde_error(403, "WrongCredentials", "Wrong credentials to submit as this worker.")
        worker.online = True
        if "models" in body:
            worker.models = list(body["models"])
        if "forms" in body:
            worker.forms = list(body["forms"])
        for attribute in (
            "nsfw",
            "threads",
            "max_pixels",
            "bridge_agent",
            "max_length",
            "max_context_length",
        ):
            if attribute in body:
                setattr(worker, attribute, body[attribute])
        return worker

    def _worker_job(self, req: ApiRequest, body: dict[str, Any], kind: str) -> tuple[GenRequest, Job]:
        user, _shared = self._auth(req, allow_shared=False)
        found = self._jobs.get(body["id"])
        if found is None or found[0].kind != kind:
            raise err.horde_error(404, "InvalidJobID", f"Processing Job with ID {body['id']} does not exist.")
        request, job = found
        worker = self.workers.get(job.worker_id)
        if worker is not None and worker.owner_id not in (None, user.id):
            raise err.horde_error(403, "WrongCredentials", "Wrong credentials to submit as this worker.")
        if job.state == "done":
            raise err.bad_request(
                "DuplicateGen", f"Processing Generation with ID {job.id} already submitted."
            )
        if job.state in ("faulted", "cancelled"):
            raise err.bad_request(
                "AbortedGen",
                f"Processing Generation with ID {job.id} took too long to process and has been aborted!",
            )
        return request, job

    def _pickable(self, kind: str) -> list[GenRequest]:
        self._sweep()
        candidates = [
            r
            for r in self._requests.values()
            if isinstance(r, GenRequest) and r.kind == kind and r.waiting > 0
        ]
        return sorted(
            candidates, key=lambda r: -(self.users[r.user_id].kudos if r.user_id in self.users else 0)
        )

    @staticmethod
    def _skip_reason(request: GenRequest, worker: FakeWorker) -> str | None:
        if request.models and not set(request.models) & set(worker.models):
            return "models"
        if request.nsfw and not worker.nsfw:
            return "nsfw"
        if request.trusted_workers and not worker.trusted:
            return "untrusted"
        if request.workers:
            listed = worker.id in request.workers
            if listed == request.worker_blacklist:
                return "worker_id"
        if request.kind == "image":
            pixels = int(request.params.get("width", 512)) * int(request.params.get("height", 512))
            if pixels > worker.max_pixels:
                return "max_pixels"
        else:
            if int(request.params.get("max_length", 80)) > worker.max_length:
                return "max_length"
            if int(request.params.get("max_context_length", 2048)) > worker.max_context_length:
                return "max_context_length"
        return None

    def _ep_image_pop(self, req: ApiRequest) -> ApiResponse:
        body = self._body(req, IMAGE_POP_INPUT)
        worker = self._worker_from_pop(req, body, "image")
        skipped: Counter[str] = Counter()
        for request in self._pickable("image"):
            reason = self._skip_reason(request, worker)
            if reason is not None:
                skipped[reason] += 1
                continue
            amount = min(int(body.get("amount", 1)), request.waiting)
            jobs = [self._start_job(request, worker) for _ in range(amount)]
            payload: dict[str, Any] = {
                k: v for k, v in request.params.items() if k not in ("steps", "n", "sampler_name", "seed")
            }
            payload.update(
                {
                    "prompt": request.prompt,
                    "ddim_steps": int(request.params.get("steps", 30)),
                    "n_iter": amount,
                    "seed": jobs[0].seed,
                    "sampler_name": request.params.get("sampler_name", "k_euler_a"),
                    "cfg_scale": request.params.get("cfg_scale", 7.5),
                    "width": int(request.params.get("width", 512)),
                    "height": int(request.params.get("height", 512)),
                    "karras": request.params.get("karras", False),
                    "hires_fix": request.params.get("hires_fix", False),
                    "tiling": request.params.get("tiling", False),
                    "use_nsfw_censor": request.censor_nsfw or not request.nsfw,
                }
            )
            answer: dict[str, Any] = {
                "id": jobs[0].id,
                "ids": [job.id for job in jobs],
                "payload": payload,
                "model": jobs[0].model,
                "ttl": self._job_ttl(request),
                "r2_upload": self._r2_url(jobs[0].id, upload=True),
                "r2_uploads": [self._r2_url(job.id, upload=True) for job in jobs],
                "skipped": dict(skipped),
                "messages": [],
            }
            if request.payload.get("source_image"):
                answer["source_image"] = request.payload["source_image"]
                answer["source_processing"] = request.payload.get("source_processing", "img2img")
            if request.payload.get("source_mask"):
                answer["source_mask"] = request.payload["source_mask"]
            return ok(answer)
        return ok({"id": None, "ids": [], "skipped": dict(skipped)})

    def _ep_image_submit(self, req: ApiRequest) -> ApiResponse:
        body = self._body(req, IMAGE_SUBMIT_INPUT)
        request, job = self._worker_job(req, body, "image")
        state = body.get("state", "ok")
        if state == "faulted":
            self._fault_job(request, job)
            return ok({"reward": 0})
        generation = body.get("generation")
        image = job.uploaded if generation in (None, "R2") else decode_source_image(generation)
        censored = state in ("censored", "csam") or bool(body.get("censored"))
        metadata = list(body.get("gen_metadata") or [])
        if censored and not any(m.get("type") == "censorship" for m in metadata):
            metadata.append({"type": "censorship", "value": "csam" if state == "csam" else "nsfw"})
        reward = self._complete_job(
            request,
            job,
            image=image,
            censored=censored,
            gen_state=state if state != "ok" or not censored else "censored",
            gen_metadata=metadata,
            seed=str(body["seed"]),
        )
        return ok({"reward": reward})
