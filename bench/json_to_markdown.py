#!/usr/bin/env python3
"""Google Benchmark JSON (--benchmark_out) -> one Markdown table.

Usage: json_to_markdown.py FILE.json [FILE.json ...] > table.md

One row per benchmark: the median aggregate when the run had repetitions
(else the single run), its coefficient of variation, items/s, bytes/s and the
user counters. Standard library only.
"""
import json
import sys


def si(x, unit=""):
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= factor:
            return f"{x / factor:.3g} {prefix}{unit}"
    return f"{x:.3g} {unit}".rstrip()


SCALE = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}


def time_str(t, unit):
    sec = t * SCALE[unit]
    for factor, name in ((1.0, "s"), (1e-3, "ms"), (1e-6, "us"), (1e-9, "ns")):
        if sec >= factor or name == "ns":
            return f"{sec / factor:.4g} {name}"


FIXED = {"name", "family_index", "per_family_instance_index", "run_name", "run_type", "repetitions",
         "repetition_index", "threads", "aggregate_name", "aggregate_unit", "iterations", "real_time",
         "cpu_time", "time_unit", "bytes_per_second", "items_per_second", "label", "error_occurred",
         "error_message"}


def rows(path):
    with open(path) as f:
        data = json.load(f)
    runs = data.get("benchmarks", [])
    medians = {b["run_name"]: b for b in runs if b.get("aggregate_name") == "median"}
    cvs = {b["run_name"]: b for b in runs if b.get("aggregate_name") == "cv"}
    seen = []
    for b in runs:
        name = b.get("run_name", b["name"])
        if name in seen:
            continue
        seen.append(name)
        if b.get("error_occurred"):
            yield [name, "error: " + b.get("error_message", ""), "", "", "", "", "", ""]
            continue
        m = medians.get(name, b)
        reps = m.get("repetitions", 1) if name in medians else 1
        cv = cvs.get(name)
        counters = ", ".join(f"{k}={v:.4g}" for k, v in m.items() if k not in FIXED and isinstance(v, (int, float)))
        yield [name, time_str(m["real_time"], m["time_unit"]), time_str(m["cpu_time"], m["time_unit"]),
               f"{100 * cv['real_time']:.1f}%" if cv else "", str(reps),
               si(m["items_per_second"], "/s") if "items_per_second" in m else "",
               si(m["bytes_per_second"], "B/s") if "bytes_per_second" in m else "", counters]


def main(paths):
    print("| benchmark | real (median) | CPU (median) | cv real | reps | items/s | bytes/s | counters |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for p in paths:
        for r in rows(p):
            print("| " + " | ".join(c.replace("|", "\\|") for c in r) + " |")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
