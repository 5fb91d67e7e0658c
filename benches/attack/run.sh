#!/usr/bin/env bash
# Hostile clients against echod: for each attack kind, 100 good ping-pong clients run for
# DURATION seconds without an attack (baseline), then with one, each time against a fresh
# echod; the table compares the good clients' replies/s and p99, and echod's peak memory.
# See README.md beside this script for what each attack does and how to read the table.
#
# Usage:  benches/attack/run.sh                          # every kind, ~2.5 minutes
#         ATTACKERS=1000 DURATION=5 benches/attack/run.sh  # a smaller, quicker run
#         ECHOD_FLAGS="--idle-timeout 5" KINDS="slowloris flood" benches/attack/run.sh
# Knobs (environment):
#   KINDS ["slowloris slow-reader churn flood oversized"], DURATION [10] s per run,
#   CONNECTIONS [100] good clients, ATTACKERS [10000] for slowloris and flood (lowered to
#   fit the open-file limit), SLOW_READER_ATTACKERS [ATTACKERS, lowered to fit the host's
#   TCP memory, see below], CHURN_ATTACKERS [100] cycles in flight,
#   OVERSIZED_ATTACKERS [100], ATTACK_INTERVAL [10] s (slowloris),
#   ATTACK_SOURCE [127.0.0.2] (the attackers' address; the good clients use 127.0.0.1),
#   ECHOD_FLAGS [""] extra echod flags (e.g. "--max-per-ip 50 --send-timeout 5"),
#   SERVER_CPU [0] and CLIENT_CPU [1] (taskset pinning; PIN=0 turns it off),
#   NO_BUILD=1 to reuse target/release, KEEP_TMP=1 to keep the raw outputs and logs.
# Writes results/latest.md (the table, also printed).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
cd "$ROOT"

KINDS="${KINDS:-slowloris slow-reader churn flood oversized}"
DURATION="${DURATION:-10}"
CONNECTIONS="${CONNECTIONS:-100}"
ATTACKERS="${ATTACKERS:-10000}"
CHURN_ATTACKERS="${CHURN_ATTACKERS:-100}"
OVERSIZED_ATTACKERS="${OVERSIZED_ATTACKERS:-100}"
ATTACK_INTERVAL="${ATTACK_INTERVAL:-10}"
ATTACK_SOURCE="${ATTACK_SOURCE:-127.0.0.2}"
ECHOD_FLAGS="${ECHOD_FLAGS:-}"
ECHOD="$ROOT/target/release/echod"
ECHOC="$ROOT/target/release/echoc"
TMP="$(mktemp -d "${TMPDIR:-/tmp}/echod-attack.XXXXXX")"
ECHOD_PID=""

