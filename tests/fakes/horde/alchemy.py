"""Interrogation (alchemy) endpoints and direct API (API_NOTES §6; upstream stable/interrogation.py)."""

from __future__ import annotations

from typing import Any

from tests.fakes.horde import errors as err
from tests.fakes.horde.core import REQUEST_TTL, ApiRequest, ApiResponse, ok
from tests.fakes.horde.images import decode_source_image, image_size, make_webp
from tests.fakes.horde.records import InterrogationForm, InterrogationRequest
from tests.fakes.horde.schema import (
    INTERROGATION_INPUT,
    INTERROGATION_POP_INPUT,
    INTERROGATION_SUBMIT_INPUT,
    POST_PROCESSORS,
)
from tests.fakes.horde.text import TextMixin

MAX_FORM_ABORTS = 2  # upstream: a form aborted more than twice is faulted for good


def default_form_result(name: str) -> dict[str, Any]:
    """What a worker would plausibly return for a form (post-processors return ``"R2"``)."""
    if name == "caption":
        return {"caption": "a fake caption of a test image"}
    if name == "nsfw":
        return {"nsfw": False}
    if name == "interrogation":
        return {
            "interrogation": {
                "tags": [
                    {"text": "test pattern", "confidence": 0.91},
                    {"text": "solid colour", "confidence": 0.55},
                ],
                "artists": [{"text": "fake artist", "confidence": 0.12}],
                "flavors": [{"text": "minimalism", "confidence": 0.33}],
            }
        }
    if name in POST_PROCESSORS:
        return {name: "R2"}
    return {name: {"fake": True}}


