"""Passkeys (SPEC section 14) over the HTTP API, with the software
authenticator of soft_passkey.py as the user's device: registration, the
list, discoverable and email-first sign-in, the second step after a
password, removal, and the refusals (replay, wrong origin, no user
verification, a counter that goes backwards, an expired challenge, another
account's credential or user handle, malformed credentials).

Run by tests/api/passkeys.rs against a server with rp_id "localhost", any
port allowed on http://localhost, and no rate limits (the refusals here are
many). The clock is the test's: "advance SECONDS" goes out on stdout, the
answer comes back on stdin. Everything else goes to stderr. Exits non-zero on
the first broken expectation.

Arguments: BASE_URL [SENT_FILE]. BASE_URL is http://127.0.0.1:PORT; the
authenticator claims the origin http://localhost:PORT. When SENT_FILE is
given, every signature, client data, authenticator data and attestation
object posted is written there, one a line, so that the caller can check
that none of them reached the audit log.
"""

import base64
import json
import os
import secrets
import sys
import urllib.parse
import uuid

import requests

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from soft_passkey import SoftAuthenticator, b64url, b64url_decode, cbor  # noqa: E402

BASE = sys.argv[1].rstrip("/")
SENT_FILE = sys.argv[2] if len(sys.argv) > 2 else None
PORT = urllib.parse.urlsplit(BASE).port
ORIGIN = f"http://localhost:{PORT}"
RP_ID = "localhost"
PASSWORD = "correct horse battery staple"

# The binary parts of every real credential posted, for the audit check.
SENT: list[str] = []


def log(*args):
    """A line on stderr (stdout is the clock's)."""
    print(*args, file=sys.stderr, flush=True)


def ask(line):
    """Asks the test holding the server's clock; returns its answer."""
    print(line, flush=True)
    answer = sys.stdin.readline().strip()
    assert answer, f"no answer to {line!r}"
    return answer


def call(method, path, body=None, token=None):
    """One JSON request; `body` None sends no body."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.request(method, BASE + path, json=body, headers=headers, timeout=60)


def expect(response, status, what):
    """Asserts the status; returns the JSON body (None when there is none)."""
    assert response.status_code == status, (
        f"{what}: expected {status}, got {response.status_code}: {response.text[:500]}")
    return response.json() if response.content else None


def refused(response, what, status=None):
    """Asserts a 4xx (or exactly `status`) with an error body; returns the body."""
    code = response.status_code
    wanted = code == status if status else 400 <= code < 500
    assert wanted, f"{what}: expected {status or '4xx'}, got {code}: {response.text[:500]}"
    try:
        body = response.json()
    except ValueError:
        raise AssertionError(f"{what}: {code} without a JSON body: {response.text[:300]!r}") from None
    assert isinstance(body, dict) and isinstance(body.get("error"), str), (
        f"{what}: {code} without an error code: {body}")
    return body


def claims(access_token):
    """The payload of a JWT, unverified."""
    payload = access_token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def token_pair(body, what):
    """Asserts a token pair (SPEC section 5); returns its access token's claims."""
    for key in ("access_token", "refresh_token", "token_type", "expires_in", "session_id"):
        assert key in body, f"{what}: no {key} in {body}"
    assert body["token_type"] == "Bearer", f"{what}: {body}"
    return claims(body["access_token"])


def remember(credential):
    """Notes the binary parts of a credential about to be posted."""
    SENT.extend(v for k, v in credential["response"].items() if k != "userHandle")


def same_id(a, b):
    """Whether two base64url credential ids name the same bytes."""
    return b64url_decode(a) == b64url_decode(b)


def new_account(label):
    """Registers and logs in an account; returns (email, access token)."""
    email = f"{label}-{secrets.token_hex(4)}@example.com"
    expect(call("POST", "/auth/register", {"email": email, "password": PASSWORD}), 201, f"register {email}")
    pair = expect(call("POST", "/auth/login", {"email": email, "password": PASSWORD}), 200, f"login {email}")
    token_pair(pair, f"login {email}")
    return email, pair["access_token"]


