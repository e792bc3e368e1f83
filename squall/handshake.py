"""The processor link's handshake: mutual HMAC challenge–response, without I/O.

Theory of operation. Both ends hold the same *link key*, derived from the
``secret`` setting by :func:`link_key` (never the token-signing key itself, so
that nothing a web node signs for a browser can ever pass as a link proof).
Each end picks a fresh random nonce and proves that it holds the key by
answering the *other* end's nonce; a proof is HMAC-SHA256 over a role label and
both nonces, so a proof can be neither replayed on another connection (the
peer's nonce is new each time) nor reflected back (the labels differ)::

    processor → web   {"op":"hello","role":"processor","version":2,"nonce":Np}
    web → processor   {"op":"hello","role":"web","version":2,"nonce":Nw,
                       "proof":HMAC(key, "web" Np Nw)}
    processor → web   {"op":"welcome","proof":HMAC(key, "processor" Nw Np)}

The processor acts on nothing before a valid web ``hello``: any other first line,
a wrong proof or silence past :data:`HELLO_TIMEOUT_SECONDS` closes the
connection. The web node sends nothing but its ``hello`` before it has checked
the ``welcome``, so it never hands its queue to a processor of another instance
(each instance has its own secret).

Every check raises :class:`~squall.errors.HandshakeFailed` with a wire ``code``
and a reason built from what arrived; proofs are compared with
:func:`hmac.compare_digest`.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from typing import Any

from .errors import HandshakeFailed

__all__ = [
    "PROTOCOL_VERSION", "HELLO_TIMEOUT_SECONDS", "link_key", "new_nonce",
    "processor_hello", "check_web_hello", "welcome", "web_hello", "check_welcome",
]

# Version 2 added the nonces and proofs; a version-1 peer cannot authenticate.
PROTOCOL_VERSION = 2
# A peer has this long after connecting to complete its hello; a local peer
# needs milliseconds, and a silent connection must not hold a slot for ever.
HELLO_TIMEOUT_SECONDS = 5.0

_KEY_LABEL = b"squall-link-v1"
_NONCE_BYTES = 16
_NONCE = re.compile(r"[0-9a-f]{%d}" % (2 * _NONCE_BYTES))
_PROOF = re.compile(r"[0-9a-f]{64}")


def link_key(secret: str) -> bytes:
    """The key both ends of a link prove: HMAC-SHA256(secret, "squall-link-v1")."""
    return hmac.new(secret.encode("utf-8"), _KEY_LABEL, hashlib.sha256).digest()


def new_nonce() -> str:
    return secrets.token_hex(_NONCE_BYTES)


def _proof(key: bytes, role: str, their_nonce: str, our_nonce: str) -> str:
    text = f"{role}\n{their_nonce}\n{our_nonce}".encode("ascii")
    return hmac.new(key, text, hashlib.sha256).hexdigest()


def _valid_proof(key: bytes, role: str, their_nonce: str, our_nonce: str, proof: object) -> bool:
    if not isinstance(proof, str) or not _PROOF.fullmatch(proof):
        return False
    return hmac.compare_digest(_proof(key, role, their_nonce, our_nonce), proof)


def _check_hello(value: dict[str, Any] | None, role: str) -> str:
    """The nonce of a well-formed hello from a peer playing ``role``."""
    if value is None or value.get("op") != "hello":
        raise HandshakeFailed("hello_expected", f'the first line must be {{"op":"hello",...}}, not {_shown(value)}')
    version = value.get("version")
    if version != PROTOCOL_VERSION:
        raise HandshakeFailed(
            "bad_version", f"this end speaks version {PROTOCOL_VERSION}, not {version!r}"
        )
    if value.get("role") != role:
        raise HandshakeFailed("bad_hello", f"hello must come from role {role!r}, not {value.get('role')!r}")
    nonce = value.get("nonce")
    if not isinstance(nonce, str) or not _NONCE.fullmatch(nonce):
        raise HandshakeFailed("bad_hello", f"hello needs a 'nonce' of {2 * _NONCE_BYTES} hex digits")
    return nonce


def _shown(value: dict[str, Any] | None) -> str:
    if value is None:
        return "a line that is not a JSON object"
    text = repr(value.get("op"))
    return f"op {text[:40]}"


# -- the processor's side ------------------------------------------------------


def processor_hello(nonce: str) -> dict[str, Any]:
    """The processor's first line; keep ``nonce`` for :func:`check_web_hello`."""
    return {"op": "hello", "role": "processor", "version": PROTOCOL_VERSION, "nonce": nonce}


def check_web_hello(value: dict[str, Any] | None, *, key: bytes, our_nonce: str) -> str:
    """The web node's nonce if its hello proves the key; else :class:`HandshakeFailed`.

    Send :func:`welcome` next, then serve the connection.
    """
    their_nonce = _check_hello(value, "web")
    assert value is not None
    if not _valid_proof(key, "web", our_nonce, their_nonce, value.get("proof")):
        raise HandshakeFailed(
            "bad_proof", "the hello's proof does not match this processor's secret"
        )
    return their_nonce


def welcome(*, key: bytes, their_nonce: str, our_nonce: str) -> dict[str, Any]:
    """The processor's proof, answering the web node's nonce."""
    return {"op": "welcome", "proof": _proof(key, "processor", their_nonce, our_nonce)}


# -- the web node's side -------------------------------------------------------------


def web_hello(value: dict[str, Any] | None, *, key: bytes, our_nonce: str) -> tuple[dict[str, Any], str]:
    """``(our hello, the processor's nonce)`` in answer to the processor's hello.

    Send the hello, then wait for the ``welcome`` and pass it to :func:`check_welcome`.
    """
    their_nonce = _check_hello(value, "processor")
    hello = {
        "op": "hello", "role": "web", "version": PROTOCOL_VERSION, "nonce": our_nonce,
        "proof": _proof(key, "web", their_nonce, our_nonce),
    }
    return hello, their_nonce


def check_welcome(value: dict[str, Any] | None, *, key: bytes, their_nonce: str, our_nonce: str) -> None:
    """Raises :class:`HandshakeFailed` unless ``value`` proves the processor holds the key."""
    if value is not None and value.get("op") == "error":
        code = str(value.get("code", "error"))
        raise HandshakeFailed(code, f"the processor refused our hello: {str(value.get('reason'))[:200]}")
    if value is None or value.get("op") != "welcome":
        raise HandshakeFailed("welcome_expected", f"expected a welcome, got {_shown(value)}")
    if not _valid_proof(key, "processor", our_nonce, their_nonce, value.get("proof")):
        raise HandshakeFailed("bad_proof", "the processor's proof does not match our secret")
