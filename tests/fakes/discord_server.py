"""A fake Discord (REST + gateway) on 127.0.0.1, for smoke tests of the real bot process.

The bot under test points ``discord.http.Route.BASE`` at :attr:`FakeDiscord.api_base_url` and
``DiscordWebSocket.DEFAULT_GATEWAY`` at :attr:`FakeDiscord.gateway_url`. The fake then plays Discord:
HELLO / IDENTIFY -> READY + GUILD_CREATE, heartbeats, interactions typed by the test (slash commands,
modal submits, button clicks, select menus, autocomplete), reactions, and the REST routes a bot uses
to answer them. Every REST request is validated against Discord's OpenAPI spec
(``tests.support.discord_spec``); problems land in :attr:`FakeDiscord.spec_violations`, and things
real Discord would reject (double acknowledgements, late acknowledgements, unknown routes, missing
permissions...) land in :attr:`FakeDiscord.protocol_errors`. A test should end with both empty.

Sharding works as on Discord: IDENTIFY may carry ``shard: [id, count]`` (READY echoes it), each connection
hears only the servers with ``(guild_id >> 22) % count == id`` (READY's guild list, GUILD_CREATE,
interactions, reactions, every other server event; DMs go to shard 0), and ``GET /gateway/bot`` recommends
``recommended_shards`` connections (what ``AutoShardedBot`` opens when given no count). Several bot
processes may connect at once, each with its own shards; :func:`snowflake_on_shard` makes server ids that
land on a given shard.

Typical use::

    fake = FakeDiscord(token="t")
    guild = fake.add_guild("Test Server")
    channel = fake.add_channel(guild.id, "general")
    alice = fake.add_member(guild.id, "alice")
    await fake.start()
    ... start the bot against fake.api_base_url / fake.gateway_url ...
    await fake.wait_until_ready()
    await fake.wait_for_commands("login")
    interaction = await fake.send_slash(guild.id, channel.id, alice.id, "login")
    modal = await fake.submit_modal(interaction, {"login:apikey": "0123456789"})
    reply = await fake.wait_for_reply(modal)
    assert reply.ephemeral and "alice" in reply.text

Design notes:

* Runs in the caller's event loop (``await fake.start()``); the bot is normally a separate process.
* Responses carry ``Content-Type: application/json`` exactly (discord.py ignores bodies otherwise),
  and injected 429s carry a ``Via`` header (without it discord.py assumes a Cloudflare ban).
* Gateway frames are plain JSON text; discord.py asks for zlib-stream but accepts text frames.
* After a "thinking" defer, the first followup replaces the loading message and keeps the defer's
  ephemerality, as Discord does.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import mimetypes
import secrets
import time
import traceback
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import quote

from aiohttp import WSMsgType, web

from tests.support.discord_spec import DiscordSpecValidator, get_spec_validator

__all__ = [
    "FakeAttachment",
    "FakeChannel",
    "FakeDiscord",
    "FakeDiscordError",
    "FakeGuild",
    "FakeInteraction",
    "FakeMember",
    "FakeMessage",
    "FakeRole",
    "FakeUser",
    "InteractionCallback",
    "Permissions",
    "RecordedRequest",
]

log = logging.getLogger("tests.fakes.discord")
T = TypeVar("T")

DISCORD_EPOCH_MS = 1420070400000
API_VERSION = 10
NONCE_WINDOW = 120.0  # seconds a message create's nonce is remembered (Discord: "the past few minutes")
# Discord: "Interaction tokens are valid for 15 minutes"; past that, its webhook routes (the original
# response, followups) answer 401 Invalid Webhook Token (50027).
TOKEN_LIFETIME = 15 * 60.0


class Permissions:
    """Permission bits used by the fake (values as in Discord's documentation)."""

    ADD_REACTIONS = 1 << 6
    ADMINISTRATOR = 1 << 3
    VIEW_CHANNEL = 1 << 10
    SEND_MESSAGES = 1 << 11
    MANAGE_MESSAGES = 1 << 13
    EMBED_LINKS = 1 << 14
    ATTACH_FILES = 1 << 15
    READ_MESSAGE_HISTORY = 1 << 16
    MENTION_EVERYONE = 1 << 17
    USE_EXTERNAL_EMOJIS = 1 << 18
    MANAGE_ROLES = 1 << 28
    USE_APPLICATION_COMMANDS = 1 << 31
    ALL = (1 << 53) - 1

    #: Roughly what @everyone gets in a new server.
    DEFAULT_EVERYONE = (
        VIEW_CHANNEL
        | SEND_MESSAGES
        | ADD_REACTIONS
        | EMBED_LINKS
        | ATTACH_FILES
        | READ_MESSAGE_HISTORY
        | USE_EXTERNAL_EMOJIS
        | USE_APPLICATION_COMMANDS
    )
    #: What a typical invite link grants a bot like this one.
    DEFAULT_BOT = DEFAULT_EVERYONE


class Intents:
    GUILDS = 1 << 0
    GUILD_MEMBERS = 1 << 1
    GUILD_MESSAGES = 1 << 9
    GUILD_MESSAGE_REACTIONS = 1 << 10
    DIRECT_MESSAGES = 1 << 12
    DIRECT_MESSAGE_REACTIONS = 1 << 13


# Interaction types and callback types (Discord's numbering).
PING, APPLICATION_COMMAND, MESSAGE_COMPONENT, AUTOCOMPLETE, MODAL_SUBMIT = 1, 2, 3, 4, 5
CB_PONG, CB_MESSAGE, CB_DEFERRED_MESSAGE, CB_DEFERRED_UPDATE, CB_UPDATE = 1, 4, 5, 6, 7
CB_AUTOCOMPLETE, CB_MODAL = 8, 9
FLAG_EPHEMERAL = 1 << 6
FLAG_LOADING = 1 << 7

_id_counter = itertools.count(1)


def snowflake() -> int:
    """A fresh, time-ordered Discord id."""
    ms = int(time.time() * 1000) - DISCORD_EPOCH_MS
    return (ms << 22) | (next(_id_counter) & 0x3FFFFF)


def shard_of(guild_id: int, shard_count: int) -> int:
    """Discord's rule for which shard (gateway connection) hears a server's events."""
    return (guild_id >> 22) % shard_count


def snowflake_on_shard(shard_id: int, shard_count: int) -> int:
    """A fresh id that, as a server id, lands on ``shard_id`` of ``shard_count`` (for tests that need
    servers on given shards): the timestamp part is nudged back to the nearest fitting millisecond."""
    if not 0 <= shard_id < shard_count:
        raise ValueError(f"shard {shard_id} is not one of 0..{shard_count - 1}")
    fresh = snowflake()
    ms = fresh >> 22
    ms -= (ms - shard_id) % shard_count
    return (ms << 22) | (fresh & 0x3FFFFF)


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()


class FakeDiscordError(AssertionError):
    """A test asked the fake for something real Discord would not do (or it timed out)."""


# ---------------------------------------------------------------------------- world model


@dataclass
class FakeUser:
    id: int
    username: str
    global_name: str | None = None
    bot: bool = False

    def payload(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "username": self.username,
            "discriminator": "0",
            "global_name": self.global_name,
            "avatar": None,
            "bot": self.bot,
            "public_flags": 0,
        }


@dataclass
class FakeRole:
    id: int
    guild_id: int
    name: str
    permissions: int = 0
    position: int = 0
    managed: bool = False
    color: int = 0

    def payload(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "name": self.name,
            "permissions": str(self.permissions),
            "position": self.position,
            "color": self.color,
            "colors": {"primary_color": self.color, "secondary_color": None, "tertiary_color": None},
            "hoist": False,
            "managed": self.managed,
            "mentionable": False,
            "icon": None,
            "unicode_emoji": None,
            "flags": 0,
        }


@dataclass
class FakeChannel:
    id: int
    guild_id: int | None
    name: str | None
    type: int = 0  # 0 text, 1 DM, 2 voice, 4 category, 5 announcement, 15 forum
    position: int = 0
    parent_id: int | None = None
    topic: str | None = None
    nsfw: bool = False
    recipient: FakeUser | None = None  # DM channels
    dms_closed: bool = False

    def payload(self) -> dict[str, Any]:
        if self.type == 1:
            assert self.recipient is not None
            return {
                "id": str(self.id),
                "type": 1,
                "last_message_id": None,
                "recipients": [self.recipient.payload()],
                "flags": 0,
            }
        return {
            "id": str(self.id),
            "type": self.type,
            "guild_id": str(self.guild_id),
            "name": self.name,
            "position": self.position,
            "permission_overwrites": [],
            "parent_id": str(self.parent_id) if self.parent_id else None,
            "topic": self.topic,
            "nsfw": self.nsfw,
            "last_message_id": None,
            "rate_limit_per_user": 0,
            "flags": 0,
        }


@dataclass
class FakeMember:
    user: FakeUser
    guild_id: int
    roles: list[int] = field(default_factory=list)
    nick: str | None = None
    joined_at: str = field(default_factory=_now_iso)

    @property
    def id(self) -> int:
        return self.user.id

    def payload(self, *, permissions: int | None = None) -> dict[str, Any]:
        data: dict[str, Any] = {
            "user": self.user.payload(),
            "roles": [str(r) for r in self.roles],
            "nick": self.nick,
            "avatar": None,
            "banner": None,
            "joined_at": self.joined_at,
            "premium_since": None,
            "deaf": False,
            "mute": False,
            "pending": False,
            "flags": 0,
            "communication_disabled_until": None,
        }
        if permissions is not None:
            data["permissions"] = str(permissions)
        return data


@dataclass
class FakeGuild:
    id: int
    name: str
    owner_id: int
    roles: dict[int, FakeRole] = field(default_factory=dict)
    channels: dict[int, FakeChannel] = field(default_factory=dict)
    members: dict[int, FakeMember] = field(default_factory=dict)

    @property
    def everyone(self) -> FakeRole:
        return self.roles[self.id]

    def permissions_of(self, user_id: int) -> int:
        if user_id == self.owner_id:
            return Permissions.ALL
        member = self.members.get(user_id)
        perms = self.everyone.permissions
        if member is not None:
            for role_id in member.roles:
                role = self.roles.get(role_id)
                if role is not None:
                    perms |= role.permissions
        if perms & Permissions.ADMINISTRATOR:
            return Permissions.ALL
        return perms

    def top_role_position(self, user_id: int) -> int:
        member = self.members.get(user_id)
        if member is None:
            return 0
        return max((self.roles[r].position for r in member.roles if r in self.roles), default=0)

    def payload(self, *, members: Iterable[FakeMember] | None = None) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": str(self.id),
            "name": self.name,
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "banner": None,
            "description": None,
            "owner_id": str(self.owner_id),
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 1,
            "explicit_content_filter": 0,
            "roles": [r.payload() for r in self.roles.values()],
            "emojis": [],
            "stickers": [],
            "features": [],
            "mfa_level": 0,
            "system_channel_id": None,
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "public_updates_channel_id": None,
            "safety_alerts_channel_id": None,
            "vanity_url_code": None,
            "premium_tier": 0,
            "premium_subscription_count": 0,
            "preferred_locale": "en-US",
            "nsfw_level": 0,
            "premium_progress_bar_enabled": False,
        }
        if members is not None:
            data.update(
                {
                    "joined_at": _now_iso(),
                    "large": False,
                    "unavailable": False,
                    "member_count": len(self.members),
                    "voice_states": [],
                    "members": [m.payload() for m in members],
                    "channels": [c.payload() for c in self.channels.values()],
                    "threads": [],
                    "presences": [],
                    "stage_instances": [],
                    "guild_scheduled_events": [],
                    "soundboard_sounds": [],
                }
            )
        return data


@dataclass
class FakeAttachment:
    id: int
    filename: str
    data: bytes
    url: str
    content_type: str | None = None
    description: str | None = None

    def payload(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "filename": self.filename,
            "size": len(self.data),
            "url": self.url,
            "proxy_url": self.url,
            "content_type": self.content_type,
            "description": self.description,
        }


