"""Shared state and helpers of the fake Horde; the feature mixins build on ``HordeCore``."""

from __future__ import annotations

import hashlib
import hmac
import math
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.horde import errors as err
from tests.fakes.horde.ratelimit import RateLimiter
from tests.fakes.horde.records import (
    AnyRequest,
    Call,
    FakeSharedKey,
    FakeTeam,
    FakeUser,
    FakeWorker,
    GenRequest,
    Injection,
    InterrogationForm,
    InterrogationRequest,
    Job,
)
from tests.fakes.horde.schema import Schema, validate

ANON_APIKEY = "0000000000"
HORDE_VERSION = "5.1.5"
REQUEST_TTL = 20 * 60
R2_URL_TTL = 1800
_R2_SECRET = b"fake-horde-r2"

DEFAULT_NEWS: list[dict[str, Any]] = [
    {
        "date_published": "2025-01-15",
        "newspiece": "The fake horde is up. Everything here is made up for tests.",
        "importance": "Information",
        "tags": ["fake"],
        "title": "Fake news",
        "more_info_urls": ["https://example.invalid/news/1"],
    },
    {
        "date_published": "2024-12-01",
        "newspiece": "Older news, for ordering tests.",
        "importance": "Workers",
        "tags": None,  # the real server sends null tags on 38 of its 86 news items (transcript 04)
        "title": "Older fake news",
        "more_info_urls": [],
    },
]


@dataclass
class ApiRequest:
    """What an endpoint sees of an HTTP request (already parsed by the server)."""

    method: str
    path: str
    params: dict[str, str]
    query: Mapping[str, str]
    headers: Mapping[str, str]  # lower-cased names
    body: Any
    remote: str = "127.0.0.1"
    raw: bytes = b""

    @property
    def apikey(self) -> str | None:
        value = self.headers.get("apikey")
        return value if value else None


@dataclass
class ApiResponse:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"


def ok(body: Any, status: int = 200) -> ApiResponse:
    return ApiResponse(status, body)


