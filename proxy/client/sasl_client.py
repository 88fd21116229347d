"""SASL for walproxy's own broker connections (reconciliation, repair, broker discovery).

Clients' SaslHandshake and SaslAuthenticate requests pass through walproxy untouched, so
authentication and ACLs stay the broker's business. Only the connections walproxy opens for
itself authenticate here, as the ``[sasl]`` user: PLAIN or SCRAM-SHA-256/512 (RFC 5802,
without channel binding). :class:`ScramClient` is the plain-logic half.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any, Protocol

from proxy.client.errors import UpstreamError
from proxy.kafka.protocol import SASL_AUTHENTICATE, SASL_HANDSHAKE


class Requester(Protocol):
    """What the exchange needs of a connection: one request, its decoded response."""

    async def request(self, api_key: int, body: Any, timeout: float = ...) -> Any: ...


MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


@dataclass(frozen=True, slots=True)
class SaslCredentials:
    mechanism: str
    username: str
    password: str


class SaslError(UpstreamError):
    """The broker refused walproxy's credentials or spoke SCRAM wrongly."""


def _attributes(message: bytes) -> dict[str, str]:
    out = {}
    for part in message.decode().split(","):
        key, sep, value = part.partition("=")
        if sep:
            out[key] = value
    return out


class ScramClient:
    def __init__(
        self, mechanism: str, username: str, password: str, nonce: str | None = None
    ) -> None:
        self._hash = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}[mechanism]
        self._password = password.encode()
        self._nonce = nonce or secrets.token_urlsafe(18)
        name = username.replace("=", "=3D").replace(",", "=2C")
        self._first_bare = f"n={name},r={self._nonce}"
        self._server_signature = b""

    def first(self) -> bytes:
        return f"n,,{self._first_bare}".encode()

    def final(self, server_first: bytes) -> bytes:
        attrs = _attributes(server_first)
        if "e" in attrs:
            raise SaslError(f"SCRAM: broker error {attrs['e']}")
        nonce, salt, iterations = attrs.get("r", ""), attrs.get("s", ""), attrs.get("i", "")
        if not nonce.startswith(self._nonce) or not salt or not iterations.isdigit():
            raise SaslError("SCRAM: malformed server-first message")
        salted = hashlib.pbkdf2_hmac(
            self._hash, self._password, base64.b64decode(salt), int(iterations)
        )
        client_key = hmac.digest(salted, b"Client Key", self._hash)
        stored_key = hashlib.new(self._hash, client_key).digest()
        without_proof = f"c=biws,r={nonce}"
        auth_message = f"{self._first_bare},{server_first.decode()},{without_proof}".encode()
        signature = hmac.digest(stored_key, auth_message, self._hash)
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        server_key = hmac.digest(salted, b"Server Key", self._hash)
        self._server_signature = hmac.digest(server_key, auth_message, self._hash)
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def verify(self, server_final: bytes) -> None:
        attrs = _attributes(server_final)
        if "e" in attrs:
            raise SaslError(f"SCRAM: broker error {attrs['e']}")
        if base64.b64decode(attrs.get("v", "")) != self._server_signature:
            raise SaslError("SCRAM: the broker's signature does not match (not the real broker?)")


async def authenticate(client: Requester, credentials: SaslCredentials) -> None:
    """SaslHandshake v1 then SaslAuthenticate on a fresh connection; SaslError if refused."""
    mechanism, username, password = (
        credentials.mechanism,
        credentials.username,
        credentials.password,
    )
    from kio.schema.sasl_authenticate.v2.request import SaslAuthenticateRequest
    from kio.schema.sasl_handshake.v1.request import SaslHandshakeRequest

    shake = await client.request(SASL_HANDSHAKE, SaslHandshakeRequest(mechanism=mechanism))
    if shake.error_code != 0:
        raise SaslError(
            f"SASL handshake for {mechanism} refused (error {int(shake.error_code)}); "
            f"the broker offers {list(shake.mechanisms)}"
        )

    async def step(data: bytes) -> bytes:
        resp = await client.request(SASL_AUTHENTICATE, SaslAuthenticateRequest(auth_bytes=data))
        if resp.error_code != 0:
            raise SaslError(
                f"SASL {mechanism} authentication as {username!r} failed: "
                f"{resp.error_message or int(resp.error_code)}"
            )
        return bytes(resp.auth_bytes)

    if mechanism == "PLAIN":
        await step(b"\0" + username.encode() + b"\0" + password.encode())
        return
    scram = ScramClient(mechanism, username, password)
    server_first = await step(scram.first())
    scram.verify(await step(scram.final(server_first)))
