"""Fake-Horde fidelity: for every recorded exchange with the real AI Horde, the fake (tests/fakes/horde/)
is sent the same request (with its own ids and keys, after the same steps that led to it) and must answer
the same status, a body of the same shape (same keys, JSON types, nulls where the real one has nulls, the
same `rc`) and the same rate-limit headers.

Where the fake differs on purpose, the difference is listed in `DELIBERATE` below, with the reason, and has
its own test pinning what the fake does instead. No transcript is left out without a reason.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.contract.transcripts import RATE_LIMIT_HEADERS, Transcript, load_transcripts, transcript
from tests.fakes.horde import FakeHorde, FakeUser

AGENT = {"Client-Agent": "horde-smoke-test:1.0:local"}
SDXL_NO_WORKER = "SDXL 1.0"
IMAGE_MODELS = ["AlbedoBase XL (SDXL)", "Deliberate", "stable_diffusion"]
TEXT_MODEL = "koboldcpp/LLaMA2-13B-Psyfighter2"
FORMS = ["caption", "nsfw", "RealESRGAN_x4plus"]

# ---- the shape of a JSON value -------------------------------------------------------------------------


@dataclass
class Shape:
    """The JSON types a value takes, its keys (objects) and its items (arrays), merged over all items."""

    types: set[str] = field(default_factory=set)
    keys: dict[str, Shape] = field(default_factory=dict)
    items: Shape | None = None

    def add(self, value: Any) -> Shape:
        if value is None:
            self.types.add("null")
        elif isinstance(value, bool):
            self.types.add("bool")
        elif isinstance(value, int | float):
            self.types.add("number")
        elif isinstance(value, str):
            self.types.add("string")
        elif isinstance(value, list):
            self.types.add("array")
            for item in value:
                self.items = (self.items or Shape()).add(item)
        elif isinstance(value, dict):
            self.types.add("object")
            for key, item in value.items():
                self.keys.setdefault(key, Shape()).add(item)
        return self


def shape_differences(real: Shape, fake: Shape, where: str = "$") -> list[str]:
    problems: list[str] = []
    if real.types != fake.types:
        problems.append(f"{where}: real {sorted(real.types)}, fake {sorted(fake.types)}")
    if "object" in real.types and "object" in fake.types:
        for key in sorted(real.keys.keys() - fake.keys.keys()):
            problems.append(f"{where}.{key}: missing in the fake")
        for key in sorted(fake.keys.keys() - real.keys.keys()):
            problems.append(f"{where}.{key}: only in the fake")
        for key in sorted(real.keys.keys() & fake.keys.keys()):
            problems += shape_differences(real.keys[key], fake.keys[key], f"{where}.{key}")
    if real.items is not None and fake.items is not None:
        problems += shape_differences(real.items, fake.items, f"{where}[]")
    return problems


def rate_headers(headers: Any) -> dict[str, str]:
    lowered = {k.lower(): v for k, v in dict(headers).items()}
    return {name: lowered[name.lower()] for name in RATE_LIMIT_HEADERS if name.lower() in lowered}


def differences(t: Transcript, answer: httpx.Response) -> list[str]:
    problems: list[str] = []
    if answer.status_code != t.status:
        problems.append(f"status: real {t.status}, fake {answer.status_code} {answer.text[:300]}")
    try:
        body = answer.json()
    except ValueError:
        return [*problems, f"body: the fake's is not JSON: {answer.text[:200]!r}"]
    problems += shape_differences(Shape().add(t.body), Shape().add(body))
    real_rc = t.body.get("rc") if isinstance(t.body, dict) else None
    fake_rc = body.get("rc") if isinstance(body, dict) else None
    if real_rc is not None and fake_rc != real_rc:
        problems.append(f"rc: real {real_rc}, fake {fake_rc}")
    # The limiter's and flask-restx's messages are fixed texts: the fake must say the same.
    fixed_message = t.status == 429 or (isinstance(t.body, dict) and "errors" in t.body)
    fake_message = body.get("message") if isinstance(body, dict) else None
    if fixed_message and fake_message != t.body.get("message"):
        problems.append(f"message: real {t.body.get('message')!r}, fake {fake_message!r}")
    real_rate, fake_rate = rate_headers(t.headers), rate_headers(answer.headers)
    if sorted(real_rate) != sorted(fake_rate):
        problems.append(f"rate-limit headers: real {sorted(real_rate)}, fake {sorted(fake_rate)}")
    elif (
        "X-RateLimit-Limit" in real_rate and real_rate["X-RateLimit-Limit"] != fake_rate["X-RateLimit-Limit"]
    ):
        limits = (real_rate["X-RateLimit-Limit"], fake_rate["X-RateLimit-Limit"])
        problems.append(f"X-RateLimit-Limit: real {limits[0]}, fake {limits[1]}")
    return problems


# ---- the world the recordings were made in, rebuilt in the fake ----------------------------------------


class World:
    """The accounts, workers and team of the recording session, in a fresh fake Horde, and a client."""

    def __init__(self, horde: FakeHorde, http: httpx.Client) -> None:
        self.horde = horde
        self.http = http
        self.admin = horde.add_user("admin", kudos=1_000_000, id=1, moderator=True, trusted=True)
        self.alice = horde.add_user("alice", kudos=10_000, id=2)
        self.bob = horde.add_user("bob", kudos=1_000, id=3)
        self.mod = horde.add_user("mod", kudos=0, id=4, moderator=True)
        self.worker_owner = horde.add_user("worker", kudos=0, id=5, trusted=True)
        self.team = horde.add_team("Local Team", info="fake team", creator="worker#5")
        self.image_worker = horde.add_worker(
            "Local Fake Worker", IMAGE_MODELS, owner=self.worker_owner, trusted=True, max_pixels=1048576
        )
        self.text_worker = horde.add_worker(
            "Local Fake Worker (text)", [TEXT_MODEL], "text", owner=self.worker_owner, trusted=True
        )
        self.alchemist = horde.add_worker(
            "Local Fake Worker (alchemy)", [], "interrogation", owner=self.worker_owner, forms=FORMS
        )
        self.shared_key_id: str | None = None

    def key(self, who: FakeUser | str | None) -> dict[str, str]:
        if who is None:
            return {}
        if isinstance(who, str):
            return {"apikey": who}
        assert who.apikey is not None
        return {"apikey": who.apikey}

    def send(
        self,
        t: Transcript,
        *,
        path: str | None = None,
        key: FakeUser | str | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """`t`'s request as the fake sees it: its own ids (`path`), keys (`key`) and body (`json`)."""
        body = t.request_json if json is None else json
        return self.http.request(
            t.method,
            "/v2" + (path or t.path),
            params=t.params,
            json=body,
            headers={**AGENT, **(headers or {}), **self.key(key)},
        )

    def submit(self, number: int, key: FakeUser | str | None = None, **changes: Any) -> str:
        """Send transcript `number`'s generate request (image or text); the fake's request id."""
        t = transcript(number)
        answer = self.send(t, key=key or self.alice, json={**t.request_json, **changes})
        assert answer.status_code == 202, answer.text
        return str(answer.json()["id"])

    def interrogate(self) -> str:
        answer = self.send(transcript(79), key=self.alice)
        assert answer.status_code == 202, answer.text
        return str(answer.json()["id"])


