#!/usr/bin/python3
"""Summarise compare.sh runs: medians, spread, ratio wisp/mosquitto.

usage: summarize.py RUNS.jsonl OUTDIR [--meta key=value ...]

Writes OUTDIR/results.md (markdown table), OUTDIR/results.json (the same
figures, machine-readable), OUTDIR/chart.dat and OUTDIR/results.gp (a
gnuplot script that draws OUTDIR/results.png). Standard library only.
"""
import json
import statistics
import sys

# Figures per scenario kind: (json key, label, unit, lower_is_better).
MSG = [
    ("broker_cpu_us_per_msg", "broker CPU per delivered msg", "us", True),
    ("delivered_rate", "delivered rate", "msg/s", False),
    ("p99", "p99 latency", "us", True),
]
LAT = [
    ("p50", "p50 latency", "us", True),
    ("p99", "p99 latency", "us", True),
    ("p999", "p99.9 latency", "us", True),
    ("broker_cpu_us_per_msg", "broker CPU per delivered msg", "us", True),
]
CONNS = [
    ("broker_rss_per_conn_bytes", "broker RSS per connection", "bytes", True),
    ("connect_rate", "connect rate", "conn/s", False),
    ("broker_cpu_us_per_conn", "broker CPU per connection", "us", True),
]
TLS = [
    ("broker_cpu_us_per_handshake", "broker CPU per handshake", "us", True),
    ("handshake_rate", "handshake rate", "1/s", False),
]


def figures_for(scen_id):
    if scen_id.startswith("latency"):
        return LAT
    if scen_id.startswith("conns"):
        return CONNS
    if scen_id in ("tls", "tls-resume"):
        return TLS
    return MSG


def value(result, key):
    if key in ("p50", "p90", "p99", "p999"):
        return result.get("latency_us", {}).get(key)
    return result.get(key)


