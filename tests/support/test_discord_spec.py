"""Tests for the Discord OpenAPI request validator."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import discord
import pytest

from tests.support.discord_spec import (
    SPEC_ENV_VAR,
    DiscordSpecValidator,
    default_spec_path,
    get_spec_validator,
)


@pytest.fixture(scope="module")
def spec() -> DiscordSpecValidator:
    return get_spec_validator()


def _button(**overrides: Any) -> dict[str, Any]:
    return {"type": 2, "style": 1, "label": "Retry", "custom_id": "job:1:retry", **overrides}


def _row(*components: dict[str, Any]) -> dict[str, Any]:
    return {"type": 1, "components": list(components)}


def test_validator_is_cached_and_fast(spec: DiscordSpecValidator) -> None:
    assert get_spec_validator() is spec
    start = time.perf_counter()
    for _ in range(50):
        spec.validate("POST", "/channels/1/messages", {"content": "hi"})
    assert time.perf_counter() - start < 1.0


def test_spec_path_defaults_to_the_repositorys_copy_and_honours_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SPEC_ENV_VAR, raising=False)
    repo = Path(__file__).resolve().parents[2]
    assert default_spec_path() == repo / "tests" / "data" / "discord" / "openapi.json"
    assert default_spec_path().is_file()
    monkeypatch.setenv(SPEC_ENV_VAR, "/elsewhere/openapi.json")
    assert default_spec_path() == Path("/elsewhere/openapi.json")


def test_valid_message_passes(spec: DiscordSpecValidator) -> None:
    body = {
        "content": "x" * 2000,
        "embeds": [{"title": "Done", "description": "a cat", "fields": [{"name": "n", "value": "v"}] * 25}],
        "components": [_row(_button(), _button(style=5, url="https://aihorde.net", custom_id=None))],
        "allowed_mentions": {"parse": []},
        "flags": 0,
    }
    assert spec.validate("POST", "/channels/123456789/messages", body) == []


def test_content_over_2000_is_caught(spec: DiscordSpecValidator) -> None:
    for method, path, body in [
        ("POST", "/channels/1/messages", {"content": "x" * 2001}),
        ("PATCH", "/channels/1/messages/2", {"content": "x" * 2001}),
        ("POST", "/webhooks/1/tok", {"content": "x" * 2001}),
        ("POST", "/interactions/1/tok/callback", {"type": 4, "data": {"content": "x" * 2001}}),
    ]:
        problems = spec.validate(method, path, body)
        assert len(problems) == 1, (path, problems)
        assert "content" in problems[0] and "2001" in problems[0] and "2000" in problems[0]


def test_button_label_over_80_is_caught(spec: DiscordSpecValidator) -> None:
    body = {"content": "hi", "components": [_row(_button(label="L" * 81))]}
    problems = spec.validate("POST", "/channels/1/messages", body)
    assert problems == [
        "POST /channels/{channel_id}/messages: body.components[0].components[0].label: "
        "string of 81 characters is longer than the maximum 80"
    ]


def test_custom_id_over_100_is_caught(spec: DiscordSpecValidator) -> None:
    body = {"type": 4, "data": {"components": [_row(_button(custom_id="c" * 101))]}}
    problems = spec.validate("POST", "/interactions/1/tok/callback", body)
    assert len(problems) == 1
    assert "body.data.components[0].components[0].custom_id" in problems[0]
    assert "101" in problems[0]


def test_more_than_25_embed_fields_is_caught(spec: DiscordSpecValidator) -> None:
    body = {"embeds": [{"title": "t", "fields": [{"name": "n", "value": "v"}] * 26}]}
    problems = spec.validate("POST", "/webhooks/1/tok", body, params={"wait": "true"})
    assert len(problems) == 1
    assert "body.embeds[0].fields: 26 items, more than the maximum 25" in problems[0]


def test_modal_callback_from_discord_py_validates(spec: DiscordSpecValidator) -> None:
    modal = discord.ui.Modal(title="Log in to the AI Horde", custom_id="login:modal")
    modal.add_item(
        discord.ui.TextInput(label="API key", custom_id="login:apikey", min_length=10, max_length=100)
    )
    body = {"type": 9, "data": modal.to_dict()}
    assert spec.validate("POST", "/interactions/1/tok/callback", body, params={"with_response": "1"}) == []

    too_long_title = {"type": 9, "data": {**modal.to_dict(), "title": "T" * 46}}
    problems = spec.validate("POST", "/interactions/1/tok/callback", too_long_title)
    assert len(problems) == 1 and "body.data.title" in problems[0]


def test_discord_py_integer_attachment_ids_are_normalised(spec: DiscordSpecValidator) -> None:
    body: dict[str, Any] = {"content": "img", "attachments": [{"id": 0, "filename": "a.webp"}]}
    assert spec.validate("PATCH", "/webhooks/1/tok/messages/@original", body) == []
    assert body["attachments"][0]["id"] == 0  # the caller's body is not mutated
    bad = {"attachments": [{"id": "not-a-snowflake", "filename": "a.webp"}]}
    assert spec.validate("PATCH", "/webhooks/1/tok/messages/@original", bad)


def test_integer_snowflakes_are_accepted_like_discord_does(spec: DiscordSpecValidator) -> None:
    assert spec.validate("POST", "/users/@me/channels", {"recipient_id": 1234567890123}) == []
    assert spec.validate("POST", "/users/@me/channels", {"recipient_id": -1})
    assert spec.validate("POST", "/users/@me/channels", {"recipient_id": "12ab"})


def test_unknown_paths_methods_params_and_bodies(spec: DiscordSpecValidator) -> None:
    assert spec.validate("GET", "/not/a/route") == [
        "GET /not/a/route: path matches no path template in Discord's spec"
    ]
    assert "method not defined" in spec.validate("DELETE", "/users/@me")[0]
    assert "'channel_id'" in spec.validate("POST", "/channels/abc/messages", {"content": "x"})[0]
    assert "'bogus' is not defined" in spec.validate("GET", "/users/@me", params={"bogus": "1"})[0]
    assert "body is required" in spec.validate("POST", "/channels/1/messages")[0]
    assert "no request body" in spec.validate("GET", "/users/@me", {"x": 1})[0]
    assert (
        "with_response"
        in spec.validate("POST", "/interactions/1/t/callback?with_response=maybe", {"type": 6})[0]
    )


def test_check_says_which_part_is_wrong(spec: DiscordSpecValidator) -> None:
    found = spec.check("POST", "/channels/x/messages", {"content": "x" * 2001}, params={"nope": "1"})
    assert [v.part for v in found] == ["path", "query", "body"]
    assert [str(v) for v in found] == spec.validate(
        "POST", "/channels/x/messages", {"content": "x" * 2001}, {"nope": "1"}
    )
    assert [v.part for v in spec.check("GET", "/nowhere")] == ["route"]


def test_path_matching_prefers_literal_segments(spec: DiscordSpecValidator) -> None:
    original = spec.match("PATCH", "/api/v10/webhooks/1/tok/messages/@original")
    assert original is not None
    assert original.template == "/webhooks/{webhook_id}/{webhook_token}/messages/@original"
    reaction = spec.match("PUT", "/channels/1/messages/2/reactions/%F0%9F%91%8D/@me")
    assert reaction is not None
    assert reaction.template.endswith("/reactions/{emoji_name}/@me")
    assert reaction.path_params["emoji_name"] == "\N{THUMBS UP SIGN}"
    assert spec.operation_id("POST", "/interactions/1/tok/callback") == "create_interaction_response"