class AlchemyMixin(TextMixin):
    # ---- internals -----------------------------------------------------------------------------------
    def _interrogation(self, req_id: str) -> InterrogationRequest:
        request = self._get_request(req_id)
        if not isinstance(request, InterrogationRequest):
            raise TypeError(f"request {req_id!r} is a {request.kind} request, not an interrogation")
        return request

    def _source_url(self, request: InterrogationRequest) -> str:
        if request.source_image.startswith(("http://", "https://")):
            return request.source_image
        source_id = f"{request.id}-source"
        if source_id not in self._r2:
            self._r2[source_id] = decode_source_image(request.source_image) or b""
        return self._r2_url(source_id)

    def _start_form(
        self, request: InterrogationRequest, form: InterrogationForm, worker_name: str | None
    ) -> None:
        if form.state != "waiting":
            raise ValueError(f"form {form.name} of {request.id} is {form.state}, not waiting")
        worker = self._worker_named(worker_name, "interrogation", []) if worker_name else None
        if worker is None:
            worker = next(
                (w for w in self.workers.values() if w.type == "interrogation" and form.name in w.forms),
                self.default_worker,
            )
        form.state = "processing"
        form.worker_id = worker.id
        form.worker_name = worker.name
        form.started_at = self.now()
        request.expires_at = self.now() + REQUEST_TTL

    def _complete_form(
        self, request: InterrogationRequest, form: InterrogationForm, result: dict[str, Any]
    ) -> float:
        resolved = dict(result)
        for key, value in resolved.items():
            if value == "R2":
                if form.uploaded is None and form.image is None:
                    form.image = make_webp(form.id, 1024, 1024)
                self._r2[form.id] = form
                resolved[key] = self._r2_url(form.id)
        form.result = resolved
        form.state = "done"
        user = self.users.get(request.user_id)
        if user is not None and not user.is_anon:
            user.kudos -= form.kudos
            user.kudos_details["accumulated"] -= form.kudos
        worker = self.workers.get(form.worker_id or "")
        if worker is not None:
            worker.requests_fulfilled += 1
            worker.kudos_rewards += form.kudos
        return form.kudos

    @staticmethod
    def _abort_form(form: InterrogationForm) -> None:
        if form.abort_count >= MAX_FORM_ABORTS:
            form.state = "faulted"
        else:
            form.state = "waiting"
            form.abort_count += 1
        form.worker_id = None
        form.worker_name = None

    def _interrogation_status(self, request: InterrogationRequest) -> dict[str, Any]:
        forms = []
        for form in request.forms:
            entry: dict[str, Any] = {"form": form.name, "state": form.state}
            if form.result is not None:
                entry["result"] = form.result
            forms.append(entry)
        return {"state": request.state, "forms": forms}

    def _autopilot_forms(self, request: InterrogationRequest) -> None:
        request.polls += 1
        start_after = self.autopilot_start_after
        finish_after = self.autopilot_finish_after
        for form in request.forms:
            if start_after is not None and request.polls >= start_after and form.state == "waiting":
                self._start_form(request, form, None)
            if (
                finish_after is not None
                and request.polls >= finish_after
                and form.state in ("waiting", "processing")
            ):
                if form.state == "waiting":
                    self._start_form(request, form, None)
                result = self.autopilot_form_results.get(form.name) or default_form_result(form.name)
                self._complete_form(request, form, result)

    # ---- HTTP ----------------------------------------------------------------------------------------
    def _ep_interrogate_async(self, req: ApiRequest) -> ApiResponse:
        body = self._body(req, INTERROGATION_INPUT)
        user, shared = self._auth(req)
        if shared is not None:
            self._check_shared_key(shared)
        if self.maintenance_mode:
            raise err.bad_request(
                "MaintenanceMode", "AI Horde has entered maintenance mode. Please try again later."
            )
        webhook = body.get("webhook")
        if webhook and not str(webhook).startswith("https://"):
            raise err.bad_request("BadRequest", "webhooks need to point to an https endpoint.")
        forms_in = body.get("forms") or []
        if not forms_in:
            raise err.bad_request("BadRequest", "You need to request at least one form.")
        source = body.get("source_image") or ""
        if not source:
            raise err.bad_request(
                "ImageValidationFailed",
                "Image validation failed. Please provide a source image to interrogate.",
            )
        tiles = 1
        if source.startswith(("http://", "https://")):
            pass
        elif "://" in source[:12]:
            raise err.bad_request("SourceImageUrlInvalid", "Source image URL must use http(s).")
        else:
            data = decode_source_image(source)
            size = image_size(data) if data is not None else None
            if size is None:
                raise err.bad_request("ImageValidationFailed", err.IMAGE_VALIDATION_MESSAGE)
            if size[0] > 3072 or size[1] > 3072:
                raise err.bad_request(
                    "SourceImageResolutionExceeded", "Image resolution exceeds the maximum of 3072x3072."
                )
            tiles = max(1, -(-size[0] * size[1] // (512 * 512)))
        waiting_forms = sum(
            1
            for r in self._requests.values()
            if isinstance(r, InterrogationRequest) and r.user_id == user.id
            for f in r.forms
            if f.state in ("waiting", "processing")
        )
        if waiting_forms + len(forms_in) > 10 * user.concurrency:
            raise err.horde_error(
                429, "TooManyPrompts", "Parallel requests exceeded user limit. Please try again later."
            )
        forms: list[InterrogationForm] = []
        for item in forms_in:
            name = item["name"]
            if any(f.name == name for f in forms):
                continue
            kudos = 3.0 if name == "interrogation" else (3.0 * tiles if name in POST_PROCESSORS else 1.0)
            forms.append(
                InterrogationForm(id=self._new_id(), name=name, payload=item.get("payload"), kudos=kudos)
            )
        now = self.now()
        request = InterrogationRequest(
            id=self._new_id(),
            user_id=user.id,
            source_image=source,
            forms=forms,
            created_at=now,
            expires_at=now + REQUEST_TTL,
            slow_workers=body.get("slow_workers", True),
            webhook=webhook,
        )
        self._requests[request.id] = request
        for form in forms:
            self._forms[form.id] = (request, form)
        user.records["request"]["interrogation"] += len(forms)
        return ok({"id": request.id}, 202)

    def _ep_interrogate_status(self, req: ApiRequest) -> ApiResponse:
        self._sweep()
        request = self._requests.get(req.params["id"])
        if not isinstance(request, InterrogationRequest):
            raise err.request_not_found(req.params["id"], "Interrogation")
        if req.method == "DELETE":
            for form in request.forms:
                if form.state in ("waiting", "processing"):
                    form.state = "cancelled"
                    form.result = None
        else:
            self._autopilot_forms(request)
        return ok(self._interrogation_status(request))

    def _ep_interrogate_pop(self, req: ApiRequest) -> ApiResponse:
        body = self._body(req, INTERROGATION_POP_INPUT)
        worker = self._worker_from_pop(req, body, "interrogation")
        wanted = set(body.get("forms") or [])
        amount = int(body.get("amount", 1))
        self._sweep()
        popped: list[dict[str, Any]] = []
        for request in self._requests.values():
            if not isinstance(request, InterrogationRequest):
                continue
            for form in request.forms:
                if len(popped) >= amount:
                    break
                if form.state != "waiting" or form.name not in wanted:
                    continue
                self._start_form(request, form, worker.name)
                form.worker_id = worker.id
                entry: dict[str, Any] = {
                    "id": form.id,
                    "form": form.name,
                    "payload": form.payload,
                    "source_image": self._source_url(request),
                }
                if form.name in POST_PROCESSORS:
                    entry["r2_upload"] = self._r2_url(form.id, upload=True)
                popped.append(entry)
        return ok({"forms": popped, "skipped": {}})

    def _ep_interrogate_submit(self, req: ApiRequest) -> ApiResponse:
        body = self._body(req, INTERROGATION_SUBMIT_INPUT)
        user, _shared = self._auth(req, allow_shared=False)
        found = self._forms.get(body["id"])
        if found is None:
            raise err.horde_error(404, "InvalidJobID", f"Processing Job with ID {body['id']} does not exist.")
        request, form = found
        worker = self.workers.get(form.worker_id or "")
        if worker is not None and worker.owner_id not in (None, user.id):
            raise err.horde_error(403, "WrongCredentials", "Wrong credentials to submit as this worker.")
        if form.state == "done":
            raise err.bad_request(
                "DuplicateGen", f"Processing Generation with ID {form.id} already submitted."
            )
        if form.state != "processing":
            raise err.bad_request(
                "AbortedGen",
                f"Processing Generation with ID {form.id} took too long to process and has been aborted!",
            )
        if body.get("state") == "faulted":
            self._abort_form(form)
            return ok({"reward": 0})
        reward = self._complete_form(request, form, dict(body.get("result") or {}))
        return ok({"reward": reward})

    # ---- direct API ----------------------------------------------------------------------------------
    @property
    def interrogations(self) -> list[InterrogationRequest]:
        """Live interrogation requests, oldest first."""
        with self.lock:
            self._sweep()
            return [r for r in self._requests.values() if isinstance(r, InterrogationRequest)]

    def interrogation(self, req_id: str) -> InterrogationRequest:
        """Like ``get_request`` but typed; TypeError if the id is not an interrogation."""
        with self.lock:
            return self._interrogation(req_id)

    def start_form(self, req_id: str, form: str | None = None, *, worker_name: str | None = None) -> None:
        """A worker picks up one form (by name), or every waiting form."""
        with self.lock:
            request = self._interrogation(req_id)
            targets = [request.form(form)] if form else [f for f in request.forms if f.state == "waiting"]
            for target in targets:
                self._start_form(request, target, worker_name)

    def finish_form(
        self,
        req_id: str,
        form: str | None = None,
        result: dict[str, Any] | None = None,
        *,
        image: bytes | None = None,
    ) -> None:
        """Deliver a form's result (default: ``default_form_result``; ``form=None``: every pending form).

        Post-processor results of ``"R2"`` become URLs to the fake R2 serving ``image`` (or a made-up WebP).
        """
        with self.lock:
            request = self._interrogation(req_id)
            targets = (
                [request.form(form)]
                if form
                else [f for f in request.forms if f.state in ("waiting", "processing")]
            )
            for target in targets:
                if target.state == "waiting":
                    self._start_form(request, target, None)
                if target.state != "processing":
                    raise ValueError(f"form {target.name} of {req_id} is {target.state}")
                if image is not None:
                    target.image = image
                self._complete_form(
                    request, target, result if result is not None else default_form_result(target.name)
                )

    def expire_form(self, req_id: str, form: str) -> None:
        """The form's 3-minute worker deadline passes: it goes back to waiting (faulted after 3 aborts)."""
        with self.lock:
            target = self._interrogation(req_id).form(form)
            if target.state == "waiting":
                target.state = "processing"
            if target.state != "processing":
                raise ValueError(f"form {form} of {req_id} is {target.state}")
            self._abort_form(target)

    def fault_form(self, req_id: str, form: str) -> None:
        """Fault a form for good (state ``faulted``)."""
        with self.lock:
            target = self._interrogation(req_id).form(form)
            target.state = "faulted"
