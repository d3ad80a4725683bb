"""Tab keys: what a browser tab shows the server to reach its own session, and nothing else.

Gradio names each browser connection by a "session hash" that the *client* picks and sends with
every call, so whoever sends someone else's hash acts as them. The debugger's sessions are
keyed by something the client cannot make up instead: when a page loads, the server issues a
key made of a random id and an HMAC of that id under a secret only the server knows,

    key = id + "." + HMAC-SHA256(secret, id)      (both URL-safe base64)

and the page sends it back with every call (a hidden field; it is never shown, logged or put in
a file name). A key proves itself: a valid MAC means this server issued it to some page, so a
tab whose session was reclaimed can get a fresh empty one without the server remembering every
key it ever issued, while a guessed or edited key is refused. A new secret per server start
invalidates the keys of a previous run: their pages are told to reload.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

ID_BYTES = 18  # 144 random bits: unguessable
MAC_BYTES = 16  # 128 bits of HMAC-SHA256: unforgeable without the secret
MAX_KEY_CHARS = 64


class TabKeys:
    def __init__(self, secret: bytes | None = None):
        self._secret = secret if secret is not None else secrets.token_bytes(32)

    def issue(self) -> str:
        tab_id = _b64(secrets.token_bytes(ID_BYTES))
        return f"{tab_id}.{self._mac(tab_id)}"

    def is_valid(self, key: object) -> bool:
        """Did this server issue `key`? (Constant-time in the MAC; any other value is False.)"""
        if not isinstance(key, str) or len(key) > MAX_KEY_CHARS or key.count(".") != 1:
            return False
        tab_id, mac = key.split(".")
        return hmac.compare_digest(mac, self._mac(tab_id))

    def _mac(self, tab_id: str) -> str:
        return _b64(hmac.new(self._secret, tab_id.encode(), hashlib.sha256).digest()[:MAC_BYTES])


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")
