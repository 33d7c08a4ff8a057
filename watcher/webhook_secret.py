"""The `whsec_` secret format of Standard Webhooks: a new secret, and the key inside one.

Kept apart from signing so that config validation can check a secret without depending on the
delivery side. Nothing here puts a secret into an error message.
"""

from __future__ import annotations

import base64
import binascii
import secrets as _random

from watcher.errors import InvalidSecret

SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret
SECRET_BYTES = 32  # the Standard Webhooks spec recommends 24 to 64 bytes of key


def generate_secret() -> str:
    """A new random secret: `whsec_` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(_random.token_bytes(SECRET_BYTES)).decode("ascii")


def decode_secret(secret: str) -> bytes:
    """The HMAC key of a `whsec_...` secret (the prefix is optional, as other libraries allow).

    Missing base64 padding is tolerated, like the reference libraries do. Raises InvalidSecret,
    whose message never contains the secret, for anything that is not base64 or is empty.
    """
    encoded = secret.removeprefix(SECRET_PREFIX)
    encoded += "=" * (-len(encoded) % 4)
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidSecret() from exc
    if not key:
        raise InvalidSecret("the webhook secret is empty")
    return key
