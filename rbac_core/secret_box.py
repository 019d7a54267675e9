"""Encryption at rest for secrets the database must hold (TOTP seeds).

Fernet (AES-128-CBC + HMAC-SHA256, from `cryptography`) under a key derived
with HKDF from WA_SECRET_KEY: a stolen database alone reveals no seed, and a
tampered ciphertext fails to decrypt instead of yielding a wrong seed.
"""

from __future__ import annotations

import base64

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .errors import RbacError

MIN_KEY_LENGTH = 32


class SecretUnavailable(RbacError):
    code = "secret_unavailable"


class SecretBox:
    def __init__(self, secret_key: str | None) -> None:
        self._fernet: Fernet | None = None
        if secret_key:
            if len(secret_key) < MIN_KEY_LENGTH:
                raise ValueError("WA_SECRET_KEY must be at least 32 characters")
            derived = HKDF(
                algorithm=hashes.SHA256(), length=32, salt=None, info=b"wa-access secrets v1"
            ).derive(secret_key.encode("utf-8"))
            self._fernet = Fernet(base64.urlsafe_b64encode(derived))

    @property
    def available(self) -> bool:
        return self._fernet is not None

    def _box(self) -> Fernet:
        if self._fernet is None:
            raise SecretUnavailable(
                "Two-factor authentication is not set up on this server (WA_SECRET_KEY is "
                "missing); ask the operator."
            )
        return self._fernet

    def seal(self, plaintext: str) -> str:
        return self._box().encrypt(plaintext.encode("utf-8")).decode("ascii")

    def open(self, token: str) -> str:
        try:
            return self._box().decrypt(token.encode("ascii")).decode("utf-8")
        except InvalidToken:
            raise SecretUnavailable(
                "A stored 2FA secret cannot be decrypted (was WA_SECRET_KEY changed?); "
                "an admin must reset this user's 2FA."
            ) from None
