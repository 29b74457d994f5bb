# benches/admin.sh: part "admin" of benches/run.sh (sourced by it; uses its
# helpers). The admin web UI's pages on a big newsletter: 100 issues, the
# last one to 1,000,000 confirmed subscribers, each page requested one at a
# time (wrk -t1 -c1, one person at a browser) for BENCH_ADMIN_SECONDS, its
# p99 latency recorded. The target is < 50 ms for every page.
#
# The data: BENCH_ADMIN_EARLY confirmed subscribers get 99 issues, sent to
# smtp-sink; the list then grows to BENCH_BIG_N and the 100th issue goes to
# all of them. The pages are measured twice: while that issue is sending
# (its page's progress is live, and the daemon's CPU is shared with the
# send), and after every email is out.

ADMIN_SECONDS=${BENCH_ADMIN_SECONDS:-5}
ADMIN_EARLY=${BENCH_ADMIN_EARLY:-2000}
ADMIN_EMAIL=bench-admin@example.org
ADMIN_PASSWORD=bench-admin-password

# The pages, as "name path" lines; the ids are filled in once the data is made.
admin_pages() {
    cat <<PAGES
dashboard /admin
posts /admin/posts
editor /admin/posts/$ADMIN_QUEUED_POST
issues /admin/issues
issue_sending /admin/issues/$ADMIN_BIG_ISSUE
issue_progress /admin/issues/$ADMIN_BIG_ISSUE/progress
issue_old /admin/issues/$ADMIN_OLD_ISSUE
subscribers /admin/subscribers
search /admin/subscribers?q=big77777
filtered_deep /admin/subscribers?status=confirmed&after=$((BIG_N * 9 / 10))
subscriber /admin/subscribers/$((BIG_N / 2))
settings /admin/settings
PAGES
}

# Waits until nothing is pending or sending.
admin_wait_idle() {
    local stats
    for _ in $(seq 6000); do
        stats=$(admin GET /api/admin/stats | head -n 1)
        [[ $(jq -r '.deliveries.pending + .deliveries.sending' <<<"$stats") == 0 ]] && return 0
        kill -0 "$DAEMON_PID" 2>/dev/null || die "tidings serve died (log: $DAEMON_LOG)"
        sleep 0.2
    done
    die "deliveries still pending after 20 minutes: $stats"
}

admin_send_now() {
    local response
    response=$(admin POST /api/admin/send-now)
    [[ ${response##*$'\n'} == 202 ]] || die "send-now answered: $response"
    jq -r .issue_id <<<"${response%$'\n'*}"
}

# Logs in through the login form; sets ADMIN_COOKIE.
admin_log_in() {
    local jar="$TMP/admin-cookies" form csrf base="http://127.0.0.1:$HTTP_PORT"
    rm -f "$jar"
    form=$(curl -sS -c "$jar" "$base/admin/login")
    csrf=$(sed -n 's/.*name="csrf" value="\([^"]*\)".*/\1/p' <<<"$form" | head -n 1)
    curl -sS -o /dev/null -b "$jar" -c "$jar" -H "Origin: $base" \
        --data-urlencode "email=$ADMIN_EMAIL" --data-urlencode "password=$ADMIN_PASSWORD" \
        --data-urlencode "csrf=$csrf" "$base/admin/login"
    ADMIN_COOKIE="tidings_admin=$(awk '$6 == "tidings_admin" { print $7 }' "$jar")"
    [[ $ADMIN_COOKIE != "tidings_admin=" ]] || die "the admin login failed (log: $DAEMON_LOG)"
}

# admin_measure BACKEND PHASE: every page, one at a time.
admin_measure() {
    local backend=$1 phase=$2 name path code
    while read -r name path; do
        code=$(curl -sS -o "$TMP/admin-$name.html" -w '%{http_code}' -H "Cookie: $ADMIN_COOKIE" \
            "http://127.0.0.1:$HTTP_PORT$path")
        [[ $code == 200 ]] || die "$path answered $code (log: $DAEMON_LOG)"
        wrk -t1 -c1 -d"${ADMIN_SECONDS}s" --timeout 10s --latency -s "$BENCH_DIR/page.lua" \
            -H "Cookie: $ADMIN_COOKIE" "http://127.0.0.1:$HTTP_PORT$path" \
            >"$TMP/wrk-admin-$name.log" 2>&1 || die "wrk failed on $path"
        local line
        line=$(grep '^BENCH ' "$TMP/wrk-admin-$name.log") || die "no result from wrk on $path"
        record "$backend" "admin_${phase}_$name" "$(field "$line" p99_ms)"
        log "  $phase $path: p50 $(field "$line" p50_ms) ms, p99 $(field "$line" p99_ms) ms, $(field "$line" requests) requests"
    done < <(admin_pages)
}

# run_admin BACKEND: one data set, measured BENCH_RUNS times in each phase.
run_admin() {
    local backend=$1
    log "$backend admin pages: $ADMIN_EARLY early subscribers, 99 issues, then $BIG_N and a 100th"
    prepare_db "$backend" "$ADMIN_EARLY"
    for number in $(seq 2 100); do
        tidings post add --subject "Tip $number: a practical note" "$POST_FILE" >/dev/null ||
            die "tidings post add failed"
    done
    printf '%s\n' "$ADMIN_PASSWORD" | tidings admin add "$ADMIN_EMAIL" >/dev/null ||
        die "tidings admin add failed"
    start_sink
    start_daemon "$backend-admin-early"
    ADMIN_OLD_ISSUE=$(admin_send_now)
    admin_wait_idle
    for _ in $(seq 2 99); do
        admin_send_now >/dev/null
        admin_wait_idle
    done
    stop_pid "$DAEMON_PID"
    tidings subscriber generate --count $((BIG_N - ADMIN_EARLY)) --prefix big >/dev/null ||
        die "tidings subscriber generate failed"
    start_daemon "$backend-admin-big"
    ADMIN_QUEUED_POST=$(admin GET /api/admin/posts | head -n 1 | jq '[.[] | select(.status == "queued")][0].id')
    ADMIN_BIG_ISSUE=$(admin_send_now)
    admin_log_in
    for run in $(seq "$RUNS"); do
        log "$backend admin run $run/$RUNS, while issue $ADMIN_BIG_ISSUE sends"
        admin_measure "$backend" sending
    done
    admin_wait_idle
    for run in $(seq "$RUNS"); do
        log "$backend admin run $run/$RUNS, every email out"
        admin_measure "$backend" idle
    done
    stop_pid "$DAEMON_PID"
    stop_pid "$SINK_PID"
    drop_db "$backend"
}

# The table's rows: each page's p99 in each phase.
admin_rows() {
    local name path phase
    for phase in sending idle; do
        while read -r name path; do
            row "Admin page p99, GET $path ($phase) (ms)" "admin_${phase}_$name" %.1f "<" 50 "< 50 ms"
        done < <(ADMIN_QUEUED_POST='{post}' ADMIN_BIG_ISSUE='{last}' ADMIN_OLD_ISSUE='{first}' admin_pages)
    done
}

# Every admin metric's name, for the table of every run.
admin_metrics() {
    local name path phase
    for phase in sending idle; do
        while read -r name path; do echo "admin_${phase}_$name"; done < <(admin_pages)
    done
}
