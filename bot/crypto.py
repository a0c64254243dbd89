"""API keys at rest: Fernet (AES-128-CBC + HMAC), keyed by HORDEBOT_SECRET_KEY."""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken

from bot.horde.models import ApiKey


class KeyDecryptionError(Exception):
    """A stored key could not be decrypted: wrong secret key or corrupted value."""

    def __init__(self) -> None:
        super().__init__(
            "a stored API key could not be decrypted: HORDEBOT_SECRET_KEY differs from the one that "
            "encrypted it, or the stored value is corrupted"
        )


class KeyCipher:
    def __init__(self, secret_key: str) -> None:
        self._fernet = Fernet(secret_key.encode())

    def encrypt(self, key: ApiKey) -> str:
        return self._fernet.encrypt(key.reveal().encode()).decode()

    def decrypt(self, token: str) -> ApiKey:
        try:
            return ApiKey(self._fernet.decrypt(token.encode()).decode())
        except (InvalidToken, ValueError, UnicodeDecodeError):
            raise KeyDecryptionError() from None