class HordeCore:
    """State, clock, key resolution and serialisers shared by every endpoint family."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.lock = threading.RLock()
        self.clock: Callable[[], float] = clock
        self._offset = 0.0
        self._mono0 = clock()
        self._wall0 = time.time()
        self.enforce_rate_limits = True
        self.rate_limiter = RateLimiter(self.now, self.wall)
        self.origin = "http://127.0.0.1:0"

        self.anon = FakeUser(0, "Anonymous", ANON_APIKEY, kudos=0.0, concurrency=500, created_at=self.now())
        self.users: dict[int, FakeUser] = {0: self.anon}
        self._keys: dict[str, int] = {ANON_APIKEY: 0}
        self._next_user_id = 1
        self.shared_keys: dict[str, FakeSharedKey] = {}
        self.workers: dict[str, FakeWorker] = {}
        self.teams: dict[str, FakeTeam] = {}
        self.styles: dict[str, dict[str, Any]] = {}
        # Style collections ("categories"), as `GET /collections` lists them (transcript 93).
        self.collections: list[dict[str, Any]] = []

        self._requests: dict[str, AnyRequest] = {}
        self._jobs: dict[str, tuple[GenRequest, Job]] = {}
        self._forms: dict[str, tuple[InterrogationRequest, InterrogationForm]] = {}
        self._r2: dict[str, Job | InterrogationForm | bytes] = {}

        self._transfers_at: dict[tuple[int, int], float] = {}  # (source id, dest id) -> time
        self._idempotent: dict[tuple[int, str], Any] = {}  # (source id, Idempotency-Key) -> prior transfer
        self.calls: list[Call] = []
        self.injections: list[Injection] = []
        self.server_errors: list[str] = []
        self.down = False
        self.maintenance_mode = False
        self.invite_only_mode = False
        self.news: list[dict[str, Any]] = [dict(item) for item in DEFAULT_NEWS]
        self.whitelisted_ips: dict[str, float] = {}
        self.dry_run_cache: dict[str, float] = {}
        self.auto_expire = True
        self.enforce_job_ttl = False
        self.corrupt_prompt_patterns: list[str] = []
        self.model_multipliers: dict[str, float] = {}
        # The image model reference, served at `{origin}/model-reference.json` (None: 404 there).
        self.model_reference: dict[str, Any] | None = None
        # The curated LoRA list of the image model reference repository (CivitAI model ids), or None: 404.
        self.lora_reference: list[int] | None = None
        self.autopilot_start_after: int | None = None
        self.autopilot_finish_after: int | None = None
        # What the autopilot's workers answer for a form, by form name (default: `default_form_result`),
        # e.g. `{"nsfw": {"nsfw": True}}`: the image is judged NSFW.
        self.autopilot_form_results: dict[str, dict[str, Any]] = {}
        self.stats_img_totals: dict[str, dict[str, int]] = {
            period: {"images": base, "ps": base * 7_864_320}
            for period, base in (("minute", 120), ("hour", 7_000), ("day", 160_000), ("month", 4_800_000))
        } | {"total": {"images": 120_000_000, "ps": 120_000_000 * 7_864_320}}
        self.stats_text_totals: dict[str, dict[str, int]] = {
            period: {"requests": base, "tokens": base * 200}
            for period, base in (
                ("minute", 90),
                ("hour", 5_000),
                ("day", 120_000),
                ("month", 3_600_000),
                ("total", 90_000_000),
            )
        }
        self.default_worker = FakeWorker(
            id="00000000-0000-4000-8000-00000000f00d", name="fake-worker", models=["stable_diffusion"]
        )

    # ---- clock ---------------------------------------------------------------------------------------
    def now(self) -> float:
        """The fake's monotonic time: ``clock()`` plus everything passed to ``advance``."""
        return self.clock() + self._offset

    def wall(self) -> float:
        """Epoch seconds consistent with ``now()`` (used for Expires/X-RateLimit-Reset)."""
        return self._wall0 + (self.now() - self._mono0)

    def advance(self, seconds: float) -> None:
        """Move the fake's clock forward (rate-limit windows, expiry, transfer cool-downs)."""
        with self.lock:
            self._offset += seconds

    # ---- ids and keys --------------------------------------------------------------------------------
    @staticmethod
    def _new_id() -> str:
        return str(uuid.uuid4())

    def _resolve_key(self, apikey: str | None) -> tuple[FakeUser | None, FakeSharedKey | None]:
        if not apikey:
            return None, None
        shared = self.shared_keys.get(apikey)
        if shared is not None:
            return self.users.get(shared.owner_id), shared
        user_id = self._keys.get(apikey)
        if user_id is None:
            return None, None
        return self.users.get(user_id), None

    def _auth(self, req: ApiRequest, *, allow_shared: bool = True) -> tuple[FakeUser, FakeSharedKey | None]:
        """The caller's account; a missing key is a flask-restx 400, a wrong one a 401."""
        if req.apikey is None:
            raise err.missing_apikey()
        user, shared = self._resolve_key(req.apikey)
        if user is None or (shared is not None and not allow_shared):
            raise err.invalid_api_key()
        return user, shared

    def _check_shared_key(self, shared: FakeSharedKey) -> None:
        if shared.expiry_at is not None and self.wall() > shared.expiry_at:
            raise err.horde_error(403, "SharedKeyExpired", "This shared key has expired")
        if shared.kudos != -1 and shared.utilized >= shared.kudos:
            raise err.horde_error(403, "SharedKeyEmpty", "This shared key has run out of kudos.")

    @staticmethod
    def _body(req: ApiRequest, schema: Schema) -> dict[str, Any]:
        body = req.body if req.body is not None else {}
        problems = validate(body, schema)
        if problems:
            raise err.validation_error(problems)
        assert isinstance(body, dict)
        return body

    # ---- time-based housekeeping ---------------------------------------------------------------------
    def _sweep(self) -> None:
        """What upstream's cleaner threads do: delete expired requests, abort stale jobs (if enabled)."""
        now = self.now()
        if self.auto_expire:
            for request_id in [rid for rid, r in self._requests.items() if now > r.expires_at]:
                self._delete_request(request_id)
        for ip in [ip for ip, until in self.whitelisted_ips.items() if now > until]:
            del self.whitelisted_ips[ip]
        if self.enforce_job_ttl:
            self._abort_stale_jobs(now)

    def _abort_stale_jobs(self, now: float) -> None:  # overridden by the generation mixin
        return None

    def _delete_request(self, request_id: str) -> None:
        request = self._requests.pop(request_id, None)
        if request is None:
            return
        if isinstance(request, InterrogationRequest):
            for form in request.forms:
                self._forms.pop(form.id, None)
        else:
            for job in request.jobs:
                self._jobs.pop(job.id, None)

    def _get_request(self, request_id: str) -> AnyRequest:
        self._sweep()
        request = self._requests.get(request_id)
        if request is None:
            raise KeyError(f"no live request {request_id!r}")
        return request

    # ---- R2 --------------------------------------------------------------------------------------------
    def _r2_url(self, object_id: str, *, upload: bool = False) -> str:
        expires = math.floor(self.wall()) + R2_URL_TTL
        verb = "PUT" if upload else "GET"
        signature = hmac.new(_R2_SECRET, f"{verb}:{object_id}:{expires}".encode(), hashlib.sha256).hexdigest()
        return (
            f"{self.origin}/r2/{object_id}.webp?AWSAccessKeyId=FAKEHORDEKEY&Signature={signature[:28]}"
            f"&Expires={expires}"
        )

    # ---- serialisers ---------------------------------------------------------------------------------
    def _user_details(self, user: FakeUser, *, privileged: bool) -> dict[str, Any]:
        image_ids: list[str] = []
        text_ids: list[str] = []
        alchemy_ids: list[str] = []
        for request in self._requests.values():
            if request.user_id != user.id or request.done:
                continue
            {"image": image_ids, "text": text_ids, "interrogation": alchemy_ids}[request.kind].append(
                request.id
            )
        details: dict[str, Any] = {
            "username": user.username,
            "id": user.id,
            "kudos": round(user.kudos, 2),
            "concurrency": user.concurrency,
            "worker_invited": user.worker_invited,
            "moderator": user.moderator,
            "kudos_details": {k: round(v, 2) for k, v in user.kudos_details.items()},
            "worker_count": user.worker_count,
            "styles": [
                {"name": f"{user.username}::style::{s['name']}", "id": s["id"], "type": "image"}
                for s in self.styles.values()
                if s["creator"] == user.username
            ],
            "trusted": user.trusted,
            "flagged": user.flagged,
            "service": user.service,
            "education": user.education,
            "customizer": user.customizer,
            "deleted": user.deleted,
            "pseudonymous": user.pseudonymous,
            "account_age": max(0, int(self.now() - user.created_at)),
            "usage": {"megapixelsteps": None, "requests": None},
            "contributions": {"megapixelsteps": None, "fulfillments": None},
            "records": {k: dict(v) for k, v in user.records.items()},
        }
        if user.monthly_kudos:  # only for accounts that get some (transcripts 09, 13, 63)
            details["monthly_kudos"] = {"amount": user.monthly_kudos}
        if privileged or user.public_workers:
            details["worker_ids"] = list(user.worker_ids)
        if privileged:
            details["sharedkey_ids"] = [k.id for k in self.shared_keys.values() if k.owner_id == user.id]
            # Only while some are active, and only the kinds that are (transcripts 09 and 63).
            active = {"image": image_ids, "text": text_ids, "alchemy": alchemy_ids}
            if any(active.values()):
                details["active_generations"] = {kind: ids for kind, ids in active.items() if ids}
            details["vpn"] = user.vpn
            details["special"] = user.special
        return details

    def _shared_key_details(self, key: FakeSharedKey) -> dict[str, Any]:
        owner = self.users.get(key.owner_id)
        expiry = None
        if key.expiry_at is not None:
            expiry = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(key.expiry_at))
        details: dict[str, Any] = {
            "id": key.id,
            "username": owner.username if owner else "",
            "name": key.name,
            "kudos": key.kudos,
            "utilized": key.utilized,
            "max_image_pixels": key.max_image_pixels,
            "max_image_steps": key.max_image_steps,
            "max_text_tokens": key.max_text_tokens,
        }
        if expiry is not None:  # a key that never expires has no `expiry` (transcripts 73, 74)
            details["expiry"] = expiry
        return details
