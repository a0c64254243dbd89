"""The fake's state objects: users, keys, workers, teams, requests and their jobs, calls, injections.

Objects handed to tests are the live ones. Read them freely; change them through ``FakeHorde`` methods
(or under ``horde.lock``) because the server thread mutates them too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

JobState = Literal["processing", "done", "faulted", "cancelled"]
FormState = Literal["waiting", "processing", "done", "faulted", "cancelled"]
RequestKind = Literal["image", "text", "interrogation"]


def _kudos_details() -> dict[str, float]:
    return dict.fromkeys(
        ("accumulated", "gifted", "donated", "admin", "received", "recurring", "awarded", "styled"), 0.0
    )


def _records() -> dict[str, dict[str, float]]:
    return {
        "usage": {"megapixelsteps": 0.0, "tokens": 0},
        "contribution": {"megapixelsteps": 0.0, "tokens": 0},
        "fulfillment": {"image": 0, "text": 0, "interrogation": 0},
        "request": {"image": 0, "text": 0, "interrogation": 0},
        "style": {"image": 0, "text": 0, "interrogation": 0},
    }


@dataclass(eq=False)
class FakeUser:
    """A Horde account. ``username`` is the unique alias ``alias#id``."""

    id: int
    alias: str
    apikey: str | None
    kudos: float = 0.0
    trusted: bool = False
    moderator: bool = False
    flagged: bool = False
    suspicious: bool = False
    education: bool = False
    service: bool = False
    customizer: bool = False
    special: bool = False
    vpn: bool = False
    deleted: bool = False
    pseudonymous: bool = False
    concurrency: int = 30
    worker_invited: int = 0
    worker_count: int = 0
    worker_ids: list[str] = field(default_factory=list)
    public_workers: bool = False
    monthly_kudos: int = 0
    created_at: float = 0.0
    kudos_details: dict[str, float] = field(default_factory=_kudos_details)
    records: dict[str, dict[str, float]] = field(default_factory=_records)

    @property
    def username(self) -> str:
        return f"{self.alias}#{self.id}"

    @property
    def key(self) -> str:
        """The account's API key, typed as present (a revoked key is an error here)."""
        if self.apikey is None:
            raise LookupError(f"{self.alias} has no API key (revoked)")
        return self.apikey

    @property
    def is_anon(self) -> bool:
        return self.id == 0

    def __repr__(self) -> str:  # never show the key
        return f"FakeUser(id={self.id}, username={self.username!r}, kudos={self.kudos})"


@dataclass(eq=False)
class FakeSharedKey:
    """A shared key: its ``id`` (a UUID) works as an apikey; the owner pays."""

    id: str
    owner_id: int
    name: str
    kudos: int = 5000
    expiry_at: float | None = None  # wall-clock epoch seconds, None = never
    utilized: int = 0
    max_image_pixels: int = -1
    max_image_steps: int = -1
    max_text_tokens: int = -1

    def __repr__(self) -> str:
        return f"FakeSharedKey(name={self.name!r}, owner_id={self.owner_id}, kudos={self.kudos})"


@dataclass(eq=False)
class FakeTeam:
    id: str
    name: str
    info: str = ""
    creator: str = "db0#1"


@dataclass(eq=False)
class FakeWorker:
    id: str
    name: str
    type: RequestKind = "image"
    models: list[str] = field(default_factory=list)
    forms: list[str] = field(default_factory=list)
    owner_id: int | None = None
    trusted: bool = False
    online: bool = True
    threads: int = 1
    max_pixels: int = 4194304
    nsfw: bool = True
    speed: float = 1_000_000.0  # pixelsteps (image) or tokens (text) per second
    uptime_kudos: float = 0.0  # kudos_details.uptime: null until the worker earned some
    team_id: str | None = None
    maintenance_mode: bool = False
    flagged: bool = False
    info: str | None = None
    bridge_agent: str = "AI Horde Worker reGen:9.0.1:https://github.com/Haidra-Org/horde-worker-reGen"
    max_length: int = 512
    max_context_length: int = 2048
    requests_fulfilled: int = 0
    kudos_rewards: float = 0.0
    megapixelsteps_generated: float = 0.0
    tokens_generated: float = 0.0
    uptime: int = 3600
    uncompleted_jobs: int = 0
    img2img: bool = True
    painting: bool = True
    post_processing: bool = True
    lora: bool = True
    controlnet: bool = True
    sdxl_controlnet: bool = True


@dataclass(eq=False)
class Job:
    """One processing generation (an image or a text), as a worker holds it."""

    id: str
    request_id: str
    worker_id: str
    worker_name: str
    model: str
    state: JobState = "processing"
    started_at: float = 0.0
    seed: str = "0"
    image: bytes | None = None
    text: str | None = None
    censored: bool = False
    gen_state: str = "ok"
    gen_metadata: list[dict[str, Any]] = field(default_factory=list)
    uploaded: bytes | None = None  # what a worker PUT to the fake R2 upload URL
    broken: bool = False  # the stored object is missing (R2 GET 404s, r2=false gives "N/A")


