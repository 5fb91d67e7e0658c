#!/usr/bin/env python3
"""Draws server CPU per reply against connection count, from a harness.py CSV, as SVG.

Usage: plot.py results/latest.csv results/cpu-per-reply.svg

One line per server through the ping-pong medians (pingpong-N workloads), with a
min-max bar per point; the pipelined workload (50 connections, 64 lines in flight each)
is drawn as a hollow marker. Both axes are logarithmic. Plain SVG, no dependencies.
"""

import csv
import math
import statistics
import sys
from collections import defaultdict

SERVERS = [("echod", "#d62728"), ("c", "#1f77b4"), ("tokio", "#2ca02c"),
           ("threads", "#9467bd")]
LABELS = {"echod": "echod", "c": "C epoll", "tokio": "tokio", "threads": "threads"}
W, H = 720, 440
LEFT, RIGHT, TOP, BOTTOM = 90, 170, 50, 60


def main():
    src, dst = sys.argv[1], sys.argv[2]
    pp = defaultdict(list)    # (server, conns) -> values
    pipe = defaultdict(list)  # server -> values
    with open(src) as f:
        for row in csv.DictReader(f):
            if row["metric"] != "cpu_ns_per_reply":
                continue
            w = row["workload"]
            if w.startswith("pingpong-"):
                pp[(row["server"], int(w.split("-")[1]))].append(float(row["value"]))
            elif w == "pipelined":
                pipe[row["server"]].append(float(row["value"]))
    conns = sorted({n for _, n in pp})
    if not conns:
        sys.exit("plot.py: no pingpong cpu_ns_per_reply rows in the CSV")
    every = [x for v in list(pp.values()) + list(pipe.values()) for x in v if x > 0]
    # Log scale on y too: pipelined replies cost hundreds of ns, ping-pong ones tens of µs.
    ylo = 10 ** math.floor(math.log10(min(every)))
    yhi = 10 ** math.ceil(math.log10(max(every)))
    xmin, xmax = math.log10(min(conns)), math.log10(max(conns))
    if xmax == xmin:
        xmin, xmax = xmin - 1, xmax + 1
    pad = 0.06 * (xmax - xmin)
    xmin, xmax = xmin - pad, xmax + pad
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM

    def x(n):
        return LEFT + (math.log10(n) - xmin) / (xmax - xmin) * pw

    def y(v):
        v = max(v, ylo)
        return TOP + ph - (math.log10(v) - math.log10(ylo)) / (
            math.log10(yhi) - math.log10(ylo)) * ph

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
        f'viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">',
        f'<rect width="{W}" height="{H}" fill="white"/>',
        f'<text x="{W / 2 - RIGHT / 2 + LEFT / 2}" y="24" text-anchor="middle" '
        f'font-size="15">Server CPU (user+sys) per reply, 32-byte lines</text>',
    ]
    # y grid and labels: 1, 2, 5 per decade
    decade = ylo
    while decade < yhi * 1.001:
        for m in (1, 2, 5):
            v = decade * m
            if v > yhi * 1.001:
                break
            yy = y(v)
            out.append(f'<line x1="{LEFT}" y1="{yy:.1f}" x2="{LEFT + pw}" y2="{yy:.1f}" '
                       f'stroke="{"#ccc" if m == 1 else "#eee"}"/>')
            label = f"{v / 1000:g} µs" if v >= 1000 else f"{v:g} ns"
            out.append(f'<text x="{LEFT - 8}" y="{yy + 4:.1f}" text-anchor="end">'
                       f'{label}</text>')
        decade *= 10
    out.append(f'<text transform="translate(18,{TOP + ph / 2}) rotate(-90)" '
               f'text-anchor="middle">server CPU per reply (log scale)</text>')
    # x ticks at the measured connection counts
    for n in conns:
        xx = x(n)
        out.append(f'<line x1="{xx:.1f}" y1="{TOP}" x2="{xx:.1f}" y2="{TOP + ph}" '
                   f'stroke="#eee"/>')
        out.append(f'<text x="{xx:.1f}" y="{TOP + ph + 18}" text-anchor="middle">{n}</text>')
    out.append(f'<text x="{LEFT + pw / 2}" y="{H - 16}" text-anchor="middle">'
               f'connections (log scale)</text>')
    out.append(f'<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" '
               f'stroke="#333"/>')
    # series
    for i, (server, color) in enumerate(SERVERS):
        pts = [(n, pp[(server, n)]) for n in conns if pp.get((server, n))]
        if pts:
            path = " ".join(f"{x(n):.1f},{y(statistics.median(v)):.1f}" for n, v in pts)
            out.append(f'<polyline points="{path}" fill="none" stroke="{color}" '
                       f'stroke-width="2"/>')
        for n, v in pts:
            xx = x(n)
            out.append(f'<line x1="{xx:.1f}" y1="{y(min(v)):.1f}" x2="{xx:.1f}" '
                       f'y2="{y(max(v)):.1f}" stroke="{color}" stroke-width="1.5"/>')
            out.append(f'<circle cx="{xx:.1f}" cy="{y(statistics.median(v)):.1f}" r="4" '
                       f'fill="{color}"><title>{LABELS[server]}, {n} conns: '
                       f'{statistics.median(v):.0f} ns</title></circle>')
        if pipe.get(server):
            v = pipe[server]
            xx = x(50) + (i - (len(SERVERS) - 1) / 2) * 7
            out.append(f'<line x1="{xx:.1f}" y1="{y(min(v)):.1f}" x2="{xx:.1f}" '
                       f'y2="{y(max(v)):.1f}" stroke="{color}"/>')
            out.append(f'<rect x="{xx - 4:.1f}" y="{y(statistics.median(v)) - 4:.1f}" '
                       f'width="8" height="8" fill="white" stroke="{color}" '
                       f'stroke-width="2"><title>{LABELS[server]}, 50 conns x 64 in flight: '
                       f'{statistics.median(v):.0f} ns</title></rect>')
        # legend
        ly = TOP + 10 + i * 22
        lx = LEFT + pw + 16
        out.append(f'<line x1="{lx}" y1="{ly}" x2="{lx + 24}" y2="{ly}" stroke="{color}" '
                   f'stroke-width="2"/>')
        out.append(f'<circle cx="{lx + 12}" cy="{ly}" r="4" fill="{color}"/>')
        out.append(f'<text x="{lx + 32}" y="{ly + 4}">{LABELS[server]}</text>')
    ly = TOP + 10 + len(SERVERS) * 22 + 8
    lx = LEFT + pw + 16
    out.append(f'<circle cx="{lx + 12}" cy="{ly}" r="4" fill="#777"/>')
    out.append(f'<text x="{lx + 32}" y="{ly + 4}">ping-pong</text>')
    out.append(f'<rect x="{lx + 8}" y="{ly + 18}" width="8" height="8" fill="white" '
               f'stroke="#777" stroke-width="2"/>')
    out.append(f'<text x="{lx + 32}" y="{ly + 26}">50 conns, 64</text>')
    out.append(f'<text x="{lx + 32}" y="{ly + 40}">lines in flight</text>')
    out.append(f'<text x="{lx}" y="{ly + 66}" fill="#555">bars: min–max</text>')
    out.append(f'<text x="{lx}" y="{ly + 80}" fill="#555">over the rounds</text>')
    out.append("</svg>")
    with open(dst, "w") as f:
        f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
