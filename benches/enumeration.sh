#!/usr/bin/env bash
# benches/enumeration.sh: can the timing of POST /subscribe tell a new
# address from one already on the list?
#
# Per backend, it starts `tidings serve` (the release binary) on a fresh
# database (SQLite in a temporary folder; PostgreSQL in a database it
# creates and drops), with no per-IP limit and emails written to an outbox
# folder. It adds one subscriber with the CLI (confirmed, or pending with
# BENCH_ENUM_EXISTING=pending), then sends, one at a time over one
# keep-alive connection, BENCH_ENUM_N signups of fresh addresses and
# BENCH_ENUM_N of that subscriber's address, in a shuffled order
# (fixed seed), after BENCH_ENUM_WARMUP signups it does not count. Between
# two requests it pauses BENCH_ENUM_GAP_MS, so that each request meets an
# idle daemon: the background work a signup starts (the confirmation email)
# then cannot blur the next measurement, which is the prober's best case.
#
# It reports, per class, the median and p90 latency, and the accuracy of
# the best single-threshold guess from one sample: the share of all
# samples a rule "slower than t means new" (or "faster than t") gets right,
# with t and the direction chosen after seeing every sample. 50 % is a coin;
# two identical distributions of 200 samples each still score about 53 %.
# It also checks that both classes got byte-identical answers, but for
# the Date header.
#
# Settings (environment):
#   BENCH_BACKENDS="sqlite postgres"
#   BENCH_ENUM_N=200  BENCH_ENUM_WARMUP=40  BENCH_ENUM_GAP_MS=25  BENCH_ENUM_SEED=17
#   BENCH_ENUM_EXISTING=confirmed (or pending)
#   BENCH_PG_HOST=127.0.0.1  BENCH_PG_PORT=5432  BENCH_PG_USER=postgres
#   TIDINGS_BIN=target/release/tidings (build it with cargo build --release)
#
# Needs python3, curl and (for postgres) psql. Only loopback traffic.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${TIDINGS_BIN:-$ROOT/target/release/tidings}
BACKENDS=${BENCH_BACKENDS:-sqlite postgres}
N=${BENCH_ENUM_N:-200}
WARMUP=${BENCH_ENUM_WARMUP:-40}
GAP_MS=${BENCH_ENUM_GAP_MS:-25}
SEED=${BENCH_ENUM_SEED:-17}
EXISTING=${BENCH_ENUM_EXISTING:-confirmed}
PG_HOST=${BENCH_PG_HOST:-127.0.0.1}
PG_PORT=${BENCH_PG_PORT:-5432}
PG_USER=${BENCH_PG_USER:-postgres}

die() { printf 'benches/enumeration.sh: %s\n' "$*" >&2; exit 1; }
case $EXISTING in
confirmed) ADD_FLAGS=(--confirmed) ;;
pending) ADD_FLAGS=() ;;
*) die "BENCH_ENUM_EXISTING must be confirmed or pending, not $EXISTING" ;;
esac
[[ -x $BIN ]] || die "no tidings binary at $BIN (cargo build --release, or set TIDINGS_BIN)"
command -v python3 >/dev/null || die "python3 is not installed"
command -v curl >/dev/null || die "curl is not installed"

# Our settings only: nothing from the caller's TIDINGS_* environment.
while read -r name; do unset "$name"; done < <(compgen -e | grep '^TIDINGS_' || true)