Scenario = Callable[[World, Transcript], httpx.Response]


def _as(who: Callable[[World], FakeUser | str | None]) -> Scenario:
    return lambda w, t: w.send(t, key=who(w))


def _alice(w: World, t: Transcript) -> httpx.Response:
    return w.send(t, key=w.alice if "apikey" in t.request_headers else None)


def _user_single(w: World, t: Transcript) -> httpx.Response:
    return w.send(t, path=f"/users/{w.alice.id}")


def _check(number: int, then: Callable[[World, str], None] | None = None) -> Scenario:
    """Submit transcript `number`'s request, bring it to the recorded state, then send `t` with its id."""

    def run(w: World, t: Transcript) -> httpx.Response:
        request_id = w.submit(number, key=w.horde.anon if number == 34 else w.alice)
        if then is not None:
            then(w, request_id)
        kind = t.path.split("/")[-2]
        prefix = "/generate/text/status" if "/text/" in t.path else f"/generate/{kind}"
        return w.send(t, path=f"{prefix}/{request_id}")

    return run


def _finished(w: World, request_id: str) -> None:
    w.horde.finish(request_id, worker_name="Local Fake Worker")


def _censored(w: World, request_id: str) -> None:
    w.horde.finish(request_id, censored=True, worker_name="Local Fake Worker")


