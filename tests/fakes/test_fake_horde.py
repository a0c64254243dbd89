"""Tests of the fake AI Horde itself, through httpx over 127.0.0.1, against the facts in
tests/data/horde/API_NOTES.md."""

from __future__ import annotations

import asyncio
import base64
import io
import math
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.fakes.horde import BANNED_CLIENT_AGENT, FakeHorde, FakeUser

AGENT = {"Client-Agent": "hordebot-tests:0.1:https://example.invalid"}


@pytest.fixture
def horde() -> Iterator[FakeHorde]:
    fake = FakeHorde()
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()
    assert fake.server_errors == []


@pytest.fixture
def client(horde: FakeHorde) -> Iterator[httpx.Client]:
    assert horde.base_url is not None
    with httpx.Client(base_url=horde.base_url, headers=AGENT, timeout=10) as http:
        yield http


@pytest.fixture
def alice(horde: FakeHorde) -> FakeUser:
    return horde.add_user("alice", kudos=1000)


@pytest.fixture
def bob(horde: FakeHorde) -> FakeUser:
    return horde.add_user("bob", kudos=50)


def key(user: FakeUser) -> dict[str, str]:
    assert user.apikey is not None
    return {"apikey": user.apikey}


def generate(client: httpx.Client, user: FakeUser, **body: Any) -> httpx.Response:
    body.setdefault("prompt", "a lighthouse at dusk")
    return client.post("/v2/generate/async", json=body, headers=key(user))


def generate_id(horde: FakeHorde, client: httpx.Client, user: FakeUser, **body: Any) -> str:
    response = generate(client, user, **body)
    assert response.status_code == 202, response.text
    horde.advance(1.0)  # keep clear of the 2/s generate limit in multi-request tests
    return str(response.json()["id"])


def decode_webp(data: bytes) -> tuple[str, tuple[int, int]]:
    with Image.open(io.BytesIO(data)) as image:
        return str(image.format), image.size


# ---- lifecycle ---------------------------------------------------------------------------------------


def test_start_returns_api_base_and_stop_is_idempotent() -> None:
    horde = FakeHorde()
    base = horde.start()
    assert base.startswith("http://127.0.0.1:")
    assert base.endswith("/api")
    assert httpx.get(f"{base}/v2/status/heartbeat").json()["message"] == "OK"
    horde.stop()
    horde.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{base}/v2/status/heartbeat", timeout=2)


def test_context_manager_serves_and_stops() -> None:
    with FakeHorde() as horde:
        assert horde.base_url is not None
        assert httpx.get(f"{horde.base_url}/v2/status/modes").status_code == 200
    assert horde.base_url is not None
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{horde.base_url}/v2/status/modes", timeout=2)


async def test_runs_on_its_own_loop_not_the_test_loop(horde: FakeHorde, alice: FakeUser) -> None:
    tasks_before = asyncio.all_tasks()
    async with httpx.AsyncClient(base_url=horde.base_url or "", headers=AGENT) as http:
        response = await http.post("/v2/generate/async", json={"prompt": "x"}, headers=key(alice))
    assert response.status_code == 202
    assert asyncio.all_tasks() == tasks_before
    assert horde._thread is not None and horde._thread is not threading.current_thread()


def test_unknown_route_is_404_with_rc(client: httpx.Client) -> None:
    response = client.get("/v2/does/not/exist")
    assert response.status_code == 404
    assert response.json()["rc"] == "RequestNotFound"
    assert "message" in response.json()


def test_known_route_wrong_method_is_405(client: httpx.Client) -> None:
    response = client.post("/v2/status/news")
    assert response.status_code == 405
    assert "rc" not in response.json()


def test_responses_carry_cors_and_horde_node(client: httpx.Client, horde: FakeHorde) -> None:
    response = client.get("/v2/status/heartbeat")
    assert response.headers["access-control-allow-origin"] == "*"
    assert response.headers["horde-node"] == f"fakehorde:{horde.port}:5.1.5"
    assert "x-ratelimit-limit" not in response.headers  # heartbeat is exempt


