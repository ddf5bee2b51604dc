#!/usr/bin/env python3
"""The load harness: portcullis beside its ceilings, measured in one run.

    python3 benches/load.py [--duration 10] [--addresses 1000000] [--out BENCHMARKS.md]

Builds the release binary and two small programs under examples/ (`ceiling`:
a bare actix-web server answering a fixed 429 and a fixed 200; `argon_rate`:
argon2id on every core with nothing around it), starts portcullis on a fresh
data directory, drives it with wrk (Debian's package, installed when missing)
and writes the table between the result markers of BENCHMARKS.md. Every
throughput figure stands beside a baseline measured minutes apart on the same
machine, because absolute numbers on a shared machine mean little.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WRK_DIR = ROOT / "benches" / "wrk"
TARGET = Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target")
RELEASE = TARGET / "release"
PORTCULLIS = RELEASE / "portcullis"
CEILING = RELEASE / "examples" / "ceiling"
# The same server built with the `redis` feature, in a target directory of its own.
PORTCULLIS_REDIS = TARGET / "with-redis" / "release" / "portcullis"
ARGON_RATE = RELEASE / "examples" / "argon_rate"

EMAIL = "bench0@example.com"
USERS = 64
PASSWORD = "a long and unguessable benchmark passphrase"
MARK_START = "<!-- results:start -->"
MARK_END = "<!-- results:end -->"


def log(msg: str) -> None:
    print(f"[load] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def health_ok(port: int) -> bool:
    """One raw GET /health; True on a 200. Raw sockets keep polling cheap."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            return s.recv(16).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def start_until_healthy(argv: list[str], port: int, env: dict | None = None,
                        log_path: Path | None = None) -> tuple[subprocess.Popen, float]:
    """Starts a server and returns it with the seconds from spawn to the first 200."""
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL
    began = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=out, stderr=out, env=env)
    while not health_ok(port):
        if proc.poll() is not None:
            raise SystemExit(f"{argv[0]} exited with {proc.returncode}; see {log_path}")
        if time.perf_counter() - began > 30:
            proc.kill()
            raise SystemExit(f"{argv[0]} did not answer /health within 30 s")
        time.sleep(0.0005)
    return proc, time.perf_counter() - began


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    kib = int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1))
    return kib / 1024


@dataclass
class Portcullis:
    """A portcullis server on a data directory of its own."""

    data_dir: Path
    port: int
    config: Path
    proc: subprocess.Popen | None = None
    binary: Path = PORTCULLIS

    @classmethod
    def configure(cls, data_dir: Path, extra: str = "", binary: Path = PORTCULLIS) -> "Portcullis":
        port = free_port()
        config = data_dir.parent / f"{data_dir.name}.toml"
        config.write_text(
            f'[server]\nbind = "127.0.0.1:{port}"\ntrusted_proxies = ["127.0.0.1/32"]\n'
            f'[storage]\ndata_dir = "{data_dir}"\n{extra}'
        )
        return cls(data_dir, port, config, binary=binary)

    def start(self) -> float:
        self.proc, seconds = start_until_healthy(
            [str(self.binary), "--config", str(self.config), "serve"], self.port,
            log_path=self.data_dir.parent / f"{self.data_dir.name}.log")
        return seconds

    def stop(self) -> None:
        if self.proc:
            stop(self.proc)
            self.proc = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def call(self, method: str, path: str, body: dict | None = None,
             token: str | None = None, headers: dict | None = None) -> tuple[int, dict]:
        req = urllib.request.Request(self.url + path, method=method,
                                     data=json.dumps(body).encode() if body is not None else None)
        req.add_header("Content-Type", "application/json")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                text = r.read()
                return r.status, json.loads(text) if text else {}
        except urllib.error.HTTPError as e:
            text = e.read()
            return e.code, json.loads(text) if text else {}

    def metric(self, name: str, **labels: str) -> float:
        with urllib.request.urlopen(self.url + "/metrics", timeout=30) as r:
            text = r.read().decode()
        want = ",".join(f'{k}="{v}"' for k, v in labels.items())
        pattern = re.escape(name) + (r"\{" + re.escape(want) + r"\}" if want else "") + r" (\S+)"
        m = re.search(r"^" + pattern + r"$", text, re.M)
        return float(m.group(1)) if m else 0.0


# ---------------------------------------------------------------- wrk


@dataclass
class Load:
    requests: int
    seconds: float
    non_2xx: int
    socket_errors: int
    p50_ms: float
    p99_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


def ensure_wrk() -> None:
    if shutil.which("wrk"):
        return
    log("installing wrk from Debian's packages")
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    subprocess.run(sudo + ["apt-get", "install", "-y", "wrk"], check=True,
                   stdout=subprocess.DEVNULL)


def wrk_cmd(url: str, script: str, threads: int, conns: int, seconds: float) -> list[str]:
    return ["wrk", f"-t{threads}", f"-c{conns}", f"-d{max(1, round(seconds))}s", "--timeout", "10s",
            "-s", str(WRK_DIR / script), url]


def wrk_env(**extra: str) -> dict:
    env = dict(os.environ, WRK_DIR=str(WRK_DIR))
    env.update(extra)
    return env


def parse_wrk(output: str) -> Load:
    m = re.search(r"^RESULT (\{.*\})$", output, re.M)
    if not m:
        raise SystemExit(f"wrk printed no result:\n{output}")
    r = json.loads(m.group(1))
    return Load(r["requests"], r["duration_us"] / 1e6, r["non_2xx_3xx"], r["socket_errors"],
                r["p50_us"] / 1e3, r["p99_us"] / 1e3)


