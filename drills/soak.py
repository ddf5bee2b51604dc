#!/usr/bin/env python3
"""Soak run: mixed traffic against the release binary for a while, then a verdict.

    python3 drills/soak.py [--minutes 10] [--binary target/release/portcullis]

Traffic, from many client addresses (the server trusts 127.0.0.1 as a proxy
and each request names its client in X-Forwarded-For):
  * users: log in, refresh three times, read /auth/me, sometimes log out;
  * attackers: wrong passwords from a pool of 500 addresses (401, then 429);
  * resets: password-reset requests for real and unknown accounts;
  * readers: /auth/me with a live token.
Passwords use the default argon2id parameters. The server's RSS is sampled
every 5 s. Fails (exit 1) on any 5xx or transport error, or if RSS after the
warm-up (the first third) grows by more than 15 %.
"""
import argparse
import http.client
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PASSWORD = "correct horse battery staple"


def start(binary, data_dir):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PORTCULLIS_")}
    env["PORTCULLIS_SERVER__TRUSTED_PROXIES"] = '["127.0.0.1/32"]'
    env["RUST_LOG"] = "warn,portcullis=warn"
    proc = subprocess.Popen(
        [binary, "--bind", "127.0.0.1:0", "--data-dir", data_dir, "--log-format", "json"],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env | {"RUST_LOG": "info"},
        text=True)
    for line in proc.stderr:
        m = re.search(r'"address":"([^"]+)"', line)
        if m:
            threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
            host, port = m.group(1).rsplit(":", 1)
            return proc, host, int(port)
    raise SystemExit("the server did not start")


class Client:
    def __init__(self, host, port, stats, lock):
        self.host, self.port, self.stats, self.lock = host, port, stats, lock
        self.conn = http.client.HTTPConnection(host, port, timeout=30)

    def call(self, method, path, body=None, token=None, ip="203.0.113.1"):
        headers = {"X-Forwarded-For": ip}
        data = None
        if body is not None:
            data = json.dumps(body)
            headers["Content-Type"] = "application/json"
        if token:
            headers["Authorization"] = f"Bearer {token}"
        route = path.split("?")[0]
        for attempt in range(2):
            try:
                self.conn.request(method, path, body=data, headers=headers)
                res = self.conn.getresponse()
                raw = res.read()
                break
            except (http.client.HTTPException, ConnectionError, OSError) as e:
                self.conn.close()
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
                if attempt == 1:
                    with self.lock:
                        self.stats[(route, f"error:{type(e).__name__}")] += 1
                    return 0, None
        with self.lock:
            self.stats[(route, res.status)] += 1
        try:
            return res.status, json.loads(raw) if raw else None
        except ValueError:
            return res.status, None


def user(c, n, deadline, rng):
    email = f"soak-user{n}@example.com"
    ip = f"198.18.0.{n + 1}"
    c.call("POST", "/auth/register", {"email": email, "password": PASSWORD}, ip=ip)
    while time.time() < deadline:
        status, pair = c.call("POST", "/auth/login", {"email": email, "password": PASSWORD}, ip=ip)
        if status != 200:
            continue
        for _ in range(3):
            status, fresh = c.call("POST", "/auth/refresh", {"refresh_token": pair["refresh_token"]}, ip=ip)
            if status == 200:
                pair = fresh
        c.call("GET", "/auth/me", token=pair["access_token"], ip=ip)
        if rng.random() < 0.5:
            c.call("POST", "/auth/logout", token=pair["access_token"], ip=ip)


def attacker(c, n, deadline, rng):
    while time.time() < deadline:
        a = rng.randrange(500)
        ip = f"198.19.{a // 250}.{a % 250 + 1}"
        c.call("POST", "/auth/login", {"email": f"victim{rng.randrange(100)}@example.com",
                                         "password": "guess guess guess"}, ip=ip)


def resets(c, n, deadline, rng):
    while time.time() < deadline:
        a = rng.randrange(2000)
        ip = f"198.20.{a // 250}.{a % 250 + 1}"
        email = f"soak-user{rng.randrange(3)}@example.com" if rng.random() < 0.3 else f"ghost{a}@example.com"
        c.call("POST", "/auth/password-reset/request", {"email": email}, ip=ip)
        time.sleep(0.05)  # pacing of this client, not a synchronisation


def reader(c, n, deadline, rng):
    email = f"soak-reader{n}@example.com"
    ip = f"198.18.1.{n + 1}"
    c.call("POST", "/auth/register", {"email": email, "password": PASSWORD}, ip=ip)
    _, pair = c.call("POST", "/auth/login", {"email": email, "password": PASSWORD}, ip=ip)
    token = pair["access_token"]
    while time.time() < deadline:
        status, _ = c.call("GET", "/auth/me", token=token, ip=ip)
        if status == 401:
            _, pair = c.call("POST", "/auth/login", {"email": email, "password": PASSWORD}, ip=ip)
            token = pair["access_token"]


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=10)
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")
    ap.add_argument("--binary", default=os.path.join(target, "release", "portcullis"))
    ap.add_argument("--no-build", action="store_true")
    args = ap.parse_args()
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    data_dir = tempfile.mkdtemp(prefix="portcullis-soak-")
    proc, host, port = start(args.binary, data_dir)
    stats, lock = Counter(), threading.Lock()
    deadline = time.time() + args.minutes * 60
    roles = [(user, 3), (attacker, 2), (resets, 1), (reader, 2)]
    threads = []
    for role, count in roles:
        for n in range(count):
            rng = random.Random(hash((role.__name__, n)))
            t = threading.Thread(target=role, args=(Client(host, port, stats, lock), n, deadline, rng), daemon=True)
            t.start()
            threads.append(t)
    samples = []
    started = time.time()
    while time.time() < deadline:
        samples.append((time.time() - started, rss_kib(proc.pid)))
        time.sleep(5)  # the sampling period
    for t in threads:
        t.join(timeout=60)
    samples.append((time.time() - started, rss_kib(proc.pid)))
    proc.terminate()
    code = proc.wait(timeout=60)

    total = sum(stats.values())
    bad = {k: v for k, v in stats.items() if not isinstance(k[1], int) or k[1] >= 500}
    warm = [kib for t, kib in samples if t >= args.minutes * 60 / 3]
    growth = (warm[-1] - warm[0]) / warm[0] if warm and warm[0] else 0.0
    print(f"soak: {args.minutes:g} min, {total} requests ({total / (samples[-1][0] or 1):.0f}/s), exit code {code}")
    for (route, status), n in sorted(stats.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
        print(f"  {route:32} {status!s:>14} {n:>9}")
    print("  RSS MiB at " + ", ".join(f"{t / 60:.1f} min: {kib / 1024:.1f}" for t, kib in samples[:: max(1, len(samples) // 10)]))
    print(f"  RSS after warm-up {warm[0] / 1024:.1f} MiB -> end {warm[-1] / 1024:.1f} MiB ({growth * 100:+.1f} %)")
    print(f"  5xx or transport errors: {sum(bad.values())}")
    failed = bool(bad) or growth > 0.15 or code != 0
    print("soak: FAILED" if failed else "soak: ok")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