@dataclass
class FakeMessage:
    """A message as the fake stores it. ``payload()`` is what Discord would return for it."""

    id: int
    channel_id: int
    guild_id: int | None
    author: FakeUser
    content: str = ""
    embeds: list[dict[str, Any]] = field(default_factory=list)
    components: list[dict[str, Any]] = field(default_factory=list)
    flags: int = 0
    attachments: list[FakeAttachment] = field(default_factory=list)
    interaction: FakeInteraction | None = None
    webhook_id: int | None = None
    message_type: int = 0
    timestamp: str = field(default_factory=_now_iso)
    edited_timestamp: str | None = None
    deleted: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)  # earlier versions, oldest first
    reactions: dict[str, list[int]] = field(default_factory=dict)  # emoji -> user ids, in order

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & FLAG_EPHEMERAL)

    @property
    def loading(self) -> bool:
        """True for a "thinking..." placeholder from a deferred interaction."""
        return bool(self.flags & FLAG_LOADING)

    @property
    def text(self) -> str:
        """Content plus every text field of every embed, for loose assertions."""
        parts = [self.content]
        for embed in self.embeds:
            parts += [embed.get("title") or "", embed.get("description") or ""]
            parts += [
                (embed.get("author") or {}).get("name") or "",
                (embed.get("footer") or {}).get("text") or "",
            ]
            for f in embed.get("fields") or []:
                parts += [f.get("name") or "", f.get("value") or ""]
        for comp in _walk_components(self.components):
            if comp.get("type") == 10:
                parts.append(comp.get("content") or "")
        return "\n".join(p for p in parts if p)

    def custom_ids(self) -> list[str]:
        return [c["custom_id"] for c in _walk_components(self.components) if c.get("custom_id")]

    def find_component(self, custom_id: str) -> Mapping[str, Any] | None:
        for comp in _walk_components(self.components):
            if comp.get("custom_id") == custom_id:
                return comp
        return None

    def payload(self, app_id: int) -> dict[str, Any]:
        reactions = []
        for emoji, users in self.reactions.items():
            if users:
                reactions.append(
                    {
                        "count": len(users),
                        "count_details": {"burst": 0, "normal": len(users)},
                        "me": False,
                        "me_burst": False,
                        "burst_colors": [],
                        "emoji": _emoji_payload(emoji),
                    }
                )
        data: dict[str, Any] = {
            "id": str(self.id),
            "channel_id": str(self.channel_id),
            "type": self.message_type,
            "author": self.author.payload(),
            "content": self.content,
            "timestamp": self.timestamp,
            "edited_timestamp": self.edited_timestamp,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": [a.payload() for a in self.attachments],
            "embeds": [{"type": "rich", **e} for e in self.embeds],
            "pinned": False,
            "flags": self.flags,
            "components": self.components,
            "reactions": reactions,
        }
        if self.guild_id is not None:
            data["guild_id"] = str(self.guild_id)
        if self.webhook_id is not None:
            data["webhook_id"] = str(self.webhook_id)
            data["application_id"] = str(app_id)
        if self.interaction is not None:
            inter = self.interaction
            data["interaction_metadata"] = {
                "id": str(inter.id),
                "type": inter.type,
                "user": inter.user.payload(),
                "authorizing_integration_owners": inter.payload.get("authorizing_integration_owners", {}),
            }
            if inter.type == APPLICATION_COMMAND:
                data["interaction_metadata"]["name"] = inter.command_name
                data["interaction"] = {
                    "id": str(inter.id),
                    "type": inter.type,
                    "name": inter.command_name,
                    "user": inter.user.payload(),
                }
        return data

    def __repr__(self) -> str:
        flags = [
            n for n, bit in (("ephemeral", FLAG_EPHEMERAL), ("loading", FLAG_LOADING)) if self.flags & bit
        ]
        return (
            f"<FakeMessage id={self.id} channel={self.channel_id} {' '.join(flags)} "
            f"text={_clip(self.text)!r} components={self.custom_ids()} "
            f"files={[a.filename for a in self.attachments]}"
            f"{' deleted' if self.deleted else ''}>"
        )


@dataclass
class InteractionCallback:
    """What the bot answered to an interaction (``POST /interactions/{id}/{token}/callback``)."""

    type: int
    data: dict[str, Any] | None
    files: list[FakeAttachment]
    elapsed: float  # seconds between dispatch and the callback

    @property
    def ephemeral(self) -> bool:
        return bool((self.data or {}).get("flags", 0) & FLAG_EPHEMERAL)

    @property
    def modal(self) -> dict[str, Any] | None:
        return self.data if self.type == CB_MODAL else None

    @property
    def choices(self) -> list[dict[str, Any]]:
        return list((self.data or {}).get("choices") or []) if self.type == CB_AUTOCOMPLETE else []


@dataclass(eq=False)
class FakeInteraction:
    id: int
    token: str
    type: int
    payload: dict[str, Any]  # the INTERACTION_CREATE data as dispatched
    user: FakeUser
    guild_id: int | None
    channel_id: int
    dispatched_at: float
    command_name: str | None = None
    source_message: FakeMessage | None = None  # component interactions: the clicked message
    parent: FakeInteraction | None = None  # modal submits: the interaction that opened the modal
    callback: InteractionCallback | None = None
    original: FakeMessage | None = None
    followups: list[FakeMessage] = field(default_factory=list)

    @property
    def data(self) -> dict[str, Any]:
        return dict(self.payload.get("data") or {})

    @property
    def messages(self) -> list[FakeMessage]:
        """The original response (if any) and followups, in order."""
        out = [self.original] if self.original is not None else []
        return out + [m for m in self.followups if m is not self.original]

    def __repr__(self) -> str:
        kind = {2: "command", 3: "component", 4: "autocomplete", 5: "modal_submit"}.get(
            self.type, str(self.type)
        )
        what = self.command_name or self.data.get("custom_id")
        cb = self.callback.type if self.callback else None
        return f"<FakeInteraction {kind} {what!r} id={self.id} callback={cb}>"


@dataclass
class RecordedRequest:
    method: str
    path: str  # relative to the API base, raw (percent-encoded), without query
    template: str | None  # the spec's path template, or None if it matches none
    params: dict[str, str]
    json: Any
    files: list[FakeAttachment]
    headers: dict[str, str]
    status: int = 0
    response: Any = None


@dataclass
class _Req:
    method: str
    path: str
    template: str
    path_params: dict[str, str]
    query: dict[str, str]
    json: Any
    files: dict[int, tuple[str, bytes]]  # files[n] index -> (filename, bytes)
    headers: Mapping[str, str]


class _HTTPError(Exception):
    def __init__(self, status: int, code: int, message: str, *, protocol: bool = True) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.protocol = protocol  # also record it in protocol_errors


@dataclass
class _GatewayConn:
    ws: web.WebSocketResponse
    seq: int = 0
    session_id: str | None = None
    identified: bool = False
    # [shard id, shard count] from IDENTIFY; a connection without one is shard 0 of 1 (every server).
    shard: tuple[int, int] = (0, 1)
    intents: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def hears(self, guild_id: int | None) -> bool:
        """Whether Discord sends this connection the events of a server (None: DMs, which go to shard 0)."""
        shard_id, count = self.shard
        return shard_of(guild_id, count) == shard_id if guild_id is not None else shard_id == 0


Handler = Callable[[_Req], Awaitable[web.StreamResponse]]


# ---------------------------------------------------------------------------- the fake


