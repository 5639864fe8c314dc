#!/usr/bin/env python3
"""Summarises a results file of benches/load/run.sh as a Markdown table (medians over rounds).

Columns: req/s; req/s per busy proxy core (req/s divided by the proxy's CPU use); p50 and p99
latency; the proxy's CPU use; and ratios to the nginx hop and to HAProxy jwt_verify in the
same token mode, at the same connection count.
"""
import os
import statistics
import sys
from collections import defaultdict

TICK = os.sysconf("SC_CLK_TCK")
PEER = {  # Tollgate case -> the HAProxy case with the same token mode
    "tollgate-one": "haproxy-one",
    "tollgate-one-audit": "haproxy-one",
    "tollgate-rotate": "haproxy-one",  # HAProxy has no cache: every mode verifies
    "tollgate-fresh": "haproxy-fresh",
    "tollgate-twice": "haproxy-fresh",
    "baseline-one": "haproxy-one",
    "baseline-rotate": "haproxy-one",
    "baseline-fresh": "haproxy-fresh",
}


def parse(path):
    runs = defaultdict(list)
    header = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            if line.startswith("#"):
                header.append(line)
                continue
            case, *fields = line.split()
            kv = dict(x.split("=", 1) for x in fields)
            secs = int(kv["duration_us"]) / 1e6
            runs[(case, int(kv["conns"]))].append(
                {
                    "rps": int(kv["requests"]) / secs,
                    "p50": int(kv["p50_us"]),
                    "p99": int(kv["p99_us"]),
                    "cpu": int(kv["cpu_ticks"]) / TICK / secs,
                    "bad": int(kv["non2xx"]) + int(kv["errors"]),
                    "reused": int(kv["reused"]),
                    "rss_after": int(kv["rss_after_kib"]),
                    "rss_before": int(kv["rss_before_kib"]),
                }
            )
    return header, runs


def med(rows, key):
    return statistics.median(r[key] for r in rows)


def main():
    header, runs = parse(sys.argv[1])
    for h in header:
        print(h.lstrip("# ").strip() + "  ")
    print()
    summary = {
        k: {
            "rps": med(v, "rps"),
            "p50": med(v, "p50"),
            "p99": med(v, "p99"),
            "cpu": med(v, "cpu"),
            "bad": sum(r["bad"] for r in v),
            "reused": sum(r["reused"] for r in v),
            "rss_before": max(r["rss_before"] for r in v),
            "rss_after": max(r["rss_after"] for r in v),
            "n": len(v),
        }
        for k, v in runs.items()
    }
    conns = sorted({c for _, c in summary})
    cases = []
    for case, _ in runs:
        if case not in cases:
            cases.append(case)
    print(
        "| case | conns | req/s | req/s per proxy core | p50 µs | p99 µs | proxy CPU "
        "| ×nginx (req/s per core) | p50 − nginx µs | ×HAProxy (req/s) | RSS MiB before→after | notes |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for c in conns:
        nginx = summary.get(("nginx", c))
        for case in cases:
            s = summary.get((case, c))
            if not s:
                continue
            per_core = s["rps"] / s["cpu"] if s["cpu"] > 0 else float("nan")
            x_nginx = p50_delta = x_peer = ""
            if nginx and case not in ("direct", "nginx"):
                nginx_core = nginx["rps"] / nginx["cpu"] if nginx["cpu"] > 0 else float("nan")
                x_nginx = f"{per_core / nginx_core:.2f}"
                p50_delta = f"{s['p50'] - nginx['p50']:+.0f}"
            peer = summary.get((PEER.get(case, ""), c))
            if peer:
                x_peer = f"{s['rps'] / peer['rps']:.2f}"
            notes = []
            if s["bad"]:
                notes.append(f"{s['bad']} non-2xx/errors")
            if s["reused"]:
                notes.append(f"token pool wrapped {s['reused']}×")
            rss = f"{s['rss_before'] / 1024:.1f}→{s['rss_after'] / 1024:.1f}"
            print(
                f"| {case} | {c} | {s['rps']:,.0f} | {per_core:,.0f} | {s['p50']:.0f} "
                f"| {s['p99']:.0f} | {s['cpu'] * 100:.0f}% | {x_nginx} | {p50_delta} "
                f"| {x_peer} | {rss} | {'; '.join(notes)} |"
            )


if __name__ == "__main__":
    main()