def test_bad_json_body_is_400(client: httpx.Client, alice: FakeUser) -> None:
    response = client.post(
        "/v2/generate/async", content=b"{nope", headers={**key(alice), "Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert "message" in response.json()


# ---- client agent and recording ------------------------------------------------------------------------


def test_banned_client_agent_is_403(horde: FakeHorde) -> None:
    response = httpx.get(f"{horde.base_url}/v2/status/news", headers={"Client-Agent": BANNED_CLIENT_AGENT})
    assert response.status_code == 403
    assert response.json()["rc"] == "BannedClientAgent"


def test_missing_client_agent_is_served_and_recorded(horde: FakeHorde, client: httpx.Client) -> None:
    assert httpx.get(f"{horde.base_url}/v2/status/news").status_code == 200
    client.get("/v2/status/news")
    first, second = horde.calls_to("/status/news")
    assert first.client_agent is None
    assert second.client_agent == AGENT["Client-Agent"]


def test_calls_record_user_but_never_the_key(horde: FakeHorde, client: httpx.Client, alice: FakeUser) -> None:
    client.get("/v2/find_user", headers=key(alice))
    client.get("/v2/find_user", headers={"apikey": "wrong-key-123"})
    method, path, status, headers, body = horde.calls[0]
    assert (method, path, status, body) == ("GET", "/api/v2/find_user", 200, None)
    assert headers["apikey"] == "<redacted>"
    assert horde.calls[0].user_id == alice.id
    assert horde.calls[1].user_id is None and horde.calls[1].apikey_sent
    assert alice.apikey is not None
    assert alice.apikey not in repr(horde.calls)
    assert alice.apikey not in repr(alice)
    assert horde.count("GET", r"/find_user$") == 2
    assert horde.count(None, r"/find_user$") == 2
    assert horde.count("POST", r"/find_user$") == 0


# ---- users -----------------------------------------------------------------------------------------------


def test_find_user_returns_user_details(client: httpx.Client, alice: FakeUser) -> None:
    response = client.get("/v2/find_user", headers=key(alice))
    assert response.status_code == 200
    details = response.json()
    assert details["username"] == f"alice#{alice.id}"
    assert details["id"] == alice.id
    assert details["kudos"] == 1000
    assert details["concurrency"] == 30
    # As the real server: `active_generations` only while some are active (transcripts 09, 63).
    assert "active_generations" not in details and "monthly_kudos" not in details
    assert details["sharedkey_ids"] == []
    assert set(details["records"]) == {"usage", "contribution", "fulfillment", "request", "style"}


def test_find_user_without_key_is_401_and_unknown_key_404(client: httpx.Client) -> None:
    missing = client.get("/v2/find_user")
    assert missing.status_code == 401
    assert missing.json()["rc"] == "InvalidAPIKey"
    wrong = client.get("/v2/find_user", headers={"apikey": "not-a-key"})
    assert wrong.status_code == 404
    assert wrong.json()["rc"] == "UserNotFound"


def test_anonymous_user(client: httpx.Client) -> None:
    details = client.get("/v2/find_user", headers={"apikey": "0000000000"}).json()
    assert (details["id"], details["kudos"], details["concurrency"]) == (0, 0, 500)
    assert details["username"] == "Anonymous#0"


def test_users_by_id_is_public_view(client: httpx.Client, alice: FakeUser) -> None:
    details = client.get(f"/v2/users/{alice.id}").json()
    assert details["username"] == alice.username
    assert "sharedkey_ids" not in details
    assert "active_generations" not in details
    missing = client.get("/v2/users/999")
    assert missing.status_code == 404
    assert missing.json()["rc"] == "UserNotFound"


def test_revoked_key_stops_working(horde: FakeHorde, client: httpx.Client, alice: FakeUser) -> None:
    old_key = alice.apikey
    assert old_key is not None
    horde.revoke_key(old_key)
    assert alice.apikey is None
    assert client.get("/v2/find_user", headers={"apikey": old_key}).status_code == 404
    response = client.post("/v2/generate/async", json={"prompt": "x"}, headers={"apikey": old_key})
    assert response.status_code == 401


def test_add_user_ids_and_keys(horde: FakeHorde) -> None:
    first = horde.add_user("one")
    second = horde.add_user("two", apikey="k" * 22, id=42)
    assert first.id == 1 and second.id == 42 and second.apikey == "k" * 22
    assert first.apikey is not None and len(first.apikey) == 22
    with pytest.raises(ValueError):
        horde.add_user("dup", apikey="k" * 22)


# ---- image generation: submission ---------------------------------------------------------------------


def test_generate_returns_202_with_id_kudos_and_no_worker_warning(
    horde: FakeHorde, client: httpx.Client, alice: FakeUser
) -> None:
    response = generate(client, alice, models=["Deliberate"])
    assert response.status_code == 202
    body = response.json()
    assert set(body) == {"id", "kudos", "message", "warnings"}  # as the real server (transcript 29)
    assert body["kudos"] == 6.0
    assert body["warnings"][0]["code"] == "NoAvailableWorker"
    assert body["message"] == body["warnings"][0]["message"]
    request = horde.image_request(body["id"])
    assert request.prompt == "a lighthouse at dusk"
    assert request.user_id == alice.id
    assert horde.jobs == [request]


def test_typed_lookups(horde: FakeHorde, client: httpx.Client, alice: FakeUser) -> None:
    request_id = generate_id(horde, client, alice)
    assert horde.last_request("image") is horde.image_request(request_id) is horde.get_request(request_id)
    with pytest.raises(TypeError):
        horde.text_request(request_id)
    with pytest.raises(LookupError):
        horde.last_request("text")
    (gen_id,) = horde.finish(request_id)
    assert horde.job(gen_id).state == "done"
    with pytest.raises(KeyError):
        horde.get_request("no-such-id")


def test_no_warning_when_a_worker_serves_the_model(
    horde: FakeHorde, client: httpx.Client, alice: FakeUser
) -> None:
    horde.add_worker("w1", models=["Deliberate"])
    assert "warnings" not in generate(client, alice, models=["Deliberate"]).json()


@pytest.mark.parametrize(
    ("params", "field", "message"),
    [
        ({"width": 500}, "params.width", "500 is not a multiple of 64"),
        ({"height": 4096}, "params.height", "4096 is greater than the maximum of 3072"),
        ({"width": 0}, "params.width", "0 is less than the minimum of 64"),
        ({"steps": 501}, "params.steps", "501 is greater than the maximum of 500"),
        ({"steps": "ten"}, "params.steps", "'ten' is not of type 'integer'"),
        ({"n": 21}, "params.n", "21 is greater than the maximum of 20"),
        ({"cfg_scale": 101}, "params.cfg_scale", "101 is greater than the maximum of 100"),
        ({"sampler_name": "euler"}, "params.sampler_name", "'euler' is not one of"),
        ({"seed": 42}, "params.seed", "42 is not of type 'string'"),
        ({"loras": [{"model": 1}]}, "params.loras.0", "'name' is a required property"),
    ],
)
def test_generate_payload_validation_is_flask_restx_shape(
    client: httpx.Client, alice: FakeUser, params: dict[str, Any], field: str, message: str
) -> None:
    response = generate(client, alice, params=params)
    assert response.status_code == 400
    body = response.json()
    assert body["message"] == "Input payload validation failed"
    assert "rc" not in body
    assert body["errors"][field].startswith(message)


def test_generate_requires_prompt(client: httpx.Client, alice: FakeUser) -> None:
    response = client.post("/v2/generate/async", json={"params": {}}, headers=key(alice))
    assert response.status_code == 400
    assert response.json()["errors"] == {"": "'prompt' is a required property"}
    empty = client.post("/v2/generate/async", json={"prompt": ""}, headers=key(alice))
    assert empty.json()["errors"] == {"prompt": "'' is too short"}


@pytest.mark.parametrize(
    ("body", "rc"),
    [
        ({"params": {"cfg_scale": 7.123}}, "BadCFGDecimals"),
        ({"params": {"post_processing": ["RealESRGAN_x4plus", "NMKD_Siax"]}}, "TooManyUpscalers"),
        ({"params": {"loras": [{"name": str(i)} for i in range(6)]}}, "TooManyLoras"),
        ({"params": {"loras": [{"name": "abc", "is_version": True}]}}, "BadLoraVersion"),
        ({"params": {"control_type": "canny"}}, "ControlNetSourceMissing"),
        ({"webhook": "http://example.com/hook"}, "BadRequest"),
        ({"params": {"n": 2}, "disable_batching": True}, "RequiresTrust"),
        ({"source_image": "bm90IGFuIGltYWdl"}, "ImageValidationFailed"),
        ({"prompt": "word " * 7501}, "InvalidPromptSize"),
    ],
)
def test_generate_horde_errors_have_rc(
    client: httpx.Client, alice: FakeUser, body: dict[str, Any], rc: str
) -> None:
    response = generate(client, alice, **body)
    assert response.status_code == 400
    assert response.json()["rc"] == rc
    assert set(response.json()) == {"message", "rc"}


def test_one_upscaler_plus_facefixer_is_fine(client: httpx.Client, alice: FakeUser) -> None:
    assert (
        generate(client, alice, params={"post_processing": ["GFPGAN", "RealESRGAN_x4plus"]}).status_code
        == 202
    )


def test_generate_missing_key_is_400_flask_restx_and_wrong_key_401(client: httpx.Client) -> None:
    missing = client.post("/v2/generate/async", json={"prompt": "x"})
    assert missing.status_code == 400
    assert missing.json()["message"] == "Input payload validation failed"
    assert "Missing required parameter in the HTTP headers" in missing.json()["errors"]["apikey"]
    wrong = client.post("/v2/generate/async", json={"prompt": "x"}, headers={"apikey": "nope-nope"})
    assert wrong.status_code == 401
    assert wrong.json()["rc"] == "InvalidAPIKey"


@pytest.mark.parametrize(
    "params",
    [{"steps": 51}, {"width": 1088, "height": 1024}, {"sampler_name": "lcm", "steps": 11}],
)
def test_anonymous_needs_upfront_kudos_for_big_requests(
    horde: FakeHorde, client: httpx.Client, params: dict[str, Any]
) -> None:
    response = generate(client, horde.anon, params=params)
    assert response.status_code == 403
    assert response.json()["rc"] == "KudosUpfront"


def test_anonymous_small_request_and_user_with_kudos_big_request_pass(
    horde: FakeHorde, client: httpx.Client, alice: FakeUser
) -> None:
    assert (
        generate(client, horde.anon, params={"steps": 50, "width": 1024, "height": 1024}).status_code == 202
    )
    assert generate(client, alice, params={"steps": 60}).status_code == 202
    horde.advance(1)
    poor = horde.add_user("poor", kudos=0)
    assert generate(client, poor, params={"steps": 60}).json()["rc"] == "KudosUpfront"
    assert generate(client, poor, params={"steps": 60}, allow_downgrade=True).status_code == 202


def test_dry_run_returns_total_and_queues_nothing(
    horde: FakeHorde, client: httpx.Client, alice: FakeUser
) -> None:
    response = generate(client, alice, params={"n": 2}, dry_run=True)
    assert response.status_code == 200
    assert response.json() == {"kudos": 13.0}
    assert horde.jobs == []
    horde.advance(1)
    sdxl = generate(client, alice, params={"n": 2}, models=["AlbedoBase XL (SDXL)"], dry_run=True)
    assert sdxl.json() == {"kudos": 25.0}


def test_cached_dry_run_skips_key_validation(horde: FakeHorde, client: httpx.Client, alice: FakeUser) -> None:
    generate(client, alice, dry_run=True)
    horde.advance(1)
    cached = client.post(
        "/v2/generate/async", json={"prompt": "other", "dry_run": True}, headers={"apikey": "wrong-wrong"}
    )
    assert cached.json() == {"kudos": 7.0}
    uncached = client.post(
        "/v2/generate/async",
        json={"prompt": "x", "dry_run": True, "params": {"steps": 31}},
        headers={"apikey": "wrong-wrong"},
    )
    assert uncached.status_code == 401


def test_concurrency_limit_is_429_too_many_prompts(horde: FakeHorde, client: httpx.Client) -> None:
    small = horde.add_user("small", concurrency=3)
    generate_id(horde, client, small, params={"n": 2})
    response = generate(client, small, params={"n": 2})
    assert response.status_code == 429
    assert response.json()["rc"] == "TooManyPrompts"


def test_maintenance_mode(horde: FakeHorde, client: httpx.Client, alice: FakeUser) -> None:
    horde.maintenance_mode = True
    response = generate(client, alice)
    assert (response.status_code, response.json()["rc"]) == (400, "MaintenanceMode")
    assert client.get("/v2/status/modes").json() == {"maintenance_mode": True, "invite_only_mode": False}


def test_style_by_name_is_applied(horde: FakeHorde, client: httpx.Client, alice: FakeUser) -> None:
    style = horde.add_style(
        "noir",
        prompt="{p}, film noir{np}",
        params={"steps": 20, "cfg_scale": 5},
        models=["Deliberate"],
        creator="other#9",
    )
    request_id = generate_id(
        horde, client, alice, prompt="a cat ### blurry", style="noir", params={"width": 768}
    )
    request = horde.image_request(request_id)
    assert request.prompt == "a cat, film noir ### blurry"
    assert request.params["steps"] == 20 and request.params["width"] == 768
    assert request.models == ["Deliberate"]
    assert request.style_id == style["id"]
    missing = generate(client, alice, style="nope-style")
    assert (missing.status_code, missing.json()["rc"]) == (404, "StyleNotFound")


def test_corrupt_prompt_filter(horde: FakeHorde, client: httpx.Client, alice: FakeUser) -> None:
    horde.corrupt_prompt_patterns = [r"forbidden\s*thing"]
    refused = generate(client, alice, prompt="a forbidden thing", replacement_filter=False)
    assert refused.json()["rc"] == "CorruptPrompt"
    horde.advance(1)
    request_id = generate_id(horde, client, alice, prompt="a forbidden thing here")
    assert "forbidden" not in horde.image_request(request_id).prompt


# ---- image generation: progress ------------------------------------------------------------------------


CHECK_KEYS = {
    "finished",
    "processing",
    "restarted",
    "waiting",
    "done",
    "faulted",
    "wait_time",
    "queue_position",
    "kudos",
    "is_possible",
}


def test_check_and_status_follow_worker_progress(
    horde: FakeHorde, client: httpx.Client, alice: FakeUser
) -> None:
    request_id = generate_id(horde, client, alice, params={"n": 2, "width": 768, "height": 512})
    check = client.get(f"/v2/generate/check/{request_id}").json()
    assert set(check) == CHECK_KEYS
    assert (check["waiting"], check["processing"], check["done"], check["queue_position"]) == (2, 0, False, 1)

    started = horde.start_processing(request_id, 1, worker_name="gpu-1")
    check = client.get(f"/v2/generate/check/{request_id}").json()
    assert (check["waiting"], check["processing"], check["finished"]) == (1, 1, 0)

    assert horde.finish(request_id, count=1, worker_name="gpu-1") == started
    check = client.get(f"/v2/generate/check/{request_id}").json()
    assert (check["finished"], check["waiting"], check["done"], check["kudos"]) == (1, 1, False, 9.0)

    horde.finish(request_id)
    status = client.get(f"/v2/generate/status/{request_id}").json()
    assert set(status) == CHECK_KEYS | {"generations", "shared"}
    assert status["done"] is True and status["finished"] == 2 and status["queue_position"] == 0
    first = status["generations"][0]
    assert set(first) == {
        "img",
        "seed",
        "id",
        "censored",
        "gen_metadata",
        "worker_id",
        "worker_name",
        "model",
        "state",
    }
    assert first["worker_name"] == "gpu-1" and first["state"] == "ok" and isinstance(first["seed"], str)
    assert len(first["worker_id"]) == 36
    assert first["img"].startswith(f"{horde.origin}/r2/{first['id']}.webp?")
    image = httpx.get(first["img"])
    assert image.status_code == 200 and image.headers["content-type"] == "image/webp"
    assert decode_webp(image.content) == ("WEBP", (512, 341))
    assert alice.kudos == 1000 - 18.0


def test_r2_false_returns_base64_webp(horde: FakeHorde, client: httpx.Client, alice: FakeUser) -> None:
    request_id = generate_id(horde, client, alice, r2=False)
    horde.finish(request_id)
    img = client.get(f"/v2/generate/status/{request_id}").json()["generations"][0]["img"]
    assert decode_webp(base64.b64decode(img))[0] == "WEBP"


def test_finish_with_given_images(horde: FakeHorde, client: httpx.Client, alice: FakeUser) -> None:
    request_id = generate_id(horde, client, alice, params={"n": 2})
    horde.finish(request_id, images=[b"first", b"second"], model="Deliberate", seed="77")
    generations = client.get(f"/v2/generate/status/{request_id}").json()["generations"]
    assert [httpx.get(g["img"]).content for g in generations] == [b"first", b"second"]
    assert {g["model"] for g in generations} == {"Deliberate"} and {g["seed"] for g in generations} == {"77"}


def test_broken_image_404s_and_r2_false_gives_na(
    horde: FakeHorde, client: httpx.Client, alice: FakeUser
) -> None:
    with_url = generate_id(horde, client, alice)
    inline = generate_id(horde, client, alice, r2=False)
    (gen_url,) = horde.finish(with_url)
    (gen_inline,) = horde.finish(inline)
    horde.break_image(gen_url)
    horde.break_image(gen_inline)
    url = client.get(f"/v2/generate/status/{with_url}").json()["generations"][0]["img"]
    assert httpx.get(url).status_code == 404
    assert client.get(f"/v2/generate/status/{inline}").json()["generations"][0]["img"] == "N/A"


def test_r2_url_expires_after_1800_seconds(horde: FakeHorde, client: httpx.Client, alice: FakeUser) -> None:
    request_id = generate_id(horde, client, alice)
    horde.finish(request_id)
    url = client.get(f"/v2/generate/status/{request_id}").json()["generations"][0]["img"]
    horde.advance(1801)
    assert httpx.get(url).status_code == 403


@pytest.mark.parametrize(("kind", "value"), [("censored", "nsfw"), ("csam", "csam")])
def test_censored_generations(
    horde: FakeHorde, client: httpx.Client, alice: FakeUser, kind: str, value: str
) -> None:
    request_id = generate_id(horde, client, alice)
    horde.finish(request_id, censored=kind == "censored", csam=kind == "csam")
    generation = client.get(f"/v2/generate/status/{request_id}").json()["generations"][0]
    assert generation["censored"] is True
    assert {"type": "censorship", "value": value} in generation["gen_metadata"]
    assert generation["state"] == kind
    assert horde.image_request(request_id).consumed_kudos == 0.0  # censored images cost nothing


def test_fault_requeues_once_then_request_is_done_empty(
    horde: FakeHorde, client: httpx.Client, alice: FakeUser
) -> None:
    request_id = generate_id(horde, client, alice)
    horde.fault(request_id)
    check = client.get(f"/v2/generate/check/{request_id}").json()
    assert (check["restarted"], check["waiting"], check["done"], check["faulted"]) == (1, 1, False, False)
    horde.fault(request_id)
    status = client.get(f"/v2/generate/status/{request_id}").json()
    assert (status["done"], status["finished"], status["faulted"], status["generations"]) == (
        True,
        0,
        False,
        [],
    )
    with pytest.raises(ValueError):
        horde.finish(request_id)


def test_expire_makes_check_and_status_404(horde: FakeHorde, client: httpx.Client, alice: FakeUser) -> None:
    request_id = generate_id(horde, client, alice)
    horde.expire(request_id)
    for path in (f"/v2/generate/check/{request_id}", f"/v2/generate/status/{request_id}"):
        response = client.get(path)
        assert response.status_code == 404
        assert response.json()["rc"] == "RequestNotFound"
    with pytest.raises(KeyError):
        horde.get_request(request_id)


def test_requests_expire_after_20_minutes_of_fake_time(
    horde: FakeHorde, client: httpx.Client, alice: FakeUser
) -> None:
    request_id = generate_id(horde, client, alice)
    horde.advance(19 * 60)
    assert client.get(f"/v2/generate/check/{request_id}").status_code == 200
    horde.start_processing(request_id)  # a pickup pushes expiry to now + 20 min
    horde.advance(19 * 60)
    assert client.get(f"/v2/generate/check/{request_id}").status_code == 200
    horde.advance(2 * 60)
    assert client.get(f"/v2/generate/check/{request_id}").status_code == 404


def test_delete_cancels_and_keeps_finished_images(
    horde: FakeHorde, client: httpx.Client, alice: FakeUser
) -> None:
    request_id = generate_id(horde, client, alice, params={"n": 3})
    horde.finish(request_id, count=1)
    horde.start_processing(request_id, 1)
    cancelled = client.delete(f"/v2/generate/status/{request_id}").json()
    assert (cancelled["finished"], cancelled["waiting"], cancelled["done"]) == (1, 0, True)
    assert len(cancelled["generations"]) == 1
    assert client.get(f"/v2/generate/check/{request_id}").json()["done"] is True
    assert horde.finish(request_id) == []  # late deliveries are ignored


def test_set_queue_and_set_impossible(horde: FakeHorde, client: httpx.Client, alice: FakeUser) -> None:
    request_id = generate_id(horde, client, alice)
    horde.set_queue(request_id, 17, 240)
    horde.set_impossible(request_id)
    check = client.get(f"/v2/generate/check/{request_id}").json()
    assert (check["queue_position"], check["wait_time"], check["is_possible"]) == (17, 240, False)
    horde.set_queue(request_id, None)
    horde.set_impossible(request_id, False)
    check = client.get(f"/v2/generate/check/{request_id}").json()
    assert (check["queue_position"], check["is_possible"]) == (1, True)


def test_queue_position_counts_earlier_waiting_requests(
    horde: FakeHorde, client: httpx.Client, alice: FakeUser, bob: FakeUser
) -> None:
    first = generate_id(horde, client, alice)
    second = generate_id(horde, client, bob)
    assert client.get(f"/v2/generate/check/{second}").json()["queue_position"] == 2
    horde.start_processing(first)
    assert client.get(f"/v2/generate/check/{second}").json()["queue_position"] == 1


def test_autopilot_finishes_on_polls(horde: FakeHorde, client: httpx.Client, alice: FakeUser) -> None:
    horde.autopilot(start_after=1, finish_after=3)
    request_id = generate_id(horde, client, alice, params={"n": 2})
    assert client.get(f"/v2/generate/check/{request_id}").json()["processing"] == 2
    assert client.get(f"/v2/generate/check/{request_id}").json()["done"] is False
    assert client.get(f"/v2/generate/check/{request_id}").json()["finished"] == 2
    horde.autopilot(None, None)


def test_rating_a_finished_request(horde: FakeHorde, client: httpx.Client, alice: FakeUser) -> None:
    request_id = generate_id(horde, client, alice, params={"n": 2})
    early = client.post(f"/v2/generate/rate/{request_id}", json={"ratings": []})
    assert early.json()["rc"] == "AestheticsNotCompleted"
    first, second = horde.finish(request_id)
    before = alice.kudos
    rated = client.post(
        f"/v2/generate/rate/{request_id}",
        json={
            "best": first,
            "ratings": [{"id": first, "rating": 8, "artifacts": 1}, {"id": second, "rating": 5}],
        },
    )
    assert rated.status_code == 200
    assert rated.json() == {"reward": 11.0, "message": "OK"}
    assert alice.kudos == before + 11.0
    again = client.post(f"/v2/generate/rate/{request_id}", json={"best": first})
    assert again.json()["rc"] == "AestheticsAlreadyExist"
    bad = client.post(f"/v2/generate/rate/{request_id}", json={"ratings": [{"id": first, "rating": 11}]})
    assert bad.status_code == 400 and "errors" in bad.json()
    unknown = client.post("/v2/generate/rate/00000000-0000-0000-0000-000000000000", json={"best": first})
    assert unknown.status_code == 404


# ---- shared keys ---------------------------------------------------------------------------------------


def test_shared_key_crud(client: httpx.Client, alice: FakeUser, bob: FakeUser) -> None:
    created = client.put("/v2/sharedkeys", json={"name": "friends", "kudos": 500}, headers=key(alice))
    assert created.status_code == 200
    details = created.json()
    assert details["username"] == alice.username and details["kudos"] == 500 and details["utilized"] == 0
    key_id = details["id"]
    assert client.get(f"/v2/sharedkeys/{key_id}").json()["name"] == "friends"
    patched = client.patch(f"/v2/sharedkeys/{key_id}", json={"max_image_steps": 20}, headers=key(alice))
    assert patched.json()["max_image_steps"] == 20
    foreign = client.delete(f"/v2/sharedkeys/{key_id}", headers=key(bob))
    assert foreign.status_code == 403
    assert client.delete(f"/v2/sharedkeys/{key_id}", headers=key(alice)).json() == {"message": "OK"}
    assert client.get(f"/v2/sharedkeys/{key_id}").status_code == 404
    too_short = client.put("/v2/sharedkeys", json={"name": "x"}, headers=key(alice))
    assert too_short.json()["errors"]["name"] == "'x' is too short"


def test_shared_key_as_apikey(horde: FakeHorde, client: httpx.Client, alice: FakeUser) -> None:
    shared = horde.add_shared_key(alice, "party", kudos=100)
    found = client.get("/v2/find_user", headers={"apikey": shared.id}).json()
    assert found["username"] == f"{alice.username} (Shared Key: party)"
    request_id = generate_id(horde, client, FakeUser(id=-1, alias="x", apikey=shared.id))
    assert horde.calls_to("/generate/async")[-1].user_id == alice.id
    assert horde.calls_to("/generate/async")[-1].shared_key is True
    horde.finish(request_id)
    assert shared.utilized == 6 and alice.kudos == 994.0


def test_shared_key_limit_overrun_is_the_upstream_500(
    horde: FakeHorde, client: httpx.Client, alice: FakeUser
) -> None:
    shared = horde.add_shared_key(alice, max_image_pixels=512 * 512, max_image_steps=30)
    big = client.post(
        "/v2/generate/async",
        json={"prompt": "x", "params": {"width": 768, "height": 768}},
        headers={"apikey": shared.id},
    )
    assert big.status_code == 500
    assert big.json() == {"message": "Internal Server Error"}


def test_empty_shared_key_is_403(horde: FakeHorde, client: httpx.Client, alice: FakeUser) -> None:
    shared = horde.add_shared_key(alice, kudos=10, utilized=10)
    response = client.post("/v2/generate/async", json={"prompt": "x"}, headers={"apikey": shared.id})
    assert (response.status_code, response.json()["rc"]) == (403, "SharedKeyEmpty")


# ---- kudos transfer -------------------------------------------------------------------------------------


def transfer(
    client: httpx.Client, sender: FakeUser, username: str, amount: Any = None, **headers: str
) -> httpx.Response:
    body: dict[str, Any] = {"username": username}
    if amount is not None:
        body["amount"] = amount
    return client.post("/v2/kudos/transfer", json=body, headers={**key(sender), **headers})


def test_transfer_moves_kudos(client: httpx.Client, alice: FakeUser, bob: FakeUser) -> None:
    response = transfer(client, alice, f"whatever#{bob.id}", 10)
    assert response.status_code == 200
    assert response.json() == {"transferred": 10.0}
    assert (alice.kudos, bob.kudos) == (990, 60)
    assert alice.kudos_details["gifted"] == 10 and bob.kudos_details["received"] == 10


def test_transfer_by_bare_id_and_default_amount(
    horde: FakeHorde, client: httpx.Client, alice: FakeUser
) -> None:
    carol = horde.add_user("carol", kudos=0)
    assert transfer(client, alice, str(carol.id)).json() == {"transferred": 100.0}
    assert carol.kudos == 100


@pytest.mark.parametrize(
    ("target", "amount", "rc"),
    [
        ("bob#{bob}", 0, "InvalidKudosTransferAmount"),
        ("bob#{bob}", -5, "NegativeKudosTransfer"),
        ("bob#{bob}", 5000, "KudosTransferNotEnough"),
        ("alice#{alice}", 5, "KudosTransferToSelf"),
        ("ghost#999", 5, "InvalidTargetUsername"),
        ("no-hash-name", 5, "InvalidTargetUsername"),
        ("Anonymous#0", 5, "KudosTransferToAnon"),
    ],
)
def test_transfer_errors(
    client: httpx.Client, alice: FakeUser, bob: FakeUser, target: str, amount: int, rc: str
) -> None:
    response = transfer(client, alice, target.format(alice=alice.id, bob=bob.id), amount)
    assert response.status_code == 400
    assert response.json()["rc"] == rc


def test_transfer_from_anon_missing_and_wrong_key(
    horde: FakeHorde, client: httpx.Client, alice: FakeUser
) -> None:
    assert transfer(client, horde.anon, alice.username, 5).json()["rc"] == "KudosTransferFromAnon"
    missing = client.post("/v2/kudos/transfer", json={"username": alice.username, "amount": 5})
    assert missing.status_code == 400 and "apikey" in missing.json()["errors"]
    wrong = client.post(
        "/v2/kudos/transfer", json={"username": alice.username, "amount": 5}, headers={"apikey": "bad-bad"}
    )
    assert (wrong.status_code, wrong.json()["rc"]) == (401, "InvalidAPIKey")
    typed = transfer(client, alice, "x#2", "ten")
    assert typed.json()["errors"] == {"amount": "'ten' is not of type 'integer'"}


def test_reverse_transfer_within_a_minute_is_too_fast(
    horde: FakeHorde, client: httpx.Client, alice: FakeUser, bob: FakeUser
) -> None:
    assert transfer(client, alice, bob.username, 10).status_code == 200
    refused = transfer(client, bob, alice.username, 5)
    assert refused.json()["rc"] == "TooFastKudosTransfers"
    horde.advance(61)
    assert transfer(client, bob, alice.username, 5).status_code == 200


def test_idempotency_key_applies_once_and_conflicts_on_new_params(
    horde: FakeHorde, client: httpx.Client, alice: FakeUser, bob: FakeUser
) -> None:
    first = transfer(client, alice, bob.username, 10, **{"Idempotency-Key": "k-1"})
    horde.advance(1.1)
    replay = transfer(client, alice, bob.username, 10, **{"Idempotency-Key": "k-1"})
    assert first.status_code == replay.status_code == 200
    assert first.json() == replay.json() == {"transferred": 10.0}
    assert (alice.kudos, bob.kudos) == (990, 60)
    horde.advance(1.1)
    conflict = transfer(client, alice, bob.username, 11, **{"Idempotency-Key": "k-1"})
    assert (conflict.status_code, conflict.json()["rc"]) == (400, "IdempotencyKeyConflict")
    horde.advance(1.1)
    fresh = transfer(client, alice, bob.username, 11, **{"Idempotency-Key": "k-2"})
    assert fresh.status_code == 200 and bob.kudos == 71


def test_failed_transfer_is_not_remembered_by_idempotency_key(
    horde: FakeHorde, client: httpx.Client, alice: FakeUser, bob: FakeUser
) -> None:
    assert transfer(client, bob, alice.username, 500, **{"Idempotency-Key": "k"}).json()["rc"] == (
        "KudosTransferNotEnough"
    )
    horde.set_kudos(bob, 1000)
    horde.advance(1.1)
    assert transfer(client, bob, alice.username, 500, **{"Idempotency-Key": "k"}).status_code == 200


def test_transfer_to_shared_key_tops_it_up(horde: FakeHorde, client: httpx.Client, alice: FakeUser) -> None:
    shared = horde.add_shared_key(alice, kudos=100)
    carol = horde.add_user("carol", kudos=100)
    assert transfer(client, carol, shared.id, 25).json() == {"transferred": 25.0}
    assert shared.kudos == 125 and alice.kudos == 1025


# ---- rate limits ---------------------------------------------------------------------------------------


def test_status_is_10_per_minute_per_request_id(
    horde: FakeHorde, client: httpx.Client, alice: FakeUser
) -> None:
    first = generate_id(horde, client, alice)
    second = generate_id(horde, client, alice)
    for _ in range(10):
        assert client.get(f"/v2/generate/status/{first}").status_code == 200
    limited = client.get(f"/v2/generate/status/{first}")
    assert limited.status_code == 429
    assert limited.json() == {"message": "10 per 1 minute"}
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    assert limited.headers["x-ratelimit-limit"] == "10"
    assert limited.headers["x-ratelimit-remaining"] == "0"
    assert int(limited.headers["x-ratelimit-reset"]) >= int(time.time())
    assert client.delete(f"/v2/generate/status/{first}").status_code == 200  # DELETE has its own bucket
    assert client.get(f"/v2/generate/status/{second}").status_code == 200
    horde.advance(60)
    assert client.get(f"/v2/generate/status/{first}").status_code == 200


def test_generate_is_2_per_second(
    horde: FakeHorde, client: httpx.Client, alice: FakeUser, bob: FakeUser
) -> None:
    # Retry-After counts whole seconds to the window's end rounded up to the wall clock's second (0 when it
    # ends within the current second, as the real server's): the window starts just after a second begins,
    # so the 429 below comes with 1 however long the three requests take, up to 0.95 s (CI once took the
    # 0 of a window started late in its second).
    horde.advance((1.05 - horde.wall() % 1) % 1)
    assert generate(client, alice).status_code == 202
    assert generate(client, alice).headers["x-ratelimit-remaining"] == "0"
    limited = generate(client, bob)  # the per-IP bucket is shared by every user of the bot
    assert limited.status_code == 429
    assert limited.json() == {"message": "2 per 1 second"}
    assert limited.headers["retry-after"] == "1"
    horde.advance(1)
    assert generate(client, bob).status_code == 202


def test_transfer_is_1_per_second_per_key(
    horde: FakeHorde, client: httpx.Client, alice: FakeUser, bob: FakeUser
) -> None:
    carol = horde.add_user("carol")
    assert transfer(client, alice, carol.username, 1).status_code == 200
    limited = transfer(client, alice, carol.username, 1)
    assert (limited.status_code, limited.json()) == (429, {"message": "1 per 1 second"})
    assert transfer(client, bob, carol.username, 1).status_code == 200


def test_rate_is_5_per_minute(horde: FakeHorde, client: httpx.Client, alice: FakeUser) -> None:
    request_id = generate_id(horde, client, alice)
    for _ in range(5):
        client.post(f"/v2/generate/rate/{request_id}", json={})
    assert client.post(f"/v2/generate/rate/{request_id}", json={}).status_code == 429


def test_rate_limits_can_be_disabled(horde: FakeHorde, client: httpx.Client, alice: FakeUser) -> None:
    horde.enforce_rate_limits = False
    assert all(generate(client, alice).status_code == 202 for _ in range(5))
    assert "x-ratelimit-limit" not in generate(client, alice).headers


def test_custom_clock_drives_buckets(alice: FakeUser) -> None:
    now = [1000.0]
    with FakeHorde(clock=lambda: now[0]) as horde:
        user = horde.add_user("clocked")
        with httpx.Client(base_url=horde.base_url or "", headers=AGENT) as http:
            for _ in range(2):
                assert generate(http, user).status_code == 202
            time.sleep(1.1)  # real time does not matter, only the injected clock
            assert generate(http, user).status_code == 429
            now[0] += 1
            assert generate(http, user).status_code == 202


# ---- text ------------------------------------------------------------------------------------------------


def test_text_generation_flow(horde: FakeHorde, client: httpx.Client, alice: FakeUser) -> None:
    response = client.post(
        "/v2/generate/text/async",
        json={"prompt": "Once upon a time", "params": {"max_length": 120, "n": 2}, "models": ["koboldcpp/x"]},
        headers=key(alice),
    )
    assert response.status_code == 202
    body = response.json()
    assert body["kudos"] == 6.0 and body["warnings"][0]["code"] == "NoAvailableWorker"
    request_id = body["id"]
    assert client.get(f"/v2/generate/text/check/{request_id}").status_code == 404  # there is no text /check
    status = client.get(f"/v2/generate/text/status/{request_id}").json()
    assert set(status) == CHECK_KEYS | {"generations"} and status["waiting"] == 2
    horde.finish_text(request_id, ["there was", "a fake"])
    status = client.get(f"/v2/generate/text/status/{request_id}").json()
    assert status["done"] is True
    assert [g["text"] for g in status["generations"]] == ["there was", "a fake"]
    assert isinstance(status["generations"][0]["seed"], int)
    assert horde.text_jobs[0].id == request_id


def test_text_errors_and_cancel(horde: FakeHorde, client: httpx.Client, alice: FakeUser) -> None:
    overflow = client.post(
        "/v2/generate/text/async",
        json={"prompt": "x", "params": {"max_length": 512, "max_context_length": 256}},
        headers=key(alice),
    )
    assert overflow.json()["rc"] == "TokenOverflow"
    low = client.post(
        "/v2/generate/text/async", json={"prompt": "x", "params": {"max_length": 8}}, headers=key(alice)
    )
    assert low.json()["errors"]["params.max_length"] == "8 is less than the minimum of 16"
    horde.advance(1)
    request_id = client.post("/v2/generate/text/async", json={"prompt": "x"}, headers=key(alice)).json()["id"]
    cancelled = client.delete(f"/v2/generate/text/status/{request_id}").json()
    assert cancelled["done"] is True and cancelled["generations"] == []
    horde.expire(request_id)
    assert client.get(f"/v2/generate/text/status/{request_id}").status_code == 404


# ---- interrogation ---------------------------------------------------------------------------------------


def source_image_b64(size: tuple[int, int] = (64, 64)) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 20, 30)).save(buffer, format="WEBP")
    return base64.b64encode(buffer.getvalue()).decode()


