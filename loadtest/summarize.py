#!/usr/bin/env python3
"""Markdown tables per scenario from gateway-loadtest JSON lines (the last run per scenario+target+label wins).

usage: loadtest/summarize.py RESULTS.jsonl [...]
"""
import json
import sys
from collections import OrderedDict


def rows(paths):
    out = []
    for p in paths:
        for line in open(p):
            line = line.strip()
            if line.startswith("{"):
                try:
                    r = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if r.get("tool") == "gateway-loadtest":
                    out.append(r)
    return out


def ms(us):
    return f"{us / 1000:.2f}" if us is not None else "-"


def lat(r, key="lat_us"):
    h = r.get(key, {})
    if not h.get("n"):
        return "-", "-", "-", "-", "-"
    return tuple(ms(h[k]) for k in ("p50", "p90", "p99", "p999", "max"))


def env(r):
    return f"{r.get('loadavg_end', '')} / {r.get('foreign_cpu_pct', '-')}%"


def main():
    rs = rows(sys.argv[1:])
    groups = OrderedDict()
    for r in rs:
        key = (r.get("scenario"), r.get("kind"), r.get("label", ""))
        groups.setdefault(key, OrderedDict())[r.get("peer") or r.get("target")] = r
    for (scen, kind, label), d in groups.items():
        if kind == "ramp":
            continue
        title = f"{scen}{' ' + label if label else ''} ({kind})"
        print(f"\n#### {title}\n")
        if kind == "ramp-summary":
            print("| target | saturation deliveries/s | at msg/s per publisher | steps (offered → delivered, ratio, p99 ms) |")
            print("|---|---|---|---|")
            for p, r in d.items():
                steps = "; ".join(f"{s['offered']:,.0f} → {s['delivered']:,.0f} ({s['ratio']:.2f}, {s['p99_us'] / 1000:.1f})" for s in r["steps"])
                print(f"| {p} | {r['saturation_delivered_msgs_s']:,.0f} | {r['saturation_rate_per_pub']:,.0f} | {steps} |")
        elif kind == "idle":
            print("| target | connected | errors | connects/s | handshake p50 / p99 ms | ready p99 ms | RSS start → connected KiB | KiB per conn | load avg / foreign CPU |")
            print("|---|---|---|---|---|---|---|---|---|")
            for p, r in d.items():
                rss = r["server_rss_kb"]
                hs = f"{ms(r['handshake_us'].get('p50'))} / {ms(r['handshake_us'].get('p99'))}"
                if r.get("tls") and r.get("tls_us", {}).get("n"):
                    hs += f" (wss; TLS part {ms(r['tls_us'].get('p50'))} / {ms(r['tls_us'].get('p99'))})"
                print(f"| {p} | {r['connected']:,} | {r['conn_errors']} | {r['connect_rate_s']:,.0f} | {hs} "
                      f"| {ms(r['ready_us'].get('p99'))} | {rss['start']:,} → {rss['connected']:,} | {r['rss_per_conn_kb']:.2f} | {env(r)} |")
        elif kind == "resume-storm":
            print("| target | clients | behind | caught up | total ms | per client p50 / p99 / max ms | events replayed | server CPU s | load avg / foreign CPU |")
            print("|---|---|---|---|---|---|---|---|---|")
            for p, r in d.items():
                c = r["catchup_ms_per_client"]
                print(f"| {p} | {r['subs']:,} | {r['behind']} | {r['caught_up']:,} | {r['storm_total_ms']:.1f} | {ms(c.get('p50'))} / {ms(c.get('p99'))} / {ms(c.get('max'))} "
                      f"| {r['replayed_events']:,} | {r['server_cpu_s']:.2f} | {env(r)} |")
        else:
            extra = kind == "churn"
            hdr = "| target | offered/s | delivered/s | ratio | p50 | p90 | p99 | p99.9 | max (ms) | acks/s | ack p99 ms | server CPU % | µs/delivery | gaps/dups |"
            if extra:
                hdr += " churn cycles | lost |"
            print(hdr + " load avg / foreign CPU |")
            print("|---" * (hdr.count("|") - 1 + 1) + "|")
            for p, r in d.items():
                l = lat(r)
                ack = f"{r['acks_s']:,.0f}" if "acks_s" in r else "-"
                ackp = ms(r["ack_lat_us"].get("p99")) if r.get("ack_lat_us", {}).get("n") else "-"
                line = (f"| {p} | {r['target_out_msgs_s']:,.0f} | {r['delivered_msgs_s']:,.0f} | {r['delivery_ratio']:.4f} | {l[0]} | {l[1]} | {l[2]} | {l[3]} | {l[4]} "
                        f"| {ack} | {ackp} | {r['server_cpu_pct']:.0f} | {r['server_cpu_us_per_delivery']:.2f} | {r['gaps']}/{r['dups']} |")
                if extra:
                    line += f" {r.get('churn_cycles', 0):,} | {r.get('lost', 0)} |"
                print(line + f" {env(r)} |")


if __name__ == "__main__":
    main()