def passkeys(token):
    """The account's passkeys, by id."""
    body = expect(call("GET", "/auth/passkeys", token=token), 200, "GET /auth/passkeys")
    return {p["id"]: p for p in body["passkeys"]}


def registration(token):
    """POST /auth/passkeys/register/start: {challenge_id, publicKey}."""
    start = expect(call("POST", "/auth/passkeys/register/start", token=token), 200, "register/start")
    assert isinstance(start.get("challenge_id"), str) and isinstance(start.get("publicKey"), dict), start
    return start


def register(authenticator, token, name=None):
    """A new passkey on `authenticator` for the account; returns the 201
    body and the credential id (base64url)."""
    start = registration(token)
    body = {"challenge_id": start["challenge_id"], "credential": authenticator.create(start["publicKey"])}
    if name is not None:
        body["name"] = name
    remember(body["credential"])
    created = expect(call("POST", "/auth/passkeys/register/finish", body, token), 201, "register/finish")
    return created, body["credential"]["rawId"]


def login_start(body):
    """POST /auth/passkeys/login/start: {challenge_id, publicKey}."""
    start = expect(call("POST", "/auth/passkeys/login/start", body), 200, f"login/start {body}")
    assert isinstance(start.get("challenge_id"), str) and isinstance(start.get("publicKey"), dict), start
    return start


def assertion(authenticator, start_body=None, **options):
    """A fresh challenge answered by `authenticator`: the login/finish body."""
    start = login_start(start_body or {})
    credential = authenticator.get(start["publicKey"], **options)
    remember(credential)
    return {"challenge_id": start["challenge_id"], "credential": credential}


def login_finish(body):
    """POST /auth/passkeys/login/finish."""
    return call("POST", "/auth/passkeys/login/finish", body)


def check_registration(alice, token):
    """registration: options ask for user verification and a resident key; a challenge is single use"""
    refused(call("POST", "/auth/passkeys/register/start"), "register/start without a token", 401)
    start = registration(token)
    options = start["publicKey"]
    selection = options.get("authenticatorSelection") or {}
    assert selection.get("userVerification") == "required", f"userVerification: {selection}"
    assert selection.get("residentKey") == "preferred", f"residentKey: {selection}"
    assert options["rp"]["id"] == RP_ID, options["rp"]
    assert -7 in [p["alg"] for p in options["pubKeyCredParams"]], options["pubKeyCredParams"]
    assert options["user"]["id"] and options["challenge"], options

    body = {"challenge_id": start["challenge_id"], "credential": alice.create(options), "name": "laptop"}
    remember(body["credential"])
    created = expect(call("POST", "/auth/passkeys/register/finish", body, token), 201, "register/finish")
    assert created["name"] == "laptop" and isinstance(created["id"], str), created
    assert isinstance(created["created_at"], str), created
    again = call("POST", "/auth/passkeys/register/finish", body, token)
    refused(again, "the same registration finished twice")
    assert len(passkeys(token)) == 1, "a second passkey from a spent challenge"
    return created, body["credential"]["rawId"]


def check_listing(token, created):
    """the list: name, created_at, last_used_at null before any use"""
    refused(call("GET", "/auth/passkeys"), "GET /auth/passkeys without a token", 401)
    listed = passkeys(token)
    assert list(listed) == [created["id"]], listed
    entry = listed[created["id"]]
    assert entry["name"] == "laptop" and entry["created_at"] == created["created_at"], entry
    assert "last_used_at" in entry and entry["last_used_at"] is None, entry


def check_default_name(bob, bob_token):
    """a passkey added without a name gets one"""
    created, _ = register(bob, bob_token)
    assert isinstance(created["name"], str) and created["name"], f"a passkey without a name: {created}"