def interrogate(
    client: httpx.Client, user: FakeUser, *forms: str, source: str | None = None
) -> httpx.Response:
    return client.post(
        "/v2/interrogate/async",
        json={"source_image": source or source_image_b64(), "forms": [{"name": name} for name in forms]},
        headers=key(user),
    )


def test_interrogation_flow(horde: FakeHorde, client: httpx.Client, alice: FakeUser) -> None:
    response = interrogate(client, alice, "caption", "RealESRGAN_x4plus")
    assert response.status_code == 202
    request_id = response.json()["id"]
    assert set(response.json()) == {"id"}
    status = client.get(f"/v2/interrogate/status/{request_id}").json()
    assert status == {
        "state": "waiting",
        "forms": [{"form": "caption", "state": "waiting"}, {"form": "RealESRGAN_x4plus", "state": "waiting"}],
    }
    horde.start_form(request_id, "caption")
    assert client.get(f"/v2/interrogate/status/{request_id}").json()["state"] == "processing"
    horde.finish_form(request_id, "caption", {"caption": "a blue square"})
    horde.finish_form(request_id, "RealESRGAN_x4plus")
    status = client.get(f"/v2/interrogate/status/{request_id}").json()
    assert status["state"] == "done"
    caption, upscaled = status["forms"]
    assert caption["result"] == {"caption": "a blue square"}
    url = upscaled["result"]["RealESRGAN_x4plus"]
    assert decode_webp(httpx.get(url).content)[0] == "WEBP"
    assert horde.interrogations[0].id == request_id


