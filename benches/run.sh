#!/usr/bin/env bash
# benches/run.sh: the tidings benchmark suite, on SQLite and on PostgreSQL.
#
# Measures, per backend (every figure is the median of BENCH_RUNS runs,
# except the 1,000,000-recipient memory send, which runs once):
#   1. delivery throughput: BENCH_N confirmed subscribers, one ~4 KiB post,
#      `tidings serve` sending to Postfix's smtp-sink over
#      TIDINGS_SMTP__CONCURRENCY connections, against smtp-source pushing the
#      same number of 4 KiB messages over as many sessions to the same sink;
#   2. fan-out: wall time of POST /api/admin/send-now (it creates the issue
#      and every delivery row in one transaction before it answers) for
#      BENCH_N and for BENCH_BIG_N subscribers;
#   3. memory: idle RSS, and peak RSS (VmHWM) of the daemon during the
#      BENCH_N send and the BENCH_BIG_N send;
#   4. signups: wrk POSTing unique addresses to /subscribe, against wrk GETting
#      / on the same server, with what each request costs the daemon,
#      smtp-sink and PostgreSQL in CPU;
#   5. ("bare") the same with the confirmation emails held back (the sender
#      limited to one a second): what the HTTP request and durable write
#      alone allow, a ceiling for the signup ratio on this machine;
#   6. ("dkim") the delivery run of 1 again with every email DKIM-signed
#      with an RSA-2048 key (made with openssl for the run);
#   7. ("admin") the admin web UI's pages, one request at a time, with 100
#      issues and BENCH_BIG_N subscribers: p99 latency per page, while the
#      100th issue sends and after (benches/admin.sh).
# Prints a Markdown table and writes it to benches/results.md.
#
# Needs: a Rust toolchain, curl, jq, wrk, openssl, Postfix's smtp-sink and smtp-source,
# and (for the postgres backend) psql and PostgreSQL on 127.0.0.1:5432 with
# trust auth for the user postgres. Run as root on Debian, it installs the
# missing commands' packages itself. Only loopback traffic.
#
# Settings (environment):
#   BENCH_RUNS=3              runs per figure (the median is reported)
#   BENCH_DELIVERY_RUNS=$BENCH_RUNS  runs of the (long) delivery measurement
#   BENCH_N=100000            subscribers for the delivery and fan-out runs
#   BENCH_BIG_N=1000000       subscribers for the large fan-out and memory runs
#   BENCH_QUICK=0             1: stop the BENCH_BIG_N memory send after
#                             BENCH_QUICK_STOP messages and report the peak so far
#   BENCH_QUICK_STOP=200000
#   BENCH_SIGNUP_SECONDS=20   duration of each wrk run
#   BENCH_WRK_THREADS=2  BENCH_WRK_CONNECTIONS=32
#   BENCH_SMTP_CONCURRENCY=8  tidings' smtp.concurrency and smtp-source -s
#   BENCH_BACKENDS="sqlite postgres"
#   BENCH_PARTS="delivery big signup bare dkim admin"   which measurements to run
#   BENCH_ADMIN_SECONDS=5     wrk time per admin page per run
#   BENCH_ADMIN_EARLY=2000    subscribers of the first 99 issues
#   BENCH_PG_HOST=127.0.0.1  BENCH_PG_PORT=5432  BENCH_PG_USER=postgres
#   BENCH_POLL_SECONDS=0.2    the shortest pause between /api/admin/stats polls
#                             during a send (longer while the end is far off)
#   BENCH_STALL_SECONDS=180   give up when a send makes no progress this long
#   BENCH_BUILD=1             0: skip `cargo build --release`
#   TIDINGS_BIN=target/release/tidings
#   BENCH_OUT=benches/results.md
#   BENCH_KEEP=0              1: keep the temporary folder (logs, databases)
#   BENCH_VALUES_DIR=         a folder that collects every run's figures across
#                             invocations (default: a temporary one)
#   BENCH_REPORT_ONLY=0       1: measure nothing; print the table from BENCH_VALUES_DIR

set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
export PATH="$PATH:/usr/sbin:/usr/local/sbin:/sbin"

RUNS=${BENCH_RUNS:-3}
DELIVERY_RUNS=${BENCH_DELIVERY_RUNS:-$RUNS}
N=${BENCH_N:-100000}
BIG_N=${BENCH_BIG_N:-1000000}
QUICK=${BENCH_QUICK:-0}
QUICK_STOP=${BENCH_QUICK_STOP:-200000}
SIGNUP_SECONDS=${BENCH_SIGNUP_SECONDS:-20}
WRK_THREADS=${BENCH_WRK_THREADS:-2}
WRK_CONNECTIONS=${BENCH_WRK_CONNECTIONS:-32}
CONCURRENCY=${BENCH_SMTP_CONCURRENCY:-8}
BACKENDS=${BENCH_BACKENDS:-sqlite postgres}
PARTS=${BENCH_PARTS:-delivery big signup bare dkim admin}
PG_HOST=${BENCH_PG_HOST:-127.0.0.1}
PG_PORT=${BENCH_PG_PORT:-5432}
PG_USER=${BENCH_PG_USER:-postgres}
POLL=${BENCH_POLL_SECONDS:-0.2}
POLL_MS=$(awk -v s="$POLL" 'BEGIN { printf "%d", s * 1000 }')
STALL=${BENCH_STALL_SECONDS:-180}
BUILD=${BENCH_BUILD:-1}
BIN=${TIDINGS_BIN:-$ROOT/target/release/tidings}
OUT=${BENCH_OUT:-$BENCH_DIR/results.md}
KEEP=${BENCH_KEEP:-0}
POST_FILE=$BENCH_DIR/post.md
TOKEN="bench-admin-token-$(date +%s)-$$"
SUBJECT="Bonus tip: Letting the money decide"