# Whatever happens (Ctrl-C, an error, a timeout), nothing we started outlives us.
cleanup() {
    if [ -n "$ECHOD_PID" ]; then
        kill -KILL "$ECHOD_PID" 2>/dev/null || true
    fi
    local pids
    pids="$(jobs -p)"
    if [ -n "$pids" ]; then
        # shellcheck disable=SC2086
        kill $pids 2>/dev/null || true
        wait 2>/dev/null || true
    fi
    if [ "${KEEP_TMP:-0}" = 1 ]; then
        echo "raw outputs and logs kept in $TMP" >&2
    else
        rm -rf "$TMP"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

for tool in cargo jq timeout; do
    command -v "$tool" >/dev/null || { echo "run.sh: $tool is needed" >&2; exit 1; }
done

if [ "${NO_BUILD:-0}" != 1 ]; then
    echo "building echod and echoc (release)" >&2
    cargo build --release --quiet --bin echod --bin echoc
fi

# Each process needs a descriptor per connection: raise the soft limit to the hard one,
# then fit the attackers in what we got (a margin for the good clients, listeners, logs).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
FD_LIMIT="$(ulimit -n)"
if [ "$FD_LIMIT" = unlimited ]; then FD_LIMIT=1048576; fi
ROOM=$((FD_LIMIT - CONNECTIONS - 200))
FD_NOTE="open-file limit $FD_LIMIT"
if [ "$ATTACKERS" -gt "$ROOM" ]; then
    FD_NOTE="$FD_NOTE: ATTACKERS lowered from $ATTACKERS to $ROOM to fit"
    echo "run.sh: $FD_NOTE" >&2
    ATTACKERS=$ROOM
fi

# Each slow reader parks about 1 MiB in the kernel (mostly the server's receive buffer,
# which grows while the server still reads). Past tcp_mem's pressure threshold every TCP
# socket of the host is squeezed, other programs' too, so unless told otherwise we keep
# the slow readers within half of it.
SLOW_NOTE=""
if [ -z "${SLOW_READER_ATTACKERS:-}" ]; then
    SLOW_READER_ATTACKERS=$ATTACKERS
    pressure_pages="$(awk '{print $2}' /proc/sys/net/ipv4/tcp_mem 2>/dev/null || echo 0)"
    tcp_room=$((pressure_pages * 4096 / 2 / 1048576))
    if [ "$tcp_room" -gt 0 ] && [ "$SLOW_READER_ATTACKERS" -gt "$tcp_room" ]; then
        SLOW_NOTE="slow-reader lowered from $ATTACKERS to $tcp_room attackers: about 1 MiB of kernel memory each, kept within half of tcp_mem's pressure threshold ($((pressure_pages * 4096 / 1048576)) MiB); set SLOW_READER_ATTACKERS to override"
        echo "run.sh: $SLOW_NOTE" >&2
        SLOW_READER_ATTACKERS=$tcp_room
    fi
fi

PIN_SERVER=()
PIN_CLIENT=()
if [ "${PIN:-1}" = 1 ] && command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
    PIN_SERVER=(taskset -c "${SERVER_CPU:-0}")
    PIN_CLIENT=(taskset -c "${CLIENT_CPU:-1}")
fi

# True while process PID runs: it exists and is not a zombie waiting to be reaped (for
# which kill -0 would still succeed).
running() {
    local stat
    stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
    stat="${stat##*) }"
    [ "${stat:0:1}" != Z ]
}

# Starts a fresh echod on 127.0.0.1, on a port of the kernel's choosing, and learns the
# port from its log. Sets ECHOD_PID and PORT.
start_echod() {
    local log="$1"
    # shellcheck disable=SC2086
    "${PIN_SERVER[@]}" "$ECHOD" --listen 127.0.0.1:0 $ECHOD_FLAGS 2>"$log" &
    ECHOD_PID=$!
    PORT=""
    for _ in $(seq 100); do
        PORT="$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$log" | head -1)"
        [ -n "$PORT" ] && return 0
        running "$ECHOD_PID" || break
        sleep 0.05
    done
    echo "run.sh: echod did not start; its log:" >&2
    cat "$log" >&2
    exit 1
}

# Notes echod's peak resident memory in KiB (VmHWM) in HWM, then stops it: SIGTERM, and
# SIGKILL if it has not exited within 10 s. (Not in a $(...) subshell: only this shell
# can reap its child.)
stop_echod() {
    HWM="$(sed -n 's/^VmHWM:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$ECHOD_PID/status" 2>/dev/null || true)"
    HWM="${HWM:-0}"
    kill -TERM "$ECHOD_PID" 2>/dev/null || true
    for _ in $(seq 100); do
        running "$ECHOD_PID" || break
        sleep 0.1
    done
    kill -KILL "$ECHOD_PID" 2>/dev/null || true
    wait "$ECHOD_PID" 2>/dev/null || true
    ECHOD_PID=""
}

