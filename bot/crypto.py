"""API keys at rest: Fernet (AES-128-CBC + HMAC), keyed by HORDEBOT_SECRET_KEY.

`HORDEBOT_SECRET_KEY` may hold several keys, newest first (MultiFernet): values are encrypted with the
newest and decrypted with whichever key made them, so a new key can be put in front of the old one and
`python run.py rotate-keys` re-encrypts the stored values before the old key is dropped.
"""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from bot.config import split_secret_keys
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
        keys = split_secret_keys(secret_key)
        if not keys:
            raise ValueError("no secret key")
        self._newest = Fernet(keys[0].encode())
        self._fernet = MultiFernet([Fernet(key.encode()) for key in keys])
        self.key_count = len(keys)

    def encrypt(self, key: ApiKey) -> str:
        return self.seal(key.reveal())

    def decrypt(self, token: str) -> ApiKey:
        return ApiKey(self.unseal(token))

    def seal(self, secret: str) -> str:
        """Any other secret the bot stores (an interaction token), encrypted like the API keys."""
        return self._fernet.encrypt(secret.encode()).decode()

    def unseal(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except (InvalidToken, ValueError, UnicodeDecodeError):
            raise KeyDecryptionError() from None

    def is_current(self, token: str) -> bool:
        """Encrypted with the newest key (nothing to rotate)."""
        try:
            self._newest.decrypt(token.encode())
        except (InvalidToken, ValueError):
            return False
        return True

    def rotate(self, token: str) -> str:
        """The same secret, encrypted with the newest key. Raises KeyDecryptionError if no key reads it."""
        try:
            return self._fernet.rotate(token.encode()).decode()
        except (InvalidToken, ValueError):
            raise KeyDecryptionError() from None
