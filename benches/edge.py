#!/usr/bin/env python3
"""benches/edge.py: the HTTP edge under abuse, measured from outside.

Parts (EDGE_PARTS, default "slow idle scrape"):
  slow    1,000 connections each announce a 1,000,000-byte body and send
          half of it, then stall (half at POST /subscribe, half at
          POST /api/admin/posts with the token). Reports the daemon's idle
          RSS, its peak (VmHWM) and its RSS after the clients close, from
          /proc/PID/status.
  idle    the daemon under a 1024 descriptor limit (soft and hard, set with
          prlimit), 1,100 connections that send nothing, then GET /: how
          long it takes to answer, and how many "Too many open files" lines
          the log has.
  scrape  EDGE_SUBSCRIBERS (1,000,000) confirmed subscribers; 32 threads
          scraping /metrics as fast as they can while one client signs up
          new addresses one after another and another polls /healthz. Reports
          signup p50/p90/p99, scrapes per second, and every /healthz status.

Settings (environment): TIDINGS_BIN (target/release/tidings),
EDGE_BACKEND (sqlite, or postgres with PostgreSQL on 127.0.0.1:5432, trust
auth, user postgres), EDGE_SUBSCRIBERS=1000000, EDGE_SCRAPERS=32,
EDGE_SECONDS=20. Needs prlimit (util-linux); for postgres, psql.
Only loopback traffic; everything is made in a temporary folder.
"""

import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.abspath(os.environ.get("TIDINGS_BIN", os.path.join(ROOT, "target/release/tidings")))
BACKEND = os.environ.get("EDGE_BACKEND", "sqlite")
PARTS = os.environ.get("EDGE_PARTS", "slow idle scrape").split()
SUBSCRIBERS = int(os.environ.get("EDGE_SUBSCRIBERS", "1000000"))
SCRAPERS = int(os.environ.get("EDGE_SCRAPERS", "32"))
SECONDS = float(os.environ.get("EDGE_SECONDS", "20"))
TOKEN = "edge-bench-admin-token-0123456789"


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def status_kb(pid, field):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field}")


class Daemon:
    def __init__(self, folder, env, prefix=()):
        self.port = free_port()
        self.env = dict(
            (k, v) for k, v in os.environ.items() if not k.startswith("TIDINGS_")
        )
        self.env.update(
            {
                "TIDINGS_HTTP__BIND": f"127.0.0.1:{self.port}",
                "TIDINGS_ADMIN__TOKEN": TOKEN,
                "TIDINGS_SCHEDULE__CRON": "0 0 0 1 1 * 2099",
                "TIDINGS_SMTP__OUTBOX_DIR": os.path.join(folder, "outbox"),
                "TIDINGS_HTTP__SUBSCRIBE_PER_IP_PER_HOUR": "0",
                "TIDINGS_TEMPLATES__DIR": os.path.join(folder, "none"),
            }
        )
        self.env.update(env)
        self.folder = folder
        self.log_path = os.path.join(folder, f"serve-{self.port}.log")
        self.prefix = list(prefix)

    def cli(self, *args):
        subprocess.run([BIN, *args], env=self.env, check=True, cwd=self.folder,
                       stdout=subprocess.DEVNULL)

    def start(self):
        self.process = subprocess.Popen(
            [*self.prefix, BIN, "serve"], env=self.env, cwd=self.folder,
            stdout=subprocess.DEVNULL, stderr=open(self.log_path, "w"),
        )
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if self.get("/healthz")[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("the daemon did not start: " + open(self.log_path).read())

    def get(self, path, headers=None, timeout=10):
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        body = response.read()
        connection.close()
        return response.status, body

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=60)


def half_send(port, path, token):
    stream = socket.create_connection(("127.0.0.1", port))
    stream.settimeout(0.5)
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    head = (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"{auth}Content-Length: 1000000\r\n\r\n").encode()
    try:
        stream.sendall(head + b"a" * 500_000)
    except OSError:
        pass  # refused and closed early: what a bounded server may do
    return stream


