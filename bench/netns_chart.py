#!/usr/bin/env python3
"""The chart of docs/network.md: uring/epoll requests per second, one group of bars per
scenario, one bar per path (loopback, veth, veth with 0.1 % and 1 % loss), from the
results.json of four `duet compare --out` runs given in that order. Writes SVG to stdout."""
import json
import sys

LABELS = ["loopback", "veth", "veth, 0.1 % loss", "veth, 1 % loss"]
COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"]


def ratios(path):
    v = json.load(open(path))
    out = {}
    for s in v["scenarios"]:
        e = s["engines"]
        key = f"c={s['connections']} d={s['depth']}"
        out[key] = e["uring"]["median"]["requests_per_sec"] / e["epoll"]["median"]["requests_per_sec"]
    return out


def main():
    runs = [ratios(p) for p in sys.argv[1:5]]
    keys = list(runs[0])
    w, h, left, top, bottom = 760, 380, 60, 50, 70
    ymax = 1.6
    plot_h = h - top - bottom
    y = lambda r: top + plot_h * (1 - r / ymax)
    group_w = (w - left - 20) / len(keys)
    bar_w = group_w * 0.8 / len(runs)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
             f'<rect width="{w}" height="{h}" fill="white"/>',
             '<text x="10" y="20" font-size="15">uring / epoll, requests per second (above 1: io_uring ahead)</text>']
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
    for i, label in enumerate(LABELS):
        x = left + i * 170
        parts.append(f'<rect x="{x}" y="{h - 28}" width="12" height="12" fill="{COLOURS[i]}"/>')
        parts.append(f'<text x="{x + 18}" y="{h - 18}">{label}</text>')
    parts.append("</svg>")
    print("\n".join(parts))


if __name__ == "__main__":
    main()
