"""Logs in and refreshes at /auth/token with a stock Python OAuth 2 client.

    python3 oauth_clients.py authlib|requests-oauthlib BASE_URL EMAIL PASSWORD

Prints one JSON object: what /auth/me answered with the first and with the
refreshed access token, and whether the refresh token rotated. Any error of
the library (a refused content type, an unparsable answer) is a traceback and
a non-zero exit.
"""

import json
import os
import sys

library, base, email, password = sys.argv[1:5]
token_url = base + "/auth/token"


def with_authlib():
    from authlib.integrations.requests_client import OAuth2Session

    client = OAuth2Session(client_id="portcullis-tests")
    first = client.fetch_token(token_url, username=email, password=password,
                               grant_type="password")
    me_first = client.get(base + "/auth/me").json()
    second = client.refresh_token(token_url, refresh_token=first["refresh_token"])
    me_second = client.get(base + "/auth/me").json()
    return first, second, me_first, me_second


def with_requests_oauthlib():
    # oauthlib refuses plain http unless told this is a test.
    os.environ["OAUTHLIB_INSECURE_TRANSPORT"] = "1"
    from oauthlib.oauth2 import LegacyApplicationClient
    from requests_oauthlib import OAuth2Session

    client = OAuth2Session(client=LegacyApplicationClient(client_id="portcullis-tests"))
    first = client.fetch_token(token_url=token_url, username=email, password=password,
                               include_client_id=True)
    me_first = client.get(base + "/auth/me").json()
    second = client.refresh_token(token_url, refresh_token=first["refresh_token"],
                                  client_id="portcullis-tests")
    me_second = client.get(base + "/auth/me").json()
    return first, second, me_first, me_second


first, second, me_first, me_second = {
    "authlib": with_authlib,
    "requests-oauthlib": with_requests_oauthlib,
}[library]()
print(json.dumps({
    "me_first": me_first,
    "me_second": me_second,
    "token_type": first["token_type"],
    "expires_in": first["expires_in"],
    "rotated": first["refresh_token"] != second["refresh_token"],
    "new_access": first["access_token"] != second["access_token"],
}))
