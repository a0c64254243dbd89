"""Logging set-up, with a last line of defence against secrets in log output."""

from __future__ import annotations

import logging
import re
import sys

# A Horde key in an `apikey` header or field, a Fernet token, or a Discord bot token. The code never logs
# these on purpose; the filter is there for third-party libraries and future mistakes.
_SECRET_PATTERNS = [
    re.compile(r"(apikey['\"]?\s*[:=]\s*['\"]?)[A-Za-z0-9_\-]{10,}", re.IGNORECASE),
    re.compile(r"gAAAAA[A-Za-z0-9_\-=]{20,}"),
    # A shared key is its own id, and sits in the URL of /sharedkeys/{id} (httpx logs URLs).
    re.compile(r"(/sharedkeys/)[A-Za-z0-9_\-]{8,}"),
    re.compile(r"[MNO][A-Za-z0-9_\-]{23,27}\.[A-Za-z0-9_\-]{6}\.[A-Za-z0-9_\-]{27,40}"),
]


class RedactSecrets(logging.Filter):
    def __init__(self, extra_secrets: tuple[str, ...] = ()) -> None:
        super().__init__()
        self._secrets = tuple(s for s in extra_secrets if len(s) >= 8)

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        for pattern in _SECRET_PATTERNS:
            text = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + "***", text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        scrubbed = self._scrub(message)
        if scrubbed != message:
            record.msg, record.args = scrubbed, None
        return True


def setup_logging(level: str, secrets: tuple[str, ...] = ()) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-8s %(name)s: %(message)s"))
    handler.addFilter(RedactSecrets(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # httpx logs every request URL at INFO; useful only when debugging.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # discord.py's gateway and webhook DEBUG lines print whole interaction payloads (modal values such as a
    # pasted API key) and interaction tokens: never below INFO, whatever the bot's level.
    for noisy in ("discord.gateway", "discord.webhook.async_", "discord.http"):
        logging.getLogger(noisy).setLevel(max(logging.INFO, logging.getLevelName(level)))