def test_autopilot_answers_forms_as_told(horde: FakeHorde, client: httpx.Client, alice: FakeUser) -> None:
    horde.autopilot(start_after=1, finish_after=1)
    horde.autopilot_form_results["nsfw"] = {"nsfw": True}
    flagged = interrogate(client, alice, "nsfw", "caption").json()["id"]
    forms = client.get(f"/v2/interrogate/status/{flagged}").json()["forms"]
    assert [(f["form"], f["result"]) for f in forms] == [
        ("nsfw", {"nsfw": True}),
        ("caption", {"caption": "a fake caption of a test image"}),  # not told: the default
    ]
    horde.autopilot_form_results.clear()
    fine = interrogate(client, alice, "nsfw").json()["id"]
    assert client.get(f"/v2/interrogate/status/{fine}").json()["forms"][0]["result"] == {"nsfw": False}
    horde.autopilot(None, None)


def test_interrogation_validation(client: httpx.Client, alice: FakeUser) -> None:
    bad_form = interrogate(client, alice, "telepathy")
    assert bad_form.status_code == 400 and "forms.0.name" in bad_form.json()["errors"]
    bad_image = interrogate(client, alice, "caption", source="bm90IGFuIGltYWdl")
    assert bad_image.json()["rc"] == "ImageValidationFailed"
    huge = interrogate(client, alice, "caption", source=source_image_b64((3100, 64)))
    assert huge.json()["rc"] == "SourceImageResolutionExceeded"
    assert interrogate(client, alice, "nsfw", source="https://example.invalid/cat.webp").status_code == 202


