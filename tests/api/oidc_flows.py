"""portcullis as an OpenID Provider, driven by stock clients: authlib as a
confidential (client_secret_basic) and a public (PKCE) client, id_tokens
verified by PyJWT from the discovery document and the JWKS alone, and the
negative cases of SPEC section 13.

Run by tests/api/oidc.rs against a real server whose clock the test holds:
"now" and "advance SECONDS" go out on stdout, the answer comes back on stdin.
Everything else goes to stderr. Exits non-zero on the first broken expectation.

Arguments: BASE_URL EMAIL PASSWORD
"""

import base64
import hashlib
import html
import re
import secrets
import sys
import time
import urllib.parse

import jwt
import requests
from authlib.integrations.requests_client import OAuth2Session

BASE, EMAIL, PASSWORD = sys.argv[1:4]
APP = dict(id="app", secret="app-secret-0123456789", redirect="http://app.example/cb")
SPA = dict(id="spa", redirect="http://spa.example/cb")
EDDY = dict(id="eddy", secret="eddy-secret-0123456789", redirect="http://eddy.example/cb")
POSTY = dict(id="posty", secret="posty-secret-0123456789", redirect="http://posty.example/cb")
SCOPE = "openid profile email groups offline_access"


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def ask(line):
    print(line, flush=True)
    answer = sys.stdin.readline().strip()
    assert answer, f"no answer to {line!r}"
    return answer


def ours(location):
    return location.startswith("/") or location.startswith(BASE)


def absolute(location):
    return BASE + location if location.startswith("/") else location


def follow(browser, response):
    """Follows redirects while they stay on the server; returns the last answer."""
    hops = 0
    while response.status_code in (302, 303) and ours(response.headers["Location"]):
        hops += 1
        assert hops < 10, "a redirect loop"
        response = browser.get(absolute(response.headers["Location"]), allow_redirects=False)
    return response


def form_token(text):
    found = re.search(r'name="csrf_token" value="([^"]+)"', text)
    assert found, text[:500]
    return found.group(1)


def hidden(text, name):
    found = re.search(rf'name="{name}" value="([^"]*)"', text)
    assert found, (name, text[:500])
    return html.unescape(found.group(1))


def sign_in(browser, page):
    """Fills the login page the browser was sent to; returns the next answer."""
    assert page.status_code == 200 and "Sign in" in page.text, (page.status_code, page.text[:300])
    response = browser.post(BASE + "/ui/login", data={
        "csrf_token": form_token(page.text), "rd": hidden(page.text, "rd"),
        "email": EMAIL, "password": PASSWORD,
    }, allow_redirects=False)
    assert response.status_code == 303, (response.status_code, response.text[:300])
    return follow(browser, response)


def consent(browser, page, decision="allow"):
    assert page.status_code == 200 and "Allow" in page.text, (page.status_code, page.text[:300])
    response = browser.post(BASE + "/ui/consent", data={
        "csrf_token": form_token(page.text), "request": hidden(page.text, "request"),
        "decision": decision,
    }, allow_redirects=False)
    return follow(browser, response)


def callback(response, redirect):
    assert response.status_code == 303, (response.status_code, response.text[:300])
    location = response.headers["Location"]
    assert location.startswith(redirect + "?"), location
    return location


def params(location):
    return dict(urllib.parse.parse_qsl(urllib.parse.urlparse(location).query))


discovery = requests.get(BASE + "/.well-known/openid-configuration").json()
assert discovery["issuer"] == BASE, discovery
assert discovery["authorization_response_iss_parameter_supported"] is True
assert discovery["code_challenge_methods_supported"] == ["S256"]
jwks = jwt.PyJWKClient(discovery["jwks_uri"])