# ---------------------------------------------------------------- helpers --

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
    printf '\nbenches/run.sh: error: %s\n' "$*" >&2
    exit 1
}

is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }

for name in RUNS DELIVERY_RUNS N BIG_N QUICK_STOP SIGNUP_SECONDS WRK_THREADS WRK_CONNECTIONS CONCURRENCY STALL; do
    is_uint "${!name}" || die "$name must be a whole number, got '${!name}'"
done
((RUNS >= 1 && DELIVERY_RUNS >= 1)) || die "BENCH_RUNS and BENCH_DELIVERY_RUNS must be at least 1"
for backend in $BACKENDS; do
    [[ $backend == sqlite || $backend == postgres ]] ||
        die "BENCH_BACKENDS: unknown backend '$backend' (sqlite, postgres)"
done
for part in $PARTS; do
    [[ " delivery big signup bare dkim admin " == *" $part "* ]] ||
        die "BENCH_PARTS: unknown part '$part' (delivery, big, signup, bare, dkim, admin)"
done
wants() { [[ " $PARTS " == *" $1 "* ]]; }

# Our settings only: nothing from the caller's TIDINGS_* environment.
while read -r name; do unset "$name"; done < <(compgen -e | grep '^TIDINGS_' || true)

need=(curl jq awk)
wants delivery || wants big || wants dkim && need+=(smtp-sink smtp-source)
wants dkim && need+=(openssl)
wants signup || wants bare && need+=(wrk smtp-sink)
[[ " $BACKENDS " == *" postgres "* ]] && need+=(psql pgrep)
# The Debian package that brings each command.
package_of() {
    case $1 in
    smtp-sink | smtp-source) echo postfix ;;
    psql) echo postgresql-client ;;
    pgrep) echo procps ;;
    awk) echo gawk ;;
    *) echo "$1" ;;
    esac
}
missing=()
for command in "${need[@]}"; do
    command -v "$command" >/dev/null || missing+=("$(package_of "$command")")