def test_interrogation_expire_fault_cancel(horde: FakeHorde, client: httpx.Client, alice: FakeUser) -> None:
    request_id = interrogate(client, alice, "caption", "nsfw").json()["id"]
    horde.start_form(request_id)
    horde.expire_form(request_id, "caption")
    states = {
        f["form"]: f["state"] for f in client.get(f"/v2/interrogate/status/{request_id}").json()["forms"]
    }
    assert states == {"caption": "waiting", "nsfw": "processing"}
    horde.fault_form(request_id, "caption")
    horde.fault_form(request_id, "nsfw")
    assert client.get(f"/v2/interrogate/status/{request_id}").json()["state"] == "faulted"
    other = interrogate(client, alice, "caption").json()["id"]
    cancelled = client.delete(f"/v2/interrogate/status/{other}").json()
    assert cancelled["forms"] == [{"form": "caption", "state": "cancelled"}]
    horde.expire(other)
    assert client.get(f"/v2/interrogate/status/{other}").json()["rc"] == "RequestNotFound"


# ---- worker side over HTTP -----------------------------------------------------------------------------


def test_image_pop_upload_and_submit(horde: FakeHorde, client: httpx.Client, alice: FakeUser) -> None:
    operator = horde.add_user("operator", trusted=True)
    request_id = generate_id(horde, client, alice, models=["Deliberate"], params={"n": 2, "steps": 25})
    nothing = client.post(
        "/v2/generate/pop", json={"name": "w", "models": ["Other model"]}, headers=key(operator)
    )
    assert nothing.json() == {"id": None, "ids": [], "skipped": {"models": 1}}
    popped = client.post(
        "/v2/generate/pop", json={"name": "w", "models": ["Deliberate"], "amount": 2}, headers=key(operator)
    ).json()
    assert len(popped["ids"]) == 2 and popped["model"] == "Deliberate"
    assert popped["payload"]["ddim_steps"] == 25 and popped["payload"]["n_iter"] == 2
    assert client.get(f"/v2/generate/check/{request_id}").json()["processing"] == 2

    assert httpx.put(popped["r2_uploads"][0], content=b"uploaded-webp").status_code == 200
    first = client.post(
        "/v2/generate/submit",
        json={"id": popped["ids"][0], "seed": 123, "generation": "R2", "state": "ok"},
        headers=key(operator),
    )
    assert first.json() == {"reward": 5.0}
    again = client.post(
        "/v2/generate/submit", json={"id": popped["ids"][0], "seed": 1}, headers=key(operator)
    )
    assert again.json()["rc"] == "DuplicateGen"
    stranger = client.post(
        "/v2/generate/submit", json={"id": popped["ids"][1], "seed": 1}, headers=key(alice)
    )
    assert stranger.json()["rc"] == "WrongCredentials"
    inline = base64.b64encode(b"inline-webp").decode()
    second = client.post(
        "/v2/generate/submit",
        json={"id": popped["ids"][1], "seed": 5, "generation": inline, "state": "censored"},
        headers=key(operator),
    )
    assert second.status_code == 200
    generations = client.get(f"/v2/generate/status/{request_id}").json()["generations"]
    assert [httpx.get(g["img"]).content for g in generations] == [b"uploaded-webp", b"inline-webp"]
    assert generations[0]["seed"] == "123" and generations[1]["censored"] is True
    assert generations[0]["worker_name"] == "w"
    assert client.get("/v2/workers/name/w").json()["trusted"] is True
    unknown = client.post("/v2/generate/submit", json={"id": "nope", "seed": 1}, headers=key(operator))
    assert (unknown.status_code, unknown.json()["rc"]) == (404, "InvalidJobID")
    missing_seed = client.post("/v2/generate/submit", json={"id": "nope"}, headers=key(operator))
    assert missing_seed.json()["errors"] == {"": "'seed' is a required property"}