TMP=$(mktemp -d "${TMPDIR:-/tmp}/tidings-enum.XXXXXX")
DAEMON_PID=""
PG_DB=""
psql_admin() {
    psql -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d postgres -v ON_ERROR_STOP=1 -qAt -c "$1"
}
cleanup() {
    if [[ -n $DAEMON_PID ]]; then
        kill -TERM "$DAEMON_PID" 2>/dev/null || true
        wait "$DAEMON_PID" 2>/dev/null || true
    fi
    if [[ -n $PG_DB ]]; then
        psql_admin "DROP DATABASE IF EXISTS \"$PG_DB\" WITH (FORCE)" >/dev/null 2>&1 || true
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

measure() {
    local backend=$1 url
    if [[ $backend == sqlite ]]; then
        url="sqlite://$TMP/enumeration.db"
    else
        PG_DB="tidings_enum_$$"
        psql_admin "CREATE DATABASE \"$PG_DB\"" >/dev/null ||
            die "cannot create a PostgreSQL database on $PG_HOST:$PG_PORT as $PG_USER"
        url="postgres://$PG_USER@$PG_HOST:$PG_PORT/$PG_DB"
    fi
    local port
    port=$(free_port)
    local env=(
        "TIDINGS_DATABASE__URL=$url"
        "TIDINGS_HTTP__BIND=127.0.0.1:$port"
        "TIDINGS_HTTP__SUBSCRIBE_PER_IP_PER_HOUR=0"
        "TIDINGS_NEWSLETTER__BASE_URL=http://127.0.0.1:$port"
        "TIDINGS_SMTP__URL="
        "TIDINGS_SMTP__OUTBOX_DIR=$TMP/outbox-$backend"
        "TIDINGS_SCHEDULE__CRON=0 0 0 1 1 * 2099"
        "RUST_LOG=warn"
    )
    env "${env[@]}" "$BIN" migrate >/dev/null
    env "${env[@]}" "$BIN" subscriber add member@example.com "${ADD_FLAGS[@]}" >/dev/null
    env "${env[@]}" "$BIN" serve >"$TMP/serve-$backend.log" 2>&1 &
    DAEMON_PID=$!
    local ok=0
    for _ in $(seq 200); do
        curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && { ok=1; break; }
        kill -0 "$DAEMON_PID" 2>/dev/null || break
        sleep 0.05
    done
    ((ok)) || { cat "$TMP/serve-$backend.log" >&2; die "tidings serve did not start ($backend)"; }

    python3 - "$port" "$N" "$WARMUP" "$GAP_MS" "$SEED" "$backend" <<'PY'
import http.client, json, random, sys, time

port, n, warmup, gap_ms, seed, backend = sys.argv[1:]
n, warmup, gap, seed = int(n), int(warmup), int(gap_ms) / 1000, int(seed)
connection = http.client.HTTPConnection("127.0.0.1", int(port))
fresh = iter(range(10**9))

def signup(email):
    body = json.dumps({"email": email, "name": "Reader"})
    started = time.perf_counter()
    connection.request("POST", "/subscribe", body, {"content-type": "application/json"})
    response = connection.getresponse()
    data = response.read()
    elapsed = time.perf_counter() - started
    headers = sorted((k.lower(), v) for k, v in response.getheaders() if k.lower() != "date")
    return elapsed, (response.status, headers, data)

def address(kind):
    return f"new{next(fresh)}@example.com" if kind == "new" else "member@example.com"

rng = random.Random(seed)
order = ["new"] * n + ["existing"] * n
rng.shuffle(order)
warm = ["new", "existing"] * (warmup // 2)
samples = {"new": [], "existing": []}
answers = {"new": set(), "existing": set()}
for i, kind in enumerate(warm + order):
    elapsed, answer = signup(address(kind))
    answers[kind].add(repr(answer))
    if i >= len(warm):
        samples[kind].append(elapsed * 1000)
    time.sleep(gap)

def quantile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]

new, existing = samples["new"], samples["existing"]
labelled = sorted([(v, 1) for v in new] + [(v, 0) for v in existing])
total = len(labelled)
best = 0.5
# Guess "new" above t: right for every existing at or below t, every new above.
existing_below = new_below = 0
for i, (value, is_new) in enumerate(labelled):
    if is_new:
        new_below += 1
    else:
        existing_below += 1
    if i + 1 < total and labelled[i + 1][0] == value:
        continue
    above_new = existing_below + (len(new) - new_below)
    best = max(best, above_new / total, (total - above_new) / total)
same = answers["new"] == answers["existing"] and len(answers["new"]) == 1
print(f"{backend}: new median {quantile(new, 0.5):.2f} ms p90 {quantile(new, 0.9):.2f} ms; "
      f"existing median {quantile(existing, 0.5):.2f} ms p90 {quantile(existing, 0.9):.2f} ms; "
      f"best single-threshold guess {best * 100:.1f} %; "
      f"answers identical but for Date: {'yes' if same else 'NO'}")
PY
    kill -TERM "$DAEMON_PID" 2>/dev/null || true
    wait "$DAEMON_PID" 2>/dev/null || true
    DAEMON_PID=""
    if [[ -n $PG_DB ]]; then
        psql_admin "DROP DATABASE IF EXISTS \"$PG_DB\" WITH (FORCE)" >/dev/null || true
        PG_DB=""
    fi
}

printf 'tidings %s, commit %s, %s; %s new + %s of a %s address per backend, %s ms apart\n' \
    "$("$BIN" --version 2>/dev/null | awk '{print $2}')" \
    "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)" \
    "$(date -u +%Y-%m-%d)" "$N" "$N" "$EXISTING" "$GAP_MS"
for backend in $BACKENDS; do
    measure "$backend"
done
