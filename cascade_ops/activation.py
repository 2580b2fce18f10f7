"""One-time activation codes for the auth module's accounts (``invoke auth.invite NAME``).

A code is ``EXPIRY-NONCE-MAC``: the MAC is the first 128 bits of HMAC-SHA256, under a key derived
from the backend's JWT secret, of the JSON list [name, expiry, nonce]. The deployed module
(``playbooks/files/auth.py``) checks it the same way, in constant time, once: a code proves that
the operator, who holds the secret, vouched for that citizen, and it cannot serve as a token.
"""

import hashlib
import hmac
import json
import secrets

KEY_LABEL = b"cascade-ops activation code"


def activation_code(secret: str, username: str, expiry: int) -> str:
    """A code that activates ``username``'s account on the backend holding ``secret`` until ``expiry``
    (a Unix time)."""
    key = hmac.new(secret.encode(), KEY_LABEL, hashlib.sha256).digest()
    nonce = secrets.token_hex(6)
    mac = hmac.new(key, json.dumps([username, expiry, nonce]).encode(), hashlib.sha256).hexdigest()[:32]
    return "%d-%s-%s" % (expiry, nonce, mac)