def verify_id_token(id_token, client_id, nonce=None, access_token=None):
    key = jwks.get_signing_key_from_jwt(id_token)
    # The server's clock is the test's: PyJWT allows for how far it is off.
    skew = abs(int(ask("now")) / 1000 - time.time()) + 5
    claims = jwt.decode(id_token, key.key, algorithms=["RS256"], audience=client_id,
                        issuer=discovery["issuer"], leeway=skew,
                        options={"require": ["exp", "iat", "sub", "iss", "aud", "auth_time"]})
    assert jwt.get_unverified_header(id_token)["alg"] == "RS256"
    if nonce is not None:
        assert claims["nonce"] == nonce, claims
    if access_token is not None:
        digest = hashlib.sha256(access_token.encode()).digest()
        want = base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode()
        assert claims["at_hash"] == want, (claims, want)
    assert claims["amr"] == ["pwd"], claims
    assert claims["sid"], claims
    return claims


# 1. A confidential client (client_secret_basic), the first time: sign-in,
#    consent, code, tokens; the id_token verified from the JWKS alone.
browser = requests.Session()
app = OAuth2Session(APP["id"], APP["secret"], scope=SCOPE, redirect_uri=APP["redirect"])
nonce = secrets.token_urlsafe(16)
uri, state = app.create_authorization_url(discovery["authorization_endpoint"], nonce=nonce)
first = browser.get(uri, allow_redirects=False)
assert first.status_code == 303 and "/ui/login?rd=" in first.headers["Location"], first.headers
page = follow(browser, first)
consent_page = sign_in(browser, page)
assert "app" in consent_page.text and "Read your groups" in consent_page.text, (consent_page.url, re.findall(r"role=\"alert\">([^<]*)", consent_page.text))
location = callback(consent(browser, consent_page), APP["redirect"])
got = params(location)
assert got["state"] == state and got["iss"] == BASE, got
token = app.fetch_token(discovery["token_endpoint"], authorization_response=location)
assert token["token_type"].lower() == "bearer" and token["refresh_token"], token
assert set(token["scope"].split()) == set(SCOPE.split()), token
claims = verify_id_token(token["id_token"], APP["id"], nonce, token["access_token"])
assert claims["email"] == EMAIL and claims["email_verified"] is False, claims
assert claims["preferred_username"] == EMAIL and claims["groups"] == [], claims
info = app.get(discovery["userinfo_endpoint"]).json()
assert info["sub"] == claims["sub"] and info["email"] == EMAIL, info
log("confidential client: signed in, consented, verified")

# The grant is a session of kind oidc; its access token serves userinfo, not the API.
api = requests.post(BASE + "/auth/login", json={"email": EMAIL, "password": PASSWORD}).json()
bearer = {"Authorization": f"Bearer {api['access_token']}"}
listed = requests.get(BASE + "/auth/sessions", headers=bearer).json()["sessions"]
grants = [s for s in listed if s["kind"] == "oidc"]
assert [g["client_id"] for g in grants] == ["app"], listed
assert grants[0]["id"] == claims["sid"], (grants, claims)
me = requests.get(BASE + "/auth/me", headers={"Authorization": f"Bearer {token['access_token']}"})
assert me.status_code == 401, me.status_code

# Refresh rotates; the retired token again is theft and ends the grant.
old_refresh = token["refresh_token"]
token = app.refresh_token(discovery["token_endpoint"], refresh_token=old_refresh)
assert token["refresh_token"] != old_refresh
verify_id_token(token["id_token"], APP["id"], access_token=token["access_token"])
assert app.get(discovery["userinfo_endpoint"]).status_code == 200
reuse = requests.post(discovery["token_endpoint"], auth=(APP["id"], APP["secret"]),
                      data={"grant_type": "refresh_token", "refresh_token": old_refresh})
assert reuse.status_code == 400 and reuse.json()["error"] == "invalid_grant", reuse.text
assert app.get(discovery["userinfo_endpoint"]).status_code == 401, "a reused refresh token left the grant alive"
log("refresh rotates; reuse revokes")