def check_discoverable(alice, email, token, created):
    """discoverable sign-in: no allowCredentials, a token pair with amr hwk+user, last_used_at set"""
    start = login_start({})
    options = start["publicKey"]
    assert not options.get("allowCredentials"), f"a discoverable challenge names credentials: {options}"
    assert options.get("userVerification") == "required", options
    assert options.get("rpId") == RP_ID, options
    body = {"challenge_id": start["challenge_id"], "credential": alice.get(options)}
    remember(body["credential"])
    pair = expect(login_finish(body), 200, "discoverable login/finish")
    payload = token_pair(pair, "discoverable login/finish")
    assert {"hwk", "user"} <= set(payload.get("amr", [])), f"amr of a passkey sign-in: {payload}"
    assert payload.get("email") == email, payload
    me = expect(call("GET", "/auth/me", token=pair["access_token"]), 200, "/auth/me with the passkey's token")
    assert me["email"] == email, me
    used = passkeys(token)[created["id"]]["last_used_at"]
    assert isinstance(used, str) and used, f"last_used_at after a sign-in: {used!r}"
    return body


def check_email_first(alice, email, credential_id):
    """sign-in from an email: allowCredentials names the account's passkey"""
    start = login_start({"email": email})
    allowed = [c["id"] for c in start["publicKey"].get("allowCredentials") or []]
    assert any(same_id(c, credential_id) for c in allowed), f"{credential_id} not in {allowed}"
    body = {"challenge_id": start["challenge_id"], "credential": alice.get(start["publicKey"])}
    remember(body["credential"])
    token_pair(expect(login_finish(body), 200, "login/finish after login/start {email}"), "email-first")


def check_replay(used):
    """a replayed assertion is refused: on its spent challenge and on a fresh one"""
    refused(login_finish(used), "an assertion sent again to its spent challenge", 401)
    fresh = login_start({})["challenge_id"]
    refused(login_finish({"challenge_id": fresh, "credential": used["credential"]}),
            "an old assertion sent to a fresh challenge", 401)


def check_wrong_origin(alice):
    """an assertion made on another origin is refused"""
    alice.origin = f"http://evil.example:{PORT}"
    try:
        body = assertion(alice)
    finally:
        alice.origin = ORIGIN
    refused(login_finish(body), "an assertion from http://evil.example", 401)


def check_not_verified(alice):
    """an assertion without user verification is refused"""
    refused(login_finish(assertion(alice, user_verified=False)), "an assertion without the UV flag", 401)


def check_other_handle(alice, bob):
    """another account's user handle on an assertion signs nobody in"""
    body = assertion(alice)
    bob_handle = next(iter(bob.credentials.values())).user_handle
    body["credential"]["response"]["userHandle"] = b64url(bob_handle)
    response = login_finish(body)
    if response.status_code == 200:
        sub = claims(response.json()["access_token"])["sub"]
        raise AssertionError(f"an assertion with another account's user handle signed in {sub}")
    refused(response, "an assertion with another account's user handle", 401)


def check_second_step(alice, email, credential_id):
    """after a password: mfa_required lists "passkey"; /auth/login/mfa takes the assertion (amr pwd+hwk)"""
    step = expect(call("POST", "/auth/login", {"email": email, "password": PASSWORD}), 200, "password login")
    assert step.get("mfa_required") is True and "access_token" not in step, f"no second step asked: {step}"
    assert "passkey" in step.get("methods", []), f"methods: {step}"
    assert isinstance(step.get("mfa_token"), str) and isinstance(step.get("expires_in"), int), step
    start = login_start({"mfa_token": step["mfa_token"]})
    allowed = [c["id"] for c in start["publicKey"].get("allowCredentials") or []]
    assert any(same_id(c, credential_id) for c in allowed), f"{credential_id} not in {allowed}"
    credential = alice.get(start["publicKey"])
    remember(credential)
    body = {"mfa_token": step["mfa_token"], "passkey_challenge_id": start["challenge_id"], "credential": credential}
    pair = expect(call("POST", "/auth/login/mfa", body), 200, "/auth/login/mfa with a passkey")
    payload = token_pair(pair, "/auth/login/mfa with a passkey")
    assert {"pwd", "hwk"} <= set(payload.get("amr", [])), f"amr of password + passkey: {payload}"
    refused(call("POST", "/auth/login/mfa", body), "a spent mfa_token and challenge used again", 401)


