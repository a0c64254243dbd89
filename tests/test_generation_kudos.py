"""Generation and kudos together, as wired in the factory: reactions on a generation result gift the
member who asked for it, and generations in a party thread are awarded."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import Settings
from bot.db.kudos import SENT
from tests.conftest import make_settings
from tests.fakes.horde import FakeHorde
from tests.harness import Harness, virtual_seconds
from tests.test_kudos import KUDOS, elapse, gifts, link, linked_pair, paid
from tests.test_parties import start_party


@pytest.fixture
def settings(tmp_path: Path, horde: FakeHorde) -> Settings:
    return make_settings(tmp_path, horde.base_url, kudos=KUDOS)


@pytest.fixture(autouse=True)
async def _world(harness: Harness, horde: FakeHorde) -> None:
    horde.clock = lambda: virtual_seconds(harness)
    await harness.services.guild_config.update(harness.guild.id, kudos_emojis={"👍": 5})


async def test_reaction_on_a_generation_result_gifts_the_requester_not_the_bot(
    harness: Harness, horde: FakeHorde
) -> None:
    h = harness
    alice, _a, bob, b = await linked_pair(h, horde)
    reply = await bob.slash("generate", prompt="a lighthouse at dusk")
    horde.finish(horde.last_request("image").id)
    await elapse(h, 31)
    result = reply.latest()
    assert result.attachments, result.text
    assert result.message is not None and result.message.author.bot
    await alice.react(result.message, "👍")
    await elapse(h, 2)
    [call] = paid(horde)
    assert call.json == {"username": b.username, "amount": 5}
    [gift] = await gifts(h)
    assert (gift.giver_id, gift.receiver_id, gift.state) == (alice.id, bob.id, SENT)


async def test_generating_with_the_party_style_in_its_thread_is_awarded(
    harness: Harness, horde: FakeHorde
) -> None:
    h = harness
    horde.add_style("Neon Dreams")
    host, guest = h.member("host"), h.member("guest")
    hu, gu = horde.add_user("host", kudos=500), horde.add_user("guest", kudos=100)
    await link(host, hu)
    await link(guest, gu)
    thread = await start_party(h, host)
    outside = await guest.slash("generate", prompt="a neon city", style="Neon Dreams")
    horde.finish(horde.last_request("image").id)
    await elapse(h, 31)
    assert outside.latest().attachments
    inside = await guest.slash("generate", channel=thread, prompt="a neon city", style="neon dreams")
    horde.finish(horde.last_request("image").id)
    await elapse(h, 31)
    assert inside.latest().attachments
    await elapse(h, 3)
    # Only the generation in the party's thread earns the award, once, from the host.
    [call] = paid(horde)
    assert call.json == {"username": gu.username, "amount": 10} and call.user_id == hu.id
    [gift] = await gifts(h)
    assert (gift.source, gift.receiver_id, gift.state) == ("party", guest.id, SENT)