# 2. Consent is asked once: a second authorization goes straight back with a code.
uri, state = app.create_authorization_url(discovery["authorization_endpoint"], nonce="n2")
back = callback(follow(browser, browser.get(uri, allow_redirects=False)), APP["redirect"])
code = params(back)["code"]
exchange = {"grant_type": "authorization_code", "code": code, "redirect_uri": APP["redirect"]}
ok = requests.post(discovery["token_endpoint"], auth=(APP["id"], APP["secret"]), data=exchange)
assert ok.status_code == 200, ok.text
assert ok.headers["Cache-Control"] == "no-store"
second = ok.json()
# A reused code is refused and revokes what it issued.
again = requests.post(discovery["token_endpoint"], auth=(APP["id"], APP["secret"]), data=exchange)
assert again.status_code == 400 and again.json()["error"] == "invalid_grant", again.text
info = requests.get(discovery["userinfo_endpoint"], headers={"Authorization": f"Bearer {second['access_token']}"})
assert info.status_code == 401, "a reused code left its tokens alive"
log("consent once; a reused code revokes its grant")

# A wrong redirect_uri at the token endpoint; an expired code.
uri, _ = app.create_authorization_url(discovery["authorization_endpoint"])
code = params(callback(follow(browser, browser.get(uri, allow_redirects=False)), APP["redirect"]))["code"]
wrong = requests.post(discovery["token_endpoint"], auth=(APP["id"], APP["secret"]),
                      data={"grant_type": "authorization_code", "code": code, "redirect_uri": "http://app.example/other"})
assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant", wrong.text
uri, _ = app.create_authorization_url(discovery["authorization_endpoint"])
code = params(callback(follow(browser, browser.get(uri, allow_redirects=False)), APP["redirect"]))["code"]
ask("advance 61")
late = requests.post(discovery["token_endpoint"], auth=(APP["id"], APP["secret"]),
                     data={"grant_type": "authorization_code", "code": code, "redirect_uri": APP["redirect"]})
assert late.status_code == 400 and "expired" in late.json()["error_description"], late.text
log("wrong redirect_uri and expired code refused")

# 3. A public client with PKCE (authlib makes the verifier and challenge).
spa = OAuth2Session(SPA["id"], scope="openid email", redirect_uri=SPA["redirect"],
                    code_challenge_method="S256", token_endpoint_auth_method="none")
verifier = secrets.token_urlsafe(48)
uri, state = spa.create_authorization_url(discovery["authorization_endpoint"], code_verifier=verifier, nonce="spa-n")
location = callback(follow(browser, browser.get(uri, allow_redirects=False)), SPA["redirect"])
spa_token = spa.fetch_token(discovery["token_endpoint"], authorization_response=location, code_verifier=verifier)
spa_claims = verify_id_token(spa_token["id_token"], SPA["id"], "spa-n", spa_token["access_token"])
assert "groups" not in spa_claims and "name" not in spa_claims, spa_claims
assert "refresh_token" not in spa_token, "no offline_access, no refresh token"
# The wrong verifier; no challenge at all.
uri, _ = spa.create_authorization_url(discovery["authorization_endpoint"], code_verifier=verifier)
code = params(callback(follow(browser, browser.get(uri, allow_redirects=False)), SPA["redirect"]))["code"]
bad = requests.post(discovery["token_endpoint"], data={
    "grant_type": "authorization_code", "code": code, "redirect_uri": SPA["redirect"],
    "client_id": SPA["id"], "code_verifier": secrets.token_urlsafe(48)})
assert bad.status_code == 400 and bad.json()["error"] == "invalid_grant", bad.text
plain = browser.get(discovery["authorization_endpoint"], params={
    "response_type": "code", "client_id": SPA["id"], "redirect_uri": SPA["redirect"], "scope": "openid",
    "state": "s1"}, allow_redirects=False)
got = params(callback(plain, SPA["redirect"]))
assert got["error"] == "invalid_request" and got["state"] == "s1" and got["iss"] == BASE, got
log("public client with PKCE; wrong verifier and missing challenge refused")

