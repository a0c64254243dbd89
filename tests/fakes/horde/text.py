"""Text generation endpoints (API_NOTES §5): async, status (no /check), pop/submit."""

from __future__ import annotations

import copy
from collections import Counter
from typing import Any

from tests.fakes.horde import errors as err
from tests.fakes.horde.core import REQUEST_TTL, ApiRequest, ApiResponse, ok
from tests.fakes.horde.image import NO_WORKER_WARNING, ImageMixin, _dry_run_key
from tests.fakes.horde.records import TextRequest
from tests.fakes.horde.schema import TEXT_INPUT, TEXT_POP_INPUT, TEXT_SUBMIT_INPUT

UPFRONT_MAX_LENGTH = 512
UPFRONT_MAX_CONTEXT = 8192


class TextMixin(ImageMixin):
    @staticmethod
    def _text_kudos(params: dict[str, Any]) -> float:
        """Per-generation kudos: max_length / 20 (4.0 at the default 80 tokens), at least 1."""
        return round(max(1.0, int(params.get("max_length", 80)) / 20), 2)

    def _ep_text_async(self, req: ApiRequest) -> ApiResponse:
        body = dict(self._body(req, TEXT_INPUT))
        params: dict[str, Any] = dict(body.get("params") or {})
        models = list(body.get("models") or [])
        cache_key = "text:" + _dry_run_key(params, models)
        if body.get("dry_run") and cache_key in self.dry_run_cache:
            return ok({"kudos": self.dry_run_cache[cache_key]})
        user, shared = self._auth(req)
        if shared is not None:
            self._check_shared_key(shared)
        n = int(params.get("n", 1))
        self._check_common(req, body, user, n)
        if not body.get("prompt"):
            raise err.bad_request("MissingPrompt", "You cannot specify an empty prompt.")
        self._check_concurrency(user, "text", n)
        max_length = int(params.get("max_length", 80))
        max_context = int(params.get("max_context_length", 2048))
        if max_length > max_context:
            raise err.bad_request(
                "TokenOverflow", "Your requested max_length cannot be larger than your max_context_length."
            )
        sampler_order = params.get("sampler_order")
        if sampler_order is not None and len(sampler_order) < 7:
            raise err.bad_request(
                "MissingFullSamplerOrder", "When sending a custom sampler order, send all 7 samplers."
            )
        stops = params.get("stop_sequence") or []
        if len(stops) > 128:
            raise err.bad_request(
                "TooManyStopSequences", "Too many stop sequences specified (max allowed is 128)."
            )
        if sum(len(stop) for stop in stops) > 2000:
            raise err.bad_request(
                "ExcessiveStopSequence", "Your total stop sequence length exceeds 2000 characters."
            )
        if shared is not None and shared.max_text_tokens != -1 and max_length > shared.max_text_tokens:
            raise err.bad_request("BadRequest", "This shared key does not allow this many tokens.")
        kudos = self._text_kudos(params)
        total = round(kudos * n + 1, 2)
        needs_upfront = max_length > UPFRONT_MAX_LENGTH or max_context > UPFRONT_MAX_CONTEXT
        if needs_upfront and user.kudos < total:
            raise err.horde_error(
                403,
                "KudosUpfront",
                f"For requests over {UPFRONT_MAX_LENGTH} tokens or {UPFRONT_MAX_CONTEXT} context, the client "
                f"needs to already have the required kudos. This request requires {total} kudos to fulfil.",
            )
        if body.get("dry_run"):
            self.dry_run_cache[cache_key] = total
            return ok({"kudos": total})
        now = self.now()
        request = TextRequest(
            id=self._new_id(),
            kind="text",
            user_id=user.id,
            # A copy of the containers only: the strings (long prompts) are shared with the call record.
            payload=copy.deepcopy(req.body),
            prompt=body["prompt"],
            params=params,
            models=models,
            n=n,
            remaining=n,
            kudos=kudos,
            cost_per_gen=kudos,
            created_at=now,
            expires_at=now + REQUEST_TTL,
            sharedkey_id=shared.id if shared else None,
            trusted_workers=body.get("trusted_workers", False),
            slow_workers=body.get("slow_workers", True),
            workers=list(body.get("workers") or []),
            worker_blacklist=body.get("worker_blacklist", False),
            ip=req.remote,
        )
        self._requests[request.id] = request
        user.records["request"]["text"] += n
        user.records["usage"]["tokens"] += max_length * n
        response: dict[str, Any] = {"id": request.id, "kudos": kudos}
        if not self._serving_workers("text", models):
            response["message"] = NO_WORKER_WARNING  # as on image requests (transcript 29)
            response["warnings"] = [{"code": "NoAvailableWorker", "message": NO_WORKER_WARNING}]
        return ok(response, 202)

    def _ep_text_status(self, req: ApiRequest) -> ApiResponse:
        self._sweep()
        request = self._requests.get(req.params["id"])
        if not isinstance(request, TextRequest):
            raise err.request_not_found(req.params["id"])
        if req.method == "DELETE":
            self._cancel_request(request)
        else:
            self._autopilot(request)
        return ok(self._status_body(request, full=True))

    def _ep_text_pop(self, req: ApiRequest) -> ApiResponse:
        body = self._body(req, TEXT_POP_INPUT)
        worker = self._worker_from_pop(req, body, "text")
        skipped: Counter[str] = Counter()
        for request in self._pickable("text"):
            reason = self._skip_reason(request, worker)
            if reason is not None:
                skipped[reason] += 1
                continue
            amount = min(int(body.get("amount", 1)), request.waiting)
            jobs = [self._start_job(request, worker) for _ in range(amount)]
            payload = dict(request.params)
            payload.update(
                {
                    "prompt": request.prompt,
                    "n": amount,
                    "max_length": int(request.params.get("max_length", 80)),
                    "max_context_length": int(request.params.get("max_context_length", 2048)),
                }
            )
            return ok(
                {
                    "payload": payload,
                    "id": jobs[0].id,
                    "ids": [job.id for job in jobs],
                    "model": jobs[0].model,
                    "ttl": self._job_ttl(request),
                    "skipped": dict(skipped),
                    "softprompt": request.payload.get("softprompt"),
                    "messages": [],
                }
            )
        return ok({"id": None, "ids": [], "skipped": dict(skipped)})

    def _ep_text_submit(self, req: ApiRequest) -> ApiResponse:
        body = self._body(req, TEXT_SUBMIT_INPUT)
        request, job = self._worker_job(req, body, "text")
        state = body.get("state", "ok")
        if state == "faulted":
            self._fault_job(request, job)
            return ok({"reward": 0})
        csam = state == "csam"
        reward = self._complete_job(
            request,
            job,
            text="" if csam else str(body.get("generation") or ""),
            censored=csam,
            gen_state=state,
            gen_metadata=[{"type": "censorship", "value": "csam"}] if csam else [],
        )
        return ok({"reward": reward})