def wrk(url: str, seconds: float, conns: int = 64, threads: int = 2, method: str = "GET",
        body: dict | None = None, token: str = "", xff: str = "",
        headers: dict | None = None) -> Load:
    out = subprocess.run(
        wrk_cmd(url, "fixed.lua", threads, conns, seconds),
        env=wrk_env(WRK_METHOD=method, WRK_BODY=json.dumps(body) if body else "",
                    WRK_AUTH=token, WRK_XFF=xff,
                    WRK_HEADERS="\n".join(f"{k}: {v}" for k, v in (headers or {}).items())),
        check=True, capture_output=True, text=True).stdout
    return parse_wrk(out)


# ---------------------------------------------------------------- figures


@dataclass
class Row:
    figure: str
    ours: str
    baseline: str
    ratio: str
    target: str
    met: bool


def fmt_load(load: Load) -> str:
    return f"{load.rps:,.0f} req/s, p99 {load.p99_ms:.2f} ms"


@dataclass
class Paired:
    """Rounds that alternate baseline and portcullis, so that both see the same
    machine: the ratio is the median of each round's ratio."""

    ours: list[Load]
    base: list[Load]
    ours_cpu_us: list[float]
    base_cpu_us: list[float]

    def ratio(self) -> float:
        return statistics.median(o.rps / b.rps for o, b in zip(self.ours, self.base))

    @staticmethod
    def describe(loads: list[Load], cpu_us: list[float]) -> str:
        rps = statistics.median(l.rps for l in loads)
        p99 = statistics.median(l.p99_ms for l in loads)
        return f"{rps:,.0f} req/s, p99 {p99:.2f} ms, {statistics.median(cpu_us):.0f} µs CPU/req"


def paired(rounds: int, base_pid: int, base, ours_pid: int, ours) -> Paired:
    """Runs `base()` then `ours()` (each returning a Load) `rounds` times and
    measures each server's CPU time per request alongside."""
    result = Paired([], [], [], [])
    for _ in range(rounds):
        for pid, run, loads, cpu in ((base_pid, base, result.base, result.base_cpu_us),
                                     (ours_pid, ours, result.ours, result.ours_cpu_us)):
            before = cpu_seconds(pid)
            load = run()
            cpu.append((cpu_seconds(pid) - before) / max(load.requests, 1) * 1e6)
            loads.append(load)
    return result


def ratio_row(figure: str, p: Paired, need: float) -> Row:
    ratio = p.ratio()
    return Row(figure, Paired.describe(p.ours, p.ours_cpu_us), Paired.describe(p.base, p.base_cpu_us),
               f"{ratio:.2f} ×", f"≥ {need} ×", ratio >= need)


def build() -> None:
    log("building the release binary and the baseline programs")
    subprocess.run(["cargo", "build", "--release", "--bin", "portcullis",
                    "--example", "ceiling", "--example", "argon_rate"],
                   cwd=ROOT, check=True)
    if shutil.which("redis-server"):
        log("building the release binary with the redis feature")
        subprocess.run(["cargo", "build", "--release", "--bin", "portcullis", "--features", "redis",
                        "--target-dir", str(PORTCULLIS_REDIS.parent.parent)], cwd=ROOT, check=True)


def start_redis() -> tuple[subprocess.Popen, int]:
    """A throwaway redis-server on a free port, nothing saved."""
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--bind", "127.0.0.1", "--port", str(port),
                             "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
    began = time.perf_counter()
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, port
        except OSError:
            if proc.poll() is not None or time.perf_counter() - began > 10:
                raise SystemExit("redis-server did not start")
            time.sleep(0.01)


def blocked_with_redis(work: Path, memory: Portcullis, wrong: dict, blocker: dict,
                       rounds: int, d: float) -> Row | None:
    """Figure 1b: the blocked-login flood with windows in Redis, beside the same
    flood on the in-memory limiter, alternating."""
    if not (shutil.which("redis-server") and PORTCULLIS_REDIS.exists()):
        log("no redis-server or no redis build: figure 1b skipped")
        return None
    redis_proc, redis_port = start_redis()
    shared = Portcullis.configure(
        work / "shared", binary=PORTCULLIS_REDIS,
        extra=f'[rate_limit]\nstore = "redis"\nredis_url = "redis://127.0.0.1:{redis_port}"\n')
    try:
        shared.start()
        status, _ = shared.call("POST", "/auth/register", {"email": EMAIL, "password": PASSWORD},
                                headers={"X-Forwarded-For": "198.19.0.1"})
        assert status == 201, status
        for _ in range(5):
            shared.call("POST", "/auth/login", wrong, headers=blocker)
        status, _ = shared.call("POST", "/auth/login", wrong, headers=blocker)
        assert status == 429, status
        before = shared.metric("portcullis_http_requests_total", route="/auth/login", status="429")
        flood = lambda server: lambda: wrk(server.url + "/auth/login", d, method="POST",  # noqa: E731
                                           body=wrong, xff=blocker["X-Forwarded-For"])
        p = paired(rounds, memory.proc.pid, flood(memory), shared.proc.pid, flood(shared))
        got = shared.metric("portcullis_http_requests_total", route="/auth/login", status="429") - before
        sent = sum(l.requests for l in p.ours)
        if got < sent * 0.99:
            raise SystemExit(f"only {got:.0f} of {sent} blocked-login answers with Redis were 429")
        redis_cpu = cpu_seconds(redis_proc.pid)
        row = ratio_row("1b. blocked login (429), Redis limiter (baseline: in-memory limiter)", p, 0.25)
        row.ours += f"; redis-server {redis_cpu / max(sent, 1) * 1e6:.0f} µs CPU/req"
        return row
    finally:
        shared.stop()
        stop(redis_proc)