# 4. client_secret_post, and a client that gets refresh tokens without offline_access.
posty = OAuth2Session(POSTY["id"], POSTY["secret"], scope="openid", redirect_uri=POSTY["redirect"],
                      token_endpoint_auth_method="client_secret_post")
uri, _ = posty.create_authorization_url(discovery["authorization_endpoint"])
location = callback(follow(browser, browser.get(uri, allow_redirects=False)), POSTY["redirect"])
posty_token = posty.fetch_token(discovery["token_endpoint"], authorization_response=location)
assert posty_token["refresh_token"], posty_token
basic = requests.post(discovery["token_endpoint"], auth=(POSTY["id"], POSTY["secret"]),
                      data={"grant_type": "refresh_token", "refresh_token": posty_token["refresh_token"]})
assert basic.status_code == 401 and basic.json()["error"] == "invalid_client", basic.text
# Introspection and revocation (RFC 7662, RFC 7009).
seen = requests.post(discovery["introspection_endpoint"], data={
    "token": posty_token["access_token"], "client_id": POSTY["id"], "client_secret": POSTY["secret"]}).json()
assert seen["active"] is True and seen["client_id"] == "posty" and "username" not in seen, seen
other = requests.post(discovery["introspection_endpoint"], auth=(APP["id"], APP["secret"]),
                      data={"token": posty_token["access_token"]}).json()
assert other == {"active": False}, other
gone = requests.post(discovery["revocation_endpoint"], data={
    "token": posty_token["refresh_token"], "client_id": POSTY["id"], "client_secret": POSTY["secret"]})
assert gone.status_code == 200, gone.text
seen = requests.post(discovery["introspection_endpoint"], data={
    "token": posty_token["access_token"], "client_id": POSTY["id"], "client_secret": POSTY["secret"]}).json()
assert seen == {"active": False}, seen
log("client_secret_post, introspection, revocation")

# 5. Errors that never redirect, and errors that do.
for query, what in [
    ({"client_id": "nobody", "redirect_uri": APP["redirect"]}, "unknown client"),
    ({"client_id": APP["id"], "redirect_uri": "http://evil.example/cb"}, "unregistered redirect"),
]:
    r = browser.get(discovery["authorization_endpoint"], params={"response_type": "code", "scope": "openid", **query},
                    allow_redirects=False)
    assert r.status_code == 400 and "Location" not in r.headers, (what, r.status_code, r.headers)
    assert "text/html" in r.headers["Content-Type"], what
stranger = requests.Session()
r = stranger.get(discovery["authorization_endpoint"], params={
    "response_type": "code", "client_id": APP["id"], "redirect_uri": APP["redirect"], "scope": "openid",
    "prompt": "none", "state": "quiet"}, allow_redirects=False)
got = params(callback(r, APP["redirect"]))
assert got == {"error": "login_required", "error_description": got["error_description"], "state": "quiet", "iss": BASE}, got
r = browser.get(discovery["authorization_endpoint"], params={
    "response_type": "code", "client_id": APP["id"], "redirect_uri": APP["redirect"], "scope": "openid",
    "prompt": "consent", "state": "d"}, allow_redirects=False)
denied = params(callback(consent(browser, follow(browser, r), "deny"), APP["redirect"]))
assert denied["error"] == "access_denied" and denied["state"] == "d", denied
r = browser.get(discovery["authorization_endpoint"], params={
    "response_type": "token", "client_id": APP["id"], "redirect_uri": APP["redirect"], "scope": "openid"},
    allow_redirects=False)
assert params(callback(r, APP["redirect"]))["error"] == "unsupported_response_type"
log("authorization errors")

# 6. prompt=login asks for the password again, then comes back.
uri, _ = app.create_authorization_url(discovery["authorization_endpoint"], prompt="login")
r = follow(browser, browser.get(uri, allow_redirects=False))
assert r.status_code == 200 and "Sign in" in r.text, "prompt=login did not ask again"
callback(sign_in(browser, r), APP["redirect"])
# A link cannot skip it with a login_after of its own (ours are signed).
for forged in ["0", "0.AAAAAAAAAAAAAAAAAAAAAA", str(10 ** 15)]:
    uri, _ = app.create_authorization_url(discovery["authorization_endpoint"], prompt="login",
                                          login_after=forged)
    r = follow(browser, browser.get(uri, allow_redirects=False))
    assert r.status_code == 200 and "Sign in" in r.text, f"login_after={forged} skipped prompt=login"
