"""Logging set-up, with a last line of defence against secrets in log output.

The code never logs a key on purpose; this filter is there for third-party libraries and future mistakes.
It scrubs the whole record as it will be printed: the message with its arguments (dicts and reprs
included), the traceback (`exc_info`, `exc_text`) and `stack_info`. It removes known secrets (the Discord
token, the Fernet keys), anything shaped like a key (an `apikey` field, a Fernet token, a Discord token, a
bare 22-character Horde key, a shared key in a URL), and any value equal to a key the bot has sent in a
request header (`SeenSecrets`, fed by an httpx request hook).
"""

from __future__ import annotations

import logging
import re
import sys
from collections import OrderedDict

import httpx

REDACTED = "***"
_TOKEN_CHARS = r"A-Za-z0-9_\-"  # noqa: S105 - a character class, not a secret
# A key in an `apikey` header or field, a Fernet token, or a Discord bot token.
_SECRET_PATTERNS = [
    re.compile(r"(apikey['\"]?\s*[:=]\s*['\"]?)[A-Za-z0-9_\-]{10,}", re.IGNORECASE),
    re.compile(r"gAAAAA[A-Za-z0-9_\-=]{20,}"),
    # A shared key is its own id, and sits in the URL of /sharedkeys/{id} (httpx logs URLs).
    re.compile(r"(/sharedkeys/)[A-Za-z0-9_\-]{8,}"),
    re.compile(r"[MNO][A-Za-z0-9_\-]{23,27}\.[A-Za-z0-9_\-]{6}\.[A-Za-z0-9_\-]{27,40}"),
]
# An AI Horde API key as the Horde makes them (`secrets.token_urlsafe(16)`): 22 url-safe characters, alone.
_BARE_KEY = re.compile(rf"(?<![{_TOKEN_CHARS}])[{_TOKEN_CHARS}]{{22}}(?![{_TOKEN_CHARS}])")
_WORD = re.compile(rf"[{_TOKEN_CHARS}]{{10,}}")
_ANON = "0000000000"


def _looks_random(word: str) -> bool:
    """A 22-character word is a key unless it reads like a name: keys mix letters and digits, or cases.
    (snake_case names and Discord ids are left alone; a CamelCase name of exactly 22 letters is not.)"""
    upper = any(c.isupper() for c in word)
    lower = any(c.islower() for c in word)
    digit = any(c.isdigit() for c in word)
    return (digit and (upper or lower)) or (upper and lower)


class SeenSecrets:
    """Keys the bot has sent in a request header, remembered (the most recent `limit`) so that a log line
    holding one in any form is scrubbed. `on_request` is an httpx request hook."""

    def __init__(self, limit: int = 10000) -> None:
        self._limit = limit
        self._keys: OrderedDict[str, None] = OrderedDict()

    def add(self, value: str) -> None:
        value = value.strip()
        if len(value) < 10 or value == _ANON:
            return
        self._keys[value] = None
        self._keys.move_to_end(value)
        while len(self._keys) > self._limit:
            self._keys.popitem(last=False)

    def __contains__(self, value: object) -> bool:
        return value in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    async def on_request(self, request: httpx.Request) -> None:
        value = request.headers.get("apikey")
        if value:
            self.add(value)

    def attach(self, client: httpx.AsyncClient) -> None:
        hooks = client.event_hooks
        if self.on_request not in hooks["request"]:
            hooks["request"] = [*hooks["request"], self.on_request]
            client.event_hooks = hooks


class RedactSecrets(logging.Filter):
    def __init__(self, extra_secrets: tuple[str, ...] = (), seen: SeenSecrets | None = None) -> None:
        super().__init__()
        self._secrets = tuple(s for s in extra_secrets if len(s) >= 8)
        self.seen = seen if seen is not None else SeenSecrets()
        self._formatter = logging.Formatter()

    def scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        for pattern in _SECRET_PATTERNS:
            text = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + REDACTED, text)
        text = _BARE_KEY.sub(lambda m: REDACTED if _looks_random(m.group(0)) else m.group(0), text)
        if len(self.seen):
            text = _WORD.sub(lambda m: REDACTED if m.group(0) in self.seen else m.group(0), text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: let logging report it as it would
            return True
        scrubbed = self.scrub(message)
        if scrubbed != message:
            record.msg, record.args = scrubbed, None
        if record.exc_info:
            # Format the traceback now (as the handler's formatter would) and keep only the scrubbed text:
            # exception messages and reprs in it can hold anything.
            record.exc_text = self.scrub(self._formatter.formatException(record.exc_info))
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = self.scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = self.scrub(record.stack_info)
        return True


def setup_logging(
    level: str, secrets: tuple[str, ...] = (), seen: SeenSecrets | None = None
) -> RedactSecrets:
    """Log to stderr through the redaction filter; returns the filter (its `seen` goes to `create_bot`)."""
    redactor = RedactSecrets(secrets, seen)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-8s %(name)s: %(message)s"))
    handler.addFilter(redactor)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # httpx logs every request URL at INFO; useful only when debugging.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # discord.py's gateway and webhook DEBUG lines print whole interaction payloads (modal values such as a
    # pasted API key) and interaction tokens: never below INFO, whatever the bot's level.
    for noisy in ("discord.gateway", "discord.webhook.async_", "discord.http"):
        logging.getLogger(noisy).setLevel(max(logging.INFO, logging.getLevelName(level)))
    return redactor
