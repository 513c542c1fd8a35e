"""Benchmark: per-sequence log-prob extraction, dpolab vs the seed's naive version.

The naive version (the course draft's) materialises ``log_softmax`` over the whole
vocabulary, a second (B, T, V) tensor, then gathers. ``dpolab.sequence_logps`` uses
logsumexp-and-gather over row chunks with a hand-written backward.

Each measurement runs in a fresh subprocess so peak memory is its own: peak resident
memory (VmHWM) minus the resident memory once the inputs exist. Time is the median of
``--repeats`` runs after one warm-up. Run: ``python benchmarks/bench_logprobs.py``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status (Linux only)")


def child(impl: str, mode: str, b: int, t: int, v: int, repeats: int, threads: int) -> None:
    import torch
    import torch.nn.functional as F

    from dpolab import sequence_logps

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    logits = torch.randn(b, t, v)
    labels = torch.randint(0, v, (b, t))
    mask = torch.zeros(b, t, dtype=torch.long)
    mask[:, t // 4 :] = 1  # a quarter prompt, the rest response

    def naive(z):
        logps = F.log_softmax(z[:, :-1], dim=-1)
        tok = torch.gather(logps, -1, labels[:, 1:, None]).squeeze(-1)
        return (tok * mask[:, 1:]).sum(-1)

    def library(z):
        return sequence_logps(z, labels, mask)

    fn = naive if impl == "naive" else library

    def step():
        if mode == "forward":
            with torch.no_grad():
                return fn(logits)
        z = logits.detach().requires_grad_()
        fn(z).sum().backward()
        return z.grad

    base = _rss_kib("VmRSS")
    times = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        out = step()
        if i:
            times.append(time.perf_counter() - start)
        del out
    peak = _rss_kib("VmHWM")
    print(json.dumps({"time_s": statistics.median(times), "extra_mib": (peak - base) / 1024}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--child", nargs=2, metavar=("IMPL", "MODE"), help=argparse.SUPPRESS)
    a = p.parse_args()
    shape = (a.batch, a.seq_len, a.vocab)
    if a.child:
        child(*a.child, *shape, a.repeats, a.threads)
        return

    def run(impl, mode):
        cmd = [sys.executable, __file__, "--child", impl, mode, "--batch", str(a.batch), "--seq-len",
               str(a.seq_len), "--vocab", str(a.vocab), "--repeats", str(a.repeats), "--threads", str(a.threads)]  # fmt: skip
        return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)

    import torch

    one = a.batch * a.seq_len * a.vocab * 4 / 2**20
    print(f"log-prob extraction, B={a.batch} T={a.seq_len} V={a.vocab}, float32 logits ({one:.0f} MiB), "
          f"CPU, {a.threads} threads, torch {torch.__version__}")  # fmt: skip
    print(f"{'mode':<18}{'naive s':>9}{'dpolab s':>10}{'time ratio':>12}"
          f"{'naive MiB':>11}{'dpolab MiB':>12}{'memory ratio':>14}")  # fmt: skip
    for mode in ("forward", "forward+backward"):
        n, lib = run("naive", mode), run("library", mode)
        print(f"{mode:<18}{n['time_s']:>9.3f}{lib['time_s']:>10.3f}{lib['time_s'] / n['time_s']:>12.2f}"
              f"{n['extra_mib']:>11.0f}{lib['extra_mib']:>12.0f}{lib['extra_mib'] / n['extra_mib']:>14.2f}")  # fmt: skip
    print("ratios are dpolab / naive: time <= 1.0 and peak extra memory <= 0.5 are the targets")


if __name__ == "__main__":
    main()