log("prompt=login")

# 7. Logout-all ends every grant.
uri, _ = app.create_authorization_url(discovery["authorization_endpoint"])
location = callback(follow(browser, browser.get(uri, allow_redirects=False)), APP["redirect"])
live = app.fetch_token(discovery["token_endpoint"], authorization_response=location)
assert app.get(discovery["userinfo_endpoint"]).status_code == 200
assert requests.post(BASE + "/auth/logout-all", headers=bearer).status_code == 204
assert app.get(discovery["userinfo_endpoint"]).status_code == 401, "a grant outlived logout-all"
after = requests.post(discovery["token_endpoint"], auth=(APP["id"], APP["secret"]),
                      data={"grant_type": "refresh_token", "refresh_token": live["refresh_token"]})
assert after.status_code == 400 and after.json()["error"] == "invalid_grant", after.text
log("logout-all")

# 8. RP-initiated logout with an id_token hint.
browser = requests.Session()
uri, _ = app.create_authorization_url(discovery["authorization_endpoint"])
location = callback(sign_in(browser, follow(browser, browser.get(uri, allow_redirects=False))), APP["redirect"])
hint = app.fetch_token(discovery["token_endpoint"], authorization_response=location)["id_token"]
r = browser.get(discovery["end_session_endpoint"], params={
    "id_token_hint": hint, "post_logout_redirect_uri": "http://app.example/bye", "state": "later"},
    allow_redirects=False)
assert r.status_code == 303 and r.headers["Location"] == "http://app.example/bye?state=later", r.headers
assert browser.get(BASE + "/ui/account", allow_redirects=False).status_code == 303, "still signed in"
log("logout")

# 10. The checks of the OpenID Foundation's conformance suite (Basic OP and
#     Config OP plans) that run without it, each named by its test module.
# oidcc-discovery-endpoint-verification, oidcc-discovery-issuer-not-matching-config
for field in ["issuer", "authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks_uri",
              "response_types_supported", "subject_types_supported", "id_token_signing_alg_values_supported",
              "scopes_supported", "claims_supported", "grant_types_supported",
              "token_endpoint_auth_methods_supported"]:
    assert field in discovery, field
assert discovery["issuer"] == BASE and "openid" in discovery["scopes_supported"], discovery
assert "code" in discovery["response_types_supported"] and "RS256" in discovery["id_token_signing_alg_values_supported"]
for url in [discovery[k] for k in ("authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks_uri")]:
    assert url.startswith(BASE + "/"), url
keys = requests.get(discovery["jwks_uri"]).json()["keys"]
assert len({k["kid"] for k in keys}) == len(keys), keys
assert all(k["use"] == "sig" and "d" not in k and "p" not in k for k in keys), keys
rsa = [k for k in keys if k["kty"] == "RSA"]
assert rsa and all(len(base64.urlsafe_b64decode(k["n"] + "==")) * 8 >= 2048 for k in rsa), rsa
browser = requests.Session()


def authorize(extra, client=APP, session=None):
    """An authorization request of `client` with `extra` parameters; the answer
    once it leaves the server, and the query it went back with."""
    query = {"response_type": "code", "client_id": client["id"], "redirect_uri": client["redirect"],
             "scope": "openid email", "state": "st", **extra}
    query = {k: v for k, v in query.items() if v is not None}
    answer = follow(session or browser, (session or browser).get(
        discovery["authorization_endpoint"], params=query, allow_redirects=False))
    return answer