def test_worker_reported_fault(horde: FakeHorde, client: httpx.Client, alice: FakeUser) -> None:
    operator = horde.add_user("operator")
    request_id = generate_id(horde, client, alice)
    popped = client.post("/v2/generate/pop", json={"name": "w"}, headers=key(operator)).json()
    client.post(
        "/v2/generate/submit", json={"id": popped["id"], "seed": 0, "state": "faulted"}, headers=key(operator)
    )
    check = client.get(f"/v2/generate/check/{request_id}").json()
    assert (check["restarted"], check["waiting"]) == (1, 1)
    aborted = client.post("/v2/generate/submit", json={"id": popped["id"], "seed": 0}, headers=key(operator))
    assert aborted.json()["rc"] == "AbortedGen"


def test_text_pop_and_submit(horde: FakeHorde, client: httpx.Client, alice: FakeUser) -> None:
    operator = horde.add_user("operator")
    request_id = client.post(
        "/v2/generate/text/async", json={"prompt": "Hi", "params": {"max_length": 64}}, headers=key(alice)
    ).json()["id"]
    popped = client.post(
        "/v2/generate/text/pop",
        json={"name": "tw", "models": ["llm"], "max_length": 512},
        headers=key(operator),
    ).json()
    assert popped["payload"]["prompt"] == "Hi" and popped["payload"]["max_length"] == 64
    client.post(
        "/v2/generate/text/submit", json={"id": popped["id"], "generation": "Hello!"}, headers=key(operator)
    )
    status = client.get(f"/v2/generate/text/status/{request_id}").json()
    assert status["generations"][0]["text"] == "Hello!" and status["generations"][0]["worker_name"] == "tw"