done
# On a fresh Debian machine, as root, install what is missing (as
# scripts/test does), so the one command in docs/performance.md is all it takes.
if ((${#missing[@]})) && [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    log "installing ${missing[*]}..."
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
for command in "${need[@]}"; do
    command -v "$command" >/dev/null ||
        die "'$command' is not installed (apt-get install $(package_of "$command"))"
done
[[ -f $POST_FILE ]] || die "missing $POST_FILE"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/tidings-bench.XXXXXX")
chmod 0755 "$TMP"
# BENCH_VALUES_DIR keeps every run's figures (one file per backend and
# metric) across invocations, so parts can be run separately and reported
# together, e.g. with BENCH_REPORT_ONLY=1.
VALS=${BENCH_VALUES_DIR:-$TMP/values}
REPORT_ONLY=${BENCH_REPORT_ONLY:-0}
mkdir -p "$VALS" "$TMP/outbox"
PIDS=()
PG_DBS=()
FAILED=1

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    local pid
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        { wait "$pid"; } 2>/dev/null || true
    done
    local db
    for db in "${PG_DBS[@]}"; do
        psql_admin "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null 2>&1 || true
    done
    if [[ $FAILED == 1 || $KEEP == 1 ]]; then
        printf 'benches/run.sh: logs and data kept in %s\n' "$TMP" >&2
    else
        rm -rf "$TMP"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

psql_admin() {
    psql -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d postgres -v ON_ERROR_STOP=1 -qAt -c "$1"
}

# Starts "$@" in the background with output to $TMP/$1.log; sets LAST_PID.
start_bg() {
    local name=$1
    shift
    "$@" >"$TMP/$name.log" 2>&1 &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
}

stop_pid() {
    local pid=$1 signal=${2:-TERM}
    kill "-$signal" "$pid" 2>/dev/null || true
    for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -KILL "$pid" 2>/dev/null; then
        log "  warning: pid $pid ($(cat "/proc/$pid/comm" 2>/dev/null || echo '?')) did not stop within 30 s of SIG$signal; killed"
    fi
    { wait "$pid"; } 2>/dev/null || true
    local kept=() p
    for p in "${PIDS[@]}"; do [[ $p == "$pid" ]] || kept+=("$p"); done
    PIDS=("${kept[@]}")
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

free_port() {
    local port
    for _ in $(seq 200); do
        port=$((20000 + RANDOM % 40000))
        port_open "$port" || { echo "$port"; return; }
    done
    die "no free TCP port found on 127.0.0.1"
}

# wait_port PORT PID WHAT LOG
wait_port() {
    local port=$1 pid=$2 what=$3 logfile=$4
    for _ in $(seq 300); do
        port_open "$port" && return 0
        kill -0 "$pid" 2>/dev/null || {
            tail -n 20 "$logfile" >&2 || true
            die "$what exited before listening on 127.0.0.1:$port (log above: $logfile)"
        }
        sleep 0.1
    done
    tail -n 20 "$logfile" >&2 || true
    die "$what did not listen on 127.0.0.1:$port within 30 s (log: $logfile)"
}

now() { echo "$EPOCHREALTIME"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
calc() { awk "BEGIN { printf \"$1\", $2 }"; }

# CPU ticks (utime + stime) of a process; the fields after "(comm) ".
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'; }
CLK_TCK=$(getconf CLK_TCK)
# CPU ticks of every PostgreSQL server process (0 for SQLite, which runs
# inside the daemon). Nothing else uses the server during a run.
db_server_ticks() {
    [[ $1 == postgres ]] || { echo 0; return; }
    local pid total=0
    for pid in $(pgrep -x postgres); do
        total=$((total + $(cpu_ticks "$pid" 2>/dev/null || echo 0)))
    done
    echo "$total"
}
status_kb() { awk -v key="$2:" '$1 == key { print $2 }' "/proc/$1/status"; }

record() { echo "$3" >>"$VALS/$1.$2"; }   # record BACKEND METRIC VALUE
values() { [[ -f $VALS/$1.$2 ]] && paste -sd' ' "$VALS/$1.$2" | sed 's/ / \/ /g' || echo "–"; }
median() {
    [[ -f $VALS/$1.$2 ]] || { echo ""; return; }
    sort -g "$VALS/$1.$2" | awk '{ v[NR] = $1 } END {
        if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# --------------------------------------------------------------- database --

DB_SEQ=0
HTTP_PORT=0
SINK_PORT=0
DB_URL=""
DB_NAME=""
# new_db BACKEND: a fresh, empty database; sets DB_URL and DB_NAME.
new_db() {
    DB_SEQ=$((DB_SEQ + 1))
    if [[ $1 == sqlite ]]; then
        DB_NAME="$TMP/bench-$DB_SEQ.db"
        DB_URL="sqlite://$DB_NAME"
    else
        DB_NAME="tidings_bench_$$_$DB_SEQ"
        psql_admin "CREATE DATABASE \"$DB_NAME\"" >/dev/null ||
            die "cannot create PostgreSQL database $DB_NAME on $PG_HOST:$PG_PORT as $PG_USER"
        PG_DBS+=("$DB_NAME")
        DB_URL="postgres://$PG_USER@$PG_HOST:$PG_PORT/$DB_NAME"
    fi
}

drop_db() {
    if [[ $1 == sqlite ]]; then
        rm -f "$DB_NAME" "$DB_NAME-wal" "$DB_NAME-shm"
    else
        psql_admin "DROP DATABASE IF EXISTS \"$DB_NAME\" WITH (FORCE)" >/dev/null ||
            log "warning: could not drop database $DB_NAME"
        local kept=() db
        for db in "${PG_DBS[@]}"; do [[ $db == "$DB_NAME" ]] || kept+=("$db"); done
        PG_DBS=("${kept[@]}")
    fi
}

# The daemon's environment for the current database, sink and HTTP port.
tidings_env() {
    TENV=(
        "TIDINGS_DATABASE__URL=$DB_URL"
        "TIDINGS_ADMIN__TOKEN=$TOKEN"
        "TIDINGS_HTTP__BIND=127.0.0.1:$HTTP_PORT"
        "TIDINGS_HTTP__SUBSCRIBE_PER_IP_PER_HOUR=0"
        "TIDINGS_NEWSLETTER__BASE_URL=http://127.0.0.1:$HTTP_PORT"
        "TIDINGS_SMTP__URL=smtp://127.0.0.1:$SINK_PORT"
        "TIDINGS_SMTP__CONCURRENCY=$CONCURRENCY"
        "TIDINGS_SMTP__OUTBOX_DIR=$TMP/outbox"
        "TIDINGS_TEMPLATES__DIR=$TMP/no-template-overrides"
        # A slot that never comes: the scheduler must not send (or catch up
        # on a missed Monday) in the middle of a measurement.
        "TIDINGS_SCHEDULE__CRON=0 0 0 1 1 * 2099"
    )
}

tidings() {
    tidings_env
    env "${TENV[@]}" "$BIN" "$@"
}

# prepare_db BACKEND COUNT: fresh database, COUNT confirmed subscribers, our post queued first.
prepare_db() {
    new_db "$1"
    tidings migrate >"$TMP/migrate.log" 2>&1 ||
        { cat "$TMP/migrate.log" >&2; die "tidings migrate failed on $DB_URL"; }
    if (($2 > 0)); then
        local out
        out=$(tidings subscriber generate --count "$2" 2>&1) ||
            { echo "$out" >&2; die "tidings subscriber generate --count $2 failed"; }
        log "  $out"
    fi
    local added
    added=$(tidings post add --subject "$SUBJECT" "$POST_FILE" 2>&1) ||
        { echo "$added" >&2; die "tidings post add failed"; }
    POST_ID=$(sed -n 's/^queued post \([0-9]*\) .*/\1/p' <<<"$added")
    [[ -n $POST_ID ]] || die "unexpected output from tidings post add: $added"
}

start_sink() {
    SINK_PORT=$(free_port)
    local user=()
    [[ $(id -u) == 0 ]] && user=(-u nobody)
    # No -d: nothing is written to disk. 1024 is the listen backlog.
    start_bg "smtp-sink-$SINK_PORT" smtp-sink "${user[@]}" "127.0.0.1:$SINK_PORT" 1024
    SINK_PID=$LAST_PID
    wait_port "$SINK_PORT" "$SINK_PID" smtp-sink "$TMP/smtp-sink-$SINK_PORT.log"
}

# True while smtp-sink runs; otherwise sets SINK_STATUS to its exit status.
sink_alive() {
    kill -0 "$SINK_PID" 2>/dev/null && return 0
    SINK_STATUS=0
    wait "$SINK_PID" 2>/dev/null || SINK_STATUS=$?
    ((SINK_STATUS > 128)) && SINK_STATUS="$SINK_STATUS, killed by signal $((SINK_STATUS - 128))"
    return 1
}

DAEMON_EXTRA_ENV=()
start_daemon() {
    HTTP_PORT=$(free_port)
    tidings_env
    DAEMON_LOG="$TMP/serve-$1.log"
    start_bg "serve-$1" env "${TENV[@]}" "${DAEMON_EXTRA_ENV[@]}" "$BIN" serve
    DAEMON_PID=$LAST_PID
    wait_port "$HTTP_PORT" "$DAEMON_PID" "tidings serve" "$DAEMON_LOG"
    local ok=0
    for _ in $(seq 100); do
        curl -sf "http://127.0.0.1:$HTTP_PORT/healthz" >/dev/null && { ok=1; break; }
        sleep 0.1
    done
    ((ok)) || die "tidings serve listens but /healthz does not answer (log: $DAEMON_LOG)"
    # `env` execs tidings, so DAEMON_PID is the daemon itself.
    [[ $(cat "/proc/$DAEMON_PID/comm") == tidings ]] ||
        die "expected pid $DAEMON_PID to be tidings, found $(cat "/proc/$DAEMON_PID/comm")"
}

admin() { # admin METHOD PATH
    curl -sS --max-time 900 -X "$1" -H "authorization: Bearer $TOKEN" \
        -w '\n%{http_code}' "http://127.0.0.1:$HTTP_PORT$2"
}

# send_now EXPECTED: times POST /api/admin/send-now; sets SEND_T0, FANOUT_S.
send_now() {
    local response code body
    SEND_T0=$(now)
    response=$(admin POST /api/admin/send-now) || die "POST /api/admin/send-now failed (log: $DAEMON_LOG)"
    FANOUT_S=$(elapsed "$SEND_T0" "$(now)")
    code=${response##*$'\n'}
    body=${response%$'\n'*}
    [[ $code == 202 ]] || die "send-now answered $code: $body"
    local recipients post_id
    recipients=$(jq -r .recipients <<<"$body")
    post_id=$(jq -r .post_id <<<"$body")
    [[ $recipients == "$1" ]] || die "send-now created $recipients deliveries, expected $1: $body"
    [[ $post_id == "$POST_ID" ]] || die "send-now picked post $post_id, expected the benchmark post $POST_ID"
}

# json_count VAR OBJECT-BODY KEY: sets VAR to the number after "KEY": in a
# flat JSON object (no subshell: this runs five times a second).
json_count() {
    [[ $2 =~ \"$3\":([0-9]+) ]] || die "no count '$3' in {$2}"
    printf -v "$1" '%s' "${BASH_REMATCH[1]}"
}

# poll_pause TARGET SENT T0 NOW: seconds until the next stats poll. Each
# poll counts every delivery row (a scan of the table on PostgreSQL), so
# polling five times a second through a whole send took CPU from the send
# being measured. Half the time the send still needs at its rate so far,
# between BENCH_POLL_SECONDS and 1 s: the end is still seen within
# BENCH_POLL_SECONDS.
poll_pause() {
    local target=$1 sent=$2 t0=${3/./} now=${4/./} min_ms=$POLL_MS max_ms=1000 pause_ms
    pause_ms=$min_ms
    if ((sent > 0 && sent < target)); then
        pause_ms=$(((target - sent) * ((now - t0) / 1000) / sent / 2))
        ((pause_ms < min_ms)) && pause_ms=$min_ms
        ((pause_ms > max_ms)) && pause_ms=$max_ms
    fi
    printf '%d.%03d' $((pause_ms / 1000)) $((pause_ms % 1000))
}

# wait_sent TARGET: polls /api/admin/stats until deliveries.sent >= TARGET; sets SENT, SEND_T1.
wait_sent() {
    local target=$1 last=-1 last_change response code body failed skipped
    last_change=$(now)
    while true; do
        response=$(admin GET /api/admin/stats) || die "GET /api/admin/stats failed (log: $DAEMON_LOG)"
        SEND_T1=$(now)
        code=${response##*$'\n'}
        body=${response%$'\n'*}
        [[ $code == 200 ]] || die "stats answered $code: $body"
        # Parsed in the shell: a jq process per poll took ~6 % of the
        # machine's CPU away from the send being measured.
        [[ $body =~ \"deliveries\":\{([^}]*)\} ]] || die "stats without deliveries: $body"
        local counts=${BASH_REMATCH[1]}
        json_count SENT "$counts" sent
        json_count failed "$counts" failed
        json_count skipped "$counts" skipped
        ((failed == 0 && skipped == 0)) ||
            die "deliveries failed ($failed) or skipped ($skipped) during the send (log: $DAEMON_LOG)"
        ((SENT >= target)) && return 0
        kill -0 "$DAEMON_PID" 2>/dev/null || die "tidings serve died during the send (log: $DAEMON_LOG)"
        sink_alive || die "smtp-sink on port $SINK_PORT exited during the send (status $SINK_STATUS) at $SENT of $target sent"
        if ((SENT != last)); then
            last=$SENT
            last_change=$SEND_T1
        elif awk -v a="$last_change" -v b="$SEND_T1" -v s="$STALL" 'BEGIN { exit !(b - a > s) }'; then
            die "no progress for $STALL s at $SENT of $target sent (log: $DAEMON_LOG)"
        fi
        sleep "$(poll_pause "$target" "$SENT" "$SEND_T0" "$SEND_T1")"
    done
}

# ------------------------------------------------------------ measurements --

# 1 + 2 (BENCH_N) + 3 (idle and peak at BENCH_N): one run. With a third
# argument `dkim`, 6: the same with RSA-2048 DKIM signing, its figures
# recorded under dkim_ names.
run_delivery() {
    local backend=$1 run=$2 variant=${3:-} prefix=""
    log "$backend delivery run $run/$DELIVERY_RUNS: $N subscribers${variant:+, $variant}"
    prepare_db "$backend" "$N"
    start_sink
    if [[ $variant == dkim ]]; then
        prefix=dkim_
        [[ -f $TMP/dkim.pem ]] ||
            openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$TMP/dkim.pem" 2>/dev/null ||
            die "openssl could not make an RSA key"
        DAEMON_EXTRA_ENV=(
            "TIDINGS_SMTP__DKIM__DOMAIN=bench.example.org"
            "TIDINGS_SMTP__DKIM__SELECTOR=bench"
            "TIDINGS_SMTP__DKIM__PRIVATE_KEY_FILE=$TMP/dkim.pem"
        )
    fi
    start_daemon "$backend-delivery${variant:+-$variant}-$run"
    DAEMON_EXTRA_ENV=()
    sleep 2
    local idle_kb cpu0 cpu1 hwm_kb seconds rate cpu_s
    idle_kb=$(status_kb "$DAEMON_PID" VmRSS)
    cpu0=$(cpu_ticks "$DAEMON_PID")
    send_now "$N"
    wait_sent "$N"
    cpu1=$(cpu_ticks "$DAEMON_PID")
    hwm_kb=$(status_kb "$DAEMON_PID" VmHWM)
    seconds=$(elapsed "$SEND_T0" "$SEND_T1")
    rate=$(calc %.1f "$N / $seconds")
    cpu_s=$(calc %.2f "($cpu1 - $cpu0) / $CLK_TCK")
    stop_pid "$DAEMON_PID"

    local t0 src_s src_rate
    t0=$(now)
    sink_alive || die "smtp-sink on port $SINK_PORT exited (status $SINK_STATUS) before the smtp-source run"
    smtp-source -d -s "$CONCURRENCY" -m "$N" -l "$SOURCE_BODY_BYTES" "127.0.0.1:$SINK_PORT" >"$TMP/smtp-source.log" 2>&1 ||
        { cat "$TMP/smtp-source.log" >&2; die "smtp-source failed"; }
    src_s=$(elapsed "$t0" "$(now)")
    src_rate=$(calc %.1f "$N / $src_s")
    # The old reference, 4096-byte messages, for comparison with earlier runs.
    if [[ -z $prefix ]]; then
        t0=$(now)
        smtp-source -d -s "$CONCURRENCY" -m "$N" -l 4096 "127.0.0.1:$SINK_PORT" >"$TMP/smtp-source-4k.log" 2>&1 ||
            { cat "$TMP/smtp-source-4k.log" >&2; die "smtp-source -l 4096 failed"; }
        record "$backend" source_4k_rate "$(calc %.1f "$N / $(elapsed "$t0" "$(now)")")"
    fi
    stop_pid "$SINK_PID"
    drop_db "$backend"

    record "$backend" "${prefix}send_rate" "$rate"
    record "$backend" "${prefix}source_rate" "$src_rate"
    record "$backend" "${prefix}ratio" "$(calc %.3f "$rate / $src_rate")"
    record "$backend" "${prefix}cpu_us_per_msg" "$(calc %.0f "$cpu_s * 1e6 / $N")"
    if [[ -n $prefix ]]; then
        log "  signed: tidings $rate msg/s ($seconds s, CPU $cpu_s s); smtp-source $src_rate msg/s"
        return
    fi
    record "$backend" send_seconds "$seconds"
    record "$backend" cpu_s "$cpu_s"
    record "$backend" fanout_n "$FANOUT_S"
    record "$backend" idle_mib "$(calc %.1f "$idle_kb / 1024")"
    record "$backend" peak_n_mib "$(calc %.1f "$hwm_kb / 1024")"
    log "  tidings $rate msg/s ($seconds s, CPU $cpu_s s, peak $((hwm_kb / 1024)) MiB, idle $((idle_kb / 1024)) MiB); smtp-source $src_rate msg/s; fan-out $FANOUT_S s"
}

# The reference must push messages of the size tidings sends: the sink's
# work grows with every line it reads. One issue email, to one generated
# subscriber, written to the outbox, gives the size; smtp-source adds about
# SOURCE_HEADER_BYTES of headers of its own to the body length it is given.
SOURCE_HEADER_BYTES=100
measure_email_size() {
    local saved_url=$DB_URL saved_name=$DB_NAME outbox=$TMP/size-outbox
    new_db sqlite
    mkdir -p "$outbox"
    tidings_env
    local sized=(env "${TENV[@]}" "TIDINGS_SMTP__URL=" "TIDINGS_SMTP__OUTBOX_DIR=$outbox" "$BIN")
    { "${sized[@]}" migrate && "${sized[@]}" subscriber generate --count 1 &&
        "${sized[@]}" post add --subject "$SUBJECT" "$POST_FILE" &&
        "${sized[@]}" send-now; } >"$TMP/size.log" 2>&1 ||
        { cat "$TMP/size.log" >&2; die "could not send one issue to the outbox to measure its size"; }
    local files=("$outbox"/*.eml)
    [[ ${#files[@]} == 1 && -f ${files[0]} ]] || die "expected one .eml in $outbox"
    EMAIL_BYTES=$(wc -c <"${files[0]}")
    SOURCE_BODY_BYTES=$((EMAIL_BYTES - SOURCE_HEADER_BYTES))
    drop_db sqlite
    DB_URL=$saved_url DB_NAME=$saved_name
    log "one issue email is $EMAIL_BYTES bytes; smtp-source sends -l $SOURCE_BODY_BYTES"
}

# 2 (BENCH_BIG_N) every run; 3 (peak during the BENCH_BIG_N send) in run 1 only.
run_big() {
    local backend=$1 run=$2
    log "$backend fan-out run $run/$RUNS: $BIG_N subscribers"
    prepare_db "$backend" "$BIG_N"
    start_sink
    start_daemon "$backend-big-$run"
    sleep 1
    local cpu0
    cpu0=$(cpu_ticks "$DAEMON_PID")
    send_now "$BIG_N"
    record "$backend" fanout_big "$FANOUT_S"
    log "  fan-out $FANOUT_S s"
    if ((run == 1)); then
        local stop=$BIG_N
        ((QUICK == 1 && QUICK_STOP < BIG_N)) && stop=$QUICK_STOP
        log "  memory: sending until $stop of $BIG_N are sent"
        wait_sent "$stop"
        local hwm_kb seconds cpu1
        cpu1=$(cpu_ticks "$DAEMON_PID")
        hwm_kb=$(status_kb "$DAEMON_PID" VmHWM)
        seconds=$(elapsed "$SEND_T0" "$SEND_T1")
        record "$backend" peak_big_mib "$(calc %.1f "$hwm_kb / 1024")"
        record "$backend" big_sent "$SENT"
        record "$backend" big_rate "$(calc %.1f "$SENT / $seconds")"
        record "$backend" big_cpu_us_per_msg "$(calc %.0f "($cpu1 - $cpu0) * 1e6 / $CLK_TCK / $SENT")"
        log "  peak RSS $((hwm_kb / 1024)) MiB after $SENT sent in $seconds s"
    fi
    # SIGTERM: the daemon finishes only the sends in flight (in quick mode
    # and in runs 2.. the rest of the issue is abandoned with the database).
    stop_pid "$DAEMON_PID"
    stop_pid "$SINK_PID"
    drop_db "$backend"
}

# wrk_run NAME SCRIPT URL: sets BENCH_LINE.
wrk_run() {
    wrk -t"$WRK_THREADS" -c"$WRK_CONNECTIONS" -d"${SIGNUP_SECONDS}s" --timeout 10s --latency \
        -s "$2" "$3" >"$TMP/wrk-$1.log" 2>&1 || { cat "$TMP/wrk-$1.log" >&2; die "wrk failed ($1)"; }
    BENCH_LINE=$(grep '^BENCH ' "$TMP/wrk-$1.log") || { cat "$TMP/wrk-$1.log" >&2; die "no result line from wrk ($1)"; }
}
field() { sed -n "s/.* $2=\([^ ]*\).*/\1/p" <<<"$1"; }

# 4: one run. MODE "bare": the same, with the daemon's sender held to one
# email a second, so the POST run measures the signup's HTTP request and
# durable write alone, as a ceiling for what any email sending leaves.
run_signup() {
    local backend=$1 run=$2 mode=${3:-full} prefix="" extra=()
    if [[ $mode == bare ]]; then
        prefix=bare_
        extra=("TIDINGS_SMTP__RATE_PER_SECOND=1")
    fi
    log "$backend signup run $run/$RUNS${prefix:+ (emails held back)}: wrk ${SIGNUP_SECONDS}s, $WRK_THREADS threads, $WRK_CONNECTIONS connections"
    new_db "$backend"
    start_sink
    DAEMON_EXTRA_ENV=("${extra[@]}")
    start_daemon "$backend-signup-$mode-$run"
    DAEMON_EXTRA_ENV=()
    sleep 1
    # GET first: the confirmation emails queued by the POST run would load it.
    # CPU is read around each wrk run, to show what one request costs each
    # process: the daemon, smtp-sink and (for PostgreSQL) the database.
    local d0 d1 d2 s1 s2 db1 db2
    d0=$(cpu_ticks "$DAEMON_PID")
    wrk_run "$backend-get-$mode-$run" "$BENCH_DIR/page.lua" "http://127.0.0.1:$HTTP_PORT/"
    local get=$BENCH_LINE
    d1=$(cpu_ticks "$DAEMON_PID") s1=$(cpu_ticks "$SINK_PID") db1=$(db_server_ticks "$backend")
    wrk_run "$backend-post-$mode-$run" "$BENCH_DIR/signup.lua" "http://127.0.0.1:$HTTP_PORT/subscribe"
    local post=$BENCH_LINE
    d2=$(cpu_ticks "$DAEMON_PID") s2=$(cpu_ticks "$SINK_PID") db2=$(db_server_ticks "$backend")
    # Confirmation emails not yet sent when wrk stopped: a rate bought by
    # letting the sender fall behind would show here.
    local stats behind pending
    stats=$(admin GET /api/admin/stats | head -n 1)
    behind=$(jq -r '.deliveries.pending + .deliveries.sending' <<<"$stats")
    pending=$(jq -r .subscribers.pending <<<"$stats")
    local errors
    errors=$(awk '{ s = 0; for (i = 1; i <= NF; i++) if ($i ~ /^errors_/) { split($i, kv, "="); s += kv[2] } print s }' <<<"$post $get")
    ((errors == 0)) || log "  warning: wrk saw $errors errors: POST: $post; GET: $get"
    stop_pid "$DAEMON_PID"
    stop_pid "$SINK_PID"
    drop_db "$backend"

    local post_rps get_rps gets posts
    post_rps=$(field "$post" rps)
    get_rps=$(field "$get" rps)
    gets=$(field "$get" requests) posts=$(field "$post" requests)
    per_request() { calc %.0f "($2 - $1) * 1e6 / $CLK_TCK / $3"; }
    record "$backend" "${prefix}post_rps" "$post_rps"
    record "$backend" "${prefix}get_rps" "$get_rps"
    record "$backend" "${prefix}signup_ratio" "$(calc %.3f "$post_rps / $get_rps")"
    record "$backend" "${prefix}post_daemon_us" "$(per_request "$d1" "$d2" "$posts")"
    if [[ $mode == full ]]; then
        record "$backend" post_p99 "$(field "$post" p99_ms)"
        record "$backend" get_p99 "$(field "$get" p99_ms)"
        record "$backend" wrk_errors "$errors"
        record "$backend" get_daemon_us "$(per_request "$d0" "$d1" "$gets")"
        record "$backend" post_sink_us "$(per_request "$s1" "$s2" "$posts")"
        [[ $backend == postgres ]] && record "$backend" post_db_us "$(per_request "$db1" "$db2" "$posts")"
        record "$backend" emails_behind "$behind"
    else
        record "$backend" bare_wrk_errors "$errors"
    fi
    log "  POST /subscribe $post_rps req/s (p99 $(field "$post" p99_ms) ms, $pending pending subscribers, $behind emails not yet sent); GET / $get_rps req/s (p99 $(field "$get" p99_ms) ms)"
}

# ------------------------------------------------------------------ report --

fmt() { # fmt VALUE PRINTF-FORMAT
    if [[ -z $1 ]]; then echo "–"; else calc "$2" "$1"; fi
}

# verdict VALUE OP LIMIT -> "met"/"missed"
verdict() {
    [[ -z $1 ]] && return
    if awk -v v="$1" -v l="$3" "BEGIN { exit !(v $2 l) }"; then echo " (met)"; else echo " (**missed**)"; fi
}

row() { # row LABEL METRIC FORMAT [OP LIMIT] [TARGET-TEXT]
    local label=$1 metric=$2 format=$3 op=${4:-} limit=${5:-} target=${6:-} line backend m
    line="| $label |"
    for backend in $BACKENDS; do
        m=$(median "$backend" "$metric")
        line+=" $(fmt "$m" "$format")"
        [[ -n $op ]] && line+=$(verdict "$m" "$op" "$limit")
        line+=" |"
    done
    echo "$line $target |"
}

signup_row() { # p99 and ratio targets together
    local line="| Signup target met (ratio ≥ 0.25 and p99 < 50 ms) |" backend r p
    for backend in $BACKENDS; do
        r=$(median "$backend" signup_ratio)
        p=$(median "$backend" post_p99)
        if [[ -z $r ]]; then line+=" – |"
        elif awk -v r="$r" -v p="$p" 'BEGIN { exit !(r >= 0.25 && p < 50) }'; then line+=" yes |"
        else line+=" **no** |"; fi
    done
    echo "$line ratio ≥ 0.25, p99 < 50 ms |"
}

report() {
    local header="| figure |" rule="|---|" backend
    for backend in $BACKENDS; do
        header+=" ${backend/sqlite/SQLite} |"
        rule+="---:|"
    done
    header=${header/postgres/PostgreSQL}
    header+=" target |"
    rule+="---|"
    local big_label="Peak RSS, $BIG_N-recipient send (MiB)"
    local big_sent
    big_sent=$(for backend in $BACKENDS; do median "$backend" big_sent; done | sort -n | head -n 1)
    if [[ -n $big_sent && $big_sent -lt $BIG_N ]]; then
        big_label="Peak RSS, $BIG_N-recipient send, stopped after $big_sent sent (MiB)"
    fi
    local build="unknown build"
    if [[ -f $VALS/build-info ]]; then
        build="commit $(sed -n 's/^commit=//p' "$VALS/build-info")"
        grep -q '^dirty=yes' "$VALS/build-info" && build+=" with uncommitted changes"
        build+=", binary sha256 $(sed -n 's/^binary=//p' "$VALS/build-info")…"
    fi
    cat <<EOF
# tidings benchmark results

Generated by \`benches/run.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC').

**Machine:** $(nproc) CPUs ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)),
$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) RAM, $(uname -sr).
tidings $build (release build);
PostgreSQL $(psql_admin 'SHOW server_version' 2>/dev/null || echo 'n/a') on loopback.

**Settings:** medians of $RUNS runs$( ((DELIVERY_RUNS != RUNS)) && echo " ($DELIVERY_RUNS for the delivery
figures, which include the fan-out of N, idle RSS and the RSS of the N send)"); N = $N subscribers for delivery and
fan-out; $BIG_N for the large fan-out (median of $RUNS runs) and the large memory
send (one run$( ((QUICK == 1)) && echo ", BENCH_QUICK=1: stopped after $QUICK_STOP sent")).
smtp.concurrency = $CONCURRENCY, smtp-source -s $CONCURRENCY -d -l $((${EMAIL_BYTES:-4196} - SOURCE_HEADER_BYTES)); wrk
-t$WRK_THREADS -c$WRK_CONNECTIONS for ${SIGNUP_SECONDS} s per run.

$header
$rule
$(row "Delivery: tidings (messages/s, N = $N)" send_rate %.0f)
$(row "Delivery: smtp-source, same-size messages, same smtp-sink (messages/s)" source_rate %.0f)
$(row "Delivery ratio tidings ÷ smtp-source" ratio %.3f ">=" 0.5 "≥ 0.5")
$(row "smtp-source with 4096-byte messages, for comparison (messages/s)" source_4k_rate %.0f)
$(row "Daemon CPU during the send (s)" cpu_s %.1f)
$(row "Daemon CPU per message (µs)" cpu_us_per_msg %.0f)
$(row "DKIM-signed (RSA-2048): tidings (messages/s)" dkim_send_rate %.0f)
$(row "DKIM-signed (RSA-2048): delivery ratio tidings ÷ smtp-source" dkim_ratio %.3f)
$(row "DKIM-signed (RSA-2048): daemon CPU per message (µs)" dkim_cpu_us_per_msg %.0f)
$(row "Fan-out, $N recipients (s)" fanout_n %.2f)
$(row "Fan-out, $BIG_N recipients (s)" fanout_big %.2f "<=" 10 "≤ 10 s")
$(row "Idle RSS after start (MiB)" idle_mib %.1f "<=" 20 "≤ 20 MB")
$(row "Peak RSS, $N-recipient send (MiB)" peak_n_mib %.1f)
$(row "$big_label" peak_big_mib %.1f "<=" 60 "≤ 60 MB")
$(row "Delivery rate during the $BIG_N send (messages/s)" big_rate %.0f)
$(row "Signup: POST /subscribe (requests/s)" post_rps %.0f)
$(row "Signup: POST /subscribe p99 latency (ms)" post_p99 %.1f "<" 50 "< 50 ms")
$(row "GET / (requests/s)" get_rps %.0f)
$(row "GET / p99 latency (ms)" get_p99 %.1f)
$(row "Signup ratio POST ÷ GET" signup_ratio %.3f ">=" 0.25 "≥ 0.25")
$(row "Confirmation emails not yet sent when wrk stopped" emails_behind %.0f)
$(row "Daemon CPU per GET / (µs)" get_daemon_us %.0f)
$(row "Daemon CPU per signup, its email included (µs)" post_daemon_us %.0f)
$(row "smtp-sink CPU per signup (µs)" post_sink_us %.0f)
$(row "PostgreSQL server CPU per signup (µs)" post_db_us %.0f)
$(row "Emails held back: POST /subscribe (requests/s)" bare_post_rps %.0f)
$(row "Emails held back: GET / (requests/s)" bare_get_rps %.0f)
$(row "Emails held back: ratio POST ÷ GET" bare_signup_ratio %.3f)
$(row "Emails held back: daemon CPU per signup (µs)" bare_post_daemon_us %.0f)
$(signup_row)
$(admin_rows)

Notes:
- Delivery rate = N ÷ (time from the send-now request until /api/admin/stats
  shows all N sent; polled at most every second, and every $POLL s near
  the end); it includes the fan-out. CPU is
  utime + stime of the tidings process only (with PostgreSQL, the database
  server's own CPU is not included). Answering those stats polls is part of
  the measured load: each one counts every delivery row.
- The reference sends messages of the size tidings sends: one issue email
  (multipart text + HTML of the ~4 KiB post, with headers) is
  ${EMAIL_BYTES:-?} bytes, and smtp-source gets -l with that less the ~$SOURCE_HEADER_BYTES
  bytes of headers it adds itself. smtp-sink's work grows with every line it
  reads, so a reference with smaller messages would be faster for that
  reason alone; its rate with 4096-byte messages is shown for comparison.
- The peak RSS of the $BIG_N send is from one run, not a median.
- DKIM-signed: the delivery run again, every email signed (relaxed/relaxed,
  rsa-sha256) with a 2048-bit key; each email is about 560 bytes longer
  than the reference's, which is not resized for it. Its smtp-source rate,
  measured after it, is the divisor of its ratio.
- Signups: confirmation emails go to smtp-sink (not to the outbox folder, so
  no disk writes per signup); the daemon delivers them while wrk runs.
  CPU per request is the process's utime + stime over the wrk run ÷ the
  requests wrk completed; for PostgreSQL it sums every server process.
- "Emails held back": a separate daemon with smtp.rate_per_second = 1, so
  the signups are written (subscriber, consent, confirmation, queued email)
  but their emails wait. GET / is measured again on that daemon.
- MiB = VmRSS/VmHWM kB ÷ 1024; the targets are read as MiB.

<details><summary>Every run</summary>

| metric | $(for b in $BACKENDS; do printf '%s | ' "$b"; done)
|---|$(for b in $BACKENDS; do printf -- '---|'; done)
$(for metric in send_rate send_seconds source_rate source_4k_rate ratio cpu_s cpu_us_per_msg dkim_send_rate dkim_source_rate dkim_ratio dkim_cpu_us_per_msg fanout_n fanout_big idle_mib peak_n_mib peak_big_mib big_sent big_rate big_cpu_us_per_msg post_rps post_p99 get_rps get_p99 signup_ratio emails_behind get_daemon_us post_daemon_us post_sink_us post_db_us bare_post_rps bare_get_rps bare_signup_ratio bare_post_daemon_us bare_wrk_errors wrk_errors $(admin_metrics); do
        printf '| %s |' "$metric"
        for b in $BACKENDS; do printf ' %s |' "$(values "$b" "$metric")"; done
        echo
    done)

</details>
EOF
}

# shellcheck source=benches/admin.sh
source "$BENCH_DIR/admin.sh"

# -------------------------------------------------------------------- main --

if [[ $REPORT_ONLY == 1 ]]; then
    PARTS=""
    BUILD=0
fi
if [[ " $BACKENDS " == *" postgres "* ]]; then
    psql_admin 'SELECT 1' >/dev/null ||
        die "cannot reach PostgreSQL at $PG_HOST:$PG_PORT as $PG_USER (set BENCH_PG_HOST/PORT/USER, or BENCH_BACKENDS=sqlite)"
fi
if [[ $BUILD == 1 ]]; then
    log "cargo build --release"
    (cd "$ROOT" && cargo build --release --quiet) || die "cargo build --release failed"
fi
[[ -x $BIN ]] || die "no tidings binary at $BIN (build with cargo build --release, or set TIDINGS_BIN)"
if [[ -n $PARTS ]]; then
    # Measure a private copy: a rebuild of target/release during the run
    # must not change what is measured half-way through.
    cp "$BIN" "$TMP/tidings"
    BIN=$TMP/tidings
    {
        echo "commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
        dirty=$(git -C "$ROOT" status --porcelain -- src Cargo.toml Cargo.lock migrations templates 2>/dev/null || true)
        echo "dirty=$([[ -n $dirty ]] && echo yes || echo no)"
        echo "binary=$(sha256sum "$BIN" | cut -c1-12)"
    } >"$TMP/build-info"
    if [[ -f $VALS/build-info ]] && ! cmp -s "$VALS/build-info" "$TMP/build-info"; then
        die "BENCH_VALUES_DIR $VALS holds figures from another build ($(paste -sd' ' "$VALS/build-info")); use an empty folder"
    fi
    cp "$TMP/build-info" "$VALS/build-info"
fi
log "results go to $OUT; temporary files in $TMP"
EMAIL_BYTES=$(cat "$VALS/email-bytes" 2>/dev/null || echo "")
if wants delivery || wants dkim; then
    measure_email_size
    echo "$EMAIL_BYTES" >"$VALS/email-bytes"
fi

for backend in $BACKENDS; do
    if wants delivery; then
        for run in $(seq "$DELIVERY_RUNS"); do run_delivery "$backend" "$run"; done
    fi
    if wants big; then
        for run in $(seq "$RUNS"); do run_big "$backend" "$run"; done
    fi
    if wants signup; then
        for run in $(seq "$RUNS"); do run_signup "$backend" "$run"; done
    fi
    if wants bare; then
        for run in $(seq "$RUNS"); do run_signup "$backend" "$run" bare; done
    fi
    if wants dkim; then
        for run in $(seq "$DELIVERY_RUNS"); do run_delivery "$backend" "$run" dkim; done
    fi
    if wants admin; then
        run_admin "$backend"
    fi
done

report >"$OUT.tmp"
mv "$OUT.tmp" "$OUT"
cat "$OUT"
FAILED=0