def exchange(location, client=APP):
    r = requests.post(discovery["token_endpoint"], auth=(client["id"], client["secret"]), data={
        "grant_type": "authorization_code", "code": params(location)["code"], "redirect_uri": client["redirect"]})
    assert r.status_code == 200, r.text
    return r.json()


# oidcc-server, oidcc-ensure-request-without-nonce-succeeds-for-code-flow
location = callback(sign_in(browser, authorize({})), APP["redirect"])
plain = exchange(location)
assert "nonce" not in verify_id_token(plain["id_token"], APP["id"]), "a nonce nobody sent"
# oidcc-userinfo-get, oidcc-userinfo-post-header, oidcc-userinfo-post-body
header = {"Authorization": f"Bearer {plain['access_token']}"}
for r in [requests.get(discovery["userinfo_endpoint"], headers=header),
          requests.post(discovery["userinfo_endpoint"], headers=header),
          requests.post(discovery["userinfo_endpoint"], data={"access_token": plain["access_token"]})]:
    assert r.status_code == 200 and r.json()["email"] == EMAIL, (r.status_code, r.text)
# oidcc-scope-profile, oidcc-scope-email, oidcc-scope-all, oidcc-ensure-other-scope-order-succeeds
for scope, want in [("openid profile", {"name"}), ("email openid", {"email", "email_verified"}),
                    ("openid profile email groups", {"name", "email", "groups"})]:
    got = exchange(callback(authorize({"scope": scope}), APP["redirect"]))
    info = requests.get(discovery["userinfo_endpoint"],
                        headers={"Authorization": f"Bearer {got['access_token']}"}).json()
    assert want <= set(info), (scope, info)
# oidcc-display-page, oidcc-display-popup, oidcc-ui-locales, oidcc-claims-locales,
# oidcc-login-hint, oidcc-ensure-request-with-acr-values-succeeds,
# oidcc-ensure-request-with-unknown-parameter-succeeds, oidcc-claims-essential,
# oidcc-prompt-none-logged-in, oidcc-id-token-hint
for extra in [{"display": "page"}, {"display": "popup"}, {"ui_locales": "se"}, {"claims_locales": "se"},
              {"login_hint": EMAIL}, {"acr_values": "1 2"}, {"extra": "foobar"},
              {"claims": '{"userinfo": {"name": {"essential": true}}}'},
              {"prompt": "none"}, {"prompt": "none", "id_token_hint": plain["id_token"]}]:
    got = params(callback(authorize(extra), APP["redirect"]))
    assert "code" in got and got["state"] == "st", (extra, got)
# oidcc-response-type-missing
got = params(callback(authorize({"response_type": None}), APP["redirect"]))
assert got["error"] == "invalid_request" and got["state"] == "st", got
# oidcc-unsigned-request-object-supported-correctly-or-rejected-as-unsupported
got = params(callback(authorize({"request": "eyJhbGciOiJub25lIn0.eyJzdGF0ZSI6Im8ifQ."}), APP["redirect"]))
assert got["error"] == "request_not_supported", got
# oidcc-max-age-10000: a recent sign-in stands; oidcc-max-age-1: an older one is asked again,
# and the new id_token's auth_time is the new sign-in's.
first_auth = verify_id_token(plain["id_token"], APP["id"])["auth_time"]
assert "code" in params(callback(authorize({"max_age": "10000"}), APP["redirect"]))
ask("advance 2")
again = authorize({"max_age": "1"})
assert again.status_code == 200 and "Sign in" in again.text, "max_age=1 did not ask again"
fresh = exchange(callback(sign_in(browser, again), APP["redirect"]))
assert verify_id_token(fresh["id_token"], APP["id"])["auth_time"] >= first_auth + 2, "auth_time not renewed"
# oidcc-codereuse-30seconds: a code used, then again 30 s later, revokes its tokens.
location = callback(authorize({}), APP["redirect"])
used = exchange(location)
ask("advance 30")
r = requests.post(discovery["token_endpoint"], auth=(APP["id"], APP["secret"]), data={
    "grant_type": "authorization_code", "code": params(location)["code"], "redirect_uri": APP["redirect"]})