def _faulted(w: World, request_id: str) -> None:
    w.horde.fault(request_id, worker_name="Local Fake Worker")


def _cancelled(w: World, request_id: str) -> None:
    w.horde.cancel(request_id)


def _text_done(w: World, request_id: str) -> None:
    w.horde.finish_text(request_id, worker_name="Local Fake Worker (text)")


def _interrogation(then: Callable[[World, str], None] | None) -> Scenario:
    def run(w: World, t: Transcript) -> httpx.Response:
        request_id = w.interrogate()
        if then is not None:
            then(w, request_id)
        return w.send(t, path=f"/interrogate/status/{request_id}")

    return run


def _forms_done(w: World, request_id: str) -> None:
    w.horde.finish_form(request_id, "caption", {"caption": "a fake caption of a colourful gradient"})
    w.horde.finish_form(request_id, "nsfw", {"nsfw": False})
    w.horde.finish_form(request_id, "RealESRGAN_x4plus")


def _transfer(who: Callable[[World], FakeUser], username: Callable[[World], str]) -> Scenario:
    def run(w: World, t: Transcript) -> httpx.Response:
        return w.send(t, key=who(w), json={**t.request_json, "username": username(w)})

    return run


def _transfer_back_too_fast(w: World, t: Transcript) -> httpx.Response:
    sent = w.send(transcript(55), key=w.alice, json={"username": w.bob.username, "amount": 10})
    assert sent.status_code == 200, sent.text
    return w.send(t, key=w.bob, json={"username": w.alice.username, "amount": 1})


def _bob_with_a_waiting_request(w: World, t: Transcript) -> httpx.Response:
    w.submit(29, key=w.bob)  # recorded while bob had image requests waiting: `active_generations`
    return w.send(t, key=w.bob)


def _worker(w: World, t: Transcript) -> httpx.Response:
    return w.send(t, path=f"/workers/{w.image_worker.id}")


def _shared_key(w: World) -> str:
    key = w.horde.add_shared_key(
        w.alice,
        "discord-bot key",
        kudos=100,
        max_image_pixels=262144,
        max_image_steps=30,
        max_text_tokens=200,
    )
    return key.id


def _shared_key_path(w: World, t: Transcript) -> httpx.Response:
    return w.send(t, path=f"/sharedkeys/{_shared_key(w)}", key=w.alice if t.method == "DELETE" else None)


def _with_shared_key(w: World, t: Transcript) -> httpx.Response:
    return w.send(t, key=_shared_key(w))


def _dry_run_cached_bad_key(w: World, t: Transcript) -> httpx.Response:
    warm = w.send(t, key=w.alice)  # the same params, priced once with a good key: now cached
    assert warm.status_code == 200, warm.text
    return w.send(t, key="not-a-real-key")


def _style_by_name(w: World, t: Transcript) -> httpx.Response:
    recorded = transcript(96).body
    w.horde.add_style(
        recorded["name"], prompt=recorded["prompt"], params=recorded["params"], models=recorded["models"]
    )
    return w.send(t)


def _with_style(w: World, t: Transcript) -> httpx.Response:
    recorded = transcript(96).body
    w.horde.add_style(
        recorded["name"], prompt=recorded["prompt"], params=recorded["params"], models=recorded["models"]
    )
    return w.send(t, key=w.alice)


def _status_polls(count: int) -> Scenario:
    """Transcripts 100-110: the 11th status call within a minute is refused (10 per minute per id)."""

    def run(w: World, t: Transcript) -> httpx.Response:
        request_id = w.submit(99)
        w.horde.finish(request_id)
        for _ in range(count):
            assert w.send(t, path=f"/generate/status/{request_id}").status_code == 200
        return w.send(t, path=f"/generate/status/{request_id}")

    return run


