#!/usr/bin/env python3
"""Prints the markdown table of a comparison run from its CSV (see harness.py).

Usage: report.py results/latest.csv [--meta results/latest.meta]

One column per server in the CSV (echod, base, c, tokio, threads, in that order). Each
cell is the median over the rounds, with the min-max spread in brackets.
"""

import csv
import statistics
import sys
from collections import defaultdict

ORDER = ["echod", "base", "c", "tokio", "threads"]
NAMES = {"echod": "echod", "base": "echod (base)", "c": "C epoll", "tokio": "tokio",
         "threads": "threads"}

# (label, workload, metric)
ROWS = [
    ("server CPU ns/reply (user+sys)", "pipelined", "cpu_ns_per_reply"),
    ("server user ns/reply (/proc)", "pipelined", "user_ns_per_reply"),
    ("server user ns/reply (perf samples)", "pipelined", "perf_user_ns_per_reply"),
    ("server sys ns/reply", "pipelined", "sys_ns_per_reply"),
    ("server CPU busy (of 1 CPU)", "pipelined", "server_cpu_util"),
    ("replies/s", "pipelined", "replies_per_s"),
    ("server CPU ns/reply (user+sys)", "paced", "cpu_ns_per_reply"),
    ("server user ns/reply (/proc)", "paced", "user_ns_per_reply"),
    ("server user ns/reply (perf samples)", "paced", "perf_user_ns_per_reply"),
    ("server sys ns/reply", "paced", "sys_ns_per_reply"),
    ("replies/s", "paced", "replies_per_s"),
]
for n in (1, 10, 50, 100, 1000, 10000):
    w = f"pingpong-{n}"
    ROWS += [
        ("replies/s", w, "replies_per_s"),
        ("p50 latency µs", w, "p50_us"),
        ("p99 latency µs", w, "p99_us"),
        ("server CPU ns/reply", w, "cpu_ns_per_reply"),
    ]
ROWS += [
    ("syscalls/reply (100 conns ping-pong)", "syscalls", "syscalls_per_reply"),
    ("  reads/reply", "syscalls", "reads_per_reply"),
    ("  writes/reply", "syscalls", "writes_per_reply"),
    ("  epoll_wait/reply (polls-only strace, full speed)", "syscalls", "polls_per_reply"),
    ("  other/reply (accept, close, epoll_ctl, clone, logs…)", "syscalls",
     "other_per_reply"),
    ("  all/reply under full strace (slowed: fewer polls)", "syscalls",
     "syscalls_per_reply_full_strace"),
    ("  replies/s in the polls-only pass", "syscalls", "poll_pass_replies_per_s"),
    ("RssAnon KiB at start, no client", "idle", "rss_base_kib"),
    ("RssAnon bytes per idle conn", "idle", "rss_idle_bytes_per_conn"),
    ("  idle connections held", "idle", "idle_conns_held"),
    ("wakeups in the idle window", "idle", "wakeups_idle"),
    ("RssAnon bytes per conn after activity", "active", "rss_active_bytes_per_conn"),
    ("connections held (idle + ping-pong)", "held", "held_connections"),
    ("  server sockets during ping-pong", "held", "held_sockets"),
    ("  ping-pong replies/s while held (median of 3)", "held",
     "held_pingpong_replies_per_s"),
    ("  client errors", "held", "errors"),
    ("  server exited during the run (1: yes)", "held", "held_server_exited"),
]
LOAD_WORKLOADS = ["pipelined", "paced"] + [f"pingpong-{n}"
                                           for n in (1, 10, 50, 100, 1000, 10000)]


def fmt(v):
    if v is None:
        return "–"
    a = abs(v)
    if a >= 100000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    if a == 0:
        return "0"
    return f"{v:.3f}"


def cell(values):
    if not values:
        return "–"
    med = statistics.median(values)
    if len(values) == 1 or min(values) == max(values):
        return fmt(med)
    return f"{fmt(med)} [{fmt(min(values))}–{fmt(max(values))}]"


def main():
    args = sys.argv[1:]
    meta = None
    if "--meta" in args:
        i = args.index("--meta")
        meta = args[i + 1]
        del args[i:i + 2]
    path = args[0] if args else "results/latest.csv"
    data = defaultdict(list)
    failures = []
    errors = defaultdict(float)
    rounds = set()
    with open(path) as f:
        for row in csv.DictReader(f):
            key = (row["workload"], row["server"], row["metric"])
            data[key].append(float(row["value"]))
            rounds.add(row["round"])
            if row["metric"] == "failed":
                failures.append(f"{row['workload']} {row['server']} (round {row['round']})")
            if row["metric"] == "echoc_hung" and float(row["value"]):
                failures.append(f"{row['workload']} {row['server']} (round {row['round']}): "
                                "echoc hung after the sample and was killed")
            if row["metric"] == "errors" and float(row["value"]):
                errors[(row["workload"], row["server"])] += float(row["value"])

    if meta:
        with open(meta) as f:
            print("```")
            print(f.read().rstrip())
            print("```")
            print()
    servers = [s_ for s_ in ORDER if any(k[1] == s_ for k in data)]
    servers += sorted({k[1] for k in data} - set(servers))
    print(f"Medians over {len(rounds)} round(s), [min–max] in brackets.")
    print()
    print("| figure | workload | " + " | ".join(NAMES.get(s_, s_) for s_ in servers) + " |")
    print("|---|---" + "|---" * len(servers) + "|")
    for label, workload, metric in ROWS:
        cells = [data.get((workload, s_, metric), []) for s_ in servers]
        if not any(cells):
            continue
        print(f"| {label} | {workload} | " + " | ".join(cell(c) for c in cells) + " |")
    noise = [w for w in LOAD_WORKLOADS
             if any(data.get((w, sv, "client_cpu_busy")) for sv in servers)]
    if noise:
        print()
        print("How busy the CPUs were during the load runs (fraction of one CPU, median "
              "[min–max] over the runs of all servers): the load generator's CPU, "
              "and what *else* ran on the server's CPU; `steal` is time the hypervisor "
              "took from the two CPUs.")
        print()
        print("| workload | load generator CPU | other load on server CPU | steal |")
        print("|---|---|---|---|")
        for w in noise:
            def pooled(metric):
                return [v for sv in servers for v in data.get((w, sv, metric), [])]
            print(f"| {w} | {cell(pooled('client_cpu_busy'))} | "
                  f"{cell(pooled('other_load_server_cpu'))} | {cell(pooled('steal'))} |")
    if failures or errors:
        print()
        for f_ in failures:
            print(f"- FAILED: {f_}")
        for (w, s), n in sorted(errors.items()):
            print(f"- client errors: {w} {s}: {n:.0f}")


if __name__ == "__main__":
    main()
