"""Signs ci@example.com in to a portcullis started by the README's CI recipe
and checks the id_token, as a test suite of an app would: authlib for the
client (PKCE), requests as the browser, PyJWT for the id_token, nothing known
in advance but the issuer.

    pip install authlib requests 'pyjwt[crypto]'
    python3 ci_sign_in.py ISSUER EMAIL PASSWORD
"""

import html
import re
import sys
import urllib.parse

import jwt
import requests
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session

ISSUER, EMAIL, PASSWORD = sys.argv[1:4]
CLIENT_ID, CLIENT_SECRET = "app", "ci-secret-0123456789"
REDIRECT_URI = "http://127.0.0.1:3000/callback"

discovery = requests.get(f"{ISSUER}/.well-known/openid-configuration", timeout=10).json()
client = OAuth2Session(CLIENT_ID, CLIENT_SECRET, scope="openid email profile groups",
                       redirect_uri=REDIRECT_URI, code_challenge_method="S256")
verifier = generate_token(48)
nonce = generate_token(16)
url, state = client.create_authorization_url(discovery["authorization_endpoint"],
                                             code_verifier=verifier, nonce=nonce)

# The browser: portcullis sends it to the login page, then back to the app.
browser = requests.Session()
login = browser.get(url, timeout=10)
form = {name: html.unescape(value) for name, value in
        re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', login.text)}
answer = browser.post(login.url.split("?")[0], data={**form, "email": EMAIL, "password": PASSWORD},
                      allow_redirects=False, timeout=10)
while answer.is_redirect and not answer.headers["Location"].startswith(REDIRECT_URI):
    answer = browser.get(urllib.parse.urljoin(answer.url, answer.headers["Location"]),
                         allow_redirects=False, timeout=10)
callback = answer.headers["Location"]

token = client.fetch_token(discovery["token_endpoint"], authorization_response=callback,
                           code_verifier=verifier)
key = jwt.PyJWKClient(discovery["jwks_uri"]).get_signing_key_from_jwt(token["id_token"])
claims = jwt.decode(token["id_token"], key.key, algorithms=["RS256"], audience=CLIENT_ID,
                    issuer=discovery["issuer"])
assert claims["nonce"] == nonce and claims["email"] == EMAIL, claims
print(f"signed in as {claims['email']} (sub {claims['sub']})")