def _burst(count: int) -> Scenario:
    """Transcripts 111-114: the 3rd POST to generate/async within one second is refused (2 per second)."""

    def run(w: World, t: Transcript) -> httpx.Response:
        for _ in range(count):
            w.send(t, key=w.alice)
        return w.send(t, key=w.alice)

    return run


def _cleanup_cancel(w: World, t: Transcript) -> httpx.Response:
    request_id = w.submit(99)
    w.horde.finish(request_id)
    return w.send(t, path=f"/generate/status/{request_id}")


SCENARIOS: dict[str, Scenario] = {
    "09_find_user_alice": _as(lambda w: w.alice),
    "10_find_user_anon": _as(lambda w: w.horde.anon),
    "11_find_user_badkey": _as(lambda w: "not-a-real-key"),
    "12_find_user_nokey": _as(lambda w: None),
    "13_user_single": _user_single,
    "17_img_async_r2": _alice,
    "18_img_check_waiting": _check(17),
    "19_img_check_done": _check(17, _finished),
    "20_img_status_done_r2": _check(17, _finished),
    "21_img_async_b64": _alice,
    "22_img_status_done_b64": _check(21, _finished),
    "24_img_status_censored": _check(23, _censored),
    "26_img_check_after_fault": _check(25, _faulted),
    "27_img_status_after_fault": _check(25, _faulted),
    "28_img_cancel_after_fault": _check(25, _faulted),
    "30_img_cancel_waiting": _check(29),
    "31_img_check_after_cancel": _check(29, _cancelled),
    "34_img_async_anon": _as(lambda w: w.horde.anon),
    "35_img_cancel_anon": _check(34),
    "46_val_client_agent_banned": lambda w, t: w.send(
        t, key=w.alice, headers={"Client-Agent": "My-Project:v0.0.1:My-Contact"}
    ),
    "47_dry_run_cached_badkey": _dry_run_cached_bad_key,
    "48_dry_run_uncached_badkey": _as(lambda w: "not-a-real-key"),
    "49_val_no_apikey": _as(lambda w: None),
    "50_val_bad_apikey": _as(lambda w: "not-a-real-key"),
    "51_val_upfront_kudos_anon": _as(lambda w: w.horde.anon),
    "52_val_upfront_kudos_bob": _as(lambda w: w.bob),
    "53_val_dry_run_big": _as(lambda w: w.bob),
    "55_kudos_transfer": _transfer(lambda w: w.alice, lambda w: w.bob.username),
    "56_kudos_transfer_to_self": _transfer(lambda w: w.alice, lambda w: w.alice.username),
    "57_kudos_transfer_unknown_user": _transfer(lambda w: w.alice, lambda w: "nobody#424242"),
    "58_kudos_transfer_too_much": _transfer(lambda w: w.alice, lambda w: w.admin.username),
    "59_kudos_transfer_back_too_fast": _transfer_back_too_fast,
    "60_kudos_transfer_name_ignored": _transfer(lambda w: w.alice, lambda w: f"whatever#{w.admin.id}"),
    "61_kudos_transfer_zero": _transfer(lambda w: w.alice, lambda w: w.bob.username),
    "62_kudos_transfer_anon": _transfer(lambda w: w.horde.anon, lambda w: w.bob.username),
    "63_find_user_bob_after_transfer": _bob_with_a_waiting_request,
    "66_worker_single": _worker,
    "73_sharedkey_create": _alice,
    "74_sharedkey_get": _shared_key_path,
    "75_sharedkey_generate_dry": _with_shared_key,
    "76_sharedkey_generate_over_limit": _with_shared_key,
    "77_sharedkey_find_user": _with_shared_key,
    "78_sharedkey_delete": _shared_key_path,
    "80_interrogate_status_waiting": _interrogation(_forms_done),
    "81_interrogate_status_done": _interrogation(_forms_done),
    "83_interrogate_cancel": _interrogation(None),
    "86_text_status_waiting": _check(85, _text_done),
    "87_text_status_done": _check(85, _text_done),
    "96_style_by_name": _style_by_name,
    "97_img_with_style_dry": _with_style,
    **{f"{100 + i}_ratelimit_status_{i}": _status_polls(i) for i in range(11)},
    **{f"{111 + i}_ratelimit_async_burst_{i}": _burst(i) for i in range(4)},
    "115_ratelimit_cleanup_cancel": _cleanup_cancel,
}

