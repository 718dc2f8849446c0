#!/usr/bin/env python3
"""Run bench/cpu_decode and write its results as Markdown tables plus JSON.

Usage: bench/cpu_report.py BENCH_BINARY OUT_PREFIX [benchmark args...]
Writes OUT_PREFIX.json (Google Benchmark's own JSON) and OUT_PREFIX.md.
With BENCH_BINARY '-' it only formats an existing OUT_PREFIX.json.
Every figure is a median of the repetitions measured in that one run;
ratios are between benchmarks of the same run.
"""
import json
import re
import subprocess
import sys


def main():
    binary, prefix, extra = sys.argv[1], sys.argv[2], sys.argv[3:]
    if binary != '-':
        subprocess.run([binary, f'--benchmark_out={prefix}.json', '--benchmark_out_format=json'] + extra,
                       check=True)
    data = json.load(open(f'{prefix}.json'))
    med = {}
    for b in data['benchmarks']:
        if b.get('aggregate_name') != 'median':
            continue
        name = re.sub(r'/min_time:[^/]*|/repeats:\d+|/real_time', '', b['run_name'])
        med[name] = b
    ctx = data['context']
    ms = lambda b: b['real_time'] * {'ns': 1e-6, 'us': 1e-3, 'ms': 1.0, 's': 1e3}[b['time_unit']]
    out = []
    out.append(f"Machine: {ctx.get('host_name', '?')}, {ctx['num_cpus']} CPUs at {ctx['mhz_per_cpu']} MHz, "
               f"ISA {ctx.get('isa', '?')}, {ctx.get('threads', '?')} threads, run {ctx['date']}.\n")
    stream = med.get('roofline/stream', {}).get('GB/s')
    gather = med.get('roofline/gather', {}).get('GB/s')
    if stream and gather:
        out.append(f"Rooflines measured in the same run: streaming read {stream:.1f} GB/s, "
                   f"random 256-byte row gather {gather:.1f} GB/s.\n")
    out.append('| context | batch | LSH step (ms) | dense step (ms) | dense / LSH | keys sampled per head | '
               'rows read per KV head | bytes touched (MB) | LSH GB/s | % of gather roofline | dense GB/s | '
               '% of stream roofline | retrieval (ms) | sampled attention (ms) |')
    out.append('|---|---|---|---|---|---|---|---|---|---|---|---|---|---|')
    keys = sorted({(int(m.group(1)), int(m.group(2))) for k in med
                   for m in [re.match(r'decode/lsh/n:(\d+)/batch:(\d+)', k)] if m}, key=lambda t: (t[1], t[0]))
    for n, B in keys:
        tag = f'/n:{n}/batch:{B}'
        l, d = med[f'decode/lsh{tag}'], med.get(f'decode/dense{tag}')
        r, a = med.get(f'retrieval{tag}'), med.get(f'attention{tag}')
        frac = lambda b, bw: 100.0 * (b['bytes'] / (bw * 1e9)) / (ms(b) * 1e-3) if bw else float('nan')
        out.append(f"| {n // 1024}K | {B} | {ms(l):.3f} | {ms(d):.2f} | {ms(d) / ms(l):.1f}x | "
                   f"{l['keys_sampled']:.0f} ({100.0 * l['keys_sampled'] / n:.2f}%) | {l['union_rows']:.0f} | "
                   f"{l['bytes'] / 1e6:.1f} | {l['GB/s']:.1f} | {frac(l, gather):.0f}% | {d['GB/s']:.1f} | "
                   f"{frac(d, stream):.0f}% | {ms(r):.3f} | {ms(a):.3f} |")
    build = {k.split('/')[1]: v for k, v in med.items() if k.startswith('build/')}
    if build:
        h, e, t = build.get('hash'), build.get('eigen_gemm'), build.get('tables')
        n = [k for k in med if k.startswith('build/hash')][0].split(':')[-1]
        out.append('')
        out.append(f'Index build, {n} tokens x 8 KV heads, K=10 L=150:\n')
        out.append('| hashing (ms) | hashing GFLOP/s | Eigen fp32 GEMM, same shape (ms) | Eigen GFLOP/s | '
                   'hashing / Eigen throughput | tables from codes (ms) | index bytes per token per KV head |')
        out.append('|---|---|---|---|---|---|---|')
        out.append(f"| {ms(h):.1f} | {h['GFLOP/s']:.0f} | {ms(e):.1f} | {e['GFLOP/s']:.0f} | "
                   f"{100.0 * h['GFLOP/s'] / e['GFLOP/s']:.0f}% | {ms(t):.1f} | {t['index_B_per_token_head']:.1f} |")
    open(f'{prefix}.md', 'w').write('\n'.join(out) + '\n')
    print('\n'.join(out))


if __name__ == '__main__':
    main()