def check_second_step_other_account(alice, bob, bob_email):
    """the second step refuses another account's passkey, then takes the account's own"""
    step = expect(call("POST", "/auth/login", {"email": bob_email, "password": PASSWORD}), 200, "bob's password")
    assert step.get("mfa_required") is True, step
    start = login_start({"mfa_token": step["mfa_token"]})
    # Alice's authenticator answers whatever the list says: a stolen-password attacker's own key.
    credential = alice.get(dict(start["publicKey"], allowCredentials=[]))
    remember(credential)
    body = {"mfa_token": step["mfa_token"], "passkey_challenge_id": start["challenge_id"], "credential": credential}
    refused(call("POST", "/auth/login/mfa", body), "bob's second step with alice's passkey", 401)
    start = login_start({"mfa_token": step["mfa_token"]})
    credential = bob.get(start["publicKey"])
    remember(credential)
    body = {"mfa_token": step["mfa_token"], "passkey_challenge_id": start["challenge_id"], "credential": credential}
    token_pair(expect(call("POST", "/auth/login/mfa", body), 200, "bob's second step with his passkey"), "bob")


def check_registration_owner(token, bob_token):
    """a registration is finished only by the account that started it"""
    before, bob_before = passkeys(token), passkeys(bob_token)
    stranger = SoftAuthenticator(ORIGIN, RP_ID)
    start = registration(token)
    body = {"challenge_id": start["challenge_id"], "credential": stranger.create(start["publicKey"])}
    remember(body["credential"])
    refused(call("POST", "/auth/passkeys/register/finish", body), "register/finish without a token", 401)
    refused(call("POST", "/auth/passkeys/register/finish", body, bob_token), "register/finish by another account")
    assert passkeys(token) == before and passkeys(bob_token) == bob_before, "a passkey was added"


def check_expiry(alice):
    """a challenge answered after 5 minutes is refused"""
    body = assertion(alice)
    ask("advance 301")
    refused(login_finish(body), "an assertion for a challenge 301 s old", 401)


def check_counter(token):
    """a signature counter that goes backwards refuses the credential from then on (a cloned authenticator)"""
    clone = SoftAuthenticator(ORIGIN, RP_ID)
    created, credential_id = register(clone, token, "spare key")
    for _ in range(2):
        token_pair(expect(login_finish(assertion(clone)), 200, "sign-in with the spare key"), "spare key")
    credential = clone.credential(credential_id)
    count = credential.sign_count
    credential.sign_count = count - 2
    refused(login_finish(assertion(clone)), f"the counter back from {count} to {count - 1}", 401)
    log(f"  counter went from {count} back to {count - 1}: refused")
    assert created["id"] not in passkeys(token), "a passkey whose counter went back is still listed"
    credential.sign_count = count + 10
    refused(login_finish(assertion(clone)), "the cloned credential, counter ahead again", 401)


def check_removal(alice, email, token, bob_token, created):
    """removal: only by the owner; then the passkey signs nobody in and the password alone is enough"""
    refused(call("DELETE", f"/auth/passkeys/{created['id']}"), "DELETE without a token", 401)
    response = call("DELETE", f"/auth/passkeys/{created['id']}", token=bob_token)
    assert response.status_code != 204, "another account removed alice's passkey"
    refused(response, "DELETE of another account's passkey")
    assert created["id"] in passkeys(token), "alice's passkey is gone after bob's DELETE"

    token_pair(expect(login_finish(assertion(alice)), 200, "sign-in before removal"), "before removal")
    expect(call("DELETE", f"/auth/passkeys/{created['id']}", token=token), 204, "DELETE /auth/passkeys/{id}")
    assert created["id"] not in passkeys(token), "the passkey is still listed"
    refused(login_finish(assertion(alice)), "a removed passkey", 401)
    refused(call("DELETE", f"/auth/passkeys/{created['id']}", token=token), "DELETE of a removed passkey")

    assert passkeys(token) == {}, "passkeys left after removing the last one"
    pair = expect(call("POST", "/auth/login", {"email": email, "password": PASSWORD}), 200, "password login")
    token_pair(pair, "password login without passkeys")


