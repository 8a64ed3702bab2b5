#!/usr/bin/env python3
"""Turns bench/results/*.jsonl into the tables and SVG plots of docs/benchmarks.md.

Usage: python3 bench/report.py [results.jsonl]
Rewrites the part of docs/benchmarks.md between the `results:begin` and `results:end`
markers, and docs/bench/*.svg. Standard library only.

       python3 bench/report.py --scaling
Rewrites the `scaling` block (peak delivered/s against server cores, from every
bench/results/scaling-*.jsonl and devbench-*.jsonl) and its plots.
"""
import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SYSTEMS = ["memory", "redis", "nchan"]
NAMES = {"memory": "gateway, memory engine", "redis": "gateway, Redis, 2 nodes", "nchan": "Nchan + Redis"}
COLORS = {"memory": "#1f77b4", "redis": "#d62728", "nchan": "#7f7f7f"}


def load(path):
    rows = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                rows.append(json.loads(line))
    return rows


def pick(rows, case, system=None):
    return [r for r in rows if r.get("case") == case and (system is None or r.get("system") == system)]


def fmt(n, digits=0):
    if n is None:
        return "—"
    if isinstance(n, float) and digits:
        return f"{n:,.{digits}f}"
    return f"{int(round(n)):,}"


# ---------------------------------------------------------------- plots

def nice_ticks(lo, hi, n=5):
    if hi <= lo:
        hi = lo + 1
    raw = (hi - lo) / n
    mag = 10 ** len(str(int(raw))) / 10 if raw >= 1 else 10 ** -(len(str(int(1 / raw))))
    for m in (1, 2, 2.5, 5, 10):
        step = m * mag
        if step >= raw:
            break
    t, out = 0.0, []
    while t <= hi * 1.0001:
        if t >= lo:
            out.append(t)
        t += step
    return out