def startup_figures(work: Path, runs: int) -> tuple[list[float], list[float], list[float]]:
    """Seconds from spawn to the first 200 from /health: fresh, existing, ceiling."""
    fresh, existing, ceiling = [], [], []
    for i in range(runs):
        server = Portcullis.configure(work / f"start{i}")
        fresh.append(server.start())
        server.stop()
        existing.append(server.start())
        server.stop()
        port = free_port()
        proc, seconds = start_until_healthy([str(CEILING), f"127.0.0.1:{port}"], port)
        ceiling.append(seconds)
        stop(proc)
    return fresh, existing, ceiling


def logins(url: str, seconds: float, conns: int, threads: int = 2) -> subprocess.Popen:
    return subprocess.Popen(
        wrk_cmd(url + "/auth/login", "logins.lua", threads, conns, seconds),
        env=wrk_env(WRK_USERS=str(USERS), WRK_PASSWORD=PASSWORD),
        stdout=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen) -> Load:
    out, _ = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"wrk failed: {out}")
    return parse_wrk(out)


def login_flood_with_me(server: Portcullis, token: str, seconds: float) -> tuple[Load, Load, float]:
    """Logins with the right password on many connections (every hashing slot
    busy, a queue behind them) while a second client reads /auth/me."""
    flood = logins(server.url, seconds + 2, conns=48, threads=1)
    time.sleep(1)
    depth = server.metric("portcullis_hash_queue_depth")
    me = wrk(server.url + "/auth/me", seconds, conns=8, threads=1, token=token)
    return me, finish(flood), depth


def memory_figure(work: Path, addresses: int) -> tuple[float, float, float, int]:
    """RSS idle and after `addresses` distinct client addresses each made one
    failed login for an email of its own. Hashing is made cheap in this server
    only, so that a million logins take a minute rather than hours: the
    limiter's memory does not depend on the hash parameters."""
    server = Portcullis.configure(
        work / "memory",
        "[passwords]\nargon2_memory_kib = 8\nargon2_iterations = 1\nmax_queued_hashes = 4096\n")
    server.start()
    time.sleep(1)
    idle = rss_mib(server.proc.pid)
    threads = 2
    per_thread = addresses // threads + 1
    proc = subprocess.Popen(
        wrk_cmd(server.url, "addresses.lua", threads, 128, 3600),
        env=wrk_env(WRK_PER_THREAD=str(per_thread)), stdout=subprocess.PIPE, text=True)
    began = time.time()
    while server.metric("portcullis_http_requests_total", route="/auth/login", status="401") < addresses:
        if proc.poll() is not None:
            raise SystemExit("wrk ended before every address was sent")
        time.sleep(1)
    proc.send_signal(signal.SIGINT)
    proc.communicate()
    log(f"{addresses:,} addresses in {time.time() - began:.0f} s")
    time.sleep(2)
    loaded = rss_mib(server.proc.pid)
    keys = int(server.metric("portcullis_rate_limit_keys"))
    hwm = int(re.search(r"VmHWM:\s+(\d+) kB", Path(f"/proc/{server.proc.pid}/status").read_text()).group(1)) / 1024
    server.stop()
    return idle, loaded, hwm, keys


def reset_timing(work: Path, pairs: int) -> list[Row]:
    """Figure 8: `POST /auth/password-reset/request` for an existing account
    and for an unknown one, in a shuffled order on one keep-alive connection:
    median and p90 of each, set beside each other. The reset rules are off in
    this server so that every request does the whole work."""
    import http.client
    import random
    server = Portcullis.configure(
        work / "reset",
        "[rate_limit.rules.reset_request_ip]\nenabled = false\n"
        "[rate_limit.rules.reset_request_account]\nenabled = false\n")
    server.start()
    try:
        users = [f"reset{u}@example.com" for u in range(16)]
        for u, email in enumerate(users):
            status, _ = server.call("POST", "/auth/register", {"email": email, "password": PASSWORD},
                                    headers={"X-Forwarded-For": f"198.19.1.{u}"})
            assert status == 201, status
        order = ["known"] * pairs + ["unknown"] * pairs
        random.Random(7).shuffle(order)
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        times: dict[str, list[float]] = {"known": [], "unknown": []}
        for i, kind in enumerate(["known", "unknown"] * 20 + order):
            email = users[i % len(users)] if kind == "known" else f"nobody{i}@example.com"
            body = json.dumps({"email": email})
            began = time.perf_counter()
            conn.request("POST", "/auth/password-reset/request", body=body,
                         headers={"Content-Type": "application/json"})
            res = conn.getresponse()
            res.read()
            took = time.perf_counter() - began
            assert res.status == 202, res.status
            if i >= 40:  # after the warm-up
                times[kind].append(took * 1000)
        conn.close()
    finally:
        server.stop()
    q = lambda xs, p: statistics.quantiles(xs, n=100)[p - 1]  # noqa: E731
    med = {k: statistics.median(v) for k, v in times.items()}
    p90 = {k: q(v, 90) for k, v in times.items()}
    rows = []
    for label, got in (("median", med), ("p90", p90)):
        ratio = got["known"] / got["unknown"]
        rows.append(Row(f"8{'a' if label == 'median' else 'b'}. reset request, existing account vs unknown ({label}, {pairs} each, shuffled)",
                        f"{got['known']:.2f} ms", f"{got['unknown']:.2f} ms (unknown account)",
                        f"{ratio:.2f} ×", "0.8–1.25 ×", 0.8 <= ratio <= 1.25))
    return rows


