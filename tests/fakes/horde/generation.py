"""Job life cycle shared by image and text requests, and the direct Python API that drives it.

Upstream model (horde/classes/base/waiting_prompt.py): a request keeps ``n`` jobs still to hand out;
each worker pickup creates a processing generation. A fault marks that generation faulted and puts one
job back in the queue, but only for the request's first fault: after the second one the slot is lost
(n=1 → ``done:true, finished:0, faulted:false``); the request-level ``faulted`` flag is only set after
more than two faults. Cancelling sets the remaining n to 0 and aborts what is processing.
"""

from __future__ import annotations

import hashlib
import random
import uuid
from typing import Any, Literal, TypeVar, overload

from tests.fakes.horde.core import REQUEST_TTL, HordeCore
from tests.fakes.horde.images import b64, make_webp
from tests.fakes.horde.records import (
    AnyRequest,
    FakeWorker,
    GenRequest,
    ImageRequest,
    InterrogationRequest,
    Job,
    RequestKind,
    TextRequest,
)

R = TypeVar("R", bound=GenRequest)

FAULTS_REQUEUED = 1  # only the first fault of a request puts its job back in the queue
FAULTS_BEFORE_FAULTED = 2  # more than this many faults marks the whole request faulted


def _seed_for(params: dict[str, Any], index: int) -> int:
    raw = params.get("seed")
    if raw is None or raw == "":
        return random.randint(0, 2**32 - 1)
    text = str(raw)
    base = int(text) if text.isdigit() else int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)
    return base + index * int(params.get("seed_variation") or 1)