def check_decoys(alice_email):
    """login/start {email} names one credential whether or not the account exists or has a passkey"""
    carol_email, _ = new_account("carol")
    for email in (f"nobody-{secrets.token_hex(4)}@example.com", carol_email, alice_email):
        first = login_start({"email": email})["publicKey"].get("allowCredentials")
        again = login_start({"email": email})["publicKey"].get("allowCredentials")
        assert isinstance(first, list) and len(first) == 1, f"{email}: {first}"
        assert first == again, f"{email}: the named credential changes: {first} then {again}"
        assert len(b64url_decode(first[0]["id"])) == 32, first


def check_at_most_twenty():
    """an account holds at most twenty passkeys"""
    _, token = new_account("dave")
    for _ in range(20):
        # One authenticator holds one credential for an account (excludeCredentials).
        register(SoftAuthenticator(ORIGIN, RP_ID), token)
    body = refused(call("POST", "/auth/passkeys/register/start", token=token), "a 21st passkey", 400)
    assert body["error"] == "invalid_passkey", body
    assert len(passkeys(token)) == 20


def check_recent_sign_in():
    """a sign-in older than ten minutes adds a passkey only with the password, and removes none"""
    _, token = new_account("erin")
    created, _ = register(SoftAuthenticator(ORIGIN, RP_ID), token, "fresh")
    device = SoftAuthenticator(ORIGIN, RP_ID)
    ask("advance 601")
    start = registration(token)
    body = {"challenge_id": start["challenge_id"], "credential": device.create(start["publicKey"])}
    remember(body["credential"])
    answer = refused(call("POST", "/auth/passkeys/register/finish", body, token), "a stale session", 403)
    assert answer["error"] == "reauthentication_required", answer
    start = registration(token)
    body = {"challenge_id": start["challenge_id"], "credential": SoftAuthenticator(ORIGIN, RP_ID).create(start["publicKey"]),
            "password": "not the password"}
    answer = refused(call("POST", "/auth/passkeys/register/finish", body, token), "a wrong password", 400)
    assert answer["error"] == "invalid_current_password", answer
    start = registration(token)
    body = {"challenge_id": start["challenge_id"], "credential": device.create(start["publicKey"]),
            "password": PASSWORD}
    expect(call("POST", "/auth/passkeys/register/finish", body, token), 201, "a stale session and the password")
    answer = refused(call("DELETE", f"/auth/passkeys/{created['id']}", token=token), "DELETE, stale", 403)
    assert answer["error"] == "reauthentication_required", answer
    assert len(passkeys(token)) == 2


def mutated(value, path, replacement):
    """A deep copy of `value` with the item at `path` replaced (or removed: `...`)."""
    value = json.loads(json.dumps(value))
    *parents, last = path
    target = value
    for key in parents:
        target = target[key]
    if replacement is ...:
        del target[last]
    else:
        target[last] = replacement
    return value