def hash_flood_memory(work: Path, seconds: float, argon: dict) -> list[Row]:
    """Figure 9: wrong passwords for distinct unknown accounts from distinct
    addresses on 32 connections at the default argon2id parameters (19 MiB):
    resident memory at the end, and failed logins per second beside argon2id
    alone on the same cores (measured in this run)."""
    server = Portcullis.configure(work / "hashflood")
    server.start()
    try:
        time.sleep(1)
        idle = rss_mib(server.proc.pid)
        proc = subprocess.Popen(
            wrk_cmd(server.url, "addresses.lua", 2, 32, seconds),
            env=wrk_env(WRK_PER_THREAD=str(10_000_000)), stdout=subprocess.PIPE, text=True)
        flood = finish(proc)
        time.sleep(1)
        after = rss_mib(server.proc.pid)
        hwm = int(re.search(r"VmHWM:\s+(\d+) kB",
                            Path(f"/proc/{server.proc.pid}/status").read_text()).group(1)) / 1024
    finally:
        server.stop()
    ratio = flood.rps / argon["verifications_per_second"]
    return [
        Row(f"9a. resident memory after {seconds:.0f} s of wrong passwords (32 connections, distinct unknown accounts, default argon2id)",
            f"{after:.1f} MiB (peak {hwm:.1f} MiB)", f"{idle:.1f} MiB idle before", "", "< 100 MB",
            after * 1.048576 < 100),
        Row("9b. wrong-password logins per second in that flood",
            f"{flood.rps:,.1f} logins/s",
            f"{argon['verifications_per_second']:,.1f} argon2id/s on {argon['threads']} threads",
            f"{ratio:.2f} ×", "≥ 0.85 ×", ratio >= 0.85),
    ]


def log_volume(work: Path, seconds: float) -> Row:
    """Figure 10: bytes of process log per minute of a blocked-login flood
    (default log settings), beside what one line per request would write."""
    server = Portcullis.configure(work / "logs")
    log_file = work / "logs.log"
    server.start()
    try:
        wrong = {"email": EMAIL, "password": "not the password at all"}
        for _ in range(6):
            server.call("POST", "/auth/login", wrong, headers={"X-Forwarded-For": "203.0.113.77"})
        before = log_file.stat().st_size
        flood = wrk(server.url + "/auth/login", seconds, method="POST", body=wrong, xff="203.0.113.77")
        time.sleep(1)
        written = log_file.stat().st_size - before
    finally:
        server.stop()
    per_minute = written / flood.seconds * 60
    line = 190  # bytes of one text request line
    naive = flood.requests / flood.seconds * 60 * line
    return Row(f"10. process log per minute of a blocked-login flood ({flood.rps:,.0f} req/s)",
               f"{per_minute / 1024:,.1f} KiB/min",
               f"{naive / 1048576:,.0f} MiB/min at one line per request", "", "< 1 MB/min",
               per_minute < 1_000_000)


# The request a Caddy or Traefik in front of an app sends for each of its requests.
FORWARDED = {
    "X-Forwarded-Method": "GET",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "app.example.test",
    "X-Forwarded-Uri": "/dashboard?tab=1",
    "X-Forwarded-For": "198.51.100.7",
    "Accept": "text/html,application/xhtml+xml",
}
FORWARD_RULES = """
[forward_auth]
default_policy = "deny"
[[forward_auth.rules]]
domain = "app.example.test"
policy = "one_factor"
"""


def login_form(server: "Portcullis") -> tuple[str, str]:
    """The login page's form cookie and the form token bound to it."""
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.request("GET", "/ui/login")
    res = conn.getresponse()
    page = res.read().decode()
    conn.close()
    form = re.search(r"portcullis_form=([^;]+)", res.getheader("Set-Cookie") or "").group(1)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    return form, csrf


def browser_cookie(server: "Portcullis", email: str) -> str:
    """Signs in on the login page as a browser would; the session cookie."""
    import http.client
    form, csrf = login_form(server)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    body = urllib.parse.urlencode({"email": email, "password": PASSWORD, "csrf_token": csrf})
    conn.request("POST", "/ui/login", body=body, headers={
        "Content-Type": "application/x-www-form-urlencoded", "Cookie": f"portcullis_form={form}"})
    res = conn.getresponse()
    res.read()
    assert res.status == 303, res.status
    return re.search(r"portcullis_session=([^;]+)", res.getheader("Set-Cookie")).group(1)


def forward_auth_figures(work: Path, rounds: int, d: float) -> list[Row]:
    """11. The forward-auth check against the ceiling's fixed 200 to the same request."""
    server = Portcullis.configure(work / "forward", FORWARD_RULES)
    server.start()
    status, _ = server.call("POST", "/auth/register", {"email": EMAIL, "password": PASSWORD})
    assert status == 201, status
    status, pair = server.call("POST", "/auth/login", {"email": EMAIL, "password": PASSWORD})
    assert status == 200, status
    cookie = browser_cookie(server, EMAIL)
    port = free_port()
    ceiling_proc, _ = start_until_healthy([str(CEILING), f"127.0.0.1:{port}"], port)
    ceiling = f"http://127.0.0.1:{port}/authz/forward-auth"
    ours = server.url + "/authz/forward-auth"
    rows = []
    for figure, headers, token, expect in [
        ("11a. forward auth, valid session cookie", {**FORWARDED, "Cookie": f"portcullis_session={cookie}"},
         "", "allowed"),
        ("11b. forward auth, valid Bearer token", FORWARDED, pair["access_token"], "allowed"),
        ("11c. forward auth, not signed in (302 to the login page)", FORWARDED, "", "sign_in"),
    ]:
        log(figure)
        before = server.metric("portcullis_forward_auth_total", outcome=expect)
        p = paired(rounds,
                   ceiling_proc.pid, lambda: wrk(ceiling, d, headers=headers, token=token),
                   server.proc.pid, lambda: wrk(ours, d, headers=headers, token=token))
        counted = server.metric("portcullis_forward_auth_total", outcome=expect) - before
        sent = sum(l.requests for l in p.ours)
        if counted < sent * 0.99:
            raise SystemExit(f"{figure}: only {counted:.0f} of {sent} checks were {expect}")
        rows.append(ratio_row(figure, p, 0.5))
    stop(ceiling_proc)
    server.stop()
    return rows