def test_interrogation_pop_and_submit(horde: FakeHorde, client: httpx.Client, alice: FakeUser) -> None:
    operator = horde.add_user("operator")
    request_id = interrogate(client, alice, "caption", "GFPGAN").json()["id"]
    popped = client.post(
        "/v2/interrogate/pop",
        json={"name": "aw", "forms": ["caption", "GFPGAN"], "amount": 2},
        headers=key(operator),
    ).json()
    by_form = {form["form"]: form for form in popped["forms"]}
    assert set(by_form) == {"caption", "GFPGAN"} and "r2_upload" in by_form["GFPGAN"]
    assert decode_webp(httpx.get(by_form["caption"]["source_image"]).content)[0] == "WEBP"
    httpx.put(by_form["GFPGAN"]["r2_upload"], content=b"fixed-face")
    for form, result in (("caption", {"caption": "hi"}), ("GFPGAN", {"GFPGAN": "R2"})):
        submitted = client.post(
            "/v2/interrogate/submit",
            json={"id": by_form[form]["id"], "result": result},
            headers=key(operator),
        )
        assert submitted.status_code == 200
    status = client.get(f"/v2/interrogate/status/{request_id}").json()
    results = {form["form"]: form["result"] for form in status["forms"]}
    assert results["caption"] == {"caption": "hi"}
    assert httpx.get(results["GFPGAN"]["GFPGAN"]).content == b"fixed-face"


# ---- catalogue ------------------------------------------------------------------------------------------


def test_status_models_from_workers(horde: FakeHorde, client: httpx.Client, alice: FakeUser) -> None:
    horde.add_worker("a", models=["Deliberate", "AlbedoBase XL (SDXL)"], threads=2)
    horde.add_worker("b", models=["Deliberate"])
    horde.add_worker("off", models=["Ghost"], online=False)
    horde.add_worker("t", models=["koboldcpp/x"], type="text")
    generate_id(horde, client, alice, models=["Deliberate"], params={"n": 3})
    models = {m["name"]: m for m in client.get("/v2/status/models").json()}
    assert set(models) == {"Deliberate", "AlbedoBase XL (SDXL)"}
    deliberate = models["Deliberate"]
    assert set(deliberate) == {"name", "count", "performance", "queued", "jobs", "eta", "type"}
    assert (deliberate["count"], deliberate["jobs"], deliberate["type"]) == (3, 3, "image")
    assert deliberate["queued"] == 512 * 512 * 30 * 3
    text = client.get("/v2/status/models", params={"type": "text"}).json()
    assert [m["name"] for m in text] == ["koboldcpp/x"]
    assert [m["name"] for m in client.get("/v2/status/models", params={"min_count": 3}).json()] == [
        "Deliberate"
    ]
    assert [m["name"] for m in client.get("/v2/status/models/Deliberate").json()] == ["Deliberate"]
    assert client.get("/v2/status/models/Unknown").json() == []


def test_workers_and_teams(horde: FakeHorde, client: httpx.Client) -> None:
    team = horde.add_team("Team Fake", info="testing")
    worker = horde.add_worker("Fast GPU", models=["Deliberate"], team=team, trusted=True)
    horde.add_worker("Alchemist", type="interrogation")
    listed = client.get("/v2/workers").json()
    assert {w["name"] for w in listed} == {"Fast GPU", "Alchemist"}
    assert [w["name"] for w in client.get("/v2/workers", params={"type": "interrogation"}).json()] == [
        "Alchemist"
    ]
    details = client.get(f"/v2/workers/{worker.id}").json()
    assert details["team"] == {"name": "Team Fake", "id": team.id} and details["trusted"] is True
    assert details["bridge_agent"] and details["models"] == ["Deliberate"]
    assert client.get("/v2/workers/name/Fast GPU").json()["id"] == worker.id
    assert client.get("/v2/workers/nope").json()["rc"] == "WorkerNotFound"
    assert client.get("/v2/workers/name/nope").status_code == 404
    teams = client.get("/v2/teams").json()
    assert teams[0]["worker_count"] == 1 and teams[0]["workers"][0]["name"] == "Fast GPU"
    assert client.get(f"/v2/teams/{team.id}").json()["info"] == "testing"
    assert client.get("/v2/teams/nope").json()["rc"] == "TeamNotFound"


def test_styles(horde: FakeHorde, client: httpx.Client) -> None:
    popular = horde.add_style("popular", tags=["photo"], use_count=10)
    horde.add_style("niche", models=["Deliberate"], use_count=1)
    horde.add_style("hidden", public=False)
    assert [s["name"] for s in client.get("/v2/styles/image").json()] == ["popular", "niche"]
    assert [s["name"] for s in client.get("/v2/styles/image", params={"sort": "age"}).json()] == [
        "niche",
        "popular",
    ]
    assert client.get("/v2/styles/image").status_code == 429  # 2 per second per IP+path
    horde.advance(1)
    assert [s["name"] for s in client.get("/v2/styles/image", params={"tag": "photo"}).json()] == ["popular"]
    assert [s["name"] for s in client.get("/v2/styles/image", params={"model": "Deliberate"}).json()] == [
        "niche"
    ]
    assert client.get(f"/v2/styles/image/{popular['id']}").json()["name"] == "popular"
    assert client.get("/v2/styles/image_by_name/db0%231::style::popular").json()["id"] == popular["id"]
    assert client.get("/v2/styles/image/nope").json()["rc"] == "StyleNotFound"
    assert client.get("/v2/styles/image_by_name/nope").status_code == 404


def test_news_performance_heartbeat_stats(horde: FakeHorde, client: httpx.Client, alice: FakeUser) -> None:
    news = client.get("/v2/status/news").json()
    assert set(news[0]) == {"date_published", "newspiece", "importance", "tags", "title", "more_info_urls"}
    horde.add_worker("w", models=["Deliberate"], threads=4)
    generate_id(horde, client, alice)
    performance = client.get("/v2/status/performance").json()
    assert (performance["queued_requests"], performance["worker_count"], performance["thread_count"]) == (
        1,
        1,
        4,
    )
    assert performance["queued_megapixelsteps"] == round(512 * 512 * 30 / 1e6, 2)
    heartbeat = client.get("/v2/status/heartbeat").json()
    assert heartbeat["message"] == "OK" and heartbeat["version"] == "5.1.5"
    images = client.get("/v2/stats/img/totals").json()
    assert set(images) == {"minute", "hour", "day", "month", "total"} and set(images["day"]) == {
        "images",
        "ps",
    }
    texts = client.get("/v2/stats/text/totals").json()
    assert set(texts["total"]) == {"requests", "tokens"}