def svg_chart(path, title, xlabel, ylabel, series, log_y=False):
    """series: list of (label, color, dash, [(x, y)])."""
    W, H, L, R, T, B = 720, 420, 90, 190, 40, 60
    pts = [p for _, _, _, s in series for p in s]
    if not pts:
        return False
    import math
    xmax = max(x for x, _ in pts) * 1.05
    ys = [y for _, y in pts if y > 0] or [1]
    if log_y:
        ylo, yhi = math.floor(math.log10(min(ys))), math.ceil(math.log10(max(ys)))
        if yhi == ylo:
            yhi += 1
        fy = lambda y: T + (H - T - B) * (1 - (math.log10(max(y, 10 ** ylo)) - ylo) / (yhi - ylo))
        yticks = [10 ** e for e in range(ylo, yhi + 1)]
    else:
        ymax = max(ys) * 1.1
        fy = lambda y: T + (H - T - B) * (1 - y / ymax)
        yticks = nice_ticks(0, ymax)
    fx = lambda x: L + (W - L - R) * x / xmax
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{W/2}" y="22" text-anchor="middle" font-size="15">{title}</text>']
    for t in nice_ticks(0, xmax):
        x = fx(t)
        out.append(f'<line x1="{x:.1f}" y1="{T}" x2="{x:.1f}" y2="{H-B}" stroke="#eee"/>')
        out.append(f'<text x="{x:.1f}" y="{H-B+16}" text-anchor="middle">{short(t)}</text>')
    for t in yticks:
        y = fy(t)
        out.append(f'<line x1="{L}" y1="{y:.1f}" x2="{W-R}" y2="{y:.1f}" stroke="#eee"/>')
        out.append(f'<text x="{L-6}" y="{y+4:.1f}" text-anchor="end">{short(t)}</text>')
    out.append(f'<rect x="{L}" y="{T}" width="{W-L-R}" height="{H-T-B}" fill="none" stroke="#333"/>')
    out.append(f'<text x="{(L+W-R)/2}" y="{H-18}" text-anchor="middle">{xlabel}</text>')
    out.append(f'<text x="18" y="{(T+H-B)/2}" text-anchor="middle" transform="rotate(-90 18 {(T+H-B)/2})">{ylabel}</text>')
    for i, (label, color, dash, s) in enumerate(series):
        if not s:
            continue
        d = " ".join(f"{fx(x):.1f},{fy(y):.1f}" for x, y in sorted(s))
        out.append(f'<polyline points="{d}" fill="none" stroke="{color}" stroke-width="2" {"stroke-dasharray=%s" % chr(34) + dash + chr(34) if dash else ""}/>')
        for x, y in s:
            out.append(f'<circle cx="{fx(x):.1f}" cy="{fy(y):.1f}" r="3" fill="{color}"/>')
        ly = T + 14 + i * 18
        out.append(f'<line x1="{W-R+12}" y1="{ly-4}" x2="{W-R+34}" y2="{ly-4}" stroke="{color}" stroke-width="2" {"stroke-dasharray=%s" % chr(34) + dash + chr(34) if dash else ""}/>')
        out.append(f'<text x="{W-R+40}" y="{ly}">{label}</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out))
    return True


def short(v):
    if v >= 1e6:
        return f"{v/1e6:g}M"
    if v >= 1e3:
        return f"{v/1e3:g}k"
    return f"{v:g}"


def offered(r):
    return (r.get("offered_rate") or r.get("publish_per_second") or 0) * max(1, r["subscribers"] // max(1, r["channels"]))


def fanout_plots(rows, case, outdir):
    made = []
    deliv, lat = [], []
    for s in SYSTEMS:
        steps = pick(rows, case, s)
        deliv.append((NAMES[s], COLORS[s], "", [(offered(r), r["delivered_per_second"]) for r in steps]))
        lat.append((NAMES[s] + " p50", COLORS[s], "4,3", [(offered(r), max(r["latency_ms"]["p50"], 0.01)) for r in steps if r["latency_ms"]["count"]]))
        lat.append((NAMES[s] + " p99", COLORS[s], "", [(offered(r), max(r["latency_ms"]["p99"], 0.01)) for r in steps if r["latency_ms"]["count"]]))
    f1 = f"{case}-delivered.svg"
    if svg_chart(os.path.join(outdir, f1), f"{case}: delivered vs offered", "offered deliveries/s", "delivered/s", deliv):
        made.append(f1)
    f2 = f"{case}-latency.svg"
    if svg_chart(os.path.join(outdir, f2), f"{case}: latency vs offered", "offered deliveries/s", "latency ms (log)", lat, log_y=True):
        made.append(f2)
    return made


# ---------------------------------------------------------------- tables

def fanout_table(rows, case):
    lines = ["| system | offered msg/s | published | delivered/expected | lost | delivered/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s in SYSTEMS:
        for r in pick(rows, case, s):
            l = r["latency_ms"]
            rate = fmt(r["offered_rate"]) if r.get("offered_rate") else f"max ({fmt(r['publish_per_second'])}/s)"
            lines.append(f"| {NAMES[s]} | {rate} | {fmt(r['published'])} | {fmt(r['delivered'])}/{fmt(r['expected'])} | {fmt(r['lost'])} | "
                         f"{fmt(r['delivered_per_second'])} | {l['p50']} | {l['p90']} | {l['p99']} | {l['p999']} | {l['max']} |")
    return "\n".join(lines)


def peak(rows, case, system, zero_loss):
    best = None
    for r in pick(rows, case, system):
        if zero_loss and (r["lost"] != 0 or r["publish_failed"] != 0):
            continue
        if best is None or r["delivered_per_second"] > best["delivered_per_second"]:
            best = r
    return best


def publish_table(rows, case):
    lines = ["| system | publishes/s | failed | publish p50 ms | p99 ms | delivered/expected |", "|---|---:|---:|---:|---:|---:|"]
    for s in SYSTEMS:
        for r in pick(rows, case, s):
            l = r["publish_latency_ms"]
            lines.append(f"| {NAMES[s]} | {fmt(r['publish_per_second'])} | {fmt(r['publish_failed'])} | {l['p50']} | {l['p99']} | "
                         f"{fmt(r['delivered'])}/{fmt(r['expected'])} |")
    return "\n".join(lines)


def wrk_table(rows, case):
    lines = ["| system | publishes/s | failed | p50 ms | p90 ms | p99 ms |", "|---|---:|---:|---:|---:|---:|"]
    for s in SYSTEMS:
        for r in pick(rows, case, s):
            l = r["publish_latency_ms"]
            lines.append(f"| {NAMES[s]} | {fmt(r['publish_per_second'])} | {fmt(r['publish_failed'])} | {l['p50']} | {l['p90']} | {l['p99']} |")
    return "\n".join(lines)


def idle_table(rows, case):
    lines = ["| system | connections asked | held | failed | RSS before KiB | RSS after KiB | KiB per connection | connect s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for s in SYSTEMS:
        for r in pick(rows, case, s):
            lines.append(f"| {NAMES[s]} | {fmt(r['connections'])} | {fmt(r['connected'])} | {fmt(r['failed'])} | {fmt(r['rss_before_kib'])} | "
                         f"{fmt(r['rss_after_kib'])} | {r['kib_per_connection']} | {r['connect_seconds']:.1f} |")
    return "\n".join(lines)


def storm_table(rows):
    lines = ["| system | clients | missed per client | reconnected | caught up | resumed:false | seconds until all caught up |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for s in SYSTEMS:
        for r in pick(rows, "storm", s):
            lines.append(f"| {NAMES[s]} | {fmt(r['clients'])} | {r['missed_per_client']} | {fmt(r['reconnected'])} | {fmt(r['caught_up'])} | "
                         f"{fmt(r['resumed_false'])} | {r['seconds']} |")
    if len(lines) == 2:
        return ""
    return "\n".join(lines) + "\n\nNchan: not run (its plain WebSocket frames carry no message id to resume from)."


def targets(rows):
    out = ["| target | measured | met |", "|---|---|---|"]

    def row(name, text, ok):
        out.append(f"| {name} | {text} | {'yes' if ok else ('**no**' if ok is False else 'not measured')} |")

    for case in ("fanout-1k", "fanout-10k"):
        n = peak(rows, case, "nchan", zero_loss=False)
        for s in ("memory", "redis"):
            p = peak(rows, case, s, zero_loss=True)
            if n and p:
                ratio = p["delivered_per_second"] / max(1, n["delivered_per_second"])
                row(f"{case}: peak delivered/s with zero loss ≥ 1.5× Nchan's peak ({NAMES[s]})",
                    f"{fmt(p['delivered_per_second'])} vs {fmt(n['delivered_per_second'])} = {ratio:.2f}×", ratio >= 1.5)
            else:
                row(f"{case}: peak ≥ 1.5× Nchan ({NAMES[s]})", "—", None)
    lat = pick(rows, "latency", "redis")
    if lat:
        l = lat[0]["latency_ms"]
        ok = l["p99"] <= 5 and lat[0]["lost"] == 0
        row("p99 ≤ 5 ms at 100k deliveries/s through Redis across nodes", f"p99 {l['p99']} ms (p50 {l['p50']}), lost {lat[0]['lost']}", ok)
    else:
        row("p99 ≤ 5 ms at 100k deliveries/s through Redis", "—", None)
    for case, tool in (("publish", "realtime-bench, 64 connections"), ("publish-wrk", "wrk, 1 thread, 16 connections")):
        n = pick(rows, case, "nchan")
        for s in ("redis", "memory"):
            p = pick(rows, case, s)
            if n and p:
                ratio = p[0]["publish_per_second"] / max(1, n[0]["publish_per_second"])
                row(f"REST publishes/s ≥ 2× Nchan+Redis, {tool} ({NAMES[s]})",
                    f"{fmt(p[0]['publish_per_second'])} vs {fmt(n[0]['publish_per_second'])} = {ratio:.2f}×", ratio >= 2 and p[0]["publish_failed"] == 0)
    for case in ("idle-10k", "idle-19k"):
        for s in ("memory", "redis"):
            for r in pick(rows, case, s):
                ok = r["kib_per_connection"] <= 8 and r["failed"] == 0 and r["connected"] == r["connections"]
                row(f"{case}: ≤ 8 KiB per idle WebSocket, all held by one node ({NAMES[s]})",
                    f"{r['kib_per_connection']} KiB, {fmt(r['connected'])}/{fmt(r['connections'])} held", ok)
    for case in ("idle-10k", "idle-10k-browser"):
        for s in ("memory", "redis"):
            for r in pick(rows, case, s):
                row(f"{case}: ≤ 6 KiB per idle connection (issue 15) ({NAMES[s]})", f"{r['kib_per_connection']} KiB",
                    r["kib_per_connection"] <= 6 and r["failed"] == 0)
    for s in ("memory", "redis"):
        for r in pick(rows, "storm", s):
            ok = r["seconds"] <= 5 and r["caught_up"] == r["clients"] and r["resumed_false"] == 0
            row(f"resume storm: 10k clients caught up ≤ 5 s ({NAMES[s]})", f"{r['seconds']} s, {fmt(r['caught_up'])}/{fmt(r['clients'])} caught up", ok)
    return "\n".join(out)


# ---------------------------------------------------------------- scaling (issue 15)

SCALING_LABEL = re.compile(r"^(memory|redis-2nodes|nchan-redis)-(\d+)(?:\+(\d+))?[cw]-(\d+)s$")
SCALING_NAMES = {"memory": "memory node", "redis-2nodes": "two Redis nodes", "nchan-redis": "Nchan + Redis"}
SCALING_COLORS = {"memory": "#1f77b4", "redis-2nodes": "#d62728", "nchan-redis": "#7f7f7f"}


def scaling_rows():
    """Every scaling step on record: bench/results/scaling-*.jsonl (bench/scaling.sh) and
    devbench-*.jsonl (the 16-core runner), with the machine's core count and server cores."""
    out = []
    folder = os.path.join(ROOT, "bench", "results")
    for name in sorted(os.listdir(folder)):
        if not (name.startswith("scaling-") or name.startswith("devbench-")) or not name.endswith(".jsonl"):
            continue
        nproc = 16 if name.startswith("devbench-16core") else None
        for r in load(os.path.join(folder, name)):
            m = SCALING_LABEL.match(r.get("label", ""))
            if not m:
                continue
            cores = int(m.group(2)) + int(m.group(3) or 0)
            out.append(dict(r, system=m.group(1), cores=cores, subs=int(m.group(4)), nproc=r.get("nproc", nproc), source=name))
    return out


def scaling_section(outdir):
    rows = scaling_rows()
    if not rows:
        return ""
    peaks = {}
    for r in rows:
        if r["lost"] != 0 or r["publish_failed"] != 0:
            continue
        k = (r["source"], r["nproc"], r["subs"], r["system"], r["cores"])
        if k not in peaks or r["delivered_per_second"] > peaks[k]["delivered_per_second"]:
            peaks[k] = r
    lines = ["| results file | machine cores | subscribers | server | server cores | peak delivered/s (zero loss) | p50 ms | p99 ms | load tool shares the cores |",
             "|---|---:|---:|---|---:|---:|---:|---:|---|"]
    for k in sorted(peaks):
        r = peaks[k]
        l = r["latency_ms"]
        lines.append(f"| {k[0]} | {k[1] or '?'} | {fmt(k[2])} | {SCALING_NAMES[k[3]]} | {k[4]} | {fmt(r['delivered_per_second'])} | {l['p50']} | {l['p99']} | "
                     f"{'yes' if r.get('shared') else 'no'} |")
    parts = [lines and "\n".join(lines), ""]
    # One plot per (machine, subscribers): delivered/s against server cores, one line per server.
    for (source, subs) in sorted({(k[0], k[2]) for k in peaks}):
        series = []
        for system in SCALING_NAMES:
            pts = [(k[4], peaks[k]["delivered_per_second"]) for k in peaks if k[0] == source and k[2] == subs and k[3] == system]
            if pts:
                series.append((SCALING_NAMES[system], SCALING_COLORS[system], "", pts))
        name = source.rsplit(".", 1)[0]
        f = f"scaling-{name[len('scaling-'):] if name.startswith('scaling-') else name}-{subs}.svg"
        if svg_chart(os.path.join(outdir, f), f"peak delivered/s vs server cores ({subs:,} subscribers, {source})", "server cores", "delivered/s", series):
            parts += [f"![{f}](bench/{f})", ""]
    return "\n".join(parts)


def replace_block(text, name, body):
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    if begin in text and end in text:
        return text[: text.index(begin) + len(begin)] + "\n" + body + "\n" + text[text.index(end):]
    return text + "\n" + begin + "\n" + body + "\n" + end + "\n"


def main():
    if "--scaling" in sys.argv:
        outdir = os.path.join(ROOT, "docs", "bench")
        os.makedirs(outdir, exist_ok=True)
        doc = os.path.join(ROOT, "docs", "benchmarks.md")
        text = replace_block(open(doc).read(), "scaling", scaling_section(outdir))
        with open(doc, "w") as f:
            f.write(text)
        print(scaling_section(outdir))
        return
    args = [a for a in sys.argv[1:] if a != "--targets-only"]
    path = args[0] if args else os.path.join(ROOT, "bench", "results", "latest.jsonl")
    rows = load(path)
    if "--targets-only" in sys.argv:
        print(targets(rows))
        return
    outdir = os.path.join(ROOT, "docs", "bench")
    os.makedirs(outdir, exist_ok=True)
    parts = ["### Targets", "", targets(rows), ""]
    sections = [
        ("fanout-1k", "Fan-out: 1 channel × 1,000 subscribers, publish rate stepped up", fanout_table),
        ("fanout-10k", "Fan-out: 1 channel × 10,000 subscribers, publish rate stepped up", fanout_table),
        ("latency", "Latency at 100k deliveries/s (100 msg/s × 1,000 subscribers, 10 s)", fanout_table),
        ("channels-10k", "Many channels: 10,000 channels × 1 subscriber", fanout_table),
        ("publish", "REST publish throughput, no subscribers (64 connections, flat out)", lambda r, c: publish_table(r, c)),
        ("publish-100", "REST publish throughput, 100 channels × 1 subscriber (64 connections, flat out)", lambda r, c: publish_table(r, c)),
        ("publish-wrk", "REST publish throughput with wrk (1 thread, 16 keep-alive connections, no pipelining, 10 s)", wrk_table),
        ("idle-10k", "Idle connections: 10,000", lambda r, c: idle_table(r, c)),
        ("idle-10k-browser", "Idle connections: 10,000 with browser-sized upgrade requests (600 bytes of cookies, about 1 KiB each)",
         lambda r, c: idle_table(r, c)),
        ("idle-10k-bigop", "Idle connections: 10,000 that each sent one 60 KB op first (a subscribe op with 60,000 bytes of padding)",
         lambda r, c: idle_table(r, c)),
        ("idle-19k", "Idle connections: 19,000 (one node process, fd limit 20,000)", lambda r, c: idle_table(r, c)),
    ]
    for case, title, table in sections:
        if not pick(rows, case):
            continue
        parts += [f"### {title}", "", table(rows, case), ""]
        if case in ("fanout-1k", "fanout-10k", "channels-10k"):
            for f in fanout_plots(rows, case, outdir):
                parts += [f"![{f}](bench/{f})", ""]
    st = storm_table(rows)
    if st:
        parts += ["### Resume storm: 10,000 clients reconnect at once with since_id (100 channels, 20 missed messages each)", "", st, ""]
    body = "\n".join(parts)
    doc = os.path.join(ROOT, "docs", "benchmarks.md")
    text = open(doc).read() if os.path.exists(doc) else "# Benchmarks\n\n<!-- results:begin -->\n<!-- results:end -->\n"
    text = replace_block(text, "results", body)
    with open(doc, "w") as f:
        f.write(text)
    print(targets(rows))


if __name__ == "__main__":
    main()
