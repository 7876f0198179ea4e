#!/usr/bin/env python3
"""Turns gateway-loadtest JSON lines into SVG charts for docs/benchmarks.md.

usage: loadtest/plot.py RESULTS.jsonl [MORE.jsonl ...] [--out docs]

Charts (one line per target: the `peer` field, e.g. lws-batch, gateway-never):
  bench-latency-vs-load.svg      fan-out latency p50 / p99 / p99.9 vs offered deliveries/s (the ramp steps)
  bench-throughput-vs-load.svg   delivered vs offered deliveries/s (the ramp steps)
  bench-rss-vs-connections.svg   server RSS growth vs idle connections (the idle runs)
Needs matplotlib (pip install matplotlib); uses the SVG backend, no display.
"""
import argparse
import json
from collections import defaultdict

import matplotlib

matplotlib.use("svg")
import matplotlib.pyplot as plt  # noqa: E402

matplotlib.rcParams["svg.hashsalt"] = "gateway-loadtest"  # stable ids: the SVGs diff cleanly between runs


def load(paths):
    rows = []
    for p in paths:
        with open(p) as f:
            for line in f:
                line = line.strip()
                if line.startswith("{"):
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError:
                        pass
    return [r for r in rows if r.get("tool") == "gateway-loadtest"]


def who(r):
    return r.get("peer") or r.get("target", "?")


def latency_vs_load(rows, out):
    steps = defaultdict(list)
    for r in rows:
        if r.get("kind") == "ramp" and r.get("lat_us", {}).get("n", 0) > 0:
            steps[who(r)].append(r)
    if not steps:
        return None
    fig, ax = plt.subplots(figsize=(8, 5))
    for i, (peer, rs) in enumerate(sorted(steps.items())):
        rs.sort(key=lambda r: r["target_out_msgs_s"])
        x = [r["target_out_msgs_s"] for r in rs]
        color = f"C{i}"
        ax.plot(x, [r["lat_us"]["p50"] / 1000 for r in rs], "-o", color=color, label=f"{peer} p50", markersize=3)
        ax.plot(x, [r["lat_us"]["p99"] / 1000 for r in rs], "--s", color=color, label=f"{peer} p99", markersize=3)
        ax.plot(x, [r["lat_us"]["p999"] / 1000 for r in rs], ":", color=color, label=f"{peer} p99.9")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("offered deliveries/s (1,000 subscribers in 10 rooms, 10 publishers, 128 B)")
    ax.set_ylabel("publish → receive latency, ms (from the intended send time)")
    ax.set_title("Fan-out latency vs offered load (ramp steps)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    path = f"{out}/bench-latency-vs-load.svg"
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def throughput_vs_load(rows, out):
    steps = defaultdict(list)
    for r in rows:
        if r.get("kind") == "ramp":
            steps[who(r)].append(r)
    if not steps:
        return None
    fig, ax = plt.subplots(figsize=(8, 5))
    top = 0
    for i, (peer, rs) in enumerate(sorted(steps.items())):
        rs.sort(key=lambda r: r["target_out_msgs_s"])
        x = [r["target_out_msgs_s"] for r in rs]
        top = max(top, max(x))
        ax.plot(x, [r["delivered_msgs_s"] for r in rs], "-o", color=f"C{i}", label=peer, markersize=3)
    ax.plot([1e4, top], [1e4, top], color="grey", linewidth=0.8, label="delivered = offered")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("offered deliveries/s")
    ax.set_ylabel("delivered deliveries/s")
    ax.set_title("Delivered vs offered (ramp steps; saturation where a line leaves the diagonal)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    path = f"{out}/bench-throughput-vs-load.svg"
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def rss_vs_connections(rows, out):
    pts = defaultdict(dict)
    for r in rows:
        rss = r.get("server_rss_kb", {})
        if r.get("kind") == "idle" and rss.get("start", -1) > 0 and rss.get("connected", -1) > 0 and r.get("connected", 0) > 0:
            pts[who(r)][r["connected"]] = (rss["connected"] - rss["start"]) / 1024  # the last run per count wins
    if not pts:
        return None
    fig, ax = plt.subplots(figsize=(8, 5))
    for i, (peer, d) in enumerate(sorted(pts.items())):
        xs = sorted(d)
        ax.plot(xs, [d[x] for x in xs], "-o", color=f"C{i}", label=f"{peer} ({d[xs[-1]] * 1024 / xs[-1]:.1f} KiB/conn at {xs[-1]:,})", markersize=4)
    ax.set_xlabel("idle connections (gateway: authenticated and joined)")
    ax.set_ylabel("server RSS growth over the idle process, MiB")
    ax.set_title("Server memory vs connections")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    path = f"{out}/bench-rss-vs-connections.svg"
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", nargs="+")
    ap.add_argument("--out", default="docs")
    a = ap.parse_args()
    rows = load(a.results)
    for f in (latency_vs_load, throughput_vs_load, rss_vs_connections):
        p = f(rows, a.out)
        print(p or f"{f.__name__}: no data")


if __name__ == "__main__":
    main()
