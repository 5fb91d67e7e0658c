#!/usr/bin/env python3
"""Prints the markdown table of a comparison run from its CSV (see harness.py).

Usage: report.py results/latest.csv [--meta results/latest.meta]

Each cell is the median over the rounds, with the min-max spread in brackets. The
ratio columns divide echod's median by the peer's (so < 1 means echod spends less, or
for replies/s, serves fewer). The last columns check the issue's targets on the medians.
"""

import csv
import statistics
import sys
from collections import defaultdict

SERVERS = ["echod", "c", "tokio"]

# (label, workload, metric, unit, target) where target is a function of the medians
# {server: value} returning (text, met) or None when the row has no target.


def ratio_target(peer, limit, higher_is_better=False):
    def check(m):
        if peer not in m or "echod" not in m or not m[peer]:
            return None
        r = m["echod"] / m[peer]
        met = r >= limit if higher_is_better else r <= limit
        sign = "≥" if higher_is_better else "≤"
        return f"{sign} {limit:g}× {peer}", met
    return check


def both(*checks):
    def check(m):
        parts = [c(m) for c in checks]
        parts = [p for p in parts if p]
        if not parts:
            return None
        return ", ".join(p[0] for p in parts), all(p[1] for p in parts)
    return check


def absolute(limit, text):
    def check(m):
        if "echod" not in m:
            return None
        return text, m["echod"] <= limit
    return check


def at_least(limit, text):
    def check(m):
        if "echod" not in m:
            return None
        return text, m["echod"] >= limit
    return check


ROWS = [
    ("server CPU ns/reply (user+sys)", "pipelined", "cpu_ns_per_reply", "ns",
     both(ratio_target("c", 1.0), ratio_target("tokio", 0.85))),
    ("server user ns/reply (/proc)", "pipelined", "user_ns_per_reply", "ns",
     ratio_target("c", 1.0)),
    ("server user ns/reply (perf samples)", "pipelined", "perf_user_ns_per_reply", "ns",
     ratio_target("c", 1.0)),
    ("server sys ns/reply", "pipelined", "sys_ns_per_reply", "ns", None),
    ("server CPU busy (of 1 CPU)", "pipelined", "server_cpu_util", "", None),
    ("replies/s", "pipelined", "replies_per_s", "/s", None),
    ("server CPU ns/reply (user+sys)", "paced", "cpu_ns_per_reply", "ns", None),
    ("server user ns/reply (/proc)", "paced", "user_ns_per_reply", "ns", None),
    ("server user ns/reply (perf samples)", "paced", "perf_user_ns_per_reply", "ns", None),
    ("server sys ns/reply", "paced", "sys_ns_per_reply", "ns", None),
    ("replies/s", "paced", "replies_per_s", "/s", None),
]
for n in (1, 10, 50, 100, 1000, 10000):
    w = f"pingpong-{n}"
    ROWS += [
        ("replies/s", w, "replies_per_s", "/s", ratio_target("c", 0.95, True)),
        ("p99 latency µs", w, "p99_us", "µs", ratio_target("c", 1.0)),
        ("server CPU ns/reply", w, "cpu_ns_per_reply", "ns", None),
    ]
ROWS += [
    ("syscalls/reply (strace, 100 conns ping-pong)", "syscalls", "syscalls_per_reply", "",
     absolute(2.1, "≤ 2.1")),
    ("  reads/reply", "syscalls", "reads_per_reply", "", None),
    ("  writes/reply", "syscalls", "writes_per_reply", "", None),
    ("  epoll_wait/reply (polls-only strace, full speed)", "syscalls", "polls_per_reply",
     "", None),
    ("  other/reply (accept, close, epoll_ctl, logs…)", "syscalls", "other_per_reply", "",
     None),
    ("  all/reply under full strace (slowed: fewer polls)", "syscalls",
     "syscalls_per_reply_full_strace", "", None),
    ("  replies/s in the polls-only pass", "syscalls", "poll_pass_replies_per_s", "/s",
     None),
    ("RssAnon bytes per idle conn", "idle", "rss_idle_bytes_per_conn", "B",
     absolute(256, "≤ 256 B")),
    ("wakeups in the idle window", "idle", "wakeups_idle", "", absolute(0, "0")),
    ("RssAnon bytes per conn after activity", "active", "rss_active_bytes_per_conn", "B",
     absolute(256, "≤ 256 B")),
    ("connections held (idle + ping-pong)", "held", "held_connections", "", None),
    ("  server sockets during ping-pong", "held", "held_sockets", "", None),
    ("  ping-pong replies/s while held (median of 3)", "held", "held_pingpong_replies_per_s", "/s", None),
    ("  client errors", "held", "errors", "", absolute(0, "0")),
]


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
    print(f"Medians over {len(rounds)} round(s), [min–max] in brackets; ratio = echod ÷ peer.")
    print()
    print("| figure | workload | echod | C (epoll) | tokio | echod÷C | echod÷tokio | target | met |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, workload, metric, _unit, target in ROWS:
        cells = {s: data.get((workload, s, metric), []) for s in SERVERS}
        if not any(cells.values()):
            continue
        med = {s: statistics.median(v) for s, v in cells.items() if v}

        def ratio(peer):
            if "echod" in med and med.get(peer):
                return f"{med['echod'] / med[peer]:.2f}"
            return "–"

        t = target(med) if target else None
        tgt, met = (t[0], "yes" if t[1] else "**no**") if t else ("", "")
        print(f"| {label} | {workload} | {cell(cells['echod'])} | {cell(cells['c'])} | "
              f"{cell(cells['tokio'])} | {ratio('c')} | {ratio('tokio')} | {tgt} | {met} |")
    noise = [w for w in ["pipelined", "paced"] + [f"pingpong-{n}" for n in (1, 10, 50, 100, 1000, 10000)]
             if any(data.get((w, sv, "client_cpu_busy")) for sv in SERVERS)]
    if noise:
        print()
        print("How busy the CPUs were during the load runs (fraction of one CPU, median "
              "[min–max] over the runs of the three servers): the load generator's CPU, "
              "and what *else* ran on the server's CPU; `steal` is time the hypervisor "
              "took from the two CPUs.")
        print()
        print("| workload | load generator CPU | other load on server CPU | steal |")
        print("|---|---|---|---|")
        for w in noise:
            def pooled(metric):
                return [v for sv in SERVERS for v in data.get((w, sv, metric), [])]
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
