"""A fake of the Horde's ratings service (ratings.aihorde.net) for behaviour tests.

Like `FakeHorde`, an aiohttp app on 127.0.0.1 in its own thread with its own event loop, so its timing never
depends on the test loop's virtual clock. All public methods are thread-safe.

    ratings = FakeRatings(horde=horde)       # keys are checked against the fake Horde's users (optional)
    base = ratings.start()                    # "http://127.0.0.1:PORT/api/v1"
    ds = ratings.add_dataset("Aesthetics v2")
    img = ratings.add_image(ds.id)            # or add_images(n, ds.id)
    ratings.revoke(apikey); ratings.forget_image(img.id); ratings.break_image(img.id); ratings.expire_urls()
    ratings.inject(path_regex, method=None, status=None, body=None, delay=0.0, times=1, drop=False)
    ratings.set_down(True); ratings.release_delays()
    ratings.calls; ratings.count("POST", r"/rating/"); ratings.submissions  # accepted ratings, in order

Wire protocol (as documented by the service and its clients): `apikey` header; `GET /rating/new[/{dataset}
[/{model}]]` → `{id, url, dataset_id}`; `POST /rating/{image_id}` `{rating 1-10, artifacts 0-5}` →
`{reward, message}`; `GET /datasets` → `[{id, name, description, image_count}]`; `GET /teams` →
`[{id, name}]`; errors `{message}` with an HTTP status. Image URLs are signed and expire (`Expires=`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import math
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web
from PIL import Image

from tests.fakes.horde import FakeHorde

PREFIX = "/api/v1"
URL_LIFETIME = 1800.0


@dataclass
class FakeDataset:
    id: str
    name: str
    description: str = ""


@dataclass
class FakeImage:
    id: str
    dataset_id: str
    data: bytes
    model: str = "stable_diffusion"
    removed: bool = False  # the service forgot it: 404 on rating
    broken: bool = False  # its file is gone: 404 on download


@dataclass(frozen=True)
class Submission:
    image_id: str
    username: str
    rating: int
    artifacts: int | None
    reward: float


@dataclass(frozen=True)
class RatingsCall:
    method: str
    path: str
    status: int
    apikey_sent: bool
    username: str | None
    json: Any
    injected: bool


@dataclass
class _Injection:
    pattern: re.Pattern[str]
    method: str | None
    status: int | None
    body: Any
    delay: float
    remaining: int | None
    drop: bool
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        if self.remaining is not None and self.remaining <= 0:
            return False
        return (self.method is None or self.method == method) and bool(self.pattern.search(path))


def make_image(seed: str, size: int = 64) -> bytes:
    digest = hashlib.sha256(seed.encode()).digest()
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (digest[0], digest[1], digest[2])).save(buffer, format="WEBP", quality=60)
    return buffer.getvalue()


@dataclass
class _State:
    datasets: dict[str, FakeDataset] = field(default_factory=dict)
    images: dict[str, FakeImage] = field(default_factory=dict)
    revoked: set[str] = field(default_factory=set)
    rated: dict[str, set[str]] = field(default_factory=dict)  # username -> image ids
    served: dict[str, int] = field(default_factory=dict)  # username -> serve counter
    submissions: list[Submission] = field(default_factory=list)
    calls: list[RatingsCall] = field(default_factory=list)
    injections: list[_Injection] = field(default_factory=list)
    teams: list[dict[str, str]] = field(default_factory=list)


class FakeRatings:
    def __init__(self, *, horde: FakeHorde | None = None, reward: float = 5.0) -> None:
        self.horde = horde
        self.reward = reward
        self.down = False
        self.lock = threading.RLock()
        self._recorded = threading.Condition(self.lock)
        self._state = _State()
        self._url_cutoff = 0.0  # URLs signed before this wall time are expired
        self.base_url: str | None = None
        self.origin: str | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._wake: asyncio.Event | None = None

    # ---- lifecycle ------------------------------------------------------------------------------------
    def start(self) -> str:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            loop.run_until_complete(self._serve())
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name="fake-ratings", daemon=True)
        self._thread.start()
        if not ready.wait(timeout=10):
            raise RuntimeError("FakeRatings did not start within 10 s")
        assert self.base_url is not None
        return self.base_url

    async def _serve(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self._runner = runner
        self._wake = asyncio.Event()
        port = int(runner.addresses[0][1])
        self.origin = f"http://127.0.0.1:{port}"
        self.base_url = self.origin + PREFIX

    def stop(self) -> None:
        thread, loop, runner = self._thread, self._loop, self._runner
        if thread is None or loop is None:
            return
        if self._wake is not None:
            loop.call_soon_threadsafe(self._wake.set)
        if runner is not None:
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        self._thread = None

    # ---- arranging --------------------------------------------------------------------------------------
    def add_dataset(self, name: str, description: str = "") -> FakeDataset:
        with self.lock:
            dataset = FakeDataset(id=str(uuid.uuid4()), name=name, description=description)
            self._state.datasets[dataset.id] = dataset
            return dataset

    def add_image(self, dataset_id: str | None = None, *, model: str = "stable_diffusion") -> FakeImage:
        with self.lock:
            if dataset_id is None:
                dataset_id = next(iter(self._state.datasets), None) or self.add_dataset("default").id
            image_id = str(uuid.uuid4())
            image = FakeImage(id=image_id, dataset_id=dataset_id, data=make_image(image_id), model=model)
            self._state.images[image_id] = image
            return image

    def add_images(self, count: int, dataset_id: str | None = None) -> list[FakeImage]:
        return [self.add_image(dataset_id) for _ in range(count)]

    def add_team(self, name: str) -> str:
        with self.lock:
            team_id = str(uuid.uuid4())
            self._state.teams.append({"id": team_id, "name": name})
            return team_id

    def revoke(self, apikey: str) -> None:
        """The key is no longer valid here (a revoked or reset Horde key)."""
        with self.lock:
            self._state.revoked.add(apikey)

    def forget_image(self, image_id: str) -> None:
        """The service no longer knows the image: rating it gives 404."""
        with self.lock:
            self._state.images[image_id].removed = True

    def break_image(self, image_id: str) -> None:
        """Its file is gone: downloading it gives 404 (the service still serves its id)."""
        with self.lock:
            self._state.images[image_id].broken = True

    def expire_urls(self) -> None:
        """Every URL handed out so far is now expired (403), as signed URLs are after a while."""
        with self.lock:
            self._url_cutoff = time.time() + 1

    # ---- faults and observation ---------------------------------------------------------------------
    def inject(
        self,
        path_regex: str,
        *,
        method: str | None = None,
        status: int | None = None,
        body: Any = None,
        delay: float = 0.0,
        times: int | None = 1,
        drop: bool = False,
    ) -> None:
        """The next `times` matching calls (None: all) wait `delay` real seconds (math.inf: until
        `release_delays`), then answer `status` with `body` (default `{"message": <phrase>}`), or
        are dropped, or (status None) proceed normally."""
        with self.lock:
            self._state.injections.append(
                _Injection(re.compile(path_regex), method, status, body, delay, times, drop)
            )

    def clear_injections(self) -> None:
        with self.lock:
            self._state.injections.clear()

    def release_delays(self) -> None:
        loop, wake = self._loop, self._wake
        if loop is None or wake is None:
            return

        def swap() -> None:
            wake.set()
            self._wake = asyncio.Event()

        loop.call_soon_threadsafe(swap)

    def set_down(self, down: bool = True) -> None:
        with self.lock:
            self.down = down

    @property
    def calls(self) -> list[RatingsCall]:
        with self.lock:
            return list(self._state.calls)

    @property
    def submissions(self) -> list[Submission]:
        with self.lock:
            return list(self._state.submissions)

    def calls_to_new_for(self, dataset_id: str) -> int:
        """How many images were asked for from one dataset."""
        return self.count("GET", rf"/rating/new/{re.escape(dataset_id)}")

    def count(self, method: str | None, path_regex: str) -> int:
        pattern = re.compile(path_regex)
        return sum(1 for c in self.calls if (method is None or c.method == method) and pattern.search(c.path))

    # ---- serving ----------------------------------------------------------------------------------------
    def _username(self, apikey: str | None) -> str | None:
        """The account behind a key, or None if it is not valid."""
        if not apikey or apikey in self._state.revoked:
            return None
        if self.horde is None:
            return f"user-{hashlib.sha256(apikey.encode()).hexdigest()[:6]}"
        with self.horde.lock:
            for user in self.horde.users.values():
                if user.apikey == apikey:
                    return user.username
        return None

    def _credit(self, username: str, amount: float) -> None:
        if self.horde is None:
            return
        with self.horde.lock:
            for user in self.horde.users.values():
                if user.username == username and not user.is_anon:
                    user.kudos += amount
                    user.kudos_details["awarded"] += amount

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        method = request.method.upper()
        path = request.path
        raw_path = request.rel_url.raw_path  # as sent: percent-encoding kept
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        apikey = request.headers.get("apikey")
        with self.lock:
            username = self._username(apikey)
            injection = None
            if not self.down:
                injection = next((i for i in self._state.injections if i.matches(method, path)), None)
                if injection is not None:
                    injection.hits += 1
                    if injection.remaining is not None:
                        injection.remaining -= 1
        if injection is not None and injection.delay > 0 and self._wake is not None:
            timeout = None if math.isinf(injection.delay) else injection.delay
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=timeout)
        if injection is not None and injection.drop:
            if request.transport is not None:
                request.transport.close()
            self._record(method, raw_path, 0, apikey, username, body, True)
            return web.Response(status=599)
        if self.down:
            status, payload, content_type = (
                503,
                b"<html><body>503 Service Unavailable</body></html>",
                "text/html",
            )
        elif injection is not None and injection.status is not None:
            status = injection.status
            reply = injection.body if injection.body is not None else {"message": _phrase(status)}
            payload, content_type = json.dumps(reply).encode(), "application/json"
        else:
            with self.lock:
                status, reply, content_type = self._dispatch(
                    method, path, request.query_string, body, username
                )
            payload = reply if isinstance(reply, bytes) else json.dumps(reply).encode()
        self._record(method, raw_path, status, apikey, username, body, injection is not None)
        return web.Response(status=status, body=payload, content_type=content_type)

    def _record(
        self,
        method: str,
        path: str,
        status: int,
        apikey: str | None,
        username: str | None,
        body: Any,
        injected: bool,
    ) -> None:
        with self.lock:
            self._state.calls.append(
                RatingsCall(method, path, status, apikey is not None, username, body, injected)
            )
            self._recorded.notify_all()

    def wait_for_calls(self, method: str, path_regex: str, count: int, timeout: float = 5.0) -> bool:
        """Block until `count` matching calls were answered (for a call the bot already gave up on)."""
        with self._recorded:
            return self._recorded.wait_for(lambda: self.count(method, path_regex) >= count, timeout=timeout)

    def _dispatch(
        self, method: str, path: str, query: str, body: Any, username: str | None
    ) -> tuple[int, Any, str]:
        image_file = re.fullmatch(r"/img/([^/]+)\.webp", path)
        if image_file is not None and method == "GET":
            return self._image_file(image_file.group(1), dict(parse_qsl(query)))
        if not path.startswith(PREFIX):
            return 404, {"message": "Not Found"}, "application/json"
        route = path[len(PREFIX) :]
        if route == "/datasets" and method == "GET":
            return 200, [self._dataset_body(d) for d in self._state.datasets.values()], "application/json"
        if route == "/teams" and method == "GET":
            return 200, list(self._state.teams), "application/json"
        new = re.fullmatch(r"/rating/new(?:/([^/]+)(?:/([^/]+))?)?", route)
        if new is not None and method == "GET":
            return self._new(username, new.group(1), new.group(2))
        rate = re.fullmatch(r"/rating/([^/]+)", route)
        if rate is not None and method == "POST":
            return self._rate(username, rate.group(1), body)
        return 404, {"message": "Not Found"}, "application/json"

    def _dataset_body(self, dataset: FakeDataset) -> dict[str, Any]:
        count = sum(1 for i in self._state.images.values() if i.dataset_id == dataset.id and not i.removed)
        return {
            "id": dataset.id,
            "name": dataset.name,
            "description": dataset.description,
            "image_count": count,
        }

    def _new(self, username: str | None, dataset_id: str | None, model: str | None) -> tuple[int, Any, str]:
        if username is None:
            return 401, {"message": "Invalid API key"}, "application/json"
        if dataset_id is not None and dataset_id not in self._state.datasets:
            return 404, {"message": "Dataset not found"}, "application/json"
        rated = self._state.rated.get(username, set())
        candidates = [
            image
            for image in self._state.images.values()
            if not image.removed
            and image.id not in rated
            and (dataset_id is None or image.dataset_id == dataset_id)
            and (model is None or image.model == model)
        ]
        if not candidates:
            return 404, {"message": "No more images to rate"}, "application/json"
        turn = self._state.served.get(username, 0)
        self._state.served[username] = turn + 1
        image = candidates[turn % len(candidates)]
        expires = int(time.time() + URL_LIFETIME)
        url = f"{self.origin}/img/{image.id}.webp?Expires={expires}&Signature=fake{turn}"
        return 200, {"id": image.id, "url": url, "dataset_id": image.dataset_id}, "application/json"

    def _image_file(self, image_id: str, query: dict[str, str]) -> tuple[int, Any, str]:
        image = self._state.images.get(image_id)
        expires = query.get("Expires", "")
        signed_at = int(expires) - URL_LIFETIME if expires.isdigit() else 0
        if not expires.isdigit() or int(expires) < time.time() or signed_at < self._url_cutoff - 1:
            return (
                403,
                b"<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>",
                "application/xml",
            )
        if image is None or image.broken:
            return 404, b"<Error><Code>NoSuchKey</Code></Error>", "application/xml"
        return 200, image.data, "image/webp"

    def _rate(self, username: str | None, image_id: str, body: Any) -> tuple[int, Any, str]:
        if username is None:
            return 401, {"message": "Invalid API key"}, "application/json"
        image = self._state.images.get(image_id)
        if image is None or image.removed:
            return 404, {"message": f"Image with ID {image_id} not found"}, "application/json"
        if not isinstance(body, dict):
            return 400, {"message": "Input payload validation failed"}, "application/json"
        rating = body.get("rating")
        artifacts = body.get("artifacts")
        if not isinstance(rating, int) or not 1 <= rating <= 10:
            return 400, {"message": "rating must be an integer from 1 to 10"}, "application/json"
        if artifacts is not None and (not isinstance(artifacts, int) or not 0 <= artifacts <= 5):
            return 400, {"message": "artifacts must be an integer from 0 to 5"}, "application/json"
        rated = self._state.rated.setdefault(username, set())
        if image_id in rated:
            return 400, {"message": "You have already rated this image"}, "application/json"
        rated.add(image_id)
        self._state.submissions.append(Submission(image_id, username, rating, artifacts, self.reward))
        self._credit(username, self.reward)
        return 200, {"reward": self.reward, "message": "Rating submitted"}, "application/json"


def _phrase(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
