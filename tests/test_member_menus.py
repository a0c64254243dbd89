"""User context menus driven as members do: Horde profile, Send kudos, Remix avatar, Describe avatar."""

from __future__ import annotations

import io

import discord
import pytest
from PIL import Image

from bot.db.kudos import SENT
from tests.fakes.horde import FakeHorde
from tests.harness import Harness, Member
from tests.test_kudos import gifts, linked_pair, message_of, transfers


@pytest.fixture(autouse=True)
def _no_fake_rate_limits(horde: FakeHorde) -> None:
    horde.enforce_rate_limits = False


def avatar_png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (128, 128), (30, 120, 200)).save(out, format="PNG")
    return out.getvalue()


def serve_avatar(h: Harness, member: Member) -> None:
    """Discord's CDN (simcord's) serves the member's avatar: members without one have one of Discord's
    default avatars (`embed/avatars/<n>.png`), so all of those are served."""
    assert member.id
    for index in range(6):
        h.env.backend.cdn._blobs[f"{discord.Asset.BASE}/embed/avatars/{index}.png"] = avatar_png()


async def test_horde_profile_shows_a_linked_members_account(harness: Harness, horde: FakeHorde) -> None:
    alice, _a, bob, b = await linked_pair(harness, horde)
    reply = await alice.context_menu("Horde profile", bob.actor)
    assert reply.private
    assert "AI Horde account of" in reply.text and f"bob#{b.id}" in reply.text
    carol = harness.member("carol")
    nobody = await alice.context_menu("Horde profile", carol.actor)
    assert nobody.private and "has not linked an AI Horde account" in nobody.text


async def test_send_kudos_opens_a_form_then_the_transfer_confirm(harness: Harness, horde: FakeHorde) -> None:
    alice, a, bob, b = await linked_pair(harness, horde)
    shown = await alice.context_menu("Send kudos", bob.actor)
    assert shown.modal is not None
    confirm = await alice.submit_modal(shown, {"kudos:menu:amount": "25", "kudos:menu:reason": "nice art"})
    assert confirm.private and "Send **25** kudos" in confirm.text and "Reason: nice art" in confirm.text
    assert transfers(horde) == []
    done = await alice.click(message_of(confirm), label="Send kudos")
    assert "Sent **25** kudos" in done.latest().text
    assert horde.user(a.id).kudos == 75 and horde.user(b.id).kudos == 125
    [gift] = await gifts(harness)
    assert (gift.source, gift.state, gift.amount, gift.reason) == ("transfer", SENT, 25, "nice art")


async def test_send_kudos_refuses_bad_amounts_and_unlinked_givers(harness: Harness, horde: FakeHorde) -> None:
    alice, _a, bob, _b = await linked_pair(harness, horde)
    shown = await alice.context_menu("Send kudos", bob.actor)
    bad = await alice.submit_modal(shown, {"kudos:menu:amount": "lots", "kudos:menu:reason": ""})
    assert bad.private
    assert "The amount must be a whole number of kudos, like 100 (got `lots`)." in bad.text
    carol = harness.member("carol")
    refused = await carol.context_menu("Send kudos", bob.actor)
    assert refused.private and refused.modal is None
    assert "link it with `/login` first" in refused.text
    to_self = await alice.context_menu("Send kudos", alice.actor)
    assert "You can't gift kudos to yourself" in to_self.text
    assert transfers(horde) == []


async def test_remix_avatar_sends_the_avatar_as_img2img(harness: Harness, horde: FakeHorde) -> None:
    alice = harness.member("alice")
    bob = harness.member("bob")
    serve_avatar(harness, bob)
    shown = await alice.context_menu("Remix avatar", bob.actor)
    assert shown.modal is not None
    reply = await alice.submit_modal(shown, {"prompt": "as a knight in shining armour", "strength": "0.5"})
    assert "Generating" in reply.latest().text, reply.text
    request = horde.last_request("image")
    assert request.payload["source_processing"] == "img2img" and request.payload["source_image"]
    assert request.params["denoising_strength"] == 0.5


async def test_remix_avatar_that_cannot_be_downloaded_says_so(harness: Harness, horde: FakeHorde) -> None:
    alice, bob = harness.member("alice"), harness.member("bob")
    shown = await alice.context_menu("Remix avatar", bob.actor)
    reply = await alice.submit_modal(shown, {"prompt": "a knight", "strength": ""})
    assert reply.private
    assert "I couldn't download that member's avatar from Discord. Try again in a minute." in reply.text
    assert horde.count("POST", r"/generate/async") == 0


async def test_describe_avatar_captions_it_privately(harness: Harness, horde: FakeHorde) -> None:
    alice, bob = harness.member("alice"), harness.member("bob")
    serve_avatar(harness, bob)
    reply = await alice.context_menu("Describe avatar", bob.actor)
    assert reply.private
    request = horde.last_request("interrogation")
    assert [f.name for f in request.forms] == ["caption"]
    horde.finish_form(request.id)
    await harness.advance(4)
    assert "Alt text: A fake caption of a test image." in reply.latest().text.replace("**", "")


async def test_menus_are_registered_as_user_menus(harness: Harness) -> None:
    from discord import AppCommandType

    names = {c.name for c in harness.bot.tree.get_commands(type=AppCommandType.user)}
    assert {"Horde profile", "Send kudos", "Remix avatar", "Describe avatar"} <= names
