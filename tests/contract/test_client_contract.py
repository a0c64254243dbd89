"""Client contract: every recorded answer of the real AI Horde, served over HTTP on 127.0.0.1 exactly as the
server sent it (status, headers, body), is read by the bot's real `HordeClient` method for that endpoint.

Each must parse into the client's typed models, or raise the client's own typed error for that status
(`HordeError` with the rc, `HordeUnavailable` for 5xx, `HordeUnexpectedResponse` naming the field for a 2xx
the bot can't use): never a pydantic ValidationError or any other crash. Nothing of the bot is mocked; the
replay server replaces only the network peer.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
import pytest_asyncio
from pydantic import BaseModel

from bot.config import HordeSettings
from bot.horde.alchemy import InterrogationFormRequest, InterrogationRequest
from bot.horde.client import HordeClient, build_http_client
from bot.horde.errors import HordeError, HordeUnavailable, HordeUnexpectedResponse
from bot.horde.generation import ImageRequest
from bot.horde.models import ApiKey
from bot.horde.status import SharedKeyInput
from bot.horde.text import TextRequest
from tests.contract.transcripts import ReplayServer, Transcript, load_transcripts, transcript
from tests.support.clock import TestClock

KEY = ApiKey("recordedkey123")
Call = Callable[[HordeClient, Transcript], Awaitable[Any]]


def _image_request(t: Transcript) -> ImageRequest:
    return ImageRequest(prompt="a cat", models=["stable_diffusion"])


def _text_request(t: Transcript) -> TextRequest:
    return TextRequest(prompt="Once upon a time")


def _shared_key_spec(t: Transcript) -> SharedKeyInput:
    return SharedKeyInput(name="discord-bot key", kudos=100)


# The client method the bot uses for each endpoint (route template -> call).
CALLS: dict[str, Call] = {
    "GET /status/heartbeat": lambda c, t: c.heartbeat(),
    "GET /status/modes": lambda c, t: c.modes(),
    "GET /status/performance": lambda c, t: c.performance(),
    "GET /status/news": lambda c, t: c.news(),
    "GET /stats/img/totals": lambda c, t: c.image_totals(),
    "GET /stats/text/totals": lambda c, t: c.text_totals(),
    "GET /find_user": lambda c, t: c.find_user(KEY),
    "GET /users/{id}": lambda c, t: c.get_user(int(t.path_id)),
    "POST /generate/async": lambda c, t: c.generate_image(_image_request(t), KEY),
    "GET /generate/check/{id}": lambda c, t: c.image_check(t.path_id),
    "GET /generate/status/{id}": lambda c, t: c.image_status_once(t.path_id),
    "DELETE /generate/status/{id}": lambda c, t: c.cancel_image(t.path_id),
    "POST /generate/text/async": lambda c, t: c.generate_text(_text_request(t), KEY),
    "GET /generate/text/status/{id}": lambda c, t: c.text_status(t.path_id),
    "POST /interrogate/async": lambda c, t: c.interrogate(
        InterrogationRequest(source_image="UklGRg==", forms=[InterrogationFormRequest(name="caption")]), KEY
    ),
    "GET /interrogate/status/{id}": lambda c, t: c.interrogation_status(t.path_id),
    "DELETE /interrogate/status/{id}": lambda c, t: c.cancel_interrogation(t.path_id),
    "POST /kudos/transfer": lambda c, t: c.transfer_kudos(
        KEY, str(t.request_json["username"]), int(t.request_json["amount"]), idempotency_key="k-1"
    ),
    "GET /workers": lambda c, t: c.workers((t.params or {}).get("type")),
    "GET /workers/{id}": lambda c, t: c.worker(t.path_id),
    "GET /workers/name/{name}": lambda c, t: c.worker_by_name(t.path_id),
    "GET /status/models": lambda c, t: c.models((t.params or {}).get("type", "image")),
    "GET /teams": lambda c, t: c.teams(),
    "PUT /sharedkeys": lambda c, t: c.create_shared_key(_shared_key_spec(t), KEY),
    "GET /sharedkeys/{id}": lambda c, t: c.shared_key(t.path_id),
    "DELETE /sharedkeys/{id}": lambda c, t: c.delete_shared_key(t.path_id, KEY),
    "GET /styles/image": lambda c, t: c.image_styles_page(1),
}

# Endpoints in the transcripts that the bot's client never calls: their answers have no parser to check.
NOT_USED_BY_THE_CLIENT: dict[str, str] = {
    "GET /stats/img/models": "per-model counts are not shown by any command (/stats shows totals)",
    "GET /stats/text/models": "per-model counts are not shown by any command (/stats shows totals)",
    "GET /users": "the bot looks users up by key or id, never pages the user list",
    "POST /kudos/award": "only the Horde's user 1 may award kudos; the bot transfers instead",
    "GET /status/models/{name}": "the bot filters the /status/models list instead of one call per model",
    "POST /teams": "the bot shows teams, it doesn't create them",
    "GET /styles/text": "text styles are not offered by /text",
    "GET /collections": "style collections are not offered by any command",
    "POST /styles/image": "the bot uses styles, it doesn't create them",
    "GET /styles/image_by_name/{name}": "styles are picked from the GET /styles/image pages",
    "GET /documents/terms": "no command shows the Horde's documents",
}

# 2xx answers to a request the bot never sends: `dry_run: true` (API_NOTES §4: cached and unvalidated, so
# the bot doesn't use it). Fed to the submit call they are real 2xx bodies without the `id` the bot needs:
# the client must name that field in a typed error, never crash.
DRY_RUN = {
    t.name for t in load_transcripts() if isinstance(t.request_json, dict) and t.request_json.get("dry_run")
}


def _used() -> list[Transcript]:
    return [t for t in load_transcripts() if t.endpoint in CALLS]


@pytest.fixture(scope="module")
def replay() -> Iterator[ReplayServer]:
    server = ReplayServer()
    with server.running():
        yield server


# One client and one loop for the module: building an httpx client (TLS context) costs ~0.3 s.
pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def client(replay: ReplayServer) -> AsyncIterator[HordeClient]:
    # No retries: each transcript is one answer, read once.
    settings = HordeSettings(api_url=replay.base_url, contact="contract@example.invalid", max_retries=0)
    http = build_http_client(settings)
    try:
        # The pacer still spaces the paced POSTs (one a second, kudos transfers too), on a clock that moves
        # when it sleeps: the system clock made the module wait ~25 s in real time between transcripts.
        yield HordeClient(http, settings, TestClock())
    finally:
        await http.aclose()


async def _replay(
    client: HordeClient, replay: ReplayServer, t: Transcript, *, then: Transcript | None = None
) -> Any:
    replay.current = t
    replay.then = [then] if then is not None else []
    replay.received.clear()
    try:
        return await CALLS[t.endpoint](client, t)
    finally:
        sent = [(r.method, r.path) for r in replay.received]
        expected = [(t.method, "/api/v2" + t.path)] * (2 if then is not None else 1)
        assert sent == expected, f"the client sent {sent} for {t.endpoint}"


# POSTs that create Horde work go through the pacer (bot.horde.pacer): the limiter's 429 was not processed,
# so the request waits its turn again and is re-sent; the recorded answer after it is transcript 99's 202.
PACED = {"POST /generate/async", "POST /generate/text/async", "POST /interrogate/async"}


def _models_in(result: Any) -> list[BaseModel]:
    items = result if isinstance(result, list) else [result]
    return [item for item in items if isinstance(item, BaseModel)]


async def test_every_transcript_is_used_or_has_a_reason() -> None:
    unused = sorted({t.endpoint for t in load_transcripts()} - set(CALLS))
    assert unused == sorted(NOT_USED_BY_THE_CLIENT), "give each endpoint the client doesn't call a reason"
    assert len(load_transcripts()) == 115


@pytest.mark.parametrize("t", _used(), ids=lambda t: t.name)
async def test_recorded_answer_parses_or_raises_the_typed_error(
    client: HordeClient, replay: ReplayServer, t: Transcript
) -> None:
    if t.name in DRY_RUN and t.status < 300:
        with pytest.raises(HordeUnexpectedResponse) as unexpected:
            await _replay(client, replay, t)
        assert (unexpected.value.endpoint, unexpected.value.field) == (t.endpoint, "id")
        return
    if t.status < 300:
        result = await _replay(client, replay, t)
        if t.endpoint == "DELETE /sharedkeys/{id}":
            assert result is None and t.body == {"message": "OK"}
            return
        models = _models_in(result)
        expected_items = len(t.body) if isinstance(t.body, list) else 1
        assert len(models) == expected_items
        return
    if t.endpoint in PACED and t.status == 429 and t.rc is None:
        accepted = await _replay(client, replay, t, then=transcript("99_img_async_for_ratelimit"))
        assert accepted.id == "014fec9b-bdc2-4fea-a51e-447fc2825985"
        return
    with pytest.raises(HordeError) as info:
        await _replay(client, replay, t)
    error = info.value
    assert not isinstance(error, HordeUnexpectedResponse)
    assert error.status == t.status
    assert error.rc == t.rc
    if t.status >= 500:
        assert isinstance(error, HordeUnavailable)
    else:
        assert not isinstance(error, HordeUnavailable)
        assert error.message == t.body["message"]
    if t.status == 429 and t.rc is None:
        assert error.is_rate_limit and error.retry_after == float(t.header("Retry-After") or "nan")
    elif t.status < 500:
        # Every answer of a limited route carries the limiter's Retry-After: on a 400/401/403/404 it is not
        # advice to wait (a CorruptPrompt must not pause the bot for "1" second).
        assert t.header("Retry-After") is not None and error.retry_after is None
    if isinstance(t.body, dict) and isinstance(t.body.get("errors"), dict):
        assert error.errors == t.body["errors"]


async def test_real_news_list_with_null_tags(client: HordeClient, replay: ReplayServer) -> None:
    t = transcript("04_status_news")
    null_tags = [item for item in t.body if item["tags"] is None]
    assert len(t.body) == 86 and len(null_tags) == 38
    news = await _replay(client, replay, t)
    assert len(news) == 86
    bridge = next(n for n in news if n.title and "Bridge agent key" in n.title)
    assert bridge.date_published == "2023-01-23" and bridge.tags == []
    assert [n.newspiece for n in news] == [item["newspiece"] for item in t.body]


async def test_user_answer_keeps_the_fields_the_bot_shows(client: HordeClient, replay: ReplayServer) -> None:
    t = transcript("09_find_user_alice")
    user = await _replay(client, replay, t)
    assert (user.username, user.id, user.kudos, user.concurrency) == ("alice#2", 2, 10000.0, 30)
    shared = await _replay(client, replay, transcript("77_sharedkey_find_user"))
    assert "(Shared Key:" in shared.username


async def test_image_status_answers_keep_images_censorship_and_seeds(
    client: HordeClient, replay: ReplayServer
) -> None:
    done = await _replay(client, replay, transcript("20_img_status_done_r2"))
    assert done.done and len(done.generations) == 2 and all(g.is_url for g in done.generations)
    assert done.generations[0].seed == "3389229303"
    censored = await _replay(client, replay, transcript("24_img_status_censored"))
    assert censored.generations[0].censored
    assert [(m.type, m.value) for m in censored.generations[0].gen_metadata] == [("censorship", "nsfw")]
    faulted = await _replay(client, replay, transcript("27_img_status_after_fault"))
    # A worker's fault re-queues the job (API_NOTES §4): restarted, waiting again, not `faulted`.
    assert (faulted.restarted, faulted.waiting, faulted.done, faulted.faulted) == (1, 1, False, False)


async def test_submit_answer_keeps_the_no_worker_warning(client: HordeClient, replay: ReplayServer) -> None:
    accepted = await _replay(client, replay, transcript("29_img_async_to_cancel"))
    assert accepted.id == "5c262ec8-a140-400b-9fcd-569c15323796"
    assert [w.code for w in accepted.warnings] == ["NoAvailableWorker"]


async def test_text_and_alchemy_answers(client: HordeClient, replay: ReplayServer) -> None:
    text = await _replay(client, replay, transcript("87_text_status_done"))
    assert text.done and text.generations[0].text.startswith(" [fake completion")
    alchemy = await _replay(client, replay, transcript("81_interrogate_status_done"))
    assert alchemy.finished
    assert {f.form: f.result for f in alchemy.forms}["nsfw"] == {"nsfw": False}


async def test_rate_limited_status_carries_retry_after(client: HordeClient, replay: ReplayServer) -> None:
    with pytest.raises(HordeError) as info:
        await _replay(client, replay, transcript("110_ratelimit_status_10"))
    assert info.value.is_rate_limit and info.value.retry_after == 59.0
    assert info.value.message == "10 per 1 minute"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"kudos": 1.0}, "id"),
        ({"id": None, "kudos": 1.0}, "id"),
        ({"id": ["not", "a", "string"]}, "id"),
    ],
)
async def test_unusable_2xx_names_endpoint_and_field(
    client: HordeClient, replay: ReplayServer, body: Any, field: str, caplog: pytest.LogCaptureFixture
) -> None:
    recorded = transcript("17_img_async_r2")
    t = Transcript(**{**recorded.__dict__, "body": body})
    with pytest.raises(HordeUnexpectedResponse) as info:
        await _replay(client, replay, t)
    assert (info.value.endpoint, info.value.field, info.value.status) == ("POST /generate/async", field, None)
    logged = [r.getMessage() for r in caplog.records if "doesn't understand" in r.getMessage()]
    assert logged and "POST /generate/async" in logged[0] and repr(field) in logged[0]
    assert json.dumps(body) not in "\n".join(logged)
