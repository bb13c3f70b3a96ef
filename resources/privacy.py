"""The pseudonymization key: user ids leave the raw layer only as keyed HMAC-SHA256 pseudonyms."""

from __future__ import annotations

import hashlib
import hmac
import os

from dagster import ConfigurableResource, EnvVar
from pydantic import PrivateAttr

KEY_ENV_VAR = "SMART_HOME_PSEUDONYM_KEY"
ENVIRONMENT_ENV_VAR = "SMART_HOME_ENV"
# Published on purpose: it makes development runs reproducible and is refused in production.
DEVELOPMENT_KEY = "smart-home-development-key-do-not-use-in-production"


class PseudonymizationKeyError(RuntimeError):
    pass


def resolve_key(configured: str | None = None) -> bytes:
    """The key in force: configured value, else ``$SMART_HOME_PSEUDONYM_KEY``, else the development key.

    Refuses the development key (and an empty one) when ``SMART_HOME_ENV=production``.
    """
    key = configured or os.environ.get(KEY_ENV_VAR) or DEVELOPMENT_KEY
    if os.environ.get(ENVIRONMENT_ENV_VAR, "development").lower() == "production" and key == DEVELOPMENT_KEY:
        raise PseudonymizationKeyError(
            f"SMART_HOME_ENV=production but {KEY_ENV_VAR} is unset or the development key: "
            f"set {KEY_ENV_VAR} to a secret of at least 32 random bytes"
        )
    if len(key) < 16:
        raise PseudonymizationKeyError(
            f"{KEY_ENV_VAR} is too short: at least 16 characters are required (use 32 random bytes, e.g. "
            f"`python -c 'import secrets; print(secrets.token_hex(32))'`)"
        )
    return key.encode("utf-8")


def key_fingerprint(key: bytes) -> str:
    """A short, non-reversible identifier of the key, so metadata can say which key made a pseudonym."""
    return hmac.new(key, b"smart-home-key-fingerprint", hashlib.sha256).hexdigest()[:12]


class PseudonymizationKey(ConfigurableResource):
    """Holds the HMAC key. ``key`` is read from the environment; it is never logged or written to metadata."""

    key: str | None = None
    _key_bytes: bytes | None = PrivateAttr(default=None)

    def secret(self) -> bytes:
        if self._key_bytes is None:
            self._key_bytes = resolve_key(self.key)
        return self._key_bytes

    def fingerprint(self) -> str:
        return key_fingerprint(self.secret())

    def __repr__(self) -> str:  # never show the key, even in a debugger or a traceback
        return "PseudonymizationKey(<redacted>)"


def key_from_environment() -> PseudonymizationKey:
    """The resource as the definitions wire it: the key comes from the environment at run time."""
    if os.environ.get(KEY_ENV_VAR):
        return PseudonymizationKey(key=EnvVar(KEY_ENV_VAR))
    return PseudonymizationKey()