COMMON_GARBAGE = [
    # (path into the body, replacement; `...` removes it)
    (("credential",), ...),
    (("challenge_id",), ...),
    (("challenge_id",), 42),
    (("challenge_id",), None),
    (("challenge_id",), ["a"]),
    (("challenge_id",), "not-a-challenge"),
    (("challenge_id",), str(uuid.uuid4())),
    (("challenge_id",), "c" * 12000),
    (("credential",), None),
    (("credential",), 42),
    (("credential",), "public-key"),
    (("credential",), []),
    (("credential",), {}),
    (("credential", "id"), ...),
    (("credential", "id"), 42),
    (("credential", "rawId"), ...),
    (("credential", "rawId"), "!!not*base64!!"),
    (("credential", "rawId"), {"nested": ["nonsense", {"x": None}]}),
    (("credential", "type"), ...),
    (("credential", "type"), 7),
    (("credential", "response"), ...),
    (("credential", "response"), []),
    (("credential", "response"), "response"),
    (("credential", "response"), {}),
    (("credential", "response", "clientDataJSON"), ...),
    (("credential", "response", "clientDataJSON"), "%%%"),
    (("credential", "response", "clientDataJSON"), b64url(b"not json")),
    (("credential", "response", "clientDataJSON"), b64url(b"{}")),
    (("credential", "response", "clientDataJSON"), b64url(b"\xff\xfe\xfd")),
    (("credential", "response", "clientDataJSON"), b64url(b"[" * 5000)),
    (("credential", "response", "clientDataJSON"), b64url(b'{"type":"webauthn.get","challenge":1}')),
    (("credential", "response", "clientDataJSON"), "A" * 12000),
    (("credential", "extensions"), "extensions"),
    (("credential", "extensions"), [1, 2, 3]),
]

LOGIN_GARBAGE = COMMON_GARBAGE + [
    (("credential", "rawId"), b64url(os.urandom(32))),
    (("credential", "rawId"), ""),
    (("credential", "response", "authenticatorData"), ...),
    (("credential", "response", "authenticatorData"), ""),
    (("credential", "response", "authenticatorData"), "%%%"),
    (("credential", "response", "authenticatorData"), b64url(b"short")),
    (("credential", "response", "authenticatorData"), b64url(os.urandom(37))),
    (("credential", "response", "authenticatorData"), b64url(os.urandom(9000))),
    (("credential", "response", "signature"), ...),
    (("credential", "response", "signature"), ""),
    (("credential", "response", "signature"), b64url(b"\x30\x00")),
    (("credential", "response", "signature"), b64url(b"\x30\x82\xff\xff" + os.urandom(70))),
    (("credential", "response", "signature"), b64url(os.urandom(72))),
    (("credential", "response", "signature"), [1, 2]),
    (("credential", "response", "userHandle"), None),
    (("credential", "response", "userHandle"), ""),
    (("credential", "response", "userHandle"), "%%%"),
    (("credential", "response", "userHandle"), b64url(os.urandom(200))),
    (("credential", "response", "userHandle"), 42),
]

# CBOR an attacker would send: deep nesting, a length past the end, wrong shapes.
_AUTH_DATA_HEAD = bytes(32) + b"\x45" + bytes(4)
REGISTER_GARBAGE = COMMON_GARBAGE + [
    (("name",), 42),
    (("name",), ["laptop"]),
    (("credential", "response", "attestationObject"), ...),
    (("credential", "response", "attestationObject"), ""),
    (("credential", "response", "attestationObject"), "%%%"),
    (("credential", "response", "attestationObject"), b64url(os.urandom(120))),
    (("credential", "response", "attestationObject"), b64url(cbor({}))),
    (("credential", "response", "attestationObject"), b64url(cbor([1, 2, 3]))),
    (("credential", "response", "attestationObject"), b64url(b"\x81" * 8000 + b"\x00")),
    (("credential", "response", "attestationObject"), b64url(b"\xa1" * 4000 + b"\x00\x00")),
    (("credential", "response", "attestationObject"),
     b64url(b"\xa3\x63fmt\x64none\x67attStmt\xa0\x68authData\x5b\x7f\xff\xff\xff\xff\xff\xff\xff")),
    (("credential", "response", "attestationObject"),
     b64url(cbor({"fmt": "none", "attStmt": {}, "authData": b"short"}))),
    (("credential", "response", "attestationObject"),
     b64url(cbor({"fmt": "none", "attStmt": {}, "authData": _AUTH_DATA_HEAD}))),
    (("credential", "response", "attestationObject"),
     b64url(cbor({"fmt": "none", "attStmt": {}, "authData": _AUTH_DATA_HEAD + bytes(16) + b"\xff\xff"}))),
    (("credential", "response", "attestationObject"),
     b64url(cbor({"fmt": "packed", "attStmt": {"alg": -7, "sig": b"\x30\x00"}, "authData": _AUTH_DATA_HEAD}))),
    (("credential", "response", "attestationObject"),
     b64url(cbor({"fmt": 7, "attStmt": [], "authData": "text"}))),
    (("credential", "response", "transports"), "usb"),
]