# ---- what differs on purpose ---------------------------------------------------------------------------

# transcript name -> why the fake answers differently. Each has its own test below pinning what it does.
DELIBERATE: dict[str, str] = {
    **{
        name: (
            "an endpoint the bot never calls: the fake doesn't implement it (404 RequestNotFound for an "
            "unknown path, 405 for a known path with another method, as flask answers)"
        )
        for name in (
            "06_stats_img_models",
            "08_stats_text_models",
            "15_users_list",
            "64_kudos_award_by_mod",
            "71_team_create",
            "92_styles_text_list",
            "94_style_create_by_admin",
            "95_style_create_by_alice",
            "98_documents_terms",
        )
    },
}
NOT_IMPLEMENTED = set(DELIBERATE)


def _world(horde_limiter: bool) -> Iterator[World]:
    with FakeHorde(horde_limiter=horde_limiter) as horde:
        assert horde.base_url is not None
        with httpx.Client(base_url=horde.base_url, timeout=10) as http:
            yield World(horde, http)
            assert horde.server_errors == [], horde.server_errors


@pytest.fixture
def world() -> Iterator[World]:
    # The fake's limiter counting as the real one does (fixed windows; Retry-After 0 within the second):
    # its default, which every behaviour test and benchmark runs against.
    yield from _world(horde_limiter=True)


@pytest.fixture
def world_moving_limiter() -> Iterator[World]:
    # Moving windows, on request only (`FakeHorde(horde_limiter=False)`): while the fake keeps them, the
    # headers they send must still be the real server's.
    yield from _world(horde_limiter=False)


def _compared() -> list[Transcript]:
    return [t for t in load_transcripts() if t.name not in DELIBERATE]


def test_every_transcript_is_compared_or_has_a_reason() -> None:
    names = {t.name for t in load_transcripts()}
    assert len(names) == 115
    assert set(DELIBERATE) <= names, "DELIBERATE names a transcript that doesn't exist"
    assert set(SCENARIOS) <= names, "SCENARIOS names a transcript that doesn't exist"
    assert all(reason.strip() for reason in DELIBERATE.values())


@pytest.mark.parametrize("t", _compared(), ids=lambda t: t.name)
def test_fake_answers_like_the_real_server(world: World, t: Transcript) -> None:
    scenario = SCENARIOS.get(t.name, _alice)
    answer = scenario(world, t)
    problems = differences(t, answer)
    assert not problems, f"{t.name} ({t.endpoint}):\n  " + "\n  ".join(problems)


@pytest.mark.parametrize("name", sorted(NOT_IMPLEMENTED))
def test_deliberate_endpoints_the_bot_never_calls_are_not_implemented(world: World, name: str) -> None:
    t = transcript(name)
    answer = world.send(t, key=world.alice)
    assert answer.status_code in (404, 405), f"{name}: the fake implements it now: compare it instead"
    if answer.status_code == 404:
        assert answer.json()["rc"] == "RequestNotFound"
    else:
        assert answer.json() == {"message": "The method is not allowed for the requested URL."}


@pytest.mark.parametrize(
    "name",
    [
        "02_status_modes",
        "09_find_user_alice",
        "17_img_async_r2",
        "20_img_status_done_r2",
        "55_kudos_transfer",
        "66_worker_single",
        "72_teams_list",
        "86_text_status_waiting",
        "91_styles_image_list",
        "110_ratelimit_status_10",
    ],
)
def test_moving_limiter_sends_the_real_rate_limit_headers(world_moving_limiter: World, name: str) -> None:
    """The moving-window limiter a test may still choose: its answers carry the same rate-limit headers,
    with the same limits, as the real server's."""
    t = transcript(name)
    answer = SCENARIOS.get(name, _alice)(world_moving_limiter, t)
    assert answer.status_code == t.status
    real, fake = rate_headers(t.headers), rate_headers(answer.headers)
    assert sorted(fake) == sorted(real)
    assert fake.get("X-RateLimit-Limit") == real.get("X-RateLimit-Limit")
