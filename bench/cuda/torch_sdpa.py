"""PyTorch scaled_dot_product_attention on the decode shapes of decode_bench.cu
(one Llama-3.1-8B-shaped layer: 32 query heads, 8 KV heads, head_dim 128,
bf16, GQA), timed with CUDA events: 5 warm-up calls, then the median of 30.
K/V sets are rotated so that at least 512 MB is cycled through (L2 is 60 MB).
Arguments: the contexts to run (default 32768 65536 131072 262144)."""
import sys
import torch
import torch.nn.functional as F

def main():
    dev = torch.device("cuda")
    print("device:", torch.cuda.get_device_name(0), "torch", torch.__version__)
    print(f"{'config':<10} {'sdpa_ms':>9} {'GBps':>7}")
    contexts = [int(x) for x in sys.argv[1:]] or [32768, 65536, 131072, 262144]
    for n in contexts:
        for b in [1, 8, 32]:
            kv_bytes = b * 8 * n * 128 * 2 * 2
            sets = max(1, min(8, -(-512 * 2**20 // kv_bytes)))
            try:
                data = [(torch.randn(b, 32, 1, 128, device=dev, dtype=torch.bfloat16),
                         torch.randn(b, 8, n, 128, device=dev, dtype=torch.bfloat16),
                         torch.randn(b, 8, n, 128, device=dev, dtype=torch.bfloat16)) for _ in range(sets)]
            except torch.OutOfMemoryError:
                print(f"{n // 1024}K/b{b:<6} out of memory")
                continue
            def step(i):
                q, k, v = data[i % sets]
                return F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
            for i in range(5):
                step(i)
            torch.cuda.synchronize()
            times = []
            for i in range(30):
                a, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                step(i)
                e.record()
                e.synchronize()
                times.append(a.elapsed_time(e))
            times.sort()
            med = times[len(times) // 2]
            print(f"{n // 1024}K/b{b:<6} {med:9.4f} {kv_bytes / (med * 1e-3) / 1e9:7.0f}", flush=True)
            del data
            torch.cuda.empty_cache()

if __name__ == "__main__":
    sys.exit(main())
