"""A passkey ceremony begun on one instance and finished on another:
`python3 passkey_across.py A B EMAIL PASSWORD`, with A and B two instances
of one database (their addresses, `http://127.0.0.1:PORT`). Adds a passkey
(start on A, finish on B), signs in with it (start on B, finish on A), and
checks that the challenge is spent for both: finishing it again on either
is refused. Prints the access token of that sign-in and one of the password
alone, for the caller's forward-auth checks."""

import sys

import requests

from soft_passkey import SoftAuthenticator


def main():
    a, b, email, password = sys.argv[1:5]
    port = a.rsplit(":", 1)[1]
    authenticator = SoftAuthenticator(f"http://localhost:{port}", "localhost")
    login = requests.post(f"{a}/auth/login", json={"email": email, "password": password})
    assert login.status_code == 200, login.text
    bearer = {"Authorization": f"Bearer {login.json()['access_token']}"}

    begun = requests.post(f"{a}/auth/passkeys/register/start", headers=bearer)
    assert begun.status_code == 200, begun.text
    body = {
        "challenge_id": begun.json()["challenge_id"],
        "credential": authenticator.create(begun.json()["publicKey"]),
        "name": "across",
    }
    added = requests.post(f"{b}/auth/passkeys/register/finish", headers=bearer, json=body)
    assert added.status_code == 201, f"registration finished on B: {added.status_code} {added.text}"
    again = requests.post(f"{a}/auth/passkeys/register/finish", headers=bearer, json=body)
    assert again.status_code == 400, f"a spent registration on A: {again.status_code} {again.text}"
    print("- registration: begun on A, finished on B, spent for A", file=sys.stderr)

    begun = requests.post(f"{b}/auth/passkeys/login/start", json={})
    assert begun.status_code == 200, begun.text
    body = {
        "challenge_id": begun.json()["challenge_id"],
        "credential": authenticator.get(begun.json()["publicKey"]),
    }
    signed_in = requests.post(f"{a}/auth/passkeys/login/finish", json=body)
    assert signed_in.status_code == 200, f"sign-in finished on A: {signed_in.status_code} {signed_in.text}"
    assert "access_token" in signed_in.json(), signed_in.text
    for base in (a, b):
        replay = requests.post(f"{base}/auth/passkeys/login/finish", json=body)
        assert replay.status_code == 401, f"a spent sign-in on {base}: {replay.status_code} {replay.text}"
    print("- sign-in: begun on B, finished on A, spent for both", file=sys.stderr)
    print(f"passkey {signed_in.json()['access_token']}")
    print(f"password {login.json()['access_token']}")


if __name__ == "__main__":
    main()
