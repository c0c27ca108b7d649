#!/usr/bin/env python3
"""The chart of docs/network.md: io_uring over epoll in requests per second (top panel)
and in server CPU per request (bottom panel), one group of bars per scenario, one bar per
path (loopback, veth, veth with 0.1 % and 1 % loss), from the results.json of four
`duet compare --out` runs given in that order. Writes SVG to stdout."""
import json
import sys

LABELS = ["loopback", "veth", "veth, 0.1 % loss", "veth, 1 % loss"]
COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"]
PANELS = [
    ("requests_per_sec", "io_uring / epoll, requests per second (above 1: io_uring serves more)"),
    ("cpu_us_per_req", "io_uring / epoll, server CPU per request (below 1: io_uring is cheaper)"),
]


def ratios(path, metric):
    v = json.load(open(path))
    out = {}
    for s in v["scenarios"]:
        e = s["engines"]
        key = f"c={s['connections']} d={s['depth']}"
        out[key] = e["uring"]["median"][metric] / e["epoll"]["median"][metric]
    return out


def panel(parts, runs, title, top, w, h, left):
    ymax = 1.6
    plot_h = h - 60
    y = lambda r: top + 30 + plot_h * (1 - r / ymax)
    keys = list(runs[0])
    group_w = (w - left - 20) / len(keys)
    bar_w = group_w * 0.8 / len(runs)
    parts.append(f'<text x="10" y="{top + 18}" font-size="15">{title}</text>')
    for t in [0, 0.5, 1.0, 1.5]:
        parts.append(f'<line x1="{left}" x2="{w - 20}" y1="{y(t):.1f}" y2="{y(t):.1f}" stroke="{"#444" if t == 1.0 else "#ddd"}"/>')
        parts.append(f'<text x="{left - 8}" y="{y(t) + 4:.1f}" text-anchor="end">{t:.1f}×</text>')
    for g, key in enumerate(keys):
        x0 = left + g * group_w + group_w * 0.1
        for i, run in enumerate(runs):
            r = run[key]
            x = x0 + i * bar_w
            parts.append(f'<rect x="{x:.1f}" y="{y(r):.1f}" width="{bar_w - 2:.1f}" height="{y(0) - y(r):.1f}" fill="{COLOURS[i]}"/>')
            parts.append(f'<text x="{x + bar_w / 2 - 1:.1f}" y="{y(r) - 4:.1f}" text-anchor="middle" font-size="10">{r:.2f}</text>')
        parts.append(f'<text x="{x0 + group_w * 0.4:.1f}" y="{y(0) + 18:.1f}" text-anchor="middle">{key}</text>')


def main():
    w, panel_h, left = 760, 330, 60
    h = 2 * panel_h + 40
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
             f'<rect width="{w}" height="{h}" fill="white"/>']
    for n, (metric, title) in enumerate(PANELS):
        runs = [ratios(p, metric) for p in sys.argv[1:5]]
        panel(parts, runs, title, n * panel_h, w, panel_h - 20, left)
    for i, label in enumerate(LABELS):
        x = left + i * 170
        parts.append(f'<rect x="{x}" y="{h - 28}" width="12" height="12" fill="{COLOURS[i]}"/>')
        parts.append(f'<text x="{x + 18}" y="{h - 18}">{label}</text>')
    parts.append("</svg>")
    print("\n".join(parts))


if __name__ == "__main__":
    main()