@dataclass(eq=False)
class GenRequest:
    """A waiting prompt: ``remaining`` jobs still to hand out, ``jobs`` handed out so far."""

    id: str
    kind: RequestKind
    user_id: int
    payload: dict[str, Any]
    prompt: str
    params: dict[str, Any]
    models: list[str]
    n: int
    remaining: int
    kudos: float  # per-generation base kudos, as returned by the async call
    cost_per_gen: float
    created_at: float
    expires_at: float
    sharedkey_id: str | None = None
    jobs: list[Job] = field(default_factory=list)
    faults: int = 0
    faulted: bool = False
    cancelled: bool = False
    consumed_kudos: float = 0.0
    queue_override: tuple[int, int] | None = None
    impossible: bool = False
    polls: int = 0
    r2: bool = True
    nsfw: bool = False
    censor_nsfw: bool = False
    trusted_workers: bool = False
    slow_workers: bool = True
    workers: list[str] = field(default_factory=list)
    worker_blacklist: bool = False
    style_id: str | None = None
    rated: bool = False
    ip: str = "127.0.0.1"

    @property
    def finished(self) -> int:
        return sum(1 for job in self.jobs if job.state == "done")

    @property
    def processing(self) -> int:
        return sum(1 for job in self.jobs if job.state == "processing")

    @property
    def restarted(self) -> int:
        return sum(1 for job in self.jobs if job.state in ("faulted", "cancelled"))

    @property
    def waiting(self) -> int:
        return max(self.remaining, 0)

    @property
    def done(self) -> bool:
        return self.faulted or self.cancelled or (self.remaining <= 0 and self.processing == 0)

    @property
    def generations(self) -> list[Job]:
        return [job for job in self.jobs if job.state == "done"]

    def processing_jobs(self) -> list[Job]:
        return [job for job in self.jobs if job.state == "processing"]


@dataclass(eq=False)
class ImageRequest(GenRequest):
    pass


@dataclass(eq=False)
class TextRequest(GenRequest):
    pass


@dataclass(eq=False)
class InterrogationForm:
    id: str
    name: str
    payload: dict[str, Any] | None = None
    state: FormState = "waiting"
    result: dict[str, Any] | None = None
    worker_id: str | None = None
    worker_name: str | None = None
    abort_count: int = 0
    kudos: float = 1.0
    started_at: float = 0.0
    image: bytes | None = None  # post-processor output served from the fake R2
    uploaded: bytes | None = None


@dataclass(eq=False)
class InterrogationRequest:
    id: str
    user_id: int
    source_image: str
    forms: list[InterrogationForm]
    created_at: float
    expires_at: float
    slow_workers: bool = True
    webhook: str | None = None
    polls: int = 0
    kind: RequestKind = "interrogation"

    @property
    def state(self) -> str:
        states = [form.state for form in self.forms]
        if states and all(state == "faulted" for state in states):
            return "faulted"
        if all(state == "done" for state in states):
            return "done"
        if "processing" in states:
            return "processing"
        if "waiting" in states:
            return "waiting"
        return "partial"

    @property
    def done(self) -> bool:
        return all(form.state in ("done", "faulted", "cancelled") for form in self.forms)

    def form(self, name: str) -> InterrogationForm:
        for form in self.forms:
            if form.name == name:
                return form
        raise KeyError(f"interrogation {self.id} has no form {name!r}")


AnyRequest = ImageRequest | TextRequest | InterrogationRequest


class _CallTuple(NamedTuple):
    method: str
    path: str
    status: int
    headers: dict[str, str]
    json: Any


class Call(_CallTuple):
    """One HTTP exchange: unpacks as ``(method, path, status, headers, json)``.

    ``headers`` are the request headers with the ``apikey`` value replaced by ``"<redacted>"``;
    ``json`` is the parsed request body (None if none). Extra attributes: ``query`` (dict),
    ``user_id`` (the account the apikey resolved to, None if missing/unknown), ``shared_key`` (True if
    the apikey was a shared key), ``apikey_sent`` (bool), ``client_agent`` (header value or None),
    ``response`` (parsed JSON response body, or None), ``injected`` (True if a fault injection answered),
    ``at`` (the fake's clock, ``horde.now()``, when it was answered).
    """

    at: float
    query: dict[str, str]
    user_id: int | None
    shared_key: bool
    apikey_sent: bool
    client_agent: str | None
    response: Any
    injected: bool


def make_call(
    method: str,
    path: str,
    status: int,
    headers: dict[str, str],
    body: Any,
    *,
    query: dict[str, str],
    user_id: int | None,
    shared_key: bool,
    apikey_sent: bool,
    client_agent: str | None,
    response: Any,
    injected: bool,
    at: float = 0.0,
) -> Call:
    call = Call(method, path, status, headers, body)
    call.at = at
    call.query = query
    call.user_id = user_id
    call.shared_key = shared_key
    call.apikey_sent = apikey_sent
    call.client_agent = client_agent
    call.response = response
    call.injected = injected
    return call


@dataclass(eq=False)
class Injection:
    """A scripted fault: the next ``remaining`` calls matching ``pattern`` (and ``method``) get it."""

    pattern: re.Pattern[str]
    method: str | None = None
    status: int | None = None
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    remaining: int | None = 1  # None = forever
    delay: float = 0.0
    malformed: bool = False
    retry_after: float | None = None
    rc: str | None = None
    drop: bool = False
    hits: int = 0
    cancelled: bool = False

    def matches(self, method: str, path: str) -> bool:
        if self.cancelled or (self.remaining is not None and self.remaining <= 0):
            return False
        if self.method is not None and self.method.upper() != method.upper():
            return False
        return self.pattern.search(path) is not None

    def cancel(self) -> None:
        self.cancelled = True

    @property
    def exhausted(self) -> bool:
        return self.cancelled or (self.remaining is not None and self.remaining <= 0)
