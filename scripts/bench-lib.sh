# Shell functions shared by scripts/bench and the bench-* scripts (sourced, not run). Set
# BENCH_NAME (the log prefix, e.g. bench-core) before sourcing; the scripts run from the repo
# root.

# log MESSAGE...: a timestamped line on stderr.
log() { printf '[%s %s] %s\n' "$BENCH_NAME" "$(date +%H:%M:%S)" "$*" >&2; }
die() {
    log "FAILED: $*"
    exit 1
}

# require_commands CMD...: fails naming the first command not on PATH.
require_commands() {
    local cmd
    for cmd in "$@"; do
        command -v "$cmd" >/dev/null 2>&1 || die "missing command: $cmd (run scripts/install-test-deps)"
    done
}

# positive_int NAME VALUE: fails unless VALUE is a positive integer (NAME is the variable's name).
positive_int() {
    [[ "$2" =~ ^[1-9][0-9]*$ ]] || die "$1 must be a positive integer, not '$2'"
}

# build_release: cargo build --release (unless BENCH_SKIP_BUILD=1).
build_release() {
    if [[ "${BENCH_SKIP_BUILD:-0}" == 1 ]]; then
        log "BENCH_SKIP_BUILD=1: using the release binary already built"
    else
        command -v cargo >/dev/null 2>&1 || die "missing command: cargo (or set BENCH_SKIP_BUILD=1)"
        log "cargo build --release"
        cargo build --release
    fi
}

# find_binary: sets BIN to the absolute path of the release binary (honouring CARGO_TARGET_DIR
# as cargo does), or fails.
find_binary() {
    local target_dir
    target_dir=$(cargo metadata --format-version 1 --no-deps 2>/dev/null |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])' 2>/dev/null) ||
        target_dir=${CARGO_TARGET_DIR:-target}
    BIN=$target_dir/release/artifactapi
    [[ -x "$BIN" ]] || die "no binary at $BIN (run cargo build --release, or unset BENCH_SKIP_BUILD)"
    BIN=$(cd "$(dirname "$BIN")" && pwd)/artifactapi
}

# --- processes and cleanup ---------------------------------------------------------------------
# start_tempdir: makes the temp dir T (artifactapi-$BENCH_NAME.XXXXXX) and installs the traps
# that stop every tracked process on exit, then delete T (kept when BENCH_KEEP=1 or on failure).
start_tempdir() {
    T=$(mktemp -d "${TMPDIR:-/tmp}/artifactapi-$BENCH_NAME.XXXXXX")
    PIDS=() # every background process the script started and has not stopped yet
    trap cleanup EXIT
    trap 'exit 130' INT TERM
}

track() { PIDS+=("$1"); }
untrack() {
    local p keep=()
    for p in "${PIDS[@]}"; do [[ "$p" == "$1" ]] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}
# stop_pid PID: TERM, up to 5 s to exit, then KILL; reaps it and forgets it.
stop_pid() {
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    untrack "$pid"
}
cleanup() {
    local rc=$? p
    trap - EXIT INT TERM
    for p in "${PIDS[@]}"; do stop_pid "$p"; done
    if [[ "${BENCH_KEEP:-0}" == 1 || $rc -ne 0 ]]; then
        log "temp dir kept: $T"
    else
        rm -rf "$T"
    fi
    exit "$rc"
}

# free_ports N: N distinct free loopback ports on one line, chosen while all the sockets are held.
free_ports() {
    python3 -c '
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])
' "$1"
}

# wait_http URL PID LOG: until URL answers (any HTTP status), or fail if PID dies or 20 s pass.
wait_http() {
    local url=$1 pid=$2 logf=$3 i
    for ((i = 0; i < 200; i++)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 30 "$logf" >&2 || true
            die "process $pid died before $url answered"
        fi
        if curl -s -o /dev/null --max-time 1 "$url"; then
            return 0
        fi
        sleep 0.1
    done
    tail -n 30 "$logf" >&2 || true
    die "$url did not answer in 20 s"
}

# --- numbers -----------------------------------------------------------------------------------
# min A B: the smaller of two numbers; B when A is empty.
min() { awk -v a="$1" -v b="$2" 'BEGIN { print (a == "" || b < a) ? b : a }'; }
# ratio A B: A / B to three decimals, or null when B is 0.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0) print "null"; else printf "%.3f", a / b }'; }

# rss_sampler PID OUT: every 50 ms, the VmRSS (KiB) of PID plus its direct children; the peak
# goes to OUT. Runs until killed or PID exits.
rss_sampler() {
    set +e
    local pid=$1 out=$2 peak=0 total c k v _ kids
    echo 0 >"$out"
    while [[ -d /proc/$pid ]]; do
        total=0
        kids=()
        read -r -a kids 2>/dev/null <"/proc/$pid/task/$pid/children"
        for c in "$pid" "${kids[@]}"; do
            while read -r k v _; do
                if [[ "$k" == VmRSS: ]]; then
                    total=$((total + v))
                    break
                fi
            done 2>/dev/null <"/proc/$c/status"
        done
        if ((total > peak)); then
            peak=$total
            echo "$peak" >"$out"
        fi
        sleep 0.05
    done
}
