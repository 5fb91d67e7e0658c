#!/usr/bin/env bash
# Compares what the *server* spends, echod against three peers, in one run:
#   echod                                    (target/release/echod, this crate)
#   c        benches/compare/c-server/       (epoll edge-triggered, cc -O2)
#   tokio    benches/compare/tokio-server/   (current_thread, task per connection)
#   threads  benches/compare/threads-server/ (a thread per client, blocking std I/O)
#
# Builds the servers and `echoc`, then runs harness.py: every workload against each
# server in turn (echod c tokio threads, then c tokio threads echod, ...), ROUNDS times,
# the server pinned to CPU 0 and `echoc load` to CPU 1. Writes results/latest.csv, prints
# the table of medians (results/latest.md) and draws results/cpu-per-reply.svg from the
# CSV. benches/compare/README.md has the method.
#
# Usage:  benches/compare/run.sh              # full run, about 20 minutes
#         QUICK=1 benches/compare/run.sh      # one short round, small counts (smoke check)
# Knobs (environment): ROUNDS [3], DURATION [4] s per load run, SYSCALL_DURATION [3],
#   IDLE_CONNS [10000], WAKE_WINDOW [10] s, ACTIVE_PERIOD [3] s, PINGPONG_CONNS ["1 50 1000"],
#   PACED_RATE [1000000] lines/s for the paced workload,
#   HELD_CONNS [19950] (0 skips), SERVERS ["echod c tokio threads"], SERVER_CPU [0],
#   CLIENT_CPU [1], NICE [-10], CONNECT_RATE [4000]/s, PERF [auto] (0: no perf profile),
#   WORKLOADS (e.g. "pipelined idle"; all by default), ECHOD_ARGS (extra echod flags),
#   BASELINE_ECHOD (another echod binary, server "base"), CSV (output path),
#   NO_BUILD=1 to reuse the binaries already built.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
cd "$ROOT"

# Whatever happens (Ctrl-C, an error), nothing we started outlives us.
cleanup() {
    local pids
    pids="$(jobs -p)"
    if [ -n "$pids" ]; then
        # shellcheck disable=SC2086
        kill $pids 2>/dev/null || true
        wait 2>/dev/null || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

for tool in taskset strace cc cargo python3; do
    command -v "$tool" >/dev/null || { echo "run.sh: $tool is needed" >&2; exit 1; }
done
if [ "$(nproc)" -lt 2 ]; then
    echo "run.sh: needs 2 CPUs (server on one, load generator on the other)" >&2
    exit 1
fi

if [ "${NO_BUILD:-0}" != 1 ]; then
    echo "building echod and echoc (release)" >&2
    cargo build --release --quiet --bin echod --bin echoc
    echo "building the tokio peer" >&2
    cargo build --release --quiet --manifest-path "$HERE/tokio-server/Cargo.toml" \
        --target-dir "$HERE/target"
    echo "building the thread-per-client peer" >&2
    cargo build --release --quiet --manifest-path "$HERE/threads-server/Cargo.toml" \
        --target-dir "$HERE/target"
    echo "building the C peer" >&2
    mkdir -p "$HERE/target"
    cc -O2 -Wall -Wextra -o "$HERE/target/c-server" "$HERE/c-server/server.c"
fi

# Each process (server, echoc) needs a descriptor per connection.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

mkdir -p "$HERE/results/tmp"
export CSV="${CSV:-$HERE/results/latest.csv}"
{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (dirty tree)')"
    echo "nproc: $(nproc)"
    echo "cpu: $(lscpu | sed -n 's/^Model name: *//p')"
    echo "hypervisor: $(lscpu | sed -n 's/^Hypervisor vendor: *//p')"
    echo "memory: $(free -g | awk '/^Mem:/ {print $2}') GiB"
    echo "kernel: $(uname -sr)"
    echo "rustc: $(rustc --version)"
    echo "cc: $(cc --version | head -1)"
    echo "fd limit: $(ulimit -n)"
    echo "thread limits: threads-max $(cat /proc/sys/kernel/threads-max), pid_max $(cat /proc/sys/kernel/pid_max), ulimit -u $(ulimit -u), vm.max_map_count $(cat /proc/sys/vm/max_map_count)"
    echo "settings: QUICK=${QUICK:-0} ROUNDS=${ROUNDS:-} DURATION=${DURATION:-} IDLE_CONNS=${IDLE_CONNS:-} HELD_CONNS=${HELD_CONNS:-} SERVERS=${SERVERS:-}"
} >"$HERE/results/latest.meta"

# In the background so that a signal to this script runs the trap at once (bash defers
# traps until a foreground child exits); the harness kills its own children on SIGTERM.
python3 "$HERE/harness.py" &
wait $!
python3 "$HERE/report.py" "$CSV" --meta "$HERE/results/latest.meta" \
    | tee "$HERE/results/latest.md"
python3 "$HERE/plot.py" "$CSV" "$HERE/results/cpu-per-reply.svg"
echo "plot: $HERE/results/cpu-per-reply.svg" >&2
