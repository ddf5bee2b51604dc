"""Verifies a portcullis access token with PyJWT, using only the JWKS URL.

usage: verify_jwks.py JWKS_URL TOKEN ISSUER AUDIENCE
Prints the verified claims as JSON; exits non-zero if verification fails.
"""
import json
import sys

import jwt

jwks_url, token, issuer, audience = sys.argv[1:5]
client = jwt.PyJWKClient(jwks_url)
key = client.get_signing_key_from_jwt(token)
claims = jwt.decode(
    token,
    key.key,
    algorithms=["EdDSA"],
    audience=audience,
    issuer=issuer,
    options={"require": ["exp", "iat", "nbf", "sub", "iss", "aud"]},
)
print(json.dumps(claims))