def _transcript(name: str) -> dict[str, Any]:
    """A recorded exchange with the real server."""
    import json
    from pathlib import Path

    # The repository's copy of the recorded exchanges: a plain clone runs the tests.
    directory = Path(__file__).resolve().parents[1] / "data" / "horde" / "transcripts"
    return dict(json.loads((directory / name).read_text()))


def test_horde_limiter_answers_like_the_real_server() -> None:
    """AI Horde 5.1.5 (transcripts 99, 111-114): fixed 1 s windows from the first POST, X-RateLimit-* and
    Retry-After on every answer, the 3rd POST within the window refused with `2 per 1 second`, and
    Retry-After 0 when the window ends within the current second (immediate retries are refused too)."""
    now = [1000.0]
    with FakeHorde(clock=lambda: now[0], horde_limiter=True) as horde:
        now[0] += (1.2 - horde.wall() % 1) % 1  # the wall clock at k.2 s
        second_start = math.floor(horde.wall())
        alice, bob = horde.add_user("alice", kudos=1000), horde.add_user("bob", kudos=1000)
        with httpx.Client(base_url=horde.base_url or "", headers=AGENT) as http:
            first = generate(http, alice)
            assert first.status_code == 202
            recorded = _transcript("99_img_async_for_ratelimit.json")["response"]["headers"]
            for name in ("Retry-After", "X-Ratelimit-Limit", "X-Ratelimit-Remaining"):
                assert first.headers[name] == recorded[name], name
            assert int(first.headers["x-ratelimit-reset"]) == second_start + 2  # ceil(window end)
            assert generate(http, alice).headers["x-ratelimit-remaining"] == "0"
            limited = generate(http, bob)  # the per-IP bucket is shared by every key
            expected = _transcript("113_ratelimit_async_burst_2.json")["response"]
            assert limited.status_code == expected["status"] == 429
            assert limited.json() == expected["json"] == {"message": "2 per 1 second"}
            for name in ("Retry-After", "X-Ratelimit-Limit", "X-Ratelimit-Remaining"):
                assert limited.headers[name] == expected["headers"][name], name
            # 0.9 s later the window ends within this second: Retry-After 0, and retrying at once fails.
            now[0] += 0.9
            for _ in range(3):
                again = generate(http, bob)
                assert (again.status_code, again.headers["retry-after"]) == (429, "0")
                assert again.headers["x-ratelimit-reset"] == str(second_start + 2)
            now[0] += 0.15  # past the window's end (k+1.2)
            assert generate(http, bob).status_code == 202
            assert len(horde.jobs) == 3


def test_injected_429_can_say_retry_after_0(horde: FakeHorde, client: httpx.Client, alice: FakeUser) -> None:
    horde.inject("/generate/async", status=429, retry_after=0)
    limited = generate(client, alice)
    assert (limited.status_code, limited.headers["retry-after"]) == (429, "0")
    assert int(limited.headers["x-ratelimit-reset"]) >= int(horde.wall())


# ---- fault injection -------------------------------------------------------------------------------------


def test_inject_500_for_n_calls(horde: FakeHorde, client: httpx.Client) -> None:
    injection = horde.inject(r"/status/news$", status=500, times=2)
    statuses = [client.get("/v2/status/news").status_code for _ in range(3)]
    assert statuses == [500, 500, 200]
    assert injection.hits == 2 and injection.exhausted
    assert horde.calls[0].response == {"message": "Internal Server Error"} and horde.calls[0].injected


def test_inject_429_limiter_shape(horde: FakeHorde, client: httpx.Client, alice: FakeUser) -> None:
    horde.inject("/generate/async", status=429, retry_after=7)
    limited = generate(client, alice)
    assert limited.status_code == 429
    assert limited.json() == {"message": "2 per 1 second"}
    assert limited.headers["retry-after"] == "7"
    assert "x-ratelimit-reset" in limited.headers
    assert horde.jobs == []  # the call never reached the Horde
    assert generate(client, alice).status_code == 202


def test_inject_custom_body_rc_and_method_filter(
    horde: FakeHorde, client: httpx.Client, alice: FakeUser
) -> None:
    request_id = generate_id(horde, client, alice)
    horde.inject("/generate/status/", method="DELETE", status=404, rc="RequestNotFound", times=None)
    assert client.get(f"/v2/generate/status/{request_id}").status_code == 200
    for _ in range(2):
        response = client.delete(f"/v2/generate/status/{request_id}")
        assert (response.status_code, response.json()["rc"]) == (404, "RequestNotFound")
    horde.clear_injections()
    horde.inject("/find_user", status=418, body={"teapot": True})
    teapot = client.get("/v2/find_user", headers=key(alice))
    assert (teapot.status_code, teapot.json()) == (418, {"teapot": True})


def test_inject_malformed_and_gateway_errors(horde: FakeHorde, client: httpx.Client) -> None:
    horde.inject("/status/modes", malformed=True)
    malformed = client.get("/v2/status/modes")
    assert malformed.status_code == 200
    with pytest.raises(ValueError):
        malformed.json()
    horde.inject("/status/modes", status=502)
    gateway = client.get("/v2/status/modes")
    assert gateway.status_code == 502 and gateway.headers["content-type"].startswith("text/html")


def test_inject_delay_then_normal_answer(horde: FakeHorde, client: httpx.Client) -> None:
    horde.inject("/status/heartbeat", delay=0.3)
    started = time.monotonic()
    assert client.get("/v2/status/heartbeat").json()["message"] == "OK"
    assert time.monotonic() - started >= 0.3


def test_inject_hang_until_released_or_client_timeout(horde: FakeHorde, client: httpx.Client) -> None:
    horde.inject("/status/news", delay=math.inf, times=2)
    with pytest.raises(httpx.ReadTimeout):
        client.get("/v2/status/news", timeout=0.3)
    result: list[int] = []
    waiter = threading.Thread(target=lambda: result.append(client.get("/v2/status/news").status_code))
    waiter.start()
    time.sleep(0.2)
    assert result == []
    horde.release_delays()
    waiter.join(5)
    assert result == [200]


def test_inject_drop_closes_the_connection(horde: FakeHorde, client: httpx.Client) -> None:
    horde.inject("/status/heartbeat", drop=True)
    with pytest.raises(httpx.RemoteProtocolError):
        client.get("/v2/status/heartbeat")
    assert client.get("/v2/status/heartbeat").status_code == 200


def test_set_down_answers_503_everywhere(horde: FakeHorde, client: httpx.Client, alice: FakeUser) -> None:
    horde.set_down(True)
    for response in (client.get("/v2/status/heartbeat"), generate(client, alice)):
        assert response.status_code == 503
        assert response.headers["content-type"].startswith("text/html")
    horde.set_down(False)
    assert client.get("/v2/status/heartbeat").status_code == 200


# ---- thread safety ---------------------------------------------------------------------------------------


def test_concurrent_clients_and_direct_api(horde: FakeHorde) -> None:
    horde.enforce_rate_limits = False
    users = [horde.add_user(f"user{i}", kudos=100) for i in range(8)]
    ids: list[str] = []
    failures: list[str] = []

    def worker(user: FakeUser) -> None:
        with httpx.Client(base_url=horde.base_url or "", headers=AGENT) as http:
            for _ in range(5):
                response = generate(http, user)
                if response.status_code != 202:
                    failures.append(response.text)
                    continue
                request_id = response.json()["id"]
                ids.append(request_id)
                horde.finish(request_id)
                if not http.get(f"/v2/generate/check/{request_id}").json()["done"]:
                    failures.append(request_id)

    threads = [threading.Thread(target=worker, args=(user,)) for user in users]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert failures == []
    assert len(set(ids)) == 40
    assert horde.count("POST", "/generate/async") == 40