RAW_GARBAGE = [
    # (body bytes, content type)
    (b"{", "application/json"),
    (b"[]", "application/json"),
    (b"null", "application/json"),
    (b'{"challenge_id": "\xff\xfe", "credential": {}}', "application/json"),
    (b'{"challenge_id": "x", "credential": ' + b"[" * 3000 + b"]" * 3000 + b"}", "application/json"),
    (b'{"challenge_id": "x", "credential": ' + b'{"a":' * 3000 + b"1" + b"}" * 3001, "application/json"),
    (b'{"challenge_id": "x", "credential": "' + b"A" * 100000 + b'"}', "application/json"),
    (b'{"challenge_id": "x", "credential": {}}', "text/plain"),
]


def check_garbage(alice, token):
    """malformed credentials get a 4xx with an error body, never a 500"""
    for path, replacement in LOGIN_GARBAGE:
        body = mutated(assertion(alice), path, replacement)
        refused(login_finish(body), f"login/finish with {'/'.join(path)} = {str(replacement)[:40]!r}")
    junk = SoftAuthenticator(ORIGIN, RP_ID)
    for path, replacement in REGISTER_GARBAGE:
        start = registration(token)
        body = {"challenge_id": start["challenge_id"], "credential": junk.create(start["publicKey"]), "name": "junk"}
        body = mutated(body, path, replacement)
        response = call("POST", "/auth/passkeys/register/finish", body, token)
        refused(response, f"register/finish with {'/'.join(path)} = {str(replacement)[:40]!r}")
    for data, content_type in RAW_GARBAGE:
        for path, auth in (("/auth/passkeys/login/finish", None), ("/auth/passkeys/register/finish", token)):
            headers = {"Content-Type": content_type}
            if auth:
                headers["Authorization"] = f"Bearer {auth}"
            response = requests.post(BASE + path, data=data, headers=headers, timeout=60)
            refused(response, f"{path} with {data[:40]!r}... as {content_type}")
    names = [p["name"] for p in passkeys(token).values()]
    assert "junk" not in names, f"a malformed registration was stored: {names}"
    log(f"  {len(LOGIN_GARBAGE)} + {len(REGISTER_GARBAGE)} + {2 * len(RAW_GARBAGE)} malformed requests refused")


def run(check, *args):
    """Runs one check after saying what it checks."""
    log("-", check.__doc__)
    return check(*args)


def main():
    email, token = new_account("alice")
    bob_email, bob_token = new_account("bob")
    alice = SoftAuthenticator(ORIGIN, RP_ID)
    bob = SoftAuthenticator(ORIGIN, RP_ID)

    created, credential_id = run(check_registration, alice, token)
    run(check_listing, token, created)
    run(check_default_name, bob, bob_token)
    used = run(check_discoverable, alice, email, token, created)
    run(check_email_first, alice, email, credential_id)
    run(check_replay, used)
    run(check_wrong_origin, alice)
    run(check_not_verified, alice)
    run(check_other_handle, alice, bob)
    run(check_second_step, alice, email, credential_id)
    run(check_second_step_other_account, alice, bob, bob_email)
    run(check_registration_owner, token, bob_token)
    run(check_garbage, alice, token)
    run(check_expiry, alice)
    run(check_counter, token)
    run(check_removal, alice, email, token, bob_token, created)
    run(check_decoys, email)
    run(check_at_most_twenty)
    run(check_recent_sign_in)

    if SENT_FILE:
        with open(SENT_FILE, "w", encoding="ascii") as out:
            out.write("".join(line + "\n" for line in SENT))
    log("passkey flows: all checks passed")
    print("done", flush=True)


if __name__ == "__main__":
    main()