class GenerationMixin(HordeCore):
    # ---- internals -----------------------------------------------------------------------------------
    def _gen_request(self, request_id: str, cls: type[R]) -> R:
        request = self._get_request(request_id)
        if not isinstance(request, cls):
            raise TypeError(f"request {request_id!r} is a {request.kind} request, not {cls.__name__}")
        return request

    def _worker_named(self, name: str, kind: RequestKind, models: list[str]) -> FakeWorker:
        for worker in self.workers.values():
            if worker.name == name:
                return worker
        worker_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"fake-horde-worker:{name}"))
        return FakeWorker(id=worker_id, name=name, type=kind, models=list(models[:1]))

    def _pick_worker(self, request: GenRequest, worker_name: str | None) -> FakeWorker:
        if worker_name is not None:
            return self._worker_named(worker_name, request.kind, request.models)
        for worker in self.workers.values():
            if worker.type != request.kind or not worker.online:
                continue
            if not request.models or set(request.models) & set(worker.models):
                return worker
        return self.default_worker

    @staticmethod
    def _job_model(request: GenRequest, worker: FakeWorker, model: str | None) -> str:
        if model is not None:
            return model
        for name in request.models:
            if name in worker.models:
                return name
        if request.models:
            return request.models[0]
        if worker.models:
            return worker.models[0]
        return "stable_diffusion" if request.kind == "image" else "koboldcpp/FakeLM-7B"

    def _start_job(self, request: GenRequest, worker: FakeWorker, model: str | None = None) -> Job:
        if request.remaining <= 0 or request.done:
            raise ValueError(f"request {request.id} has no waiting jobs")
        request.remaining -= 1
        now = self.now()
        seed = _seed_for(request.params, len(request.jobs))
        job = Job(
            id=self._new_id(),
            request_id=request.id,
            worker_id=worker.id,
            worker_name=worker.name,
            model=self._job_model(request, worker, model),
            started_at=now,
            seed=str(seed),
        )
        request.jobs.append(job)
        self._jobs[job.id] = (request, job)
        request.expires_at = now + REQUEST_TTL
        return job

    def _charge(self, request: GenRequest, amount: float) -> None:
        request.consumed_kudos = round(request.consumed_kudos + amount, 2)
        user = self.users.get(request.user_id)
        if user is not None and not user.is_anon:
            user.kudos -= amount
            user.kudos_details["accumulated"] -= amount
        if request.sharedkey_id is not None and request.sharedkey_id in self.shared_keys:
            self.shared_keys[request.sharedkey_id].utilized += round(amount)

    def _complete_job(
        self,
        request: GenRequest,
        job: Job,
        *,
        image: bytes | None = None,
        text: str | None = None,
        censored: bool = False,
        gen_state: str = "ok",
        gen_metadata: list[dict[str, Any]] | None = None,
        seed: str | None = None,
    ) -> float:
        job.state = "done"
        job.image = image
        job.text = text
        job.censored = censored
        job.gen_state = gen_state
        job.gen_metadata = list(gen_metadata or [])
        if seed is not None:
            job.seed = seed
        if image is None and request.kind == "image":
            job.broken = True
        self._r2[job.id] = job
        self._charge(request, 0.0 if censored else request.cost_per_gen)
        worker = self.workers.get(job.worker_id)
        if worker is not None:
            worker.requests_fulfilled += 1
            worker.kudos_rewards += request.kudos
            owner = self.users.get(worker.owner_id) if worker.owner_id is not None else None
            if owner is not None and not owner.is_anon:
                owner.kudos += request.kudos
                kind_key = "image" if request.kind == "image" else "text"
                owner.records["fulfillment"][kind_key] += 1
        if request.kind == "image":
            for period in self.stats_img_totals.values():
                period["images"] += 1
        else:
            for period in self.stats_text_totals.values():
                period["requests"] += 1
        return request.kudos

    def _fault_job(self, request: GenRequest, job: Job) -> None:
        job.state = "faulted"
        request.faults += 1
        worker = self.workers.get(job.worker_id)
        if worker is not None:
            worker.uncompleted_jobs += 1
        if request.faults <= FAULTS_REQUEUED and not request.cancelled:
            request.remaining += 1
        if request.faults > FAULTS_BEFORE_FAULTED:
            request.faulted = True

    def _cancel_request(self, request: GenRequest) -> None:
        if request.done:
            return
        request.remaining = 0
        for job in request.processing_jobs():
            job.state = "cancelled"
            self._charge(request, request.cost_per_gen)
        request.cancelled = True

    def _abort_stale_jobs(self, now: float) -> None:
        for request in list(self._requests.values()):
            if not isinstance(request, GenRequest):
                continue
            ttl = self._job_ttl(request)
            for job in request.processing_jobs():
                if now - job.started_at > ttl:
                    self._fault_job(request, job)

    @staticmethod
    def _job_ttl(request: GenRequest) -> int:
        if request.kind == "text":
            return 150
        params = request.params
        pixels = int(params.get("width", 512)) * int(params.get("height", 512))
        return int(max(150, 30 + int(params.get("steps", 30)) * 2 * pixels / (512 * 512)))

    def _queue_position(self, request: GenRequest) -> int:
        if request.queue_override is not None:
            return request.queue_override[0]
        if request.waiting == 0 or request.done:
            return 0
        ahead = 0
        for other in self._requests.values():
            if other is request:
                break
            if (
                isinstance(other, GenRequest)
                and other.kind == request.kind
                and other.waiting > 0
                and not other.done
            ):
                ahead += 1
        return ahead + 1

    def _wait_time(self, request: GenRequest, position: int) -> int:
        if request.queue_override is not None:
            return request.queue_override[1]
        if request.done:
            return 0
        return position * 10 + (10 if request.processing else 0)

    def _status_body(self, request: GenRequest, *, full: bool) -> dict[str, Any]:
        position = self._queue_position(request)
        body: dict[str, Any] = {
            "finished": request.finished,
            "processing": request.processing,
            "restarted": request.restarted,
            "waiting": request.waiting,
            "done": request.done,
            "faulted": request.faulted,
            "wait_time": self._wait_time(request, position),
            "queue_position": position,
            "kudos": request.consumed_kudos,
            "is_possible": not request.impossible,
        }
        if full:
            if isinstance(request, ImageRequest):
                body["generations"] = [self._image_generation(request, job) for job in request.generations]
                # Tests mark requests as shared by adding their ids to `horde.shared_request_ids`.
                body["shared"] = request.id in getattr(self, "shared_request_ids", set())
            else:
                body["generations"] = [self._text_generation(job) for job in request.generations]
        return body

    def _image_generation(self, request: GenRequest, job: Job) -> dict[str, Any]:
        if request.r2:
            img = self._r2_url(job.id)
        elif job.broken or job.image is None:
            img = "N/A"
        else:
            img = b64(job.image)
        return {
            "img": img,
            "seed": str(job.seed),
            "id": job.id,
            "censored": job.censored,
            "gen_metadata": list(job.gen_metadata),
            "worker_id": job.worker_id,
            "worker_name": job.worker_name,
            "model": job.model,
            "state": job.gen_state,
        }

    @staticmethod
    def _text_generation(job: Job) -> dict[str, Any]:
        return {
            "text": job.text or "",
            "seed": int(job.seed) if str(job.seed).isdigit() else 0,
            "gen_metadata": list(job.gen_metadata),
            "worker_id": job.worker_id,
            "worker_name": job.worker_name,
            "model": job.model,
            "state": job.gen_state,
        }

    def _default_image(self, request: GenRequest, job: Job, *, black: bool) -> bytes:
        width = int(request.params.get("width", 512))
        height = int(request.params.get("height", 512))
        return make_webp(job.id, width, height, black=black)

    @staticmethod
    def _default_text(request: GenRequest, job: Job) -> str:
        return f"Fake continuation #{len(request.generations) + 1} of: {request.prompt[-40:]}"

    def _finish_jobs(
        self, request: GenRequest, count: int, worker_name: str | None, model: str | None
    ) -> list[Job]:
        pending = request.processing + request.waiting
        if count <= 0 or count > pending:
            raise ValueError(f"request {request.id} has {pending} pending jobs, cannot finish {count}")
        targets = request.processing_jobs()
        if worker_name is not None:
            named = [job for job in targets if job.worker_name == worker_name]
            targets = named + [job for job in targets if job.worker_name != worker_name]
        targets = targets[:count]
        while len(targets) < count:
            targets.append(self._start_job(request, self._pick_worker(request, worker_name), model))
        return targets

    def _autopilot(self, request: GenRequest) -> None:
        """Advance a request on each status poll when ``horde.autopilot(...)`` is on."""
        request.polls += 1
        start_after = self.autopilot_start_after
        finish_after = self.autopilot_finish_after
        if request.done:
            return
        if start_after is not None and request.polls >= start_after:
            while request.remaining > 0:
                self._start_job(request, self._pick_worker(request, None))
        if finish_after is not None and request.polls >= finish_after:
            for job in self._finish_jobs(request, request.processing + request.waiting, None, None):
                if isinstance(request, ImageRequest):
                    self._complete_job(request, job, image=self._default_image(request, job, black=False))
                else:
                    self._complete_job(request, job, text=self._default_text(request, job))

    # ---- direct API: inspection --------------------------------------------------------------------
    @property
    def jobs(self) -> list[ImageRequest]:
        """Live image requests, oldest first."""
        with self.lock:
            self._sweep()
            return [r for r in self._requests.values() if isinstance(r, ImageRequest)]

    @property
    def text_jobs(self) -> list[TextRequest]:
        """Live text requests, oldest first."""
        with self.lock:
            self._sweep()
            return [r for r in self._requests.values() if isinstance(r, TextRequest)]

    def get_request(self, request_id: str) -> AnyRequest:
        """The live request (image, text or interrogation) with this id; KeyError if gone."""
        with self.lock:
            return self._get_request(request_id)

    def image_request(self, request_id: str) -> ImageRequest:
        """Like ``get_request`` but typed; TypeError if the id is not an image request."""
        with self.lock:
            return self._gen_request(request_id, ImageRequest)

    def text_request(self, request_id: str) -> TextRequest:
        """Like ``get_request`` but typed; TypeError if the id is not a text request."""
        with self.lock:
            return self._gen_request(request_id, TextRequest)

    @overload
    def last_request(self, kind: Literal["image"] = "image") -> ImageRequest: ...
    @overload
    def last_request(self, kind: Literal["text"]) -> TextRequest: ...
    @overload
    def last_request(self, kind: Literal["interrogation"]) -> InterrogationRequest: ...
    def last_request(self, kind: RequestKind = "image") -> AnyRequest:
        """The newest live request of ``kind``; LookupError if there is none."""
        with self.lock:
            self._sweep()
            for request in reversed(list(self._requests.values())):
                if request.kind == kind:
                    return request
        raise LookupError(f"no live {kind} request")

    def job(self, gen_id: str) -> Job:
        """A generation (processing or finished) by its id."""
        with self.lock:
            if gen_id in self._jobs:
                return self._jobs[gen_id][1]
            stored = self._r2.get(gen_id)
            if isinstance(stored, Job):
                return stored
        raise KeyError(f"no generation {gen_id!r}")

    # ---- direct API: driving progress --------------------------------------------------------------
    def start_processing(
        self,
        req_id: str,
        count: int | None = None,
        *,
        worker_name: str | None = None,
        model: str | None = None,
    ) -> list[str]:
        """Hand ``count`` waiting jobs (default: all) of an image or text request to a worker."""
        with self.lock:
            request = self._gen_request(req_id, GenRequest)
            count = request.waiting if count is None else count
            if count > request.waiting or count <= 0:
                raise ValueError(f"request {req_id} has {request.waiting} waiting jobs, cannot start {count}")
            worker = self._pick_worker(request, worker_name)
            return [self._start_job(request, worker, model).id for _ in range(count)]

    def finish(
        self,
        req_id: str,
        images: list[bytes] | None = None,
        *,
        count: int | None = None,
        censored: bool = False,
        csam: bool = False,
        state: str = "ok",
        worker_name: str | None = None,
        model: str | None = None,
        seed: str | None = None,
        gen_metadata: list[dict[str, Any]] | None = None,
    ) -> list[str]:
        """Deliver images: one per item of ``images``, else ``count``, else every pending job.

        Default images are small WebPs made with Pillow (black for censored ones). ``state`` may be
        ``ok``, ``censored``, ``csam`` or ``faulted`` (the latter faults the jobs instead). A cancelled
        request ignores late deliveries (returns ``[]``). Returns the generation ids.
        """
        with self.lock:
            request = self._gen_request(req_id, GenRequest)
            if not isinstance(request, ImageRequest):
                return self.finish_text(req_id, count=count, worker_name=worker_name, model=model)
            if request.cancelled:
                return []
            if state == "faulted":
                return [self.fault(req_id, worker_name=worker_name) for _ in range(count or 1)]
            csam = csam or state == "csam"
            censored = censored or csam or state == "censored"
            wanted = len(images) if images is not None else count
            jobs = self._finish_jobs(
                request, wanted or (request.processing + request.waiting), worker_name, model
            )
            metadata = list(gen_metadata or [])
            if censored:
                metadata.append({"type": "censorship", "value": "csam" if csam else "nsfw"})
            gen_state = "csam" if csam else ("censored" if censored else "ok")
            for index, job in enumerate(jobs):
                image = (
                    images[index] if images is not None else self._default_image(request, job, black=censored)
                )
                self._complete_job(
                    request,
                    job,
                    image=image,
                    censored=censored,
                    gen_state=gen_state,
                    gen_metadata=metadata,
                    seed=seed,
                )
            return [job.id for job in jobs]

    def finish_text(
        self,
        req_id: str,
        texts: list[str] | None = None,
        *,
        count: int | None = None,
        worker_name: str | None = None,
        model: str | None = None,
        state: str = "ok",
        csam: bool = False,
    ) -> list[str]:
        """Deliver texts for a text request (default: every pending job, with made-up text)."""
        with self.lock:
            request = self._gen_request(req_id, TextRequest)
            if request.cancelled:
                return []
            wanted = len(texts) if texts is not None else count
            jobs = self._finish_jobs(
                request, wanted or (request.processing + request.waiting), worker_name, model
            )
            csam = csam or state == "csam"
            metadata = [{"type": "censorship", "value": "csam"}] if csam else []
            for index, job in enumerate(jobs):
                text = texts[index] if texts is not None else self._default_text(request, job)
                self._complete_job(
                    request,
                    job,
                    text="" if csam else text,
                    censored=csam,
                    gen_state="csam" if csam else "ok",
                    gen_metadata=metadata,
                )
            return [job.id for job in jobs]

    def fault(self, req_id: str, *, worker_name: str | None = None) -> str:
        """A worker reports one job of this request faulted (starting one first if none is processing)."""
        with self.lock:
            request = self._gen_request(req_id, GenRequest)
            jobs = self._finish_jobs(request, 1, worker_name, None)
            self._fault_job(request, jobs[0])
            return jobs[0].id

    def cancel(self, req_id: str) -> None:
        """What ``DELETE .../status/{id}`` does."""
        with self.lock:
            request = self._get_request(req_id)
            if isinstance(request, GenRequest):
                self._cancel_request(request)
            else:
                for form in request.forms:
                    if form.state in ("waiting", "processing"):
                        form.state = "cancelled"

    def expire(self, req_id: str) -> None:
        """Delete a request as upstream's cleaner does: check/status then answer 404 RequestNotFound."""
        with self.lock:
            if req_id not in self._requests:
                raise KeyError(f"no live request {req_id!r}")
            self._delete_request(req_id)

    def set_queue(self, req_id: str, position: int | None, wait_time: int | None = None) -> None:
        """Pin ``queue_position``/``wait_time`` of a request (``position=None`` goes back to computed)."""
        with self.lock:
            request = self._gen_request(req_id, GenRequest)
            if position is None:
                request.queue_override = None
            else:
                request.queue_override = (position, wait_time if wait_time is not None else position * 10)

    def set_impossible(self, req_id: str, impossible: bool = True) -> None:
        """Make check/status report ``is_possible: false`` (or true again)."""
        with self.lock:
            self._gen_request(req_id, GenRequest).impossible = impossible

    def break_image(self, gen_id: str) -> None:
        """Lose the stored image: its R2 URL answers 404 and ``r2:false`` status gives ``"N/A"``."""
        with self.lock:
            self.job(gen_id).broken = True

    def autopilot(self, start_after: int | None = 1, finish_after: int | None = 2) -> None:
        """Let requests progress by themselves: on the ``start_after``-th check/status poll of a request
        its jobs start, on the ``finish_after``-th they finish with default output. ``None`` disables
        a step; ``autopilot(None, None)`` turns it off. Interrogations finish all forms likewise."""
        with self.lock:
            self.autopilot_start_after = start_after
            self.autopilot_finish_after = finish_after
