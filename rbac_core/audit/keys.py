"""The audit log's two keys, both derived from WA_SECRET_KEY and never stored.

- The chain key (32 bytes) makes each entry's hash an HMAC, so whoever can
  only write to the database cannot forge an entry or recompute the chain
  after an edit.
- The checkpoint key (Ed25519) signs checkpoints of the chain's head that are
  kept outside the database, so cutting the tail, resetting the log or
  restoring an older copy is caught too. Its public half is printed by
  `wa-access audit public-key` for auditors, who can then check a checkpoint
  without holding any secret.

Each key is HKDF-SHA256 of WA_SECRET_KEY with its own label, like the key
that seals 2FA seeds (`secret_box`): learning one derived key reveals neither
the secret nor the others. The labels are versioned so a future scheme can
derive fresh keys from the same secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ..errors import RbacError

CHAIN_LABEL = b"wa-access audit chain v1"
SIGNING_LABEL = b"wa-access audit checkpoint signing v1"
PUBLIC_KEY_PREFIX = "ed25519:"
KEY_ID_LENGTH = 16  # hex digits of SHA-256 of the raw public key
NO_SIGNING_KEY = "WA_SECRET_KEY is not set, so audit checkpoints cannot be signed here."


class KeyUnavailable(RbacError):
    """This process holds no WA_SECRET_KEY, so it cannot sign a checkpoint."""

    code = "audit_key_unavailable"


class MalformedPublicKey(ValueError):
    pass


def _derive(secret_key: str, label: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=label).derive(
        secret_key.encode("utf-8")
    )


def chain_key(secret_key: str | None) -> bytes | None:
    """The HMAC key of the hash chain; None without a secret (the chain stays plain SHA-256)."""
    return _derive(secret_key, CHAIN_LABEL) if secret_key else None


@lru_cache(maxsize=8)
def keyed_hasher(key: bytes) -> Callable[[bytes], str]:
    """HMAC-SHA256 under `key` (RFC 2104) as lowercase hex, with the padded key hashed once.

    `hmac.digest` repeats the key schedule on every call; copying two prepared
    SHA-256 states costs half as much, which `audit.verify` pays once per entry.
    """
    block = 64
    if len(key) > block:
        key = hashlib.sha256(key).digest()
    padded = key.ljust(block, b"\0")
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in padded))
    outer = hashlib.sha256(bytes(b ^ 0x5C for b in padded))

    def digest(payload: bytes) -> str:
        first = inner.copy()
        first.update(payload)
        second = outer.copy()
        second.update(first.digest())
        return second.hexdigest()

    return digest


@dataclass(frozen=True)
class PublicKey:
    """An Ed25519 public key as auditors hold it: `ed25519:` and 32 bytes in base64."""

    raw: bytes

    @classmethod
    def parse(cls, text: str) -> PublicKey:
        body = text.strip()
        body = body.removeprefix(PUBLIC_KEY_PREFIX)
        try:
            raw = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != 32:
            raise MalformedPublicKey(
                f"not an audit public key: expected {PUBLIC_KEY_PREFIX}BASE64 as printed by "
                "`wa-access audit public-key`"
            )
        return cls(raw)

    @property
    def text(self) -> str:
        return PUBLIC_KEY_PREFIX + base64.b64encode(self.raw).decode("ascii")

    @property
    def key_id(self) -> str:
        """A short name for the key, written into every checkpoint it signs."""
        return hashlib.sha256(self.raw).hexdigest()[:KEY_ID_LENGTH]

    def verifies(self, signature: bytes, message: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.raw).verify(signature, message)
        except InvalidSignature:
            return False
        return True


class Signer:
    """Signs checkpoints with the Ed25519 key derived from WA_SECRET_KEY."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        raw = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.public = PublicKey(raw)

    @classmethod
    def from_secret(cls, secret_key: str) -> Signer:
        if not secret_key:
            raise KeyUnavailable(NO_SIGNING_KEY)
        return cls(Ed25519PrivateKey.from_private_bytes(_derive(secret_key, SIGNING_LABEL)))

    @classmethod
    def optional(cls, secret_key: str | None) -> Signer | None:
        return cls.from_secret(secret_key) if secret_key else None

    def sign(self, message: bytes) -> bytes:
        return self._private.sign(message)

    def __repr__(self) -> str:  # never the private key
        return f"Signer(key_id={self.public.key_id})"
