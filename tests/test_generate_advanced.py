"""/generate-advanced driven as a member: power fields reach the Horde, bad values are refused privately."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import pytest
from PIL import Image

from bot.config import Settings
from tests.conftest import make_settings
from tests.fakes.horde import FakeHorde
from tests.harness import Harness
from tests.support.genopts import reference

INPAINTING = {"name": "stable_diffusion_inpainting", "baseline": "stable diffusion 1", "inpainting": True}


@pytest.fixture(autouse=True)
def _no_fake_rate_limits(horde: FakeHorde) -> None:
    horde.enforce_rate_limits = False


@pytest.fixture
def settings(tmp_path: Path, horde: FakeHorde) -> Settings:
    """The fake Horde serves the model reference (baselines, inpainting models), as the real one's is."""
    horde.model_reference = {**reference(), "stable_diffusion_inpainting": INPAINTING}
    built = make_settings(tmp_path, horde.base_url)
    return dataclasses.replace(
        built, horde=dataclasses.replace(built.horde, model_reference_url=horde.model_reference_url)
    )


def png(width: int = 512, height: int = 512, mode: str = "RGB") -> bytes:
    out = io.BytesIO()
    Image.new(mode, (width, height), 255 if mode == "L" else (200, 30, 30)).save(out, "PNG")
    return out.getvalue()


async def test_power_fields_reach_the_horde(harness: Harness, horde: FakeHorde) -> None:
    reply = await harness.member("alice").slash(
        "generate-advanced",
        prompt="a castle###blurry",
        loras="Magnagothica=0.8, version:12345",
        tis="neg:badhands",
        clip_skip=2,
        n=2,
        seed_variation=3,
        size="768x512",
        qr_code="https://aihorde.net",
        qr_position="32,64",
        speed="extra_slow",
        allow_downgrade=True,
    )
    assert reply.deferred and not reply.private
    assert "Generating" in reply.latest().text
    request = horde.last_request("image")
    params = request.params
    assert request.payload["prompt"] == "a castle###blurry"
    assert [lora["name"] for lora in params["loras"]] == ["Magnagothica", "12345"]
    assert params["tis"] == [{"name": "badhands", "inject_ti": "negprompt", "strength": 1.0}]
    assert (params["clip_skip"], params["seed_variation"], params["width"], params["height"]) == (
        2,
        3,
        768,
        512,
    )
    assert params["workflow"] == "qr_code"
    assert params["extra_texts"][0] == {"text": "https://aihorde.net", "reference": "qr_code"}
    assert request.payload["extra_slow_workers"] is True and request.payload["allow_downgrade"] is True


async def test_inpainting_with_a_mask_attachment(harness: Harness, horde: FakeHorde) -> None:
    horde.add_worker("paint-1", models=["stable_diffusion_inpainting"])
    reply = await harness.member("alice").slash(
        "generate-advanced",
        prompt="a red door",
        model="stable_diffusion_inpainting",
        image=("door.png", png()),
        mask=("mask.png", png(mode="L")),
    )
    assert not reply.private, reply.text
    request = horde.last_request("image")
    assert request.payload["source_processing"] == "inpainting" and request.payload["source_mask"]


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"loras": "a,b,c,d,e,f"}, "You can use at most 5 LoRAs per image (got 6)."),
        ({"size": "huge"}, "`size` is WIDTHxHEIGHT in pixels, e.g. `1024x768` (got `huge`)."),
        ({"size": "1000x512"}, "Width must be a multiple of 64 (got 1000)."),
        (
            {"seed_variation": 2},
            "`seed_variation` only applies when you ask for several images: set `n` to 2 or more.",
        ),
        (
            {"source_processing": "inpainting"},
            "Inpainting repaints an `image`: attach the picture to change.",
        ),
    ],
)
async def test_bad_values_are_refused_privately(
    harness: Harness, horde: FakeHorde, options: dict[str, object], expected: str
) -> None:
    reply = await harness.member("alice").slash("generate-advanced", prompt="a castle", **options)
    assert reply.private
    assert expected in reply.text
    assert horde.count("POST", r"/generate/async") == 0


async def test_a_mask_without_an_image_is_refused(harness: Harness, horde: FakeHorde) -> None:
    reply = await harness.member("alice").slash("generate-advanced", prompt="a door", mask=("m.png", png()))
    assert reply.private
    assert "A `mask` marks what to repaint in an `image`: attach the image too." in reply.text
    assert horde.count("POST", r"/generate/async") == 0


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"loras": "Magnagothica\x00"}, "`loras` contains a NUL byte; remove it and try again."),
        ({"tis": "neg:bad\x07hands"}, "`tis` contains an invisible control character (U+0007)"),
        ({"workers": "one\ntwo"}, "`workers` contains a line break; remove it and try again."),
        ({"qr_code": "https://aihorde.net\x00"}, "`qr_code` contains a NUL byte; remove it and try again."),
        ({"loras": "x" * 1501}, "`loras` can be at most 1,500 characters (got 1,501)."),
    ],
)
async def test_power_text_fields_a_client_did_not_check_are_refused_privately(
    harness: Harness, horde: FakeHorde, options: dict[str, object], expected: str
) -> None:
    """Sent raw, as a hostile client would: the Horde never sees a NUL byte (it answers 400) or an overlong
    field."""
    reply = await harness.member("alice").slash_raw("generate-advanced", {"prompt": "a castle", **options})
    assert reply.private
    assert expected in reply.text
    assert horde.count("POST", r"/generate/async") == 0