def accounts_step(server: "Portcullis", step: str, users: int, route: str, status: str,
                  count: int, **env: str) -> None:
    """Runs benches/wrk/accounts.lua until the server has answered `count`
    of its requests on `route` with `status`."""
    threads = 2
    proc = subprocess.Popen(
        wrk_cmd(server.url, "accounts.lua", threads, 32, 3600),
        env=wrk_env(WRK_STEP=step, WRK_USERS=str(users), WRK_PASSWORD=PASSWORD, **env),
        stdout=subprocess.PIPE, text=True)
    before = server.metric("portcullis_http_requests_total", route=route, status=status)
    while server.metric("portcullis_http_requests_total", route=route, status=status) - before < count:
        if proc.poll() is not None:
            raise SystemExit(f"wrk ended before {count} answers {status} on {route}")
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    proc.communicate()


def live_sessions_figure(work: Path, rounds: int, d: float, sessions: int) -> Row:
    """11d. Checks that cycle through `sessions` distinct browser sessions (ten
    an account), every one signed in through the login page, against the
    ceiling answering the same requests. Hashing is made cheap in this
    server so that the sign-ins take seconds: a check does not hash a
    password."""
    users = max(1, sessions // 10)
    server = Portcullis.configure(
        work / "live", FORWARD_RULES
        + "[passwords]\nargon2_memory_kib = 8\nargon2_iterations = 1\nmax_queued_hashes = 4096\n"
        + "[rate_limit.rules.register_ip_hourly]\nenabled = false\n")
    server.start()
    port = free_port()
    ceiling_proc, _ = start_until_healthy([str(CEILING), f"127.0.0.1:{port}"], port)
    try:
        log(f"11d: {users:,} accounts, {sessions:,} browser sessions")
        began = time.time()
        accounts_step(server, "register", users, "/auth/register", "201", users)
        form, csrf = login_form(server)
        out = work / "cookies"
        # A few more sign-ins than sessions: wrk is stopped with some in flight.
        accounts_step(server, "sign_in", users, "/ui/login", "303", sessions + sessions // 50,
                      WRK_FORM=form, WRK_CSRF=csrf, WRK_OUT=str(out))
        cookies = []
        for part in sorted(work.glob("cookies.*")):
            cookies.extend(part.read_text().split())
        cookies = list(dict.fromkeys(cookies))
        if len(cookies) < sessions:
            raise SystemExit(f"only {len(cookies)} of {sessions} sign-ins gave a session cookie")
        cookie_file = work / "cookies.txt"
        cookie_file.write_text("\n".join(cookies[:sessions]) + "\n")
        log(f"11d: made in {time.time() - began:.0f} s")
        headers = "\n".join(f"{k}: {v}" for k, v in FORWARDED.items())

        def cycle(url: str, seconds: float) -> Load:
            out = subprocess.run(
                wrk_cmd(url, "cookies.lua", 2, 64, seconds),
                env=wrk_env(WRK_COOKIES=str(cookie_file), WRK_HEADERS=headers, WRK_THREADS="2"),
                check=True, capture_output=True, text=True).stdout
            return parse_wrk(out)

        ours = server.url + "/authz/forward-auth"
        ceiling = f"http://127.0.0.1:{port}/authz/forward-auth"
        # Warm: every session once read from storage (the first reads are
        # the cold start, not the steady state this figure is about).
        signed_in_rss = rss_mib(server.proc.pid)
        warm = 0
        while warm < 2 * sessions:
            warm += cycle(ours, max(d, 5)).requests
        before = server.metric("portcullis_forward_auth_total", outcome="allowed")
        p = paired(rounds, ceiling_proc.pid, lambda: cycle(ceiling, d),
                   server.proc.pid, lambda: cycle(ours, d))
        allowed = server.metric("portcullis_forward_auth_total", outcome="allowed") - before
        sent = sum(l.requests for l in p.ours)
        if allowed < sent * 0.99:
            raise SystemExit(f"11d: only {allowed:.0f} of {sent} checks were allowed")
        rss = rss_mib(server.proc.pid)
        row = ratio_row(f"11d. forward auth, {sessions:,} distinct live sessions cycling "
                        f"({users:,} accounts)", p, 0.3)
        row.ours += f"; resident {signed_in_rss:.0f} MiB after the sign-ins, {rss:.0f} MiB warm"
        return row
    finally:
        stop(ceiling_proc)
        server.stop()


OIDC_CLIENT = "bench"
OIDC_PEOPLE = 1000
OIDC_SECRET = "bench-secret-0123456789"
OIDC_REDIRECT = "http://bench.example/cb"
OIDC_CLIENTS_ENV = (f'[{{id = "{OIDC_CLIENT}", secret = "{OIDC_SECRET}", '
                    f'redirect_uris = ["{OIDC_REDIRECT}"], consent = "implicit"}}]')


def ci_ready_figures(work: Path, runs: int) -> tuple[list[float], list[float]]:
    """12a. The CI recipe of the README: a user added with the CLI, one client
    from the environment, no file. Seconds from spawn until discovery answers
    (a relying party can start), and until the JWKS holds the RSA key that
    signs id_tokens (made in the background on this first start; the first
    token request waits for it)."""
    import http.client

    def get(port: int, path: str) -> bytes | None:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", path)
            res = conn.getresponse()
            body = res.read()
            return body if res.status == 200 else None
        except OSError:
            return None

    ready, keyed = [], []
    for i in range(runs):
        env = {k: v for k, v in os.environ.items() if not k.startswith("PORTCULLIS_")}
        env.update(PORTCULLIS_STORAGE__DATA_DIR=str(work / f"ci{i}"),
                   PORTCULLIS_OIDC__CLIENTS=OIDC_CLIENTS_ENV)
        subprocess.run([str(PORTCULLIS), "user", "add", "--email", "ci@example.com", "--password-stdin"],
                       input="a long test password\n", env=env, check=True, capture_output=True, text=True)
        port = free_port()
        began = time.perf_counter()
        proc = subprocess.Popen([str(PORTCULLIS), "serve", "--bind", f"127.0.0.1:{port}"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for path, want, into in (("/.well-known/openid-configuration", b'"issuer"', ready),
                                 ("/.well-known/jwks.json", b'"RS256"', keyed)):
            while want not in (get(port, path) or b""):
                if proc.poll() is not None or time.perf_counter() - began > 30:
                    raise SystemExit(f"12a: no {path} from the CI identity provider")
                time.sleep(0.0005)
            into.append(time.perf_counter() - began)
        stop(proc)
    return ready, keyed


def oidc_grant(server: "Portcullis", cookie: str, basic: str) -> dict:
    """One authorization code grant as the signed-in browser and the client:
    the token endpoint's answer."""
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.request("POST", "/oidc/token", headers={
        "Authorization": basic, "Content-Type": "application/x-www-form-urlencoded"},
        body=urllib.parse.urlencode({"grant_type": "authorization_code", "code": oidc_code(server, cookie),
                                     "redirect_uri": OIDC_REDIRECT}))
    res = conn.getresponse()
    grant = json.loads(res.read())
    assert res.status == 200, grant
    return grant


def oidc_code(server: "Portcullis", cookie: str) -> str:
    """One authorization as the signed-in browser: the code of the redirect."""
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    query = urllib.parse.urlencode({"response_type": "code", "client_id": OIDC_CLIENT, "state": "s",
                                    "scope": "openid email groups", "redirect_uri": OIDC_REDIRECT})
    conn.request("GET", f"/oidc/authorize?{query}", headers={"Cookie": f"portcullis_session={cookie}"})
    res = conn.getresponse()
    res.read()
    assert res.status in (302, 303), (res.status, res.getheader("Location"))
    return urllib.parse.parse_qs(urllib.parse.urlparse(res.getheader("Location")).query)["code"][0]


def oidc_figures(work: Path, rounds: int, d: float) -> list[Row]:
    """12b. Code exchanges (each after the authorize that makes its code)
    against refresh-token rotations at the same token endpoint (each with its
    new id_token, as a code exchange has); 12c. userinfo against the
    ceiling's fixed 200."""
    import base64
    server = Portcullis.configure(
        work / "oidc",
        f'[[oidc.clients]]\nid = "{OIDC_CLIENT}"\nsecret = "{OIDC_SECRET}"\n'
        f'redirect_uris = ["{OIDC_REDIRECT}"]\nconsent = "implicit"\nrefresh_tokens = true\n'
        # Argon2 made cheap for the sign-ins of the set-up: neither side of
        # 12b hashes a password.
        "[passwords]\nargon2_memory_kib = 8\nargon2_iterations = 1\n"
        "[rate_limit.rules.register_ip_hourly]\nenabled = false\n")
    server.start()
    conns, threads = 64, 2
    port = free_port()
    ceiling_proc, _ = start_until_healthy([str(CEILING), f"127.0.0.1:{port}"], port)
    try:
        # Many people, each signed in once in a browser: the grants spread over
        # them as they would in life (one account with thousands of grants
        # would measure the session bound instead).
        cookies = []
        for u in range(OIDC_PEOPLE):
            email = f"person{u}@example.com"
            status, _ = server.call("POST", "/auth/register", {"email": email, "password": PASSWORD},
                                    headers={"X-Forwarded-For": f"198.18.{u // 250}.{u % 250}"})
            assert status == 201, status
            cookies.append(browser_cookie(server, email))
        cookie_file = work / "oidc-cookies.txt"
        cookie_file.write_text("\n".join(cookies) + "\n")
        basic = "Basic " + base64.b64encode(f"{OIDC_CLIENT}:{OIDC_SECRET}".encode()).decode()

        def refresh_tokens() -> Path:
            """Fresh refresh tokens, eight a connection (the last round's chains
            ended with tokens in flight; see oidc.lua for why eight)."""
            tokens: list[list[str]] = [[] for _ in range(threads)]
            for n in range(conns * 8):
                grant = oidc_grant(server, cookies[n % len(cookies)], basic)
                tokens[n % threads].append(grant["refresh_token"])
            for t, mine in enumerate(tokens):
                (work / f"refresh.{t}").write_text("\n".join(mine) + "\n")
            return work / "refresh"

        def run(step: str, **env: str) -> tuple[Load, float]:
            def done_so_far() -> float:
                return server.metric("portcullis_http_requests_total", route="/oidc/token", status="200")
            before = done_so_far()
            cpu = cpu_seconds(server.proc.pid)
            out = subprocess.run(wrk_cmd(server.url, "oidc.lua", threads, conns, d),
                                 env=wrk_env(WRK_STEP=step, **env),
                                 check=True, capture_output=True, text=True).stdout
            load = parse_wrk(out)
            done = done_so_far() - before
            share = 0.45 if step == "code" else 0.99
            if done < load.requests * share:
                raise SystemExit(f"12b {step}: only {done:.0f} of {load.requests} requests did it")
            cpu_us = (cpu_seconds(server.proc.pid) - cpu) / max(done, 1) * 1e6
            return Load(int(done), load.seconds, load.non_2xx, load.socket_errors,
                        load.p50_ms, load.p99_ms), cpu_us

        log("12b. code exchanges against refresh rotations")
        p = Paired([], [], [], [])
        for _ in range(rounds):
            tokens = refresh_tokens()
            load, cpu = run("refresh", WRK_TOKENS=str(tokens), WRK_BASIC=basic)
            p.base.append(load)
            p.base_cpu_us.append(cpu)
            load, cpu = run("code", WRK_COOKIES=str(cookie_file), WRK_BASIC=basic)
            p.ours.append(load)
            p.ours_cpu_us.append(cpu)
        rows = [ratio_row("12b. OIDC code exchanges, each with its authorize (baseline: "
                          "refresh-token rotations at /oidc/token, same server)", p, 0.5)]

        log("12c. userinfo")
        grant = oidc_grant(server, cookies[0], basic)
        access = grant["access_token"]
        ours, ceiling = server.url + "/oidc/userinfo", f"http://127.0.0.1:{port}/oidc/userinfo"
        before = server.metric("portcullis_http_requests_total", route="/oidc/userinfo", status="200")
        p = paired(rounds, ceiling_proc.pid, lambda: wrk(ceiling, d, token=access),
                   server.proc.pid, lambda: wrk(ours, d, token=access))
        answered = server.metric("portcullis_http_requests_total", route="/oidc/userinfo",
                                 status="200") - before
        if answered < sum(l.requests for l in p.ours) * 0.99:
            raise SystemExit("12c: userinfo did not answer 200")
        rows.append(ratio_row("12c. GET /oidc/userinfo, valid OIDC access token", p, 0.4))
        return rows
    finally:
        stop(ceiling_proc)
        server.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=5, help="seconds per throughput run")
    ap.add_argument("--rounds", type=int, default=5,
                    help="alternating baseline/portcullis rounds for figures 1 and 2 (median)")
    ap.add_argument("--addresses", type=int, default=1_000_000, help="client addresses for the memory figure")
    ap.add_argument("--sessions", type=int, default=100_000,
                    help="distinct browser sessions for figure 11d")
    ap.add_argument("--startups", type=int, default=5, help="starts per start-up figure (median)")
    ap.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--only", default="",
                    help="comma-separated figure numbers to run (default: all), e.g. 8,9,10")
    args = ap.parse_args()

    ensure_wrk()
    if not args.no_build:
        build()
    work = Path(tempfile.mkdtemp(prefix="portcullis-load-"))
    rows: list[Row] = []
    d = args.duration

    only = {int(n) for n in args.only.split(",") if n.strip()}
    want = lambda n: not only or n in only  # noqa: E731
    # 5. Start-up, before anything else warms the page cache for this binary.
    if want(5):
        log("start-up times")
        fresh, existing, ceiling = startup_figures(work, args.startups)
        med = lambda xs: statistics.median(xs) * 1000  # noqa: E731
        rows.append(Row("5a. start to first 200 from /health, existing database (median)",
                        f"{med(existing):.0f} ms", f"{med(ceiling):.0f} ms (ceiling server)",
                        "", "< 100 ms", med(existing) < 100))
        rows.append(Row("5b. start to first 200 from /health, first start (median)",
                        f"{med(fresh):.0f} ms", f"{med(ceiling):.0f} ms (ceiling server)",
                        "", "< 300 ms", med(fresh) < 300))

    if want(12):
        log("12a. the CI identity provider, ready")
        ready, keyed = ci_ready_figures(work, args.startups)
        med = lambda xs: statistics.median(xs) * 1000  # noqa: E731
        rows.append(Row("12a. CI recipe (no file): start to the discovery document (median)",
                        f"{med(ready):.0f} ms", "", "", "< 100 ms", med(ready) < 100))
        rows.append(Row("12a′. the same, to a JWKS with the RSA key made on this start "
                        "(median; made in the background)",
                        f"{med(keyed):.0f} ms", "", "", "", True))
        rows.extend(oidc_figures(work, args.rounds, d))

    if want(11):
        rows.extend(forward_auth_figures(work, args.rounds, d))
        rows.append(live_sessions_figure(work, args.rounds, d, args.sessions))

    idle = None
    argon = None
    if any(want(n) for n in (1, 2, 3, 4, 6)):
        server = Portcullis.configure(work / "main")
        server.start()
        time.sleep(1)
        idle = rss_mib(server.proc.pid)
        for u in range(USERS):
            status, _ = server.call("POST", "/auth/register",
                                    {"email": f"bench{u}@example.com", "password": PASSWORD},
                                    headers={"X-Forwarded-For": f"198.19.0.{u}"})
            assert status == 201, status
        status, pair = server.call("POST", "/auth/login", {"email": EMAIL, "password": PASSWORD})
        assert status == 200, status
        token = pair["access_token"]

        port = free_port()
        ceiling_proc, _ = start_until_healthy([str(CEILING), f"127.0.0.1:{port}"], port)
        ceiling_url = f"http://127.0.0.1:{port}"

        # 1. The blocked-login path: 5 wrong passwords from this address, then a flood.
        log("blocked logins (429)")
        wrong = {"email": EMAIL, "password": "not the password at all"}
        blocker = {"X-Forwarded-For": "203.0.113.9"}
        for _ in range(5):
            server.call("POST", "/auth/login", wrong, headers=blocker)
        status, _ = server.call("POST", "/auth/login", wrong, headers=blocker)
        assert status == 429, status
        before = server.metric("portcullis_http_requests_total", route="/auth/login", status="429")
        blocked = paired(
            args.rounds,
            ceiling_proc.pid, lambda: wrk(ceiling_url + "/auth/login", d, method="POST", body=wrong),
            server.proc.pid, lambda: wrk(server.url + "/auth/login", d, method="POST", body=wrong,
                                         xff=blocker["X-Forwarded-For"]))
        got_429 = server.metric("portcullis_http_requests_total", route="/auth/login", status="429") - before
        sent = sum(l.requests for l in blocked.ours)
        if got_429 < sent * 0.99:
            raise SystemExit(f"only {got_429:.0f} of {sent} blocked-login answers were 429")
        rows.append(ratio_row("1. blocked login (429)", blocked, 0.5))
        with_redis = blocked_with_redis(work, server, wrong, blocker, args.rounds, d)
        if with_redis:
            rows.append(with_redis)

        # 2. GET /auth/me with a valid token.
        log("GET /auth/me")
        me = paired(args.rounds,
                    ceiling_proc.pid, lambda: wrk(ceiling_url + "/auth/me", d),
                    server.proc.pid, lambda: wrk(server.url + "/auth/me", d, token=token))
        assert all(l.non_2xx == 0 for l in me.ours), me.ours
        rows.append(ratio_row("2. GET /auth/me, valid token", me, 0.4))
        stop(ceiling_proc)

        # 3. Successful logins per second against bare argon2id on the same cores.
        log("successful logins against argon2id alone")
        slow = max(d, 10)  # hashing figures count tens of events per second
        argon = json.loads(subprocess.run([str(ARGON_RATE), str(int(slow))], check=True,
                                          capture_output=True, text=True).stdout)
        ok = finish(logins(server.url, slow, conns=16))
        assert ok.non_2xx == 0, ok
        ratio = ok.rps / argon["verifications_per_second"]
        rows.append(Row("3. successful logins (default argon2id: 19 MiB, t=2, p=1)",
                        f"{ok.rps:,.1f} logins/s",
                        f"{argon['verifications_per_second']:,.1f} argon2id/s on {argon['threads']} threads",
                        f"{ratio:.2f} ×", "≥ 0.85 ×", ratio >= 0.85))

        # 4. /auth/me while logins keep every hashing slot busy.
        log("GET /auth/me during a login flood")
        me_flood, flood, depth = login_flood_with_me(server, token, slow)
        rows.append(Row("4. p99 of GET /auth/me during a login flood",
                        f"{me_flood.p99_ms:.2f} ms ({me_flood.rps:,.0f} req/s)",
                        f"{flood.rps:,.1f} logins/s alongside, hash queue {depth:.0f} deep",
                        "", "< 20 ms", me_flood.p99_ms < 20 and depth > 0))
        server.stop()

    # 6. Memory.
    if want(6):
        log(f"memory: {args.addresses:,} client addresses")
        mem_idle, loaded, hwm, keys = memory_figure(work, args.addresses)
        rows.append(Row("6a. resident memory, idle after start", f"{idle:.1f} MiB", "", "", "< 30 MB",
                        idle * 1.048576 < 30))
        rows.append(Row(f"6b. resident memory after {args.addresses:,} client addresses",
                        f"{loaded:.1f} MiB (peak {hwm:.1f} MiB)",
                        f"{mem_idle:.1f} MiB before; {keys:,} windows held", "", "< 300 MB",
                        loaded * 1.048576 < 300))

    # 7. Binary size.
    if want(7):
        size = PORTCULLIS.stat().st_size / 1e6
        rows.append(Row("7. release binary, stripped", f"{size:.1f} MB",
                        f"{CEILING.stat().st_size / 1e6:.1f} MB (ceiling server)", "", "< 25 MB", size < 25))


    # 8. Reset-request timing: an existing account against an unknown one.
    if want(8):
        log("reset-request timing, existing and unknown accounts")
        rows.extend(reset_timing(work, 200))

    # 9. Memory under a wrong-password flood at the default argon2id parameters.
    if want(9):
        log("memory under a wrong-password flood")
        if argon is None:
            argon = json.loads(subprocess.run([str(ARGON_RATE), "10"], check=True,
                                              capture_output=True, text=True).stdout)
        rows.extend(hash_flood_memory(work, max(d, 60), argon))

    # 10. Process log volume under a blocked-login flood.
    if want(10):
        log("process log under a blocked-login flood")
        rows.append(log_volume(work, max(d, 60)))

    shutil.rmtree(work, ignore_errors=True)
    if only:
        log("--only: BENCHMARKS.md left as it is")
    else:
        write_report(Path(args.out), rows, args)
    failed = [r.figure for r in rows if not r.met]
    for r in rows:
        log(f"{'ok  ' if r.met else 'MISS'} {r.figure}: {r.ours} | {r.baseline} | {r.ratio}")
    sys.exit(1 if failed else 0)


def write_report(path: Path, rows: list[Row], args: argparse.Namespace) -> None:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                           capture_output=True, text=True).stdout.strip()
    cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                if l.startswith("model name")), platform.processor())
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split("\n")[0].split(" Copyright")[0]
    command = "python3 benches/load.py" + (f" --duration {args.duration:g}" if args.duration != 5 else "") \
        + (f" --rounds {args.rounds}" if args.rounds != 5 else "") \
        + (f" --addresses {args.addresses}" if args.addresses != 1_000_000 else "") \
        + (f" --sessions {args.sessions}" if args.sessions != 100_000 else "")
    lines = [
        MARK_START,
        f"Measured {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC at commit "
        f"`{commit}`{' (with local changes)' if dirty else ''} by `{command}`, "
        f"on {os.cpu_count()} × {cpu}, load from {wrk_version.strip() or 'wrk'} on the same machine.",
        "",
        "| figure | portcullis | baseline, same run | ratio | target | met |",
        "|---|---|---|---|---|---|",
    ]
    lines += [f"| {r.figure} | {r.ours} | {r.baseline} | {r.ratio} | {r.target} | {'yes' if r.met else '**no**'} |"
              for r in rows]
    lines.append(MARK_END)
    block = "\n".join(lines)
    text = path.read_text() if path.exists() else f"# Benchmarks\n\n{MARK_START}\n{MARK_END}\n"
    if MARK_START in text and MARK_END in text:
        head, rest = text.split(MARK_START, 1)
        _, tail = rest.split(MARK_END, 1)
        text = head + block + tail
    else:
        text += "\n" + block + "\n"
    path.write_text(text)
    log(f"wrote {path}")


if __name__ == "__main__":
    main()
