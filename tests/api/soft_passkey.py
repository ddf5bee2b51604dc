"""A software WebAuthn authenticator, and the browser around it, for tests.

`SoftAuthenticator` answers the JSON options a relying party sends
(`publicKey` of `navigator.credentials.create()` and `.get()`, binary fields
as base64url, as webauthn-rs writes them) with the JSON a browser would post
back. Its credentials are P-256 keys (ES256, COSE algorithm -7), discoverable
(the user handle is kept), with "none" attestation and a signature counter.

What a test may change to provoke a refusal:

- `origin`, the page origin the client data claims;
- a credential's `sign_count` (see `credential()`), to make the counter go
  backwards as it would on a cloned authenticator;
- `get(..., user_verified=False)`, an assertion without the UV flag.

A replay is the same answer posted twice. Needs only `cryptography`.
"""

import base64
import dataclasses
import hashlib
import json
import os
import struct

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

ES256 = -7

FLAG_UP = 0x01  # user present
FLAG_UV = 0x04  # user verified
FLAG_AT = 0x40  # attested credential data included


def b64url(data: bytes) -> str:
    """Base64url without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Base64url with or without padding."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def cbor(value) -> bytes:
    """CBOR (RFC 8949) of ints, bytes, text, lists, dicts, booleans and None.

    Map keys keep their insertion order: callers write them in CTAP2's
    canonical order.
    """

    def head(major: int, n: int) -> bytes:
        if n < 24:
            return bytes([major << 5 | n])
        for extra, size in ((24, "B"), (25, "H"), (26, "I"), (27, "Q")):
            if n < 1 << (8 * struct.calcsize(size)):
                return bytes([major << 5 | extra]) + struct.pack(">" + size, n)
        raise ValueError(f"integer too large for CBOR: {n}")

    if value is False:
        return b"\xf4"
    if value is True:
        return b"\xf5"
    if value is None:
        return b"\xf6"
    if isinstance(value, int):
        return head(0, value) if value >= 0 else head(1, -1 - value)
    if isinstance(value, bytes):
        return head(2, len(value)) + value
    if isinstance(value, str):
        text = value.encode("utf-8")
        return head(3, len(text)) + text
    if isinstance(value, (list, tuple)):
        return head(4, len(value)) + b"".join(cbor(item) for item in value)
    if isinstance(value, dict):
        return head(5, len(value)) + b"".join(cbor(k) + cbor(v) for k, v in value.items())
    raise TypeError(f"no CBOR for {type(value).__name__}")


class AuthenticatorError(Exception):
    """What a browser would reject with (NotAllowedError, InvalidStateError, ...)."""


@dataclasses.dataclass
class Credential:
    """One discoverable credential held by a `SoftAuthenticator`."""

    id: bytes
    user_handle: bytes
    private_key: ec.EllipticCurvePrivateKey
    sign_count: int = 0

    def cose_public_key(self) -> bytes:
        """The public key as a COSE_Key (EC2, P-256, ES256)."""
        numbers = self.private_key.public_key().public_numbers()
        return cbor({
            1: 2,  # kty: EC2
            3: ES256,  # alg
            -1: 1,  # crv: P-256
            -2: numbers.x.to_bytes(32, "big"),
            -3: numbers.y.to_bytes(32, "big"),
        })


class SoftAuthenticator:
    """A platform authenticator with user verification, and its browser.

    `origin` is the page origin the client data names; `rp_id` the relying
    party id the authenticator serves (a request for another one is refused).
    """

    def __init__(self, origin: str, rp_id: str):
        self.origin = origin
        self.rp_id = rp_id
        self.credentials: dict[bytes, Credential] = {}

    def credential(self, credential_id: str) -> Credential:
        """The credential whose id (base64url) is `credential_id`."""
        return self.credentials[b64url_decode(credential_id)]

    def create(self, public_key_options: dict) -> dict:
        """`navigator.credentials.create({publicKey})`: a new ES256 credential.

        Returns the `RegisterPublicKeyCredential` JSON, with "none" attestation.
        """
        options = public_key_options
        rp_id = options["rp"].get("id", self.rp_id)
        if rp_id != self.rp_id:
            raise AuthenticatorError(f"SecurityError: rp.id {rp_id!r} is not {self.rp_id!r}")
        algorithms = [p.get("alg") for p in options["pubKeyCredParams"] if p.get("type") == "public-key"]
        if ES256 not in algorithms:
            raise AuthenticatorError(f"NotSupportedError: no ES256 among {algorithms}")
        for excluded in options.get("excludeCredentials") or []:
            if b64url_decode(excluded["id"]) in self.credentials:
                raise AuthenticatorError("InvalidStateError: this authenticator is already registered")

        credential = Credential(
            id=os.urandom(32),
            user_handle=b64url_decode(options["user"]["id"]),
            private_key=ec.generate_private_key(ec.SECP256R1()),
        )
        attested = (
            bytes(16)  # AAGUID: none
            + struct.pack(">H", len(credential.id))
            + credential.id
            + credential.cose_public_key()
        )
        auth_data = self._auth_data(FLAG_UP | FLAG_UV | FLAG_AT, credential.sign_count) + attested
        attestation_object = cbor({"fmt": "none", "attStmt": {}, "authData": auth_data})
        client_data = self._client_data("webauthn.create", options["challenge"])
        self.credentials[credential.id] = credential
        return {
            "id": b64url(credential.id),
            "rawId": b64url(credential.id),
            "type": "public-key",
            "response": {
                "attestationObject": b64url(attestation_object),
                "clientDataJSON": b64url(client_data),
            },
            "extensions": {},
        }

    def get(self, public_key_options: dict, *, user_verified: bool = True) -> dict:
        """`navigator.credentials.get({publicKey})`: an assertion.

        Signs with the newest credential that `allowCredentials` names, or
        with the newest one at all when the list is empty or absent (a
        discoverable credential). The counter goes up by
        one first. Returns the `PublicKeyCredential` JSON.
        """
        options = public_key_options
        rp_id = options.get("rpId", self.rp_id)
        if rp_id != self.rp_id:
            raise AuthenticatorError(f"SecurityError: rpId {rp_id!r} is not {self.rp_id!r}")
        allowed = {b64url_decode(c["id"]) for c in options.get("allowCredentials") or []}
        candidates = [c for c in self.credentials.values() if not allowed or c.id in allowed]
        if not candidates:
            raise AuthenticatorError("NotAllowedError: no credential for this request")
        credential = candidates[-1]

        credential.sign_count += 1
        flags = FLAG_UP | (FLAG_UV if user_verified else 0)
        auth_data = self._auth_data(flags, credential.sign_count)
        client_data = self._client_data("webauthn.get", options["challenge"])
        signature = credential.private_key.sign(
            auth_data + hashlib.sha256(client_data).digest(), ec.ECDSA(hashes.SHA256())
        )
        return {
            "id": b64url(credential.id),
            "rawId": b64url(credential.id),
            "type": "public-key",
            "response": {
                "authenticatorData": b64url(auth_data),
                "clientDataJSON": b64url(client_data),
                "signature": b64url(signature),
                "userHandle": b64url(credential.user_handle),
            },
            "extensions": {},
        }

    def _auth_data(self, flags: int, sign_count: int) -> bytes:
        """rpIdHash | flags | signCount: the part every authenticatorData starts with."""
        rp_id_hash = hashlib.sha256(self.rp_id.encode("utf-8")).digest()
        return rp_id_hash + bytes([flags]) + struct.pack(">I", sign_count)

    def _client_data(self, kind: str, challenge: str) -> bytes:
        """The client data JSON the browser makes for `challenge` (base64url, as given)."""
        return json.dumps(
            {"type": kind, "challenge": challenge, "origin": self.origin, "crossOrigin": False},
            separators=(",", ":"),
        ).encode("utf-8")