# One run: a fresh echod, the measured load, and (with attack arguments) the attackers in
# a second echoc process, so that the attack costs the measured clients nothing on their
# side of the wire: what the table shows is what the attack costs the server. The
# attackers start first and get DURATION + 3 s; the measured run starts 2 s later.
# Writes $TMP/NAME.json: the measured echoc's summary, the attackers' "attack" object and
# "echod_vmhwm_kib".
run_one() {
    local name="$1"
    shift
    start_echod "$TMP/$name.echod.log"
    local rc=0 attacker=""
    if [ "$#" -gt 0 ]; then
        # nice 19: the attackers take what CPU is left, never the measured client's.
        timeout -k 5 $((DURATION + 60)) nice -n 19 "$ECHOC" load "127.0.0.1:$PORT" \
            -c 1 -d $((DURATION + 3)) --json --source "${ATTACK_SOURCE%%-*}" "$@" \
            >"$TMP/$name.attacker.out" 2>"$TMP/$name.attacker.err" &
        attacker=$!
        sleep 2
    fi
    # In the background so that a signal to this script runs the trap at once (bash
    # defers traps until a foreground child exits). Every run has a time limit.
    timeout -k 5 $((DURATION + 60)) "${PIN_CLIENT[@]}" "$ECHOC" load "127.0.0.1:$PORT" \
        -c "$CONNECTIONS" -d "$DURATION" --json \
        >"$TMP/$name.out" 2>"$TMP/$name.err" &
    wait $! || rc=$?
    local attack='null'
    if [ -n "$attacker" ]; then
        wait "$attacker" || true
        attack="$(tail -n 1 "$TMP/$name.attacker.out" | jq -c '.attack' 2>/dev/null || echo null)"
    fi
    stop_echod
    local hwm="$HWM"
    local json
    json="$(tail -n 1 "$TMP/$name.out")"
    if ! jq -e . >/dev/null 2>&1 <<<"$json"; then
        echo "run.sh: $name: echoc exited $rc without a summary:" >&2
        cat "$TMP/$name.out" "$TMP/$name.err" >&2
        exit 1
    fi
    jq -c --argjson hwm "$hwm" --argjson attack "${attack:-null}" \
        '. + {echod_vmhwm_kib: $hwm} + (if $attack == null then {} else {attack: $attack} end)' \
        <<<"$json" >"$TMP/$name.json"
    echo "  $name: $(jq -r '"\(.replies_per_s) replies/s, p99 \(.latency_us.p99) us, errors \(.errors)"' "$TMP/$name.json"), echod peak $((hwm / 1024)) MiB (echoc exit $rc)" >&2
}

attackers_for() {
    case "$1" in
        churn) echo "$CHURN_ATTACKERS" ;;
        slow-reader) echo "$SLOW_READER_ATTACKERS" ;;
        oversized) echo "$OVERSIZED_ATTACKERS" ;;
        *) echo "$ATTACKERS" ;;
    esac
}

for kind in $KINDS; do
    n="$(attackers_for "$kind")"
    echo "$kind: baseline, then $n attackers, ${DURATION}s each" >&2
    run_one "$kind-baseline"
    run_one "$kind-attack" --attack "$kind" --attackers "$n" \
        --attack-interval "$ATTACK_INTERVAL" --attack-source "$ATTACK_SOURCE"
done

# The table: one row per kind, from the two JSON files of each.
row() {
    local kind="$1"
    jq -r -s '
        def ms: . / 1000 | if . < 10 then (. * 100 | round / 100) else round end;
        def mib: . / 1024 | round;
        .[0] as $b | .[1] as $a | $a.attack as $x
        | ($x.reasons | to_entries | map("\(.key) \(.value)") | join(", ")) as $why
        | "| \($x.kind) | \($x.attackers) | \($b.replies_per_s | round) | \($a.replies_per_s | round)"
          + " | \(if $b.replies_per_s > 0 then ($a.replies_per_s / $b.replies_per_s * 100 | round / 100) else "-" end)"
          + " | \($b.latency_us.p99 | ms) | \($a.latency_us.p99 | ms)"
          + " | \($b.errors) / \($a.errors) | \($b.echod_vmhwm_kib | mib) / \($a.echod_vmhwm_kib | mib)"
          + " | \($x.peak_up) | \($x.opened) | \($x.refused)\(if $why != "" then " (\($why))" else "" end)"
          + " | \($x.closed_by_server) | \($x.connect_failures) |"
    ' "$TMP/$kind-baseline.json" "$TMP/$kind-attack.json"
}

mkdir -p "$HERE/results"
{
    echo "# echod under attack"
    echo
    echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ); commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (dirty tree)')"
    echo "- machine: $(nproc) CPUs, $(uname -sr); $FD_NOTE"
    if [ -n "$SLOW_NOTE" ]; then echo "- $SLOW_NOTE"; fi
    echo "- each run: $CONNECTIONS good ping-pong clients for ${DURATION}s, a fresh echod (release)${ECHOD_FLAGS:+ with \`$ECHOD_FLAGS\`}"
    echo "- attackers from $ATTACK_SOURCE; slowloris sends a byte every ${ATTACK_INTERVAL}s"
    echo
    echo "| kind | attackers | replies/s base | replies/s attack | ratio | p99 ms base | p99 ms attack | good errors base / attack | echod peak RSS MiB base / attack | attackers up at peak | attackers opened | refused | closed by server | connect failures |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    for kind in $KINDS; do
        row "$kind"
    done
} >"$HERE/results/latest.md"
echo >&2
cat "$HERE/results/latest.md"