def part_slow(folder):
    daemon = Daemon(folder, {"TIDINGS_DATABASE__URL": f"sqlite://{folder}/slow.db"}).start()
    pid = daemon.process.pid
    idle = status_kb(pid, "VmRSS")
    streams = []
    for n in range(1000):
        path, token = ("/subscribe", None) if n % 2 == 0 else ("/api/admin/posts", TOKEN)
        streams.append(half_send(daemon.port, path, token))
    started = time.time()
    status, _ = daemon.get("/")
    page_ms = (time.time() - started) * 1000
    peak = status_kb(pid, "VmHWM")
    for stream in streams:
        stream.close()
    time.sleep(3)  # a measurement, not a test: give the allocator a moment
    after = status_kb(pid, "VmRSS")
    daemon.stop()
    return {"idle_rss_mb": round(idle / 1024, 1), "peak_rss_mb": round(peak / 1024, 1),
            "rss_after_close_mb": round(after / 1024, 1),
            "get_during_flood": status, "get_during_flood_ms": round(page_ms, 1)}


def part_idle(folder):
    daemon = Daemon(folder, {"TIDINGS_DATABASE__URL": f"sqlite://{folder}/idle.db"},
                    prefix=["prlimit", "--nofile=1024:1024", "--"]).start()
    idle = [socket.create_connection(("127.0.0.1", daemon.port)) for _ in range(1100)]
    started = time.time()
    try:
        status, _ = daemon.get("/", timeout=60)
    except OSError as error:
        status = str(error)
    answered = time.time() - started
    for stream in idle:
        stream.close()
    daemon.stop()
    text = open(daemon.log_path).read()
    cap = [line for line in text.splitlines() if "connection cap" in line]
    return {"get_status": status, "get_seconds": round(answered, 2),
            "too_many_open_files_lines": text.count("Too many open files"),
            "cap_log": cap[0] if cap else None}


def database_url(folder):
    if BACKEND == "sqlite":
        return f"sqlite://{folder}/scrape.db", None
    name = f"tidings_edge_{os.getpid()}"
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc",
                    f'CREATE DATABASE "{name}"'], check=True)
    return f"postgres://postgres@127.0.0.1:5432/{name}", name


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def part_scrape(folder):
    url, pg_name = database_url(folder)
    daemon = Daemon(folder, {"TIDINGS_DATABASE__URL": url})
    daemon.cli("migrate")
    log(f"generating {SUBSCRIBERS} subscribers on {BACKEND}")
    daemon.cli("subscriber", "generate", "--count", str(SUBSCRIBERS))
    daemon.start()
    stop = threading.Event()
    scrapes = [0] * SCRAPERS
    health = {}
    signups = []

    def scraper(index):
        connection = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=30)
        while not stop.is_set():
            connection.request("GET", "/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
            response = connection.getresponse()
            response.read()
            scrapes[index] += 1

    def health_poller():
        while not stop.is_set():
            try:
                status, _ = daemon.get("/healthz", timeout=5)
            except OSError:
                status = "timeout"
            health[status] = health.get(status, 0) + 1
            time.sleep(0.1)

    def signer():
        connection = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=30)
        n = 0
        while not stop.is_set():
            n += 1
            body = json.dumps({"email": f"edge-{os.getpid()}-{n}@example.com"})
            started = time.perf_counter()
            connection.request("POST", "/subscribe", body=body,
                               headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            signups.append((time.perf_counter() - started) * 1000)
            assert response.status == 202, response.status

    threads = [threading.Thread(target=scraper, args=(i,)) for i in range(SCRAPERS)]
    threads += [threading.Thread(target=health_poller), threading.Thread(target=signer)]
    for thread in threads:
        thread.start()
    time.sleep(SECONDS)
    stop.set()
    for thread in threads:
        thread.join()
    daemon.stop()
    if pg_name:
        subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc",
                        f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)'])
    return {"backend": BACKEND, "subscribers": SUBSCRIBERS, "scrapers": SCRAPERS,
            "scrapes_per_second": round(sum(scrapes) / SECONDS),
            "healthz": health, "signups": len(signups),
            "signup_p50_ms": round(statistics.median(signups), 2),
            "signup_p90_ms": round(percentile(signups, 0.90), 2),
            "signup_p99_ms": round(percentile(signups, 0.99), 2)}


def main():
    results = {}
    with tempfile.TemporaryDirectory(prefix="tidings-edge.") as folder:
        for part in PARTS:
            log(f"part {part}")
            results[part] = {"slow": part_slow, "idle": part_idle,
                             "scrape": part_scrape}[part](folder)
            log(json.dumps(results[part]))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
