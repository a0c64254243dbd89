"""The four error shapes of the AI Horde (API_NOTES §2), as an exception the endpoints raise."""

from __future__ import annotations

from typing import Any

INVALID_API_KEY_MESSAGE = (
    "No user matching sent API Key. Have you remembered to register at https://stablehorde.net/register ?"
)
VALIDATION_FAILED = "Input payload validation failed"
APIKEY_HELP = "The API Key corresponding to a registered user."
MISSING_HEADER = "Missing required parameter in the HTTP headers"
UNKNOWN_ROUTE_MESSAGE = (
    "The requested URL was not found on the server. If you entered the URL manually please check your "
    "spelling and try again."
)
IMAGE_VALIDATION_MESSAGE = (
    "Image validation failed. Please ensure the source image payload is either a URL containing an image "
    "or a valid base64 encoded image."
)
BAD_JSON_MESSAGE = "The browser (or proxy) sent a request that this server could not understand."


class HordeHTTPError(Exception):
    """An HTTP error response: raised by endpoint logic, turned into a response by the server."""

    def __init__(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{status} {body!r}")
        self.status = status
        self.body = body
        self.headers = dict(headers or {})


def horde_error(status: int, rc: str, message: str) -> HordeHTTPError:
    """Shape 1: a Horde exception, ``{"message", "rc"}``."""
    return HordeHTTPError(status, {"message": message, "rc": rc})


def bad_request(rc: str, message: str) -> HordeHTTPError:
    return horde_error(400, rc, message)


def validation_error(errors: dict[str, str]) -> HordeHTTPError:
    """Shape 2: flask-restx payload validation, no ``rc``."""
    return HordeHTTPError(400, {"errors": dict(errors), "message": VALIDATION_FAILED})


def missing_apikey() -> HordeHTTPError:
    return validation_error({"apikey": f"{APIKEY_HELP} {MISSING_HEADER}"})


def invalid_api_key() -> HordeHTTPError:
    return horde_error(401, "InvalidAPIKey", INVALID_API_KEY_MESSAGE)


def internal_server_error() -> HordeHTTPError:
    """Shape 4: an unhandled exception upstream."""
    return HordeHTTPError(500, {"message": "Internal Server Error"})


def request_not_found(request_id: str, request_type: str = "Waiting Prompt") -> HordeHTTPError:
    return horde_error(404, "RequestNotFound", f"{request_type} with ID '{request_id}' not found.")