assert r.status_code == 400 and r.json()["error"] == "invalid_grant", r.text
assert requests.get(discovery["userinfo_endpoint"],
                    headers={"Authorization": f"Bearer {used['access_token']}"}).status_code == 401
log("conformance checks")

# A client that asked for EdDSA id_tokens gets them, verifiable from the JWKS.
eddy = exchange(callback(authorize({"nonce": "ed"}, client=EDDY), EDDY["redirect"]), client=EDDY)
assert jwt.get_unverified_header(eddy["id_token"])["alg"] == "EdDSA", eddy["id_token"]
key = jwks.get_signing_key_from_jwt(eddy["id_token"])
skew = abs(int(ask("now")) / 1000 - time.time()) + 5
claims = jwt.decode(eddy["id_token"], key.key, algorithms=["EdDSA"], audience=EDDY["id"],
                    issuer=BASE, leeway=skew)
assert claims["nonce"] == "ed" and claims["email"] == EMAIL, claims
log("EdDSA id_tokens")

# Bad codes from a client that authenticated do not count against its
# address: nobody can lock a client out by feeding it codes to exchange.
for _ in range(25):
    r = requests.post(discovery["token_endpoint"], auth=(APP["id"], APP["secret"]), data={
        "grant_type": "authorization_code", "code": "made-up", "redirect_uri": APP["redirect"]})
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant", (r.status_code, r.text)
# A grant without the email scope: neither its access token nor
# introspection tells the client the address.
got = exchange(callback(authorize({"scope": "openid"}), APP["redirect"]))
payload = jwt.decode(got["access_token"], options={"verify_signature": False})
assert payload["email"] == "" and payload["roles"] == [], payload
seen = requests.post(discovery["introspection_endpoint"], auth=(APP["id"], APP["secret"]),
                     data={"token": got["access_token"]}).json()
assert seen["active"] is True and "username" not in seen, seen
log("authenticated clients are not limited by bad codes; scopes bound the access token")

# RP-initiated logout with an EdDSA id_token as the hint.
r = browser.get(discovery["end_session_endpoint"], params={
    "id_token_hint": eddy["id_token"], "post_logout_redirect_uri": "http://eddy.example/bye", "state": "e"},
    allow_redirects=False)
assert r.status_code == 303 and r.headers["Location"] == "http://eddy.example/bye?state=e", (r.status_code, r.headers)
assert browser.get(BASE + "/ui/account", allow_redirects=False).status_code == 303, "still signed in"
log("logout with an EdDSA hint")

# 9. A wrong client secret is refused, and rate limited under client_auth_ip.
statuses = []
for _ in range(25):
    r = requests.post(discovery["token_endpoint"], auth=(APP["id"], "wrong-secret-0123456789"),
                      data={"grant_type": "refresh_token", "refresh_token": "x"})
    statuses.append(r.status_code)
    if r.status_code == 429:
        assert r.json()["error"] == "too_many_requests" and int(r.headers["Retry-After"]) > 0, r.text
        break
assert statuses[0] == 401 and statuses[-1] == 429, statuses
assert set(statuses[:-1]) == {401}, statuses
log("wrong client secret:", len(statuses) - 1, "refusals, then 429")

# 11. An id_token older than any grant lives (refresh_ttl, 30 days) is no
#     longer a logout hint: it signs nobody out and sends nobody anywhere.
ask(f"advance {31 * 86400}")
browser = requests.Session()
callback(sign_in(browser, authorize({})), APP["redirect"])
r = browser.get(discovery["end_session_endpoint"], params={
    "id_token_hint": hint, "post_logout_redirect_uri": "http://app.example/bye", "state": "old"},
    allow_redirects=False)
assert "Location" not in r.headers or "app.example" not in r.headers["Location"], r.headers
assert browser.get(BASE + "/ui/account", allow_redirects=False).status_code == 200, "signed out by an old hint"
log("an old hint signs nobody out")
print("done", flush=True)