def fmt(v):
    if v is None:
        return "-"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def main():
    runs_path, outdir = sys.argv[1], sys.argv[2]
    meta = {}
    args = sys.argv[3:]
    while args:
        if args[0] == "--meta" and len(args) > 1:
            k, _, v = args[1].partition("=")
            meta[k] = v
            args = args[2:]
        else:
            sys.exit(f"summarize.py: unknown argument {args[0]}")

    order, runs = [], {}
    with open(runs_path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            r = json.loads(line)
            if r["id"] not in order:
                order.append(r["id"])
            runs.setdefault((r["id"], r["broker"]), []).append(r)

    summary = {"meta": meta, "scenarios": []}
    md = []
    md.append(f"Wisp vs Mosquitto {meta.get('mosquitto', '')}: {meta.get('date', '')}, commit "
              f"{meta.get('commit', '?')}, {meta.get('machine', '')}; medians of {meta.get('reps', '?')} "
              f"alternating run(s), payload {meta.get('payload', '16')} B, broker on CPU 0, generator on CPU 1.")
    md.append("")
    md.append("| scenario | figure | wisp | mosquitto | wisp/mosq | notes |")
    md.append("|---|---|---:|---:|---:|---|")
    for sid in order:
        entry = {"id": sid, "brokers": {}, "figures": []}
        notes = []
        for b in ("wisp", "mosquitto"):
            rs = runs.get((sid, b), [])
            good = [r["result"] for r in rs if r.get("result") and r["rc"] == 0]
            bad = [r for r in rs if not (r.get("result") and r["rc"] == 0)]
            limits = sorted({g.get("limit", "?") for g in good})
            entry["brokers"][b] = {"runs": len(rs), "ok": len(good), "failed": len(bad), "limits": limits}
            for r in bad:
                res = r.get("result") or {}
                if r["rc"] == 77:
                    why = r.get("note") or "not yet"
                elif r["rc"] == 1:
                    why = (f"integrity FAIL: lost {res.get('lost')}, dups {res.get('dups')}, "
                           f"incomplete {res.get('incomplete')}")
                else:
                    why = f"error (exit {r['rc']})"
                notes.append(f"{b} rep {r['rep']}: {why}")
            if "generator" in limits:
                notes.append(f"{b}: GENERATOR-BOUND in some runs")
        for key, label, unit, lower in figures_for(sid):
            row = {"key": key, "label": label, "unit": unit, "lower_is_better": lower}
            cells = []
            meds = {}
            for b in ("wisp", "mosquitto"):
                rs = runs.get((sid, b), [])
                vals = [value(r["result"], key) for r in rs if r.get("result") and r["rc"] in (0, 1)]
                vals = [v for v in vals if v is not None]
                if vals:
                    med = statistics.median(vals)
                    spread = (max(vals) - min(vals)) / med * 100 if med else 0.0
                    meds[b] = med
                    row[b] = {"median": med, "min": min(vals), "max": max(vals), "n": len(vals),
                              "spread_pct": spread}
                    cells.append(f"{fmt(med)} ±{spread / 2:.0f}%" if len(vals) > 1 else fmt(med))
                else:
                    row[b] = None
                    cells.append("-")
            ratio = None
            if meds.get("wisp") is not None and meds.get("mosquitto"):
                ratio = meds["wisp"] / meds["mosquitto"]
            row["ratio"] = ratio
            entry["figures"].append(row)
            md.append(f"| {sid} | {label} ({unit}) | {cells[0]} | {cells[1]} | "
                      f"{'-' if ratio is None else f'{ratio:.2f}'} | "
                      f"{'; '.join(notes) if key == figures_for(sid)[0][0] else ''} |")
        summary["scenarios"].append(entry)
    # WebSocket rows against the same row in plain TCP, per broker (issue 15).
    ws_rows = [sid for sid in order if sid.endswith("-ws") and sid[:-3] in order]
    if ws_rows:
        def med_cpu(sid, b):
            vals = [value(r["result"], "broker_cpu_us_per_msg") for r in runs.get((sid, b), [])
                    if r.get("result") and r["rc"] in (0, 1)]
            vals = [v for v in vals if v is not None]
            return statistics.median(vals) if vals else None
        md.append("")
        md.append("WebSocket against plain TCP: broker CPU per delivered message (us), and the ratio ws/tcp.")
        md.append("")
        md.append("| scenario | wisp tcp | wisp ws | wisp ws/tcp | mosquitto tcp | mosquitto ws | "
                  "mosquitto ws/tcp | wisp ws / mosquitto ws |")
        md.append("|---|---:|---:|---:|---:|---:|---:|---:|")
        summary["ws_vs_tcp"] = []
        for sid in ws_rows:
            base = sid[:-3]
            c = {b: (med_cpu(base, b), med_cpu(sid, b)) for b in ("wisp", "mosquitto")}
            def ratio(a, b):
                return a / b if a is not None and b else None
            rw, rm = ratio(c["wisp"][1], c["wisp"][0]), ratio(c["mosquitto"][1], c["mosquitto"][0])
            rx = ratio(c["wisp"][1], c["mosquitto"][1])
            summary["ws_vs_tcp"].append({"id": sid, "wisp_tcp": c["wisp"][0], "wisp_ws": c["wisp"][1],
                                         "mosquitto_tcp": c["mosquitto"][0], "mosquitto_ws": c["mosquitto"][1],
                                         "wisp_ws_over_tcp": rw, "wisp_ws_over_mosquitto_ws": rx})
            f2 = lambda v: "-" if v is None else f"{v:.2f}"
            md.append(f"| {base} | {fmt(c['wisp'][0])} | {fmt(c['wisp'][1])} | {f2(rw)} | "
                      f"{fmt(c['mosquitto'][0])} | {fmt(c['mosquitto'][1])} | {f2(rm)} | {f2(rx)} |")
    md.append("")
    md.append("± is half the min-max spread as a share of the median. Ratio below 1 is better for Wisp on "
              "CPU, RSS and latency; above 1 is better on rates. GENERATOR-BOUND: wisp_bench used a whole "
              "core, so the rate is the generator's, not the broker's; compare CPU per message instead.")
    with open(f"{outdir}/results.md", "w") as f:
        f.write("\n".join(md) + "\n")
    with open(f"{outdir}/results.json", "w") as f:
        json.dump(summary, f, indent=1)

    # Chart data: message scenarios, CPU per message and delivered rate.
    with open(f"{outdir}/chart.dat", "w") as f:
        f.write("# id wisp_cpu mosq_cpu wisp_rate_k mosq_rate_k\n")
        for e in summary["scenarios"]:
            fig = {r["key"]: r for r in e["figures"]}
            if "broker_cpu_us_per_msg" not in fig or e["id"].startswith("latency"):
                continue
            def med(key, b, scale=1.0):
                r = fig.get(key, {}).get(b) if fig.get(key) else None
                return f"{r['median'] / scale:.3f}" if r else "NaN"
            f.write(f"{e['id']} {med('broker_cpu_us_per_msg', 'wisp')} "
                    f"{med('broker_cpu_us_per_msg', 'mosquitto')} "
                    f"{med('delivered_rate', 'wisp', 1000)} {med('delivered_rate', 'mosquitto', 1000)}\n")
    title = (f"Wisp vs Mosquitto {meta.get('mosquitto', '')} ({meta.get('date', '')}, "
             f"{meta.get('commit', '')}, payload {meta.get('payload', '16')} B)")
    with open(f"{outdir}/results.gp", "w") as f:
        f.write(f"""set terminal pngcairo size 1200,900 font ",10"
set output "{outdir}/results.png"
set datafile missing "NaN"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set boxwidth 0.9
set xtics rotate by -30
set grid ytics
set key top left
set multiplot layout 2,1 title "{title}"
set title "Broker CPU per delivered message (us, lower is better; log scale: 16 B and 1 MiB rows share it)"
set ylabel "us / msg"
set logscale y
set yrange [0.1:*]
plot "{outdir}/chart.dat" using 2:xtic(1) title "wisp" lc rgb "#2a7fd4", '' using 3 title "mosquitto" lc rgb "#d4682a"
unset logscale y
set yrange [0:*]
set title "Delivered rate (thousand msg/s, higher is better; closed loop)"
set ylabel "k msg/s"
plot "{outdir}/chart.dat" using 4:xtic(1) title "wisp" lc rgb "#2a7fd4", '' using 5 title "mosquitto" lc rgb "#d4682a"
unset multiplot
""")


if __name__ == "__main__":
    main()
