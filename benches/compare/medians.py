#!/usr/bin/env python3
"""Medians [min-max] of every metric in a harness CSV, for whatever servers it holds,
with each server's ratio to echod. Made for A/B runs (BASELINE_ECHOD, see harness.py):
the ratio base÷echod is the change between the two builds.

    python3 medians.py results/latest.csv [metric ...]
"""
import csv
import statistics
import sys
from collections import defaultdict


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "results/latest.csv"
    wanted = set(sys.argv[2:])
    values = defaultdict(dict)  # (workload, metric) -> server -> [values]
    servers = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            if wanted and row["metric"] not in wanted:
                continue
            if row["server"] not in servers:
                servers.append(row["server"])
            values[(row["workload"], row["metric"])].setdefault(row["server"], []).append(
                float(row["value"]))
    print("| workload | metric | " + " | ".join(servers) + " | "
          + " | ".join(f"{s}÷echod" for s in servers if s != "echod") + " |")
    print("|---" * (2 + 2 * len(servers) - 1) + "|")
    for (workload, metric), by_server in values.items():
        med = {s: statistics.median(v) for s, v in by_server.items()}
        cells = [f"{med[s]:.4g} [{min(by_server[s]):.4g}–{max(by_server[s]):.4g}]"
                 if s in med else "–" for s in servers]
        ratios = [f"{med[s] / med['echod']:.3f}" if s in med and med.get("echod") else "–"
                  for s in servers if s != "echod"]
        print(f"| {workload} | {metric} | " + " | ".join(cells) + " | "
              + " | ".join(ratios) + " |")


if __name__ == "__main__":
    main()
