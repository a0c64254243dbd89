"""Alchemy forms added by issue #16: the detailed interrogation as a file, strip_background, and every
post-processor the Horde lists as a choice."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from bot.horde import alchemy as forms
from tests.fakes.horde import FakeHorde
from tests.harness import Harness

POLL = 3.0


@pytest.fixture(autouse=True)
def _no_fake_rate_limits(horde: FakeHorde) -> None:
    horde.enforce_rate_limits = False


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(out, format="PNG")
    return out.getvalue()


async def finish(harness: Harness, horde: FakeHorde) -> None:
    horde.finish_form(horde.last_request("interrogation").id)
    await harness.advance(POLL + 1)


async def test_describe_with_tags_attaches_every_tag_with_its_confidence(
    harness: Harness, horde: FakeHorde
) -> None:
    reply = await harness.member("alice").slash("describe", image=("cat.png", png()), tags=True)
    await finish(harness, horde)
    done = reply.latest()
    assert [a.filename for a in done.attachments] == ["cat_tags.tsv"]
    table = (await done.attachments[0].read()).decode()
    lines = table.splitlines()
    assert lines[0] == "tag\tconfidence"
    assert lines[1:3] == ["test pattern\t0.9100", "solid colour\t0.5500"]


async def test_strip_background_posts_the_result(harness: Harness, horde: FakeHorde) -> None:
    reply = await harness.member("alice").slash("strip-background", image=("cat.png", png()))
    assert not reply.ephemeral
    request = horde.last_request("interrogation")
    assert [f.name for f in request.forms] == ["strip_background"]
    await finish(harness, horde)
    done = reply.latest()
    assert "Background removed with strip_background." in done.text.replace("**", "")
    assert [a.filename for a in done.attachments] == ["cat_nobg.webp"]


def test_every_post_processor_the_horde_lists_is_a_choice() -> None:
    from cogs.alchemy import FIXER_CHOICES, UPSCALER_CHOICES

    offered = {c.value for c in UPSCALER_CHOICES} | {c.value for c in FIXER_CHOICES}
    listed = {
        "RealESRGAN_x4plus",
        "RealESRGAN_x2plus",
        "RealESRGAN_x4plus_anime_6B",
        "NMKD_Siax",
        "4x_AnimeSharp",
        "GFPGAN",
        "CodeFormers",
    }
    assert listed <= offered
    assert set(forms.IMAGE_FORMS) == offered | {"strip_background"}