class FakeDiscord:
    """A loopback Discord. See the module docstring."""

    def __init__(
        self,
        *,
        token: str | None = None,
        application_id: int | None = None,
        bot_name: str = "HordeBot",
        owner: str = "owner",
        ack_timeout: float | None = 3.0,
        reject_invalid: bool = True,
        heartbeat_interval_ms: int = 41250,
        validator: DiscordSpecValidator | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        recommended_shards: int = 1,
        form_fill_seconds: float = 0.5,
    ) -> None:
        self.token = token  # None: accept any token
        # What GET /gateway/bot recommends: discord.py's AutoShardedBot opens this many connections when it is
        # given no shard count.
        self.recommended_shards = recommended_shards
        # A member reads and fills a form before submitting it: discord.py stores a modal only after its
        # callback's HTTP answer has come back, so a submission sent the instant the callback arrives can
        # reach the bot before the modal is stored, and is dropped (no human is that fast).
        self.form_fill_seconds = form_fill_seconds
        self.application_id = application_id or snowflake()
        self.bot_user = FakeUser(self.application_id, bot_name, bot=True)
        self.ack_timeout = ack_timeout
        self.reject_invalid = reject_invalid  # answer 400 to bodies that break the spec, as Discord does
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self._validator = validator
        self._host = host
        self._port = port

        self.users: dict[int, FakeUser] = {self.bot_user.id: self.bot_user}
        self.owner = self.add_user(owner)
        self.guilds: dict[int, FakeGuild] = {}
        self.dm_channels: dict[int, FakeChannel] = {}  # user id -> DM channel
        self.attachments: dict[int, FakeAttachment] = {}

        self.requests: list[RecordedRequest] = []
        self.messages: list[FakeMessage] = []
        self.interactions: dict[int, FakeInteraction] = {}
        self.spec_violations: list[str] = []
        self.protocol_errors: list[str] = []
        self.gateway_log: list[dict[str, Any]] = []  # every op the bot sent (tokens redacted)
        self.dispatched: list[tuple[int, str]] = []  # (shard id, event) of every dispatch sent, in order
        self.identify: dict[str, Any] | None = None  # the last IDENTIFY (token left out)
        self.identifies: list[dict[str, Any]] = []  # every IDENTIFY, in order (tokens left out)
        self.intents = 0
        self.command_syncs = 0
        self._commands: dict[
            int | None, dict[str, dict[str, Any]]
        ] = {}  # guild id|None -> "type:name" -> cmd

        self._conns: list[_GatewayConn] = []
        # The live connection of each shard, keyed (shard id, shard count).
        self._active: dict[tuple[int, int], _GatewayConn] = {}
        self._ready = asyncio.Event()
        self._changed = asyncio.Event()
        self._sessions: dict[str, int] = {}
        self._session_shards: dict[str, tuple[tuple[int, int], int]] = {}  # session -> (shard, intents)
        self._injected: list[tuple[str, str, int, dict[str, Any], dict[str, str], list[int]]] = []
        self._runner: web.AppRunner | None = None
        self._site_port: int | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._routes = self._build_routes()
        # Messages created with `enforce_nonce`: (author, nonce) -> (message, when), see `_create_message`.
        self._nonces: dict[tuple[int, str], tuple[FakeMessage, float]] = {}

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        if self._validator is None:
            self._validator = get_spec_validator()
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        self._site_port = int(self._runner.addresses[0][1])
        log.info("fake Discord listening on %s", self.base_url)

    async def stop(self) -> None:
        for conn in list(self._conns):
            with contextlib.suppress(Exception):
                await conn.ws.close(code=1001, message=b"fake Discord stopping")
        self._conns.clear()
        self._active.clear()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeDiscord:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        if self._site_port is None:
            raise FakeDiscordError("FakeDiscord.start() has not been awaited")
        return f"http://{self._host}:{self._site_port}"

    @property
    def api_base_url(self) -> str:
        return f"{self.base_url}/api/v{API_VERSION}"

    @property
    def gateway_url(self) -> str:
        return f"ws://{self._host}:{self._site_port}/gateway"

    @property
    def connected(self) -> bool:
        return bool(self.connected_shards)

    @property
    def connected_shards(self) -> list[tuple[int, int]]:
        """The shards with a live gateway connection, as ``(shard id, shard count)``."""
        return sorted(shard for shard, conn in self._active.items() if not conn.ws.closed)

    def shards_hearing(self, guild_id: int) -> list[int]:
        """The shard ids of the live connections that hear this server (one, when the bot shards right)."""
        return [shard_id for (shard_id, _), conn in self._live_conns() if conn.hears(guild_id)]

    def _live_conns(self) -> list[tuple[tuple[int, int], _GatewayConn]]:
        return [(shard, conn) for shard, conn in sorted(self._active.items()) if not conn.ws.closed]

    # ---------------------------------------------------------------- building the world

    def add_user(self, username: str, *, user_id: int | None = None, bot: bool = False) -> FakeUser:
        user = FakeUser(user_id or snowflake(), username, global_name=username.title(), bot=bot)
        self.users[user.id] = user
        return user

    def add_guild(
        self,
        name: str = "Test Server",
        *,
        guild_id: int | None = None,
        owner_id: int | None = None,
        everyone_permissions: int = Permissions.DEFAULT_EVERYONE,
        bot_permissions: int = Permissions.DEFAULT_BOT,
    ) -> FakeGuild:
        """A guild the bot is in, with @everyone, a managed bot role, and the bot as a member."""
        gid = guild_id or snowflake()
        owner = owner_id or self.owner.id
        guild = FakeGuild(gid, name, owner)
        guild.roles[gid] = FakeRole(gid, gid, "@everyone", everyone_permissions, position=0)
        bot_role = FakeRole(
            snowflake(), gid, self.bot_user.username, bot_permissions, position=1, managed=True
        )
        guild.roles[bot_role.id] = bot_role
        guild.members[self.bot_user.id] = FakeMember(self.bot_user, gid, roles=[bot_role.id])
        if owner in self.users:
            guild.members[owner] = FakeMember(self.users[owner], gid)
        self.guilds[gid] = guild
        self._emit_later("GUILD_CREATE", lambda: self._guild_create_payload(guild), Intents.GUILDS)
        return guild

    def add_role(
        self, guild_id: int, name: str, permissions: int = 0, *, position: int | None = None
    ) -> FakeRole:
        guild = self._guild(guild_id)
        pos = position if position is not None else max(r.position for r in guild.roles.values()) + 1
        role = FakeRole(snowflake(), guild_id, name, permissions, position=pos)
        guild.roles[role.id] = role
        self._emit_later(
            "GUILD_ROLE_CREATE", lambda: {"guild_id": str(guild_id), "role": role.payload()}, Intents.GUILDS
        )
        return role

    def add_channel(
        self, guild_id: int, name: str = "general", *, channel_type: int = 0, channel_id: int | None = None
    ) -> FakeChannel:
        guild = self._guild(guild_id)
        channel = FakeChannel(
            channel_id or snowflake(), guild_id, name, channel_type, position=len(guild.channels)
        )
        guild.channels[channel.id] = channel
        self._emit_later("CHANNEL_CREATE", channel.payload, Intents.GUILDS)
        return channel

    def add_member(
        self, guild_id: int, user: FakeUser | int | str, *, roles: Sequence[int] = (), nick: str | None = None
    ) -> FakeMember:
        """Add a member: an existing user (object or id) or a new one (a username)."""
        guild = self._guild(guild_id)
        if isinstance(user, str):
            user = self.add_user(user)
        elif isinstance(user, int):
            user = self._user(user)
        member = FakeMember(user, guild_id, roles=list(roles), nick=nick)
        guild.members[user.id] = member
        self._emit_later(
            "GUILD_MEMBER_ADD", lambda: {**member.payload(), "guild_id": str(guild_id)}, Intents.GUILD_MEMBERS
        )
        return member

    def dm_channel(self, user_id: int) -> FakeChannel:
        """The DM channel between the bot and a user (created on first use)."""
        user = self._user(user_id)
        channel = self.dm_channels.get(user_id)
        if channel is None:
            channel = FakeChannel(snowflake(), None, None, type=1, recipient=user)
            self.dm_channels[user_id] = channel
        return channel

    def close_dms(self, user_id: int) -> None:
        """Make DMs to this user fail like a user with DMs disabled (403, code 50007)."""
        self.dm_channel(user_id).dms_closed = True

    def make_attachment(self, data: bytes, filename: str, content_type: str | None = None) -> FakeAttachment:
        """An attachment hosted by the fake (for attachment options of slash commands)."""
        att_id = snowflake()
        att = FakeAttachment(
            att_id,
            filename,
            data,
            f"{self.base_url}/attachments/0/{att_id}/{quote(filename)}",
            content_type or mimetypes.guess_type(filename)[0],
        )
        self.attachments[att_id] = att
        return att

    # ---------------------------------------------------------------- failure injection

    def inject_error(
        self,
        method: str,
        template: str,
        status: int,
        body: Mapping[str, Any] | None = None,
        *,
        times: int = 1,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Answer the next ``times`` requests to ``method template`` with this error."""
        payload = dict(body or {"message": f"injected {status}", "code": 0})
        self._injected.append((method.upper(), template, status, payload, dict(headers or {}), [times]))

    def inject_rate_limit(
        self, method: str, template: str, *, retry_after: float = 0.05, times: int = 1
    ) -> None:
        """A 429 shaped like Discord's (with ``Via``, so discord.py retries instead of giving up)."""
        headers = {
            "Via": "1.1 google",
            "X-RateLimit-Limit": "5",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset-After": str(retry_after),
            "X-RateLimit-Bucket": "fake-bucket",
            "X-RateLimit-Scope": "user",
            "Retry-After": str(max(1, round(retry_after))),
        }
        body = {
            "message": "You are being rate limited.",
            "retry_after": retry_after,
            "global": False,
            "code": 0,
        }
        self.inject_error(method, template, 429, body, times=times, headers=headers)

    # ---------------------------------------------------------------- waiting

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _wait(self, check: Callable[[], T | None], timeout: float, what: str) -> T:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            result = check()
            if result is not None:
                return result
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise FakeDiscordError(f"timed out after {timeout}s waiting for {what}\n{self.describe()}")
            event = self._changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), remaining)

    async def wait_until_ready(self, timeout: float = 10, *, shards: Iterable[int] | None = None) -> None:
        """Until the bot identified and was sent READY and its GUILD_CREATEs: on any connection, or on one
        connection for each of ``shards`` (shard ids)."""
        wanted = set(shards or ())

        def check() -> bool | None:
            if not self._ready.is_set() or not self.connected:
                return None
            return True if wanted <= {shard_id for shard_id, _ in self.connected_shards} else None

        await self._wait(check, timeout, f"IDENTIFY of shards {sorted(wanted)}" if wanted else "IDENTIFY")

    async def wait_for_disconnect(self, shard_id: int, timeout: float = 10) -> None:
        """Until no live connection holds ``shard_id`` (its process closed or died)."""
        await self._wait(
            lambda: None if any(sid == shard_id for sid, _ in self.connected_shards) else True,
            timeout,
            f"shard {shard_id} to disconnect",
        )

    async def wait_for_commands(
        self, *names: str, guild_id: int | None = None, timeout: float = 10
    ) -> dict[str, dict[str, Any]]:
        """Until commands were synced (all of ``names``, if given, globally or to ``guild_id``)."""

        def check() -> dict[str, dict[str, Any]] | None:
            if not self.command_syncs:
                return None
            cmds = {c["name"]: c for c in self.commands(guild_id).values()}
            return cmds if all(n in cmds for n in names) else None

        return await self._wait(check, timeout, f"command sync of {names or 'any command'}")

    async def wait_for_callback(
        self, interaction: FakeInteraction, timeout: float = 10
    ) -> InteractionCallback:
        return await self._wait(lambda: interaction.callback, timeout, f"a callback to {interaction!r}")

    async def wait_for_message(
        self,
        predicate: Callable[[FakeMessage], bool] = lambda m: True,
        timeout: float = 10,
        *,
        include_existing: bool = True,
    ) -> FakeMessage:
        """The first stored message (in creation order) that satisfies ``predicate``.

        The predicate is re-checked whenever any message is created, edited or deleted, so it sees
        edits (e.g. a "thinking" placeholder turning into the real answer). With
        ``include_existing=False`` only messages created after the call are considered.
        """
        skip = len(self.messages) if not include_existing else 0

        def check() -> FakeMessage | None:
            for msg in self.messages[skip:]:
                if predicate(msg):
                    return msg
            return None

        return await self._wait(check, timeout, "a message matching the predicate")

    async def wait_for_reply(
        self,
        interaction: FakeInteraction,
        predicate: Callable[[FakeMessage], bool] = lambda m: True,
        timeout: float = 10,
    ) -> FakeMessage:
        """The first finished (not "thinking") response message of an interaction matching ``predicate``.

        Covers an immediate response, an edited deferred response and followups.
        """

        def check() -> FakeMessage | None:
            for msg in interaction.messages:
                if not msg.loading and not msg.deleted and predicate(msg):
                    return msg
            return None

        return await self._wait(check, timeout, f"a reply to {interaction!r}")

    async def wait_for_request(
        self, predicate: Callable[[RecordedRequest], bool], timeout: float = 10
    ) -> RecordedRequest:
        def check() -> RecordedRequest | None:
            return next((r for r in self.requests if r.status and predicate(r)), None)

        return await self._wait(check, timeout, "a matching REST request")

    def describe(self) -> str:
        """A summary of what the fake has seen, for failure messages."""
        shards = ", ".join(f"{i}/{n}" for i, n in self.connected_shards) or "none"
        lines = [f"gateway: shards connected: {shards}, commands synced: "]
        lines[0] += (
            ", ".join(sorted({c["name"] for cmds in self._commands.values() for c in cmds.values()})) or "-"
        )
        lines.append("last requests:")
        lines += [f"  {r.method} {r.path} -> {r.status}" for r in self.requests[-8:]]
        lines.append("last messages:")
        lines += [f"  {m!r}" for m in self.messages[-5:]]
        if self.protocol_errors:
            lines.append("protocol errors:")
            lines += [f"  {e}" for e in self.protocol_errors[-5:]]
        if self.spec_violations:
            lines.append("spec violations:")
            lines += [f"  {e}" for e in self.spec_violations[-5:]]
        return "\n".join(lines)

    def commands(self, guild_id: int | None = None) -> dict[str, dict[str, Any]]:
        """Synced commands, keyed ``"<type>:<name>"`` (global ones for ``guild_id=None``)."""
        return dict(self._commands.get(guild_id, {}))

    def messages_in(self, channel_id: int) -> list[FakeMessage]:
        return [m for m in self.messages if m.channel_id == channel_id and not m.deleted]

    # ---------------------------------------------------------------- user actions

    async def send_slash(
        self,
        guild_id: int | None,
        channel_id: int | None,
        user_id: int,
        command_name: str,
        options: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
    ) -> FakeInteraction:
        """A member runs a slash command. ``command_name`` may be ``"group sub"``.

        ``options`` is a mapping of option name to value (types come from the synced command;
        users/members, roles, channels and :class:`FakeAttachment` are resolved), or a raw list of
        Discord option dicts. ``guild_id=None`` runs it in the user's DM with the bot.
        """
        return await self._command_interaction(
            APPLICATION_COMMAND, guild_id, channel_id, user_id, command_name, options, focused=None
        )

    async def send_autocomplete(
        self,
        guild_id: int | None,
        channel_id: int | None,
        user_id: int,
        command_name: str,
        options: Mapping[str, Any],
        focused: str,
    ) -> FakeInteraction:
        """The user is typing into option ``focused``; wait_for_callback(...).choices has the answer."""
        return await self._command_interaction(
            AUTOCOMPLETE, guild_id, channel_id, user_id, command_name, options, focused=focused
        )

    async def submit_modal(
        self,
        interaction_or_custom_id: FakeInteraction | str,
        values: Mapping[str, str | Sequence[str]],
        *,
        user_id: int | None = None,
        timeout: float = 10,
    ) -> FakeInteraction:
        """Submit a modal the bot opened. ``values`` maps component custom_id -> text (or select values).

        Given an interaction, waits (up to ``timeout``) for it to be answered with a modal, then
        ``form_fill_seconds`` (a member filling the form). Values are
        checked the way Discord's client would (required, min/max length), so a test cannot submit
        what a user could not.
        """
        if isinstance(interaction_or_custom_id, FakeInteraction):
            opener = interaction_or_custom_id
            callback = await self.wait_for_callback(opener, timeout)
            if callback.type != CB_MODAL or callback.data is None:
                raise FakeDiscordError(
                    f"{opener!r} was answered with callback type {callback.type}, not a modal"
                )
            await asyncio.sleep(self.form_fill_seconds)
        else:
            found = [
                i
                for i in self.interactions.values()
                if i.callback
                and i.callback.modal
                and i.callback.modal.get("custom_id") == interaction_or_custom_id
            ]
            if not found:
                raise FakeDiscordError(f"no modal with custom_id {interaction_or_custom_id!r} was opened")
            opener = found[-1]
        assert opener.callback is not None and opener.callback.data is not None
        modal = opener.callback.data
        components = _modal_submission(modal, values)
        data: dict[str, Any] = {"custom_id": modal["custom_id"], "components": components}
        user = self._user(user_id) if user_id is not None else opener.user
        return await self._dispatch_interaction(
            MODAL_SUBMIT,
            data,
            user=user,
            guild_id=opener.guild_id,
            channel_id=opener.channel_id,
            source_message=opener.source_message,
            parent=opener,
        )

    async def click(
        self, message: FakeMessage | int, custom_id: str, *, user_id: int | None = None
    ) -> FakeInteraction:
        """A user presses a button on a message."""
        msg = self._message(message)
        comp = self._clickable(msg, custom_id)
        if comp.get("type") != 2:
            raise FakeDiscordError(
                f"component {custom_id!r} is type {comp.get('type')}, not a button: use select()"
            )
        return await self._component_interaction(msg, {"custom_id": custom_id, "component_type": 2}, user_id)

    async def select(
        self, message: FakeMessage | int, custom_id: str, values: Sequence[str], *, user_id: int | None = None
    ) -> FakeInteraction:
        """A user picks ``values`` in a select menu on a message."""
        msg = self._message(message)
        comp = self._clickable(msg, custom_id)
        ctype = comp.get("type")
        if ctype not in (3, 5, 6, 7, 8):
            raise FakeDiscordError(f"component {custom_id!r} is type {ctype}, not a select menu")
        lo, hi = comp.get("min_values", 1), comp.get("max_values", 1)
        if not lo <= len(values) <= hi:
            raise FakeDiscordError(f"select {custom_id!r} takes {lo}..{hi} values, got {len(values)}")
        if ctype == 3:
            allowed = {o["value"] for o in comp.get("options", [])}
            unknown = [v for v in values if v not in allowed]
            if unknown:
                raise FakeDiscordError(
                    f"select {custom_id!r} has no option(s) {unknown}; options: {sorted(allowed)}"
                )
        data = {"custom_id": custom_id, "component_type": ctype, "values": list(values)}
        return await self._component_interaction(msg, data, user_id)

    async def post_message(self, channel_id: int, user_id: int, content: str) -> FakeMessage:
        """A member (or a DM's user) writes a message in a channel; the bot hears MESSAGE_CREATE."""
        user = self._user(user_id)
        channel = next(
            (c for g in self.guilds.values() for c in g.channels.values() if c.id == channel_id), None
        ) or next((c for c in self.dm_channels.values() if c.id == channel_id), None)
        if channel is None:
            raise FakeDiscordError(f"no channel {channel_id}")
        msg = self._new_message(channel.id, channel.guild_id, {"content": content}, [], flags=0)
        msg.author = user
        await self._announce(msg, "MESSAGE_CREATE")
        return msg

    async def add_reaction(self, message: FakeMessage | int, emoji: str, user_id: int) -> None:
        """A user reacts (``emoji`` is a unicode emoji or ``name:id`` for a custom one)."""
        msg = self._message(message)
        user = self._user(user_id)
        users = msg.reactions.setdefault(emoji, [])
        if user.id in users:
            return
        users.append(user.id)
        self._notify()
        intent = Intents.GUILD_MESSAGE_REACTIONS if msg.guild_id else Intents.DIRECT_MESSAGE_REACTIONS
        if not self.intents & intent:
            raise FakeDiscordError(
                "the bot did not identify with the reactions intent: Discord would not tell it"
            )
        data: dict[str, Any] = {
            "user_id": str(user.id),
            "channel_id": str(msg.channel_id),
            "message_id": str(msg.id),
            "message_author_id": str(msg.author.id),
            "emoji": _emoji_payload(emoji),
            "burst": False,
            "burst_colors": [],
            "type": 0,
        }
        if msg.guild_id is not None:
            data["guild_id"] = str(msg.guild_id)
            member = self._guild(msg.guild_id).members.get(user.id)
            if member is not None:
                data["member"] = member.payload()
        await self._emit("MESSAGE_REACTION_ADD", data, intent)

    async def remove_reaction(self, message: FakeMessage | int, emoji: str, user_id: int) -> None:
        msg = self._message(message)
        users = msg.reactions.get(emoji, [])
        if user_id in users:
            users.remove(user_id)
            self._notify()
        intent = Intents.GUILD_MESSAGE_REACTIONS if msg.guild_id else Intents.DIRECT_MESSAGE_REACTIONS
        data: dict[str, Any] = {
            "user_id": str(user_id),
            "channel_id": str(msg.channel_id),
            "message_id": str(msg.id),
            "emoji": _emoji_payload(emoji),
            "burst": False,
            "type": 0,
        }
        if msg.guild_id is not None:
            data["guild_id"] = str(msg.guild_id)
        await self._emit("MESSAGE_REACTION_REMOVE", data, intent)

    async def disconnect(self, code: int = 4000, *, shard_id: int | None = None) -> None:
        """Drop the bot's gateway connections, or one shard's (it should reconnect and RESUME)."""
        for (sid, _), conn in self._live_conns():
            if shard_id is None or sid == shard_id:
                await conn.ws.close(code=code, message=b"fake Discord dropped the connection")

    # ---------------------------------------------------------------- interactions (internals)

    async def _command_interaction(
        self,
        itype: int,
        guild_id: int | None,
        channel_id: int | None,
        user_id: int,
        command_name: str,
        options: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None,
        *,
        focused: str | None,
    ) -> FakeInteraction:
        user = self._user(user_id)
        top, *path = command_name.split()
        command, scope = self._find_command(guild_id, top)
        if guild_id is None:
            contexts = command.get("contexts")
            if command.get("dm_permission") is False or (contexts is not None and 1 not in contexts):
                raise FakeDiscordError(f"/{top} is not available in DMs (contexts={contexts})")
            channel_id = channel_id or self.dm_channel(user_id).id
        else:
            guild = self._guild(guild_id)
            if user_id not in guild.members:
                raise FakeDiscordError(f"user {user_id} is not a member of guild {guild_id}")
            if channel_id is None or channel_id not in guild.channels:
                raise FakeDiscordError(f"channel {channel_id} is not in guild {guild_id}")
            required = int(command.get("default_member_permissions") or 0)
            if required and guild.permissions_of(user_id) & required != required:
                raise FakeDiscordError(
                    f"/{top} needs permissions {required}; "
                    f"Discord hides it from user {user_id} in guild {guild_id}"
                )
        resolved: dict[str, dict[str, Any]] = {}
        definitions = command.get("options") or []
        wrappers: list[dict[str, Any]] = []
        for name in path:  # subcommand groups / subcommands
            sub = next((o for o in definitions if o.get("name") == name and o.get("type") in (1, 2)), None)
            if sub is None:
                raise FakeDiscordError(f"/{top} has no subcommand {name!r}")
            wrappers.append({"type": sub["type"], "name": name})
            definitions = sub.get("options") or []
        built = self._build_options(top, definitions, options, resolved, guild_id, focused)
        for wrapper in reversed(wrappers):
            wrapper["options"] = built
            built = [wrapper]
        data: dict[str, Any] = {"id": str(command["id"]), "name": top, "type": command.get("type", 1)}
        if built:
            data["options"] = built
        if scope is not None:
            data["guild_id"] = str(scope)
        if resolved:
            data["resolved"] = resolved
        return await self._dispatch_interaction(
            itype, data, user=user, guild_id=guild_id, channel_id=channel_id, command_name=command_name
        )

    def _find_command(self, guild_id: int | None, name: str) -> tuple[dict[str, Any], int | None]:
        scopes: list[int | None] = [guild_id, None] if guild_id is not None else [None]
        for scope in scopes:
            cmd = self._commands.get(scope, {}).get(f"1:{name}")
            if cmd is not None:
                return cmd, scope
        synced = sorted({c["name"] for cmds in self._commands.values() for c in cmds.values()})
        raise FakeDiscordError(
            f"/{name} was never synced (PUT /applications/{{id}}/commands); "
            f"synced commands: {synced or 'none'}"
        )

    def _build_options(
        self,
        command: str,
        definitions: list[dict[str, Any]],
        options: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None,
        resolved: dict[str, dict[str, Any]],
        guild_id: int | None,
        focused: str | None,
    ) -> list[dict[str, Any]]:
        if options is None:
            options = {}
        if not isinstance(options, Mapping):
            return [dict(o) for o in options]  # raw, trusted
        by_name = {d["name"]: d for d in definitions}
        unknown = set(options) - set(by_name)
        if unknown:
            raise FakeDiscordError(f"/{command} has no option(s) {sorted(unknown)}; it has {sorted(by_name)}")
        out = []
        for name, definition in by_name.items():
            if name not in options:
                if definition.get("required") and focused is None:
                    raise FakeDiscordError(f"/{command}: option {name!r} is required")
                continue
            value = options[name]
            otype = definition["type"]
            opt: dict[str, Any] = {"name": name, "type": otype}
            if name == focused:
                opt["focused"] = True
                opt["value"] = str(value)
            else:
                opt["value"] = self._option_value(command, definition, value, resolved, guild_id)
            out.append(opt)
        if focused is not None and focused not in options:
            raise FakeDiscordError(f"the focused option {focused!r} needs a (partial) value in options")
        return out

    def _option_value(
        self,
        command: str,
        definition: dict[str, Any],
        value: Any,
        resolved: dict[str, dict[str, Any]],
        guild_id: int | None,
    ) -> Any:
        otype = definition["type"]
        name = definition["name"]
        choices = definition.get("choices")
        if choices and value not in [c["value"] for c in choices]:
            raise FakeDiscordError(f"/{command} {name}: {value!r} is not one of the choices {choices}")
        if otype == 3:
            if not isinstance(value, str):
                raise FakeDiscordError(f"/{command} {name}: expected a string, got {value!r}")
            lo, hi = definition.get("min_length", 0), definition.get("max_length", 6000)
            if not lo <= len(value) <= hi:
                raise FakeDiscordError(f"/{command} {name}: length must be {lo}..{hi}")
            return value
        if otype in (4, 10):
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or (otype == 4 and not isinstance(value, int))
            ):
                raise FakeDiscordError(f"/{command} {name}: expected a number, got {value!r}")
            lo, hi = definition.get("min_value"), definition.get("max_value")
            if (lo is not None and value < lo) or (hi is not None and value > hi):
                raise FakeDiscordError(f"/{command} {name}: {value} is outside {lo}..{hi}")
            return value
        if otype == 5:
            if not isinstance(value, bool):
                raise FakeDiscordError(f"/{command} {name}: expected a bool, got {value!r}")
            return value
        if otype == 11:
            if not isinstance(value, FakeAttachment):
                raise FakeDiscordError(f"/{command} {name}: pass a FakeAttachment (fake.make_attachment)")
            resolved.setdefault("attachments", {})[str(value.id)] = value.payload()
            return str(value.id)
        obj_id = int(getattr(value, "id", value))
        if otype in (6, 9) and obj_id in self.users:
            resolved.setdefault("users", {})[str(obj_id)] = self.users[obj_id].payload()
            if guild_id is not None:
                member = self._guild(guild_id).members.get(obj_id)
                if member is not None:
                    mp = member.payload(permissions=self._guild(guild_id).permissions_of(obj_id))
                    mp.pop("user")
                    resolved.setdefault("members", {})[str(obj_id)] = mp
            return str(obj_id)
        if otype in (8, 9) and guild_id is not None and obj_id in self._guild(guild_id).roles:
            resolved.setdefault("roles", {})[str(obj_id)] = self._guild(guild_id).roles[obj_id].payload()
            return str(obj_id)
        if otype == 7 and guild_id is not None and obj_id in self._guild(guild_id).channels:
            ch = self._guild(guild_id).channels[obj_id]
            resolved.setdefault("channels", {})[str(obj_id)] = {
                "id": str(ch.id),
                "name": ch.name,
                "type": ch.type,
                "permissions": str(Permissions.ALL),
                "parent_id": None,
            }
            return str(obj_id)
        raise FakeDiscordError(f"/{command} {name}: cannot resolve {value!r} for option type {otype}")

    async def _component_interaction(
        self, msg: FakeMessage, data: dict[str, Any], user_id: int | None
    ) -> FakeInteraction:
        if user_id is None:
            if msg.interaction is None:
                raise FakeDiscordError(
                    "pass user_id=...: the message was not a reply to anyone's interaction"
                )
            user = msg.interaction.user
        else:
            user = self._user(user_id)
        if msg.ephemeral and msg.interaction is not None and msg.interaction.user.id != user.id:
            raise FakeDiscordError("only the user who got an ephemeral message can see (and click) it")
        return await self._dispatch_interaction(
            MESSAGE_COMPONENT,
            data,
            user=user,
            guild_id=msg.guild_id,
            channel_id=msg.channel_id,
            source_message=msg,
        )

    def _clickable(self, msg: FakeMessage, custom_id: str) -> Mapping[str, Any]:
        if msg.deleted:
            raise FakeDiscordError(f"{msg!r} was deleted")
        comp = msg.find_component(custom_id)
        if comp is None:
            raise FakeDiscordError(f"{msg!r} has no component {custom_id!r}; it has {msg.custom_ids()}")
        if comp.get("disabled"):
            raise FakeDiscordError(f"component {custom_id!r} is disabled")
        return comp

    async def _dispatch_interaction(
        self,
        itype: int,
        data: dict[str, Any],
        *,
        user: FakeUser,
        guild_id: int | None,
        channel_id: int,
        command_name: str | None = None,
        source_message: FakeMessage | None = None,
        parent: FakeInteraction | None = None,
    ) -> FakeInteraction:
        if not self.connected:
            raise FakeDiscordError("the bot is not connected to the gateway")
        if not any(conn.hears(guild_id) for _, conn in self._live_conns()):
            raise FakeDiscordError(
                f"no gateway connection holds the shard of {'guild ' + str(guild_id) if guild_id else 'DMs'} "
                f"(connected: {self.connected_shards}): Discord would show 'This interaction failed'"
            )
        iid = snowflake()
        token = "aW50ZXJhY3Rpb246" + secrets.token_urlsafe(48)
        payload: dict[str, Any] = {
            "id": str(iid),
            "application_id": str(self.application_id),
            "type": itype,
            "data": data,
            "token": token,
            "version": 1,
            "locale": "en-US",
            "entitlements": [],
            "attachment_size_limit": 10 * 1024 * 1024,
            "channel_id": str(channel_id),
        }
        if guild_id is not None:
            guild = self._guild(guild_id)
            channel = guild.channels[channel_id]
            member = guild.members[user.id]
            payload.update(
                guild_id=str(guild_id),
                guild={"id": str(guild_id), "locale": "en-US", "features": []},
                guild_locale="en-US",
                channel=channel.payload(),
                member=member.payload(permissions=guild.permissions_of(user.id)),
                app_permissions=str(guild.permissions_of(self.bot_user.id)),
                authorizing_integration_owners={"0": str(guild_id)},
                context=0,
            )
        else:
            channel = self.dm_channel(user.id)
            payload.update(
                channel=channel.payload(),
                user=user.payload(),
                app_permissions=str(Permissions.DEFAULT_EVERYONE),
                authorizing_integration_owners={"0": "0"},
                context=1,
            )
        if source_message is not None:
            payload["message"] = source_message.payload(self.application_id)
        loop = asyncio.get_running_loop()
        interaction = FakeInteraction(
            id=iid,
            token=token,
            type=itype,
            payload=payload,
            user=user,
            guild_id=guild_id,
            channel_id=channel_id,
            dispatched_at=loop.time(),
            command_name=command_name or (parent.command_name if parent else None),
            source_message=source_message,
            parent=parent,
        )
        self.interactions[iid] = interaction
        await self._emit("INTERACTION_CREATE", payload, 0)
        return interaction

    # ---------------------------------------------------------------- gateway

    async def _gateway(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(autoping=True, max_msg_size=0)
        await ws.prepare(request)
        conn = _GatewayConn(ws)
        self._conns.append(conn)
        try:
            await self._send(conn, {"op": 10, "d": {"heartbeat_interval": self.heartbeat_interval_ms}})
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await self._on_gateway_op(conn, json.loads(msg.data))
                elif msg.type == WSMsgType.BINARY:
                    self._protocol_error("gateway: the bot sent a binary frame (expected JSON text)")
        except Exception as exc:
            self._protocol_error(f"gateway handler crashed: {exc!r}\n{traceback.format_exc()}")
        finally:
            self._conns.remove(conn)
            if self._active.get(conn.shard) is conn:
                del self._active[conn.shard]
            self._notify()
        return ws

    async def _on_gateway_op(self, conn: _GatewayConn, msg: dict[str, Any]) -> None:
        op, d = msg.get("op"), msg.get("d")
        logged = json.loads(json.dumps(msg))
        if isinstance(logged.get("d"), dict) and "token" in logged["d"]:
            logged["d"]["token"] = "<redacted>"
        self.gateway_log.append(logged)
        if op == 1:
            await self._send(conn, {"op": 11})
        elif op == 2:
            await self._identify(conn, d or {})
        elif op == 6:
            await self._resume(conn, d or {})
        elif op == 8:
            await self._request_members(conn, d or {})
        elif op in (3, 4):
            pass  # presence / voice state updates: accepted, ignored
        else:
            self._protocol_error(f"gateway: unexpected op {op}")

    async def _identify(self, conn: _GatewayConn, d: dict[str, Any]) -> None:
        if self.token is not None and d.get("token") != self.token:
            await conn.ws.close(code=4004, message=b"Authentication failed.")
            return
        shard = d.get("shard", [0, 1])
        if not (
            isinstance(shard, list)
            and len(shard) == 2
            and all(isinstance(n, int) for n in shard)
            and 0 <= shard[0] < shard[1]
        ):
            # What Discord answers to a shard it can't use.
            self._protocol_error(f"gateway: IDENTIFY with an invalid shard {shard!r}")
            await conn.ws.close(code=4010, message=b"Invalid shard.")
            return
        self.identify = {k: v for k, v in d.items() if k != "token"}
        self.identifies.append(self.identify)
        self.intents = conn.intents = int(d.get("intents", 0))
        conn.shard = (shard[0], shard[1])
        conn.session_id = secrets.token_hex(16)
        conn.identified = True
        self._sessions[conn.session_id] = 0
        self._session_shards[conn.session_id] = (conn.shard, conn.intents)
        self._active[conn.shard] = conn
        guilds = [guild for guild in list(self.guilds.values()) if conn.hears(guild.id)]
        ready = {
            "v": API_VERSION,
            "user": {**self.bot_user.payload(), "verified": True, "mfa_enabled": False, "flags": 0},
            "guilds": [{"id": str(g.id), "unavailable": True} for g in guilds],
            "session_id": conn.session_id,
            "session_type": "normal",
            "resume_gateway_url": self.gateway_url,
            "application": {"id": str(self.application_id), "flags": 0},
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "guild_join_requests": [],
            "geo_ordered_rtc_regions": [],
        }
        if "shard" in d:
            ready["shard"] = d["shard"]
        await self._dispatch_to(conn, "READY", ready)
        for guild in guilds:
            await self._dispatch_to(conn, "GUILD_CREATE", self._guild_create_payload(guild))
        self._ready.set()
        self._notify()

    async def _resume(self, conn: _GatewayConn, d: dict[str, Any]) -> None:
        session = d.get("session_id")
        if self.token is not None and d.get("token") != self.token:
            await conn.ws.close(code=4004, message=b"Authentication failed.")
            return
        if session not in self._sessions:
            await self._send(conn, {"op": 9, "d": False})
            return
        conn.session_id = session
        conn.identified = True
        conn.seq = max(self._sessions[session], int(d.get("seq") or 0))
        conn.shard, conn.intents = self._session_shards[session]
        self._active[conn.shard] = conn
        await self._dispatch_to(conn, "RESUMED", {})
        self._notify()

    async def _request_members(self, conn: _GatewayConn, d: dict[str, Any]) -> None:
        guild = self.guilds.get(int(d.get("guild_id", 0)))
        if guild is None:
            return
        members = list(guild.members.values())
        if d.get("user_ids"):
            wanted = {int(u) for u in d["user_ids"]}
            members = [m for m in members if m.id in wanted]
        elif d.get("query"):
            q = str(d["query"]).lower()
            members = [m for m in members if m.user.username.lower().startswith(q)]
        chunk: dict[str, Any] = {
            "guild_id": str(guild.id),
            "members": [m.payload() for m in members],
            "chunk_index": 0,
            "chunk_count": 1,
            "not_found": [],
        }
        if d.get("nonce") is not None:
            chunk["nonce"] = d["nonce"]
        await self._dispatch_to(conn, "GUILD_MEMBERS_CHUNK", chunk)

    def _guild_create_payload(self, guild: FakeGuild) -> dict[str, Any]:
        if self.intents & Intents.GUILD_MEMBERS:
            members: Iterable[FakeMember] = guild.members.values()
        else:
            members = [guild.members[self.bot_user.id]]  # what Discord sends without the members intent
        return guild.payload(members=members)

    async def _send(self, conn: _GatewayConn, payload: dict[str, Any]) -> None:
        async with conn.lock:
            if not conn.ws.closed:
                await conn.ws.send_str(json.dumps({"s": None, "t": None, **payload}))

    async def _dispatch_to(self, conn: _GatewayConn, event: str, data: dict[str, Any]) -> None:
        async with conn.lock:
            if conn.ws.closed:
                return
            conn.seq += 1
            if conn.session_id is not None:
                self._sessions[conn.session_id] = conn.seq
            self.dispatched.append((conn.shard[0], event))
            await conn.ws.send_str(json.dumps({"op": 0, "t": event, "s": conn.seq, "d": data}))

    async def _emit(self, event: str, data: dict[str, Any], intent: int) -> None:
        """Send a dispatch to the connection whose shard holds the event's server (DMs: shard 0), if it
        asked for the intent (0: always)."""
        # GUILD_CREATE/UPDATE carry the server as `id`; every other server event as `guild_id`.
        raw = data.get("guild_id") or (data.get("id") if event in ("GUILD_CREATE", "GUILD_UPDATE") else None)
        guild_id = int(raw) if raw is not None else None
        for _, conn in self._live_conns():
            if conn.hears(guild_id) and not (intent and not conn.intents & intent):
                await self._dispatch_to(conn, event, data)

    def _emit_later(self, event: str, make: Callable[[], dict[str, Any]], intent: int) -> None:
        """Emit from sync world-building methods when the bot is already connected."""
        if not self._active:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        task = loop.create_task(self._emit(event, make(), intent))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---------------------------------------------------------------- HTTP plumbing

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.rel_url.raw_path
        if path in ("/gateway", "/gateway/") and request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._gateway(request)
        if path.startswith("/attachments/"):
            return self._serve_attachment(path)
        prefix = f"/api/v{API_VERSION}"
        if not path.startswith(prefix + "/"):
            self._protocol_error(f"{request.method} {path}: not under {prefix} (is Route.BASE set right?)")
            return _json_response(404, {"message": "404: Not Found", "code": 0})
        return await self._rest(request, path[len(prefix) :])

    def _serve_attachment(self, path: str) -> web.StreamResponse:
        parts = path.split("/")
        try:
            att = self.attachments[int(parts[3])]
        except (IndexError, ValueError, KeyError):
            return web.Response(status=404, text="no such attachment")
        return web.Response(
            body=att.data, headers={"Content-Type": att.content_type or "application/octet-stream"}
        )

    async def _rest(self, request: web.Request, path: str) -> web.StreamResponse:
        method = request.method.upper()
        query = {k: v for k, v in request.query.items()}
        body, files, parse_error = await _read_body(request)
        assert self._validator is not None
        match = self._validator.match(method, path)
        recorded = RecordedRequest(
            method=method,
            path=path,
            template=match.template if match else None,
            params=query,
            json=body,
            files=[],
            headers={k: v for k, v in request.headers.items() if k.lower() != "authorization"},
        )
        self.requests.append(recorded)
        if parse_error:
            self._protocol_error(f"{method} {path}: {parse_error}")
        violations = self._validator.check(method, path, body, query)
        self.spec_violations += [v.message for v in violations]
        invalid_body = [v.message for v in violations if v.part == "body"]
        try:
            if invalid_body and self.reject_invalid and match is not None and method in match.methods:
                # What Discord does with a body that breaks its schema (recorded in spec_violations).
                raise _HTTPError(400, 50035, "Invalid Form Body: " + "; ".join(invalid_body), protocol=False)
            response = await self._route(request, method, path, query, body, files, match)
        except _HTTPError as err:
            if err.protocol:
                self._protocol_error(f"{method} {path}: {err.status} {err.message}")
            response = _json_response(err.status, {"message": err.message, "code": err.code})
        except Exception as exc:
            self._protocol_error(f"{method} {path}: the fake crashed: {exc!r}\n{traceback.format_exc()}")
            response = _json_response(500, {"message": "500: fake Discord crashed", "code": 0})
        recorded.status = response.status
        if isinstance(response, web.Response) and response.body is not None and response.status != 204:
            with contextlib.suppress(ValueError, TypeError):
                recorded.response = json.loads(response.body)  # type: ignore[arg-type]
        self._notify()
        return response

    async def _route(
        self,
        request: web.Request,
        method: str,
        path: str,
        query: dict[str, str],
        body: Any,
        files: dict[int, tuple[str, bytes]],
        match: Any,
    ) -> web.StreamResponse:
        if match is None or method not in match.methods:
            raise _HTTPError(404, 0, f"no such route in Discord's API ({method} {path})")
        for entry in self._injected:
            imethod, itemplate, status, ibody, iheaders, remaining = entry
            if imethod == method and itemplate == match.template and remaining[0] > 0:
                remaining[0] -= 1
                return _json_response(status, ibody, headers=iheaders)
        handler = self._routes.get((method, match.template))
        if handler is None:
            raise _HTTPError(404, 0, f"fake Discord does not implement {method} {match.template}")
        if not match.template.startswith(("/interactions/", "/webhooks/")):
            auth = request.headers.get("Authorization", "")
            if not auth.startswith("Bot ") or (self.token is not None and auth != f"Bot {self.token}"):
                raise _HTTPError(401, 0, "401: Unauthorized")
        req = _Req(method, path, match.template, match.path_params, query, body, files, request.headers)
        return await handler(req)

    def _protocol_error(self, text: str) -> None:
        log.warning("fake Discord: %s", text)
        self.protocol_errors.append(text)
        self._notify()

    # ---------------------------------------------------------------- REST routes

    def _build_routes(self) -> dict[tuple[str, str], Handler]:
        cmds = "/applications/{application_id}/commands"
        gcmds = "/applications/{application_id}/guilds/{guild_id}/commands"
        msg = "/channels/{channel_id}/messages/{message_id}"
        react = msg + "/reactions/{emoji_name}"
        hook = "/webhooks/{webhook_id}/{webhook_token}"
        return {
            ("GET", "/users/@me"): self._get_me,
            ("GET", "/users/{user_id}"): self._get_user,
            ("GET", "/oauth2/applications/@me"): self._get_application,
            ("GET", "/applications/@me"): self._get_application,
            ("GET", "/gateway"): self._get_gateway,
            ("GET", "/gateway/bot"): self._get_gateway,
            ("GET", cmds): self._list_commands,
            ("PUT", cmds): self._put_commands,
            ("POST", cmds): self._post_command,
            ("GET", cmds + "/{command_id}"): self._get_command,
            ("PATCH", cmds + "/{command_id}"): self._patch_command,
            ("DELETE", cmds + "/{command_id}"): self._delete_command,
            ("GET", gcmds): self._list_commands,
            ("PUT", gcmds): self._put_commands,
            ("POST", gcmds): self._post_command,
            ("GET", gcmds + "/{command_id}"): self._get_command,
            ("PATCH", gcmds + "/{command_id}"): self._patch_command,
            ("DELETE", gcmds + "/{command_id}"): self._delete_command,
            ("POST", "/interactions/{interaction_id}/{interaction_token}/callback"): self._callback,
            ("POST", hook): self._followup,
            ("GET", hook + "/messages/@original"): self._get_webhook_message,
            ("PATCH", hook + "/messages/@original"): self._edit_webhook_message,
            ("DELETE", hook + "/messages/@original"): self._delete_webhook_message,
            ("GET", hook + "/messages/{message_id}"): self._get_webhook_message,
            ("PATCH", hook + "/messages/{message_id}"): self._edit_webhook_message,
            ("DELETE", hook + "/messages/{message_id}"): self._delete_webhook_message,
            ("GET", "/channels/{channel_id}"): self._get_channel,
            ("POST", "/channels/{channel_id}/typing"): self._typing,
            ("GET", "/channels/{channel_id}/messages"): self._history,
            ("POST", "/channels/{channel_id}/messages"): self._create_message,
            ("GET", msg): self._get_message,
            ("PATCH", msg): self._edit_message,
            ("DELETE", msg): self._delete_message,
            ("PUT", react + "/@me"): self._add_own_reaction,
            ("DELETE", react + "/@me"): self._remove_own_reaction,
            ("DELETE", react + "/{user_id}"): self._remove_user_reaction,
            ("GET", react): self._reaction_users,
            ("DELETE", msg + "/reactions"): self._clear_reactions,
            ("POST", "/users/@me/channels"): self._create_dm,
            ("GET", "/guilds/{guild_id}"): self._get_guild,
            ("GET", "/guilds/{guild_id}/channels"): self._get_guild_channels,
            ("GET", "/guilds/{guild_id}/roles"): self._get_guild_roles,
            ("GET", "/guilds/{guild_id}/members/{user_id}"): self._get_member,
            ("PUT", "/guilds/{guild_id}/members/{user_id}/roles/{role_id}"): self._add_member_role,
            ("DELETE", "/guilds/{guild_id}/members/{user_id}/roles/{role_id}"): self._remove_member_role,
        }

    # -- identity

    async def _get_me(self, req: _Req) -> web.StreamResponse:
        return _json_response(
            200, {**self.bot_user.payload(), "verified": True, "mfa_enabled": False, "flags": 0}
        )

    async def _get_user(self, req: _Req) -> web.StreamResponse:
        return _json_response(200, self._rest_user(req.path_params["user_id"]).payload())

    async def _get_application(self, req: _Req) -> web.StreamResponse:
        return _json_response(
            200,
            {
                "id": str(self.application_id),
                "name": self.bot_user.username,
                "icon": None,
                "description": "",
                "summary": "",
                "type": None,
                "bot": self.bot_user.payload(),
                "bot_public": True,
                "bot_require_code_grant": False,
                "verify_key": "0" * 64,
                "flags": 0,
                "owner": self.owner.payload(),
                "team": None,
                "rpc_origins": [],
                "redirect_uris": [],
                "tags": [],
                "approximate_guild_count": len(self.guilds),
                "interactions_endpoint_url": None,
                "integration_types_config": {"0": {}},
            },
        )

    async def _get_gateway(self, req: _Req) -> web.StreamResponse:
        body: dict[str, Any] = {"url": self.gateway_url}
        if req.template == "/gateway/bot":
            body["shards"] = self.recommended_shards
            body["session_start_limit"] = {
                "total": 1000,
                "remaining": 999,
                "reset_after": 0,
                "max_concurrency": 1,
            }
        return _json_response(200, body)

    # -- application commands

    def _command_scope(self, req: _Req) -> int | None:
        if str(req.path_params["application_id"]) != str(self.application_id):
            raise _HTTPError(403, 50001, "Missing Access (wrong application id)")
        if "guild_id" in req.path_params:
            gid = int(req.path_params["guild_id"])
            if gid not in self.guilds:
                raise _HTTPError(403, 50001, "Missing Access (the bot is not in that guild)")
            return gid
        return None

    def _store_command(
        self, scope: int | None, body: Mapping[str, Any], existing: dict[str, Any] | None
    ) -> dict[str, Any]:
        cmd: dict[str, Any] = {
            "type": 1,
            "description": "",
            "options": [],
            "default_member_permissions": None,
            "nsfw": False,
            "name_localizations": None,
            "description_localizations": None,
            **{k: v for k, v in body.items() if v is not None or k == "default_member_permissions"},
        }
        cmd["id"] = existing["id"] if existing else str(snowflake())
        cmd["application_id"] = str(self.application_id)
        cmd["version"] = str(snowflake())
        if scope is not None:
            cmd["guild_id"] = str(scope)
        else:
            cmd.setdefault("contexts", None)
            cmd.setdefault("integration_types", [0])
        return cmd

    async def _list_commands(self, req: _Req) -> web.StreamResponse:
        return _json_response(200, list(self._commands.get(self._command_scope(req), {}).values()))

    async def _put_commands(self, req: _Req) -> web.StreamResponse:
        scope = self._command_scope(req)
        if not isinstance(req.json, list):
            raise _HTTPError(400, 50035, "Invalid Form Body (expected a list of commands)")
        old = self._commands.get(scope, {})
        new: dict[str, dict[str, Any]] = {}
        for body in req.json:
            key = f"{body.get('type', 1)}:{body.get('name')}"
            if key in new:
                raise _HTTPError(400, 50035, f"Invalid Form Body (duplicate command {key})")
            new[key] = self._store_command(scope, body, old.get(key))
        self._commands[scope] = new
        self.command_syncs += 1
        return _json_response(200, list(new.values()))

    async def _post_command(self, req: _Req) -> web.StreamResponse:
        scope = self._command_scope(req)
        body = req.json or {}
        key = f"{body.get('type', 1)}:{body.get('name')}"
        cmds = self._commands.setdefault(scope, {})
        cmds[key] = self._store_command(scope, body, cmds.get(key))
        self.command_syncs += 1
        return _json_response(201, cmds[key])

    def _command_by_id(self, req: _Req) -> tuple[dict[str, dict[str, Any]], str, dict[str, Any]]:
        cmds = self._commands.get(self._command_scope(req), {})
        for key, cmd in cmds.items():
            if cmd["id"] == req.path_params["command_id"]:
                return cmds, key, cmd
        raise _HTTPError(404, 10063, "Unknown application command")

    async def _get_command(self, req: _Req) -> web.StreamResponse:
        return _json_response(200, self._command_by_id(req)[2])

    async def _patch_command(self, req: _Req) -> web.StreamResponse:
        cmds, key, cmd = self._command_by_id(req)
        updated = self._store_command(self._command_scope(req), {**cmd, **(req.json or {})}, cmd)
        del cmds[key]
        cmds[f"{updated['type']}:{updated['name']}"] = updated
        self.command_syncs += 1
        return _json_response(200, updated)

    async def _delete_command(self, req: _Req) -> web.StreamResponse:
        cmds, key, _ = self._command_by_id(req)
        del cmds[key]
        self.command_syncs += 1
        return web.Response(status=204)

    # -- interaction responses

    def _interaction_for(self, interaction_id: str | None, token: str) -> FakeInteraction:
        if interaction_id is not None:
            inter = self.interactions.get(int(interaction_id)) if interaction_id.isdigit() else None
            if inter is None or inter.token != token:
                raise _HTTPError(404, 10062, "Unknown interaction")
            return inter
        for inter in self.interactions.values():
            if inter.token == token:
                return inter
        raise _HTTPError(404, 10015, "Unknown Webhook")

    async def _callback(self, req: _Req) -> web.StreamResponse:
        inter = self._interaction_for(req.path_params["interaction_id"], req.path_params["interaction_token"])
        elapsed = asyncio.get_running_loop().time() - inter.dispatched_at
        if inter.callback is not None:
            raise _HTTPError(400, 40060, f"Interaction has already been acknowledged ({inter!r})")
        if self.ack_timeout is not None and elapsed > self.ack_timeout:
            raise _HTTPError(
                404,
                10062,
                f"Unknown interaction (acknowledged after {elapsed:.2f}s > {self.ack_timeout}s: too late)",
            )
        body = req.json if isinstance(req.json, dict) else {}
        ctype = body.get("type")
        data = body.get("data")
        allowed = {
            APPLICATION_COMMAND: {CB_MESSAGE, CB_DEFERRED_MESSAGE, CB_MODAL},
            MESSAGE_COMPONENT: {CB_MESSAGE, CB_DEFERRED_MESSAGE, CB_DEFERRED_UPDATE, CB_UPDATE, CB_MODAL},
            MODAL_SUBMIT: {CB_MESSAGE, CB_DEFERRED_MESSAGE, CB_DEFERRED_UPDATE, CB_UPDATE},
            AUTOCOMPLETE: {CB_AUTOCOMPLETE},
        }[inter.type]
        if ctype not in allowed:
            raise _HTTPError(
                400, 50035, f"Invalid Form Body: callback type {ctype} is not valid for {inter!r}"
            )
        if ctype in (CB_UPDATE, CB_DEFERRED_UPDATE) and inter.source_message is None:
            raise _HTTPError(
                400, 50035, f"callback type {ctype} needs a message to update; {inter!r} has none"
            )
        files: list[FakeAttachment] = []
        if ctype in (CB_MESSAGE, CB_DEFERRED_MESSAGE):
            files = self._new_attachments(inter.channel_id, data or {}, req.files, [])
        inter.callback = InteractionCallback(ctype, data, files, elapsed)
        resource: dict[str, Any] = {"type": ctype}
        if ctype in (CB_MESSAGE, CB_DEFERRED_MESSAGE):
            flags = int((data or {}).get("flags") or 0) & FLAG_EPHEMERAL
            if ctype == CB_DEFERRED_MESSAGE:
                flags |= FLAG_LOADING
            msg = self._new_message(
                inter.channel_id,
                inter.guild_id,
                data or {},
                files,
                flags=flags,
                interaction=inter,
                message_type=20 if inter.type == APPLICATION_COMMAND else 0,
            )
            inter.original = msg
            resource["message"] = msg.payload(self.application_id)
            await self._announce(msg, "MESSAGE_CREATE")
        elif ctype in (CB_UPDATE, CB_DEFERRED_UPDATE):
            assert inter.source_message is not None
            inter.original = inter.source_message
            if ctype == CB_UPDATE:
                self._apply_edit(inter.source_message, data or {}, req.files)
                inter.callback.files = list(inter.source_message.attachments)
                await self._announce(inter.source_message, "MESSAGE_UPDATE")
            resource["message"] = inter.source_message.payload(self.application_id)
        self._notify()
        if req.query.get("with_response", "").lower() not in ("1", "true"):
            return web.Response(status=204)
        original = inter.original
        return _json_response(
            200,
            {
                "interaction": {
                    "id": str(inter.id),
                    "type": inter.type,
                    "response_message_id": str(original.id) if original else None,
                    "response_message_loading": bool(original and original.loading),
                    "response_message_ephemeral": bool(original and original.ephemeral),
                },
                "resource": resource,
            },
        )

    def _webhook_interaction(self, req: _Req) -> FakeInteraction:
        if req.path_params["webhook_id"] != str(self.application_id):
            raise _HTTPError(404, 10015, "Unknown Webhook (only interaction webhooks exist in this fake)")
        inter = self._interaction_for(None, req.path_params["webhook_token"])
        if inter.callback is None:
            raise _HTTPError(404, 10015, f"Unknown Webhook: {inter!r} was never acknowledged")
        if asyncio.get_running_loop().time() - inter.dispatched_at > TOKEN_LIFETIME:
            raise _HTTPError(401, 50027, f"Invalid Webhook Token: {inter!r}'s token has expired")
        return inter

    def _webhook_message(self, inter: FakeInteraction, req: _Req) -> FakeMessage:
        mid = req.path_params.get("message_id")
        if mid is None:  # @original
            if inter.original is None or inter.original.deleted:
                raise _HTTPError(404, 10008, f"Unknown Message: {inter!r} has no original response")
            return inter.original
        for msg in inter.messages:
            if str(msg.id) == mid and not msg.deleted:
                return msg
        raise _HTTPError(404, 10008, "Unknown Message")

    async def _followup(self, req: _Req) -> web.StreamResponse:
        inter = self._webhook_interaction(req)
        if inter.type == AUTOCOMPLETE:
            raise _HTTPError(400, 50035, "autocomplete interactions have no followups")
        body = req.json if isinstance(req.json, dict) else {}
        original = inter.original
        if original is not None and original.loading and not original.deleted:
            # Discord: the first followup after a "thinking" defer replaces the placeholder and
            # keeps the defer's ephemerality, whatever flags the followup asks for.
            self._apply_edit(original, body, req.files)
            original.flags &= ~FLAG_LOADING
            original.edited_timestamp = None
            inter.followups.append(original)
            msg = original
            await self._announce(msg, "MESSAGE_UPDATE")
        else:
            files = self._new_attachments(inter.channel_id, body, req.files, [])
            msg = self._new_message(
                inter.channel_id,
                inter.guild_id,
                body,
                files,
                flags=int(body.get("flags") or 0) & FLAG_EPHEMERAL,
                interaction=inter,
            )
            inter.followups.append(msg)
            await self._announce(msg, "MESSAGE_CREATE")
        if req.query.get("wait", "").lower() not in ("1", "true"):
            return web.Response(status=204)
        return _json_response(200, msg.payload(self.application_id))

    async def _get_webhook_message(self, req: _Req) -> web.StreamResponse:
        inter = self._webhook_interaction(req)
        return _json_response(200, self._webhook_message(inter, req).payload(self.application_id))

    async def _edit_webhook_message(self, req: _Req) -> web.StreamResponse:
        inter = self._webhook_interaction(req)
        msg = self._webhook_message(inter, req)
        self._apply_edit(msg, req.json if isinstance(req.json, dict) else {}, req.files)
        msg.flags &= ~FLAG_LOADING
        await self._announce(msg, "MESSAGE_UPDATE")
        return _json_response(200, msg.payload(self.application_id))

    async def _delete_webhook_message(self, req: _Req) -> web.StreamResponse:
        inter = self._webhook_interaction(req)
        msg = self._webhook_message(inter, req)
        await self._delete(msg)
        return web.Response(status=204)

    # -- channels and messages

    def _channel(self, channel_id: str, *, need: int = Permissions.VIEW_CHANNEL) -> FakeChannel:
        cid = int(channel_id)
        for guild in self.guilds.values():
            channel = guild.channels.get(cid)
            if channel is not None:
                perms = guild.permissions_of(self.bot_user.id)
                if perms & Permissions.VIEW_CHANNEL == 0:
                    raise _HTTPError(403, 50001, "Missing Access")
                if perms & need != need:
                    raise _HTTPError(403, 50013, f"Missing Permissions (needs {need}, has {perms})")
                return channel
        for channel in self.dm_channels.values():
            if channel.id == cid:
                return channel
        raise _HTTPError(404, 10003, "Unknown Channel")

    def _channel_message(self, req: _Req) -> FakeMessage:
        channel = self._channel(req.path_params["channel_id"])
        mid = int(req.path_params["message_id"])
        for msg in self.messages:
            if msg.id == mid and msg.channel_id == channel.id and not msg.deleted and not msg.ephemeral:
                return msg
        raise _HTTPError(404, 10008, "Unknown Message")

    async def _get_channel(self, req: _Req) -> web.StreamResponse:
        return _json_response(200, self._channel(req.path_params["channel_id"]).payload())

    async def _typing(self, req: _Req) -> web.StreamResponse:
        self._channel(
            req.path_params["channel_id"], need=Permissions.VIEW_CHANNEL | Permissions.SEND_MESSAGES
        )
        return web.Response(status=204)

    async def _history(self, req: _Req) -> web.StreamResponse:
        channel = self._channel(req.path_params["channel_id"], need=Permissions.READ_MESSAGE_HISTORY)
        limit = int(req.query.get("limit", 50))
        msgs = [m for m in self.messages if m.channel_id == channel.id and not m.deleted and not m.ephemeral]
        if "before" in req.query:
            msgs = [m for m in msgs if m.id < int(req.query["before"])]
        if "after" in req.query:
            msgs = [m for m in msgs if m.id > int(req.query["after"])]
        msgs = sorted(msgs, key=lambda m: m.id, reverse=True)[:limit]
        return _json_response(200, [m.payload(self.application_id) for m in msgs])

    async def _create_message(self, req: _Req) -> web.StreamResponse:
        channel = self._channel(
            req.path_params["channel_id"], need=Permissions.VIEW_CHANNEL | Permissions.SEND_MESSAGES
        )
        body = req.json if isinstance(req.json, dict) else {}
        # Discord: with `enforce_nonce`, "if another message was created by the same author with the same
        # nonce [in the past few minutes], that message will be returned and no new message will be
        # created" (https://discord.com/developers/docs/resources/message#create-message); discord.py's
        # `send` documents a NotFound when that message was deleted. Kept NONCE_WINDOW (the short reading
        # of "a few minutes").
        nonce_key = (self.bot_user.id, str(body["nonce"])) if body.get("nonce") is not None else None
        if nonce_key is not None and body.get("enforce_nonce"):
            earlier = self._nonces.get(nonce_key)
            if earlier is not None and time.monotonic() - earlier[1] <= NONCE_WINDOW:
                if earlier[0].deleted:
                    raise _HTTPError(404, 10008, "Unknown Message", protocol=False)
                return _json_response(200, earlier[0].payload(self.application_id))
        if req.files and channel.guild_id is not None:
            self._channel(req.path_params["channel_id"], need=Permissions.ATTACH_FILES)
        if channel.type == 1 and channel.dms_closed:
            raise _HTTPError(403, 50007, "Cannot send messages to this user", protocol=False)
        if (
            not any(body.get(k) for k in ("content", "embeds", "components", "sticker_ids", "poll"))
            and not req.files
        ):
            raise _HTTPError(400, 50006, "Cannot send an empty message")
        files = self._new_attachments(channel.id, body, req.files, [])
        msg = self._new_message(channel.id, channel.guild_id, body, files, flags=int(body.get("flags") or 0))
        if nonce_key is not None and body.get("enforce_nonce"):
            self._nonces[nonce_key] = (msg, time.monotonic())
        await self._announce(msg, "MESSAGE_CREATE")
        return _json_response(200, msg.payload(self.application_id))

    async def _get_message(self, req: _Req) -> web.StreamResponse:
        return _json_response(200, self._channel_message(req).payload(self.application_id))

    async def _edit_message(self, req: _Req) -> web.StreamResponse:
        msg = self._channel_message(req)
        if msg.author.id != self.bot_user.id:
            raise _HTTPError(403, 50005, "Cannot edit a message authored by another user")
        self._apply_edit(msg, req.json if isinstance(req.json, dict) else {}, req.files)
        await self._announce(msg, "MESSAGE_UPDATE")
        return _json_response(200, msg.payload(self.application_id))

    async def _delete_message(self, req: _Req) -> web.StreamResponse:
        msg = self._channel_message(req)
        if msg.author.id != self.bot_user.id and msg.guild_id is not None:
            self._channel(req.path_params["channel_id"], need=Permissions.MANAGE_MESSAGES)
        await self._delete(msg)
        return web.Response(status=204)

    async def _add_own_reaction(self, req: _Req) -> web.StreamResponse:
        msg = self._channel_message(req)
        if msg.guild_id is not None:
            self._channel(
                req.path_params["channel_id"],
                need=Permissions.ADD_REACTIONS | Permissions.READ_MESSAGE_HISTORY,
            )
        emoji = req.path_params["emoji_name"]
        users = msg.reactions.setdefault(emoji, [])
        if self.bot_user.id not in users:
            users.append(self.bot_user.id)
        return web.Response(status=204)

    async def _remove_own_reaction(self, req: _Req) -> web.StreamResponse:
        msg = self._channel_message(req)
        users = msg.reactions.get(req.path_params["emoji_name"], [])
        if self.bot_user.id in users:
            users.remove(self.bot_user.id)
        return web.Response(status=204)

    async def _remove_user_reaction(self, req: _Req) -> web.StreamResponse:
        msg = self._channel_message(req)
        if msg.guild_id is not None:
            self._channel(req.path_params["channel_id"], need=Permissions.MANAGE_MESSAGES)
        users = msg.reactions.get(req.path_params["emoji_name"], [])
        uid = int(req.path_params["user_id"])
        if uid in users:
            users.remove(uid)
        return web.Response(status=204)

    async def _reaction_users(self, req: _Req) -> web.StreamResponse:
        msg = self._channel_message(req)
        users = msg.reactions.get(req.path_params["emoji_name"], [])
        return _json_response(200, [self.users[u].payload() for u in users if u in self.users])

    async def _clear_reactions(self, req: _Req) -> web.StreamResponse:
        msg = self._channel_message(req)
        if msg.guild_id is not None:
            self._channel(req.path_params["channel_id"], need=Permissions.MANAGE_MESSAGES)
        msg.reactions.clear()
        return web.Response(status=204)

    async def _create_dm(self, req: _Req) -> web.StreamResponse:
        body = req.json if isinstance(req.json, dict) else {}
        user = self._rest_user(str(body.get("recipient_id", "")))
        return _json_response(200, self.dm_channel(user.id).payload())

    # -- guilds and members

    def _rest_guild(self, guild_id: str) -> FakeGuild:
        guild = self.guilds.get(int(guild_id)) if guild_id.isdigit() else None
        if guild is None:
            raise _HTTPError(404, 10004, "Unknown Guild")
        return guild

    def _rest_user(self, user_id: str) -> FakeUser:
        user = self.users.get(int(user_id)) if user_id.isdigit() else None
        if user is None:
            raise _HTTPError(404, 10013, "Unknown User")
        return user

    async def _get_guild(self, req: _Req) -> web.StreamResponse:
        return _json_response(200, self._rest_guild(req.path_params["guild_id"]).payload())

    async def _get_guild_channels(self, req: _Req) -> web.StreamResponse:
        guild = self._rest_guild(req.path_params["guild_id"])
        return _json_response(200, [c.payload() for c in guild.channels.values()])

    async def _get_guild_roles(self, req: _Req) -> web.StreamResponse:
        guild = self._rest_guild(req.path_params["guild_id"])
        return _json_response(200, [r.payload() for r in guild.roles.values()])

    async def _get_member(self, req: _Req) -> web.StreamResponse:
        guild = self._rest_guild(req.path_params["guild_id"])
        member = guild.members.get(int(req.path_params["user_id"]))
        if member is None:
            raise _HTTPError(404, 10007, "Unknown Member", protocol=False)
        return _json_response(200, member.payload())

    def _role_change(self, req: _Req) -> tuple[FakeGuild, FakeMember, FakeRole]:
        guild = self._rest_guild(req.path_params["guild_id"])
        member = guild.members.get(int(req.path_params["user_id"]))
        if member is None:
            raise _HTTPError(404, 10007, "Unknown Member")
        role = guild.roles.get(int(req.path_params["role_id"]))
        if role is None:
            raise _HTTPError(404, 10011, "Unknown Role")
        perms = guild.permissions_of(self.bot_user.id)
        if perms & Permissions.MANAGE_ROLES == 0:
            raise _HTTPError(403, 50013, "Missing Permissions (MANAGE_ROLES)")
        if role.managed or role.position >= guild.top_role_position(self.bot_user.id):
            raise _HTTPError(
                403, 50013, f"Missing Permissions (role {role.name!r} is not below the bot's top role)"
            )
        return guild, member, role

    async def _add_member_role(self, req: _Req) -> web.StreamResponse:
        guild, member, role = self._role_change(req)
        if role.id not in member.roles:
            member.roles.append(role.id)
            await self._emit(
                "GUILD_MEMBER_UPDATE", {**member.payload(), "guild_id": str(guild.id)}, Intents.GUILD_MEMBERS
            )
        return web.Response(status=204)

    async def _remove_member_role(self, req: _Req) -> web.StreamResponse:
        guild, member, role = self._role_change(req)
        if role.id in member.roles:
            member.roles.remove(role.id)
            await self._emit(
                "GUILD_MEMBER_UPDATE", {**member.payload(), "guild_id": str(guild.id)}, Intents.GUILD_MEMBERS
            )
        return web.Response(status=204)

    # ---------------------------------------------------------------- message helpers

    def _new_message(
        self,
        channel_id: int,
        guild_id: int | None,
        body: Mapping[str, Any],
        files: list[FakeAttachment],
        *,
        flags: int,
        interaction: FakeInteraction | None = None,
        message_type: int = 0,
    ) -> FakeMessage:
        msg = FakeMessage(
            id=snowflake(),
            channel_id=channel_id,
            guild_id=guild_id,
            author=self.bot_user,
            content=body.get("content") or "",
            embeds=list(body.get("embeds") or []),
            components=list(body.get("components") or []),
            flags=flags,
            attachments=files,
            interaction=interaction,
            webhook_id=self.application_id if interaction is not None else None,
            message_type=message_type,
        )
        self.messages.append(msg)
        self._notify()
        return msg

    def _new_attachments(
        self,
        channel_id: int,
        body: Mapping[str, Any],
        uploads: Mapping[int, tuple[str, bytes]],
        existing: list[FakeAttachment],
    ) -> list[FakeAttachment]:
        """Resolve a body's ``attachments`` against uploaded ``files[n]`` and kept attachments."""
        entries = body.get("attachments")
        kept_by_id = {str(a.id): a for a in existing}
        result: list[FakeAttachment] = []
        used: set[int] = set()
        if entries is None:
            result = list(existing)
            indexes = sorted(uploads)
            entries_by_index: dict[int, Mapping[str, Any]] = {}
        else:
            indexes = []
            entries_by_index = {}
            for entry in entries:
                ident = str(entry.get("id"))
                if ident in kept_by_id:
                    result.append(kept_by_id[ident])
                elif ident.isdigit() and int(ident) in uploads:
                    indexes.append(int(ident))
                    entries_by_index[int(ident)] = entry
                else:
                    raise _HTTPError(
                        400, 50035, f"Invalid Form Body: attachment id {ident!r} matches no upload"
                    )
        for index in indexes:
            filename, data = uploads[index]
            entry = entries_by_index.get(index, {})
            filename = entry.get("filename") or filename
            att_id = snowflake()
            att = FakeAttachment(
                att_id,
                filename,
                data,
                f"{self.base_url}/attachments/{channel_id}/{att_id}/{quote(filename)}",
                mimetypes.guess_type(filename)[0],
                entry.get("description"),
            )
            self.attachments[att_id] = att
            result.append(att)
            used.add(index)
        unused = set(uploads) - used
        if unused:
            self._protocol_error(f"uploaded files[{sorted(unused)}] are not referenced by any attachment")
        return result

    def _apply_edit(
        self, msg: FakeMessage, body: Mapping[str, Any], uploads: Mapping[int, tuple[str, bytes]]
    ) -> None:
        msg.history.append(msg.payload(self.application_id))
        if "content" in body:
            msg.content = body["content"] or ""
        if "embeds" in body:
            msg.embeds = list(body["embeds"] or [])
        if "components" in body:
            msg.components = list(body["components"] or [])
        if "attachments" in body or uploads:
            msg.attachments = self._new_attachments(msg.channel_id, body, uploads, msg.attachments)
        if body.get("flags") is not None:
            # Only SUPPRESS_EMBEDS (and friends) can change on edit; ephemerality and loading stay.
            msg.flags = (msg.flags & (FLAG_EPHEMERAL | FLAG_LOADING)) | (
                int(body["flags"]) & ~(FLAG_EPHEMERAL | FLAG_LOADING)
            )
        msg.edited_timestamp = _now_iso()
        self._notify()

    async def _delete(self, msg: FakeMessage) -> None:
        msg.deleted = True
        self._notify()
        if not msg.ephemeral:
            data: dict[str, Any] = {"id": str(msg.id), "channel_id": str(msg.channel_id)}
            if msg.guild_id is not None:
                data["guild_id"] = str(msg.guild_id)
            await self._emit("MESSAGE_DELETE", data, self._message_intent(msg))

    async def _announce(self, msg: FakeMessage, event: str) -> None:
        if msg.ephemeral:
            return  # ephemeral messages produce no gateway events
        await self._emit(event, msg.payload(self.application_id), self._message_intent(msg))

    @staticmethod
    def _message_intent(msg: FakeMessage) -> int:
        return Intents.GUILD_MESSAGES if msg.guild_id is not None else Intents.DIRECT_MESSAGES

    # ---------------------------------------------------------------- lookups

    def _guild(self, guild_id: int) -> FakeGuild:
        try:
            return self.guilds[guild_id]
        except KeyError:
            raise FakeDiscordError(f"no guild {guild_id}; add it with add_guild()") from None

    def _user(self, user_id: int) -> FakeUser:
        try:
            return self.users[user_id]
        except KeyError:
            raise FakeDiscordError(f"no user {user_id}; add it with add_user() or add_member()") from None

    def _message(self, message: FakeMessage | int) -> FakeMessage:
        if isinstance(message, FakeMessage):
            return message
        for msg in self.messages:
            if msg.id == message:
                return msg
        raise FakeDiscordError(f"no message {message}")


# ---------------------------------------------------------------------------- module helpers


def _json_response(status: int, body: Any, *, headers: Mapping[str, str] | None = None) -> web.Response:
    # Exactly "application/json": discord.py compares the header verbatim and treats anything else as text.
    return web.Response(
        status=status,
        body=json.dumps(body).encode(),
        headers={**(headers or {}), "Content-Type": "application/json"},
    )


async def _read_body(request: web.Request) -> tuple[Any, dict[int, tuple[str, bytes]], str | None]:
    """(JSON body or payload_json, uploaded files by index, parse problem)."""
    ctype = request.content_type
    files: dict[int, tuple[str, bytes]] = {}
    if not request.body_exists:
        return None, files, None
    if ctype == "multipart/form-data":
        body: Any = None
        reader = await request.multipart()
        async for part in reader:
            name = getattr(part, "name", None) or ""
            raw = await part.read()  # type: ignore[union-attr]
            if name == "payload_json":
                try:
                    body = json.loads(raw)
                except ValueError:
                    return None, files, "payload_json is not valid JSON"
            elif name.startswith("files[") and name.endswith("]") and name[6:-1].isdigit():
                files[int(name[6:-1])] = (getattr(part, "filename", None) or f"file{name[6:-1]}", bytes(raw))
            else:
                return body, files, f"unexpected multipart field {name!r}"
        return body, files, None
    raw_text = await request.text()
    if not raw_text:
        return None, files, None
    if ctype != "application/json":
        return None, files, f"body sent as {ctype!r}, not application/json"
    try:
        return json.loads(raw_text), files, None
    except ValueError:
        return None, files, "body is not valid JSON"


def _walk_components(components: Iterable[Mapping[str, Any]]) -> Iterable[Mapping[str, Any]]:
    for comp in components:
        yield comp
        if isinstance(comp.get("components"), list):
            yield from _walk_components(comp["components"])
        for key in ("component", "accessory"):
            if isinstance(comp.get(key), dict):
                yield from _walk_components([comp[key]])


def _emoji_payload(emoji: str) -> dict[str, Any]:
    """``"👍"`` -> unicode emoji; ``"name:123"`` -> custom emoji."""
    name, sep, eid = emoji.rpartition(":")
    if sep and eid.isdigit():
        return {"id": eid, "name": name, "animated": False}
    return {"id": None, "name": emoji}


def _clip(text: str, n: int = 60) -> str:
    text = text.replace("\n", " | ")
    return text if len(text) <= n else text[: n - 3] + "..."


def _modal_submission(
    modal: Mapping[str, Any], values: Mapping[str, str | Sequence[str]]
) -> list[dict[str, Any]]:
    """The ``components`` of a MODAL_SUBMIT mirroring the modal's layout, with the user's values."""
    known: dict[str, Mapping[str, Any]] = {}
    for comp in _walk_components(modal.get("components") or []):
        if comp.get("custom_id"):
            known[comp["custom_id"]] = comp
    unknown = set(values) - set(known)
    if unknown:
        raise FakeDiscordError(
            f"modal {modal.get('custom_id')!r} has no input(s) {sorted(unknown)}; it has {sorted(known)}"
        )

    def submitted(comp: Mapping[str, Any]) -> dict[str, Any] | None:
        cid = comp.get("custom_id")
        ctype = comp.get("type")
        if not cid:
            return None
        out: dict[str, Any] = {"type": ctype, "custom_id": cid}
        if "id" in comp:
            out["id"] = comp["id"]
        if ctype == 4:
            value = values.get(cid, comp.get("value") or "")
            if not isinstance(value, str):
                raise FakeDiscordError(f"text input {cid!r} takes a string")
            if comp.get("required", True) and not value:
                raise FakeDiscordError(
                    f"text input {cid!r} is required: Discord's client would not submit the modal"
                )
            if value:
                lo, hi = comp.get("min_length", 0), comp.get("max_length", 4000)
                if not lo <= len(value) <= hi:
                    raise FakeDiscordError(
                        f"text input {cid!r} takes {lo}..{hi} characters, got {len(value)}"
                    )
            out["value"] = value
        else:
            chosen = values.get(cid, [])
            if isinstance(chosen, str):
                chosen = [chosen]
            out["values"] = list(chosen)
        return out

    result: list[dict[str, Any]] = []
    for comp in modal.get("components") or []:
        ctype = comp.get("type")
        if ctype == 1:
            children = [s for s in (submitted(c) for c in comp.get("components") or []) if s is not None]
            result.append({"type": 1, "components": children})
        elif ctype == 18:
            inner = submitted(comp.get("component") or {})
            if inner is not None:
                label: dict[str, Any] = {"type": 18, "component": inner}
                if "id" in comp:
                    label["id"] = comp["id"]
                result.append(label)
        elif ctype == 10:
            if "id" in comp:
                result.append({"type": 10, "id": comp["id"]})
        else:
            sub = submitted(comp)
            if sub is not None:
                result.append(sub)
    return result
