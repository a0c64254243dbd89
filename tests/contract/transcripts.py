"""The recorded exchanges with a real AI Horde 5.1.5 (tests/data/horde/transcripts/), and a replay server.

Each transcript is one request the real server got and the answer it sent (status, headers, JSON body);
API keys read `<apikey>`, everything else is as recorded. They are the real server's word: the client must
parse them (test_client_contract.py) and the fake Horde must answer like them (test_fake_fidelity.py).
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

TRANSCRIPTS_DIR = Path(__file__).resolve().parents[1] / "data" / "horde" / "transcripts"
API_PREFIX = "/api/v2"
RATE_LIMIT_HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset", "Retry-After")

# Route templates of the paths in the transcripts (most specific first): ids are replaced by `{id}`.
_TEMPLATES: tuple[tuple[str, str], ...] = (
    (r"/generate/text/status/[^/]+", "/generate/text/status/{id}"),
    (r"/generate/check/[^/]+", "/generate/check/{id}"),
    (r"/generate/status/[^/]+", "/generate/status/{id}"),
    (r"/interrogate/status/[^/]+", "/interrogate/status/{id}"),
    (r"/workers/name/.+", "/workers/name/{name}"),
    (r"/workers/[^/]+", "/workers/{id}"),
    (r"/users/[^/]+", "/users/{id}"),
    (r"/sharedkeys/[^/]+", "/sharedkeys/{id}"),
    (r"/status/models/.+", "/status/models/{name}"),
    (r"/styles/image_by_name/.+", "/styles/image_by_name/{name}"),
)


@dataclass(frozen=True)
class Transcript:
    name: str  # file stem, e.g. "04_status_news"
    number: int
    method: str
    path: str  # without /api/v2, e.g. "/status/news"
    params: dict[str, Any] | None
    request_headers: dict[str, str]
    request_json: Any
    status: int
    headers: dict[str, str]  # response headers as the server spelled them
    body: Any
    raw: dict[str, Any] = field(repr=False, compare=False, hash=False)

    @property
    def endpoint(self) -> str:
        """`METHOD /template`, e.g. `GET /generate/status/{id}`."""
        for pattern, template in _TEMPLATES:
            if re.fullmatch(pattern, self.path):
                return f"{self.method} {template}"
        return f"{self.method} {self.path}"

    @property
    def path_id(self) -> str:
        """The last path segment (a request id, user id, worker name...)."""
        return self.path.rsplit("/", 1)[-1]

    @property
    def rc(self) -> str | None:
        return self.body.get("rc") if isinstance(self.body, dict) else None

    def header(self, name: str) -> str | None:
        for key, value in self.headers.items():
            if key.lower() == name.lower():
                return value
        return None


@cache
def load_transcripts() -> tuple[Transcript, ...]:
    found: list[Transcript] = []
    for file in TRANSCRIPTS_DIR.glob("*.json"):
        raw = json.loads(file.read_text(encoding="utf-8"))
        request, response = raw["request"], raw["response"]
        path = request["path"]
        assert path.startswith(API_PREFIX), path
        found.append(
            Transcript(
                name=file.stem,
                number=int(file.stem.split("_", 1)[0]),
                method=request["method"],
                path=path[len(API_PREFIX) :],
                params=request.get("params"),
                request_headers=dict(request.get("headers") or {}),
                request_json=request.get("json"),
                status=response["status"],
                headers=dict(response.get("headers") or {}),
                body=response.get("json"),
                raw=raw,
            )
        )
    return tuple(sorted(found, key=lambda t: t.number))


def transcript(name_or_number: str | int) -> Transcript:
    for t in load_transcripts():
        if t.number == name_or_number or t.name == name_or_number:
            return t
    raise KeyError(name_or_number)


@dataclass
class Received:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes


class ReplayServer:
    """A tiny HTTP server on 127.0.0.1 that answers every request with one transcript's recorded response
    (status, headers, body, byte for byte as JSON), and records what it was sent. The bot's client talks to
    it over a real socket, so its whole response path (httpx, status handling, parsing) is exercised."""

    def __init__(self) -> None:
        self.current: Transcript | None = None
        # Answers after `current`, in order (e.g. a 429 and then the 202 of the retried POST).
        self.then: list[Transcript] = []
        self.received: list[Received] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                url = urlsplit(self.path)
                server.received.append(
                    Received(
                        self.command,
                        unquote(url.path),
                        dict(parse_qsl(url.query)),
                        {k.lower(): v for k, v in self.headers.items()},
                        body,
                    )
                )
                replay = server.current
                assert replay is not None, "ReplayServer.current is not set"
                if server.then:
                    server.current = server.then.pop(0)
                payload = json.dumps(replay.body).encode()
                self.send_response(replay.status)
                for name, value in replay.headers.items():
                    if name.lower() not in ("content-length", "connection"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._httpd.server_address[1]}/api"
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="replay", daemon=True)

    @contextmanager
    def running(self) -> Iterator[ReplayServer]:
        self._thread.start()
        try:
            yield self
        finally:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(timeout=5)
