"""Benchmark: one DPO training step — the lab's, TRL's DPOTrainer's, and a naive four-forward one.

All three train the same tiny randomly initialised Hugging Face Llama (3 layers, 128 wide,
built in code) on the same preference pairs (the lab's arithmetic task), with the same
batch size and the same optimiser (AdamW), in float32:

* **lab**: ``dpolab.dpo_train_step`` — one forward over chosen and rejected stacked, the
  reference log-probs precomputed once (timed apart);
* **naive**: four forwards per step — policy and reference, chosen and rejected, separately;
* **TRL**: ``trl.DPOTrainer`` at its fastest for this case — ``precompute_ref_log_probs=True``
  (its precompute timed apart), no evaluation, no logging, no checkpoints, no gradient
  checkpointing, no bf16 autocast, no gradient clipping (the lab does not clip either). Its
  step is timed from the trainer's ``on_step_begin`` to ``on_step_end`` callbacks (batch
  collation excluded; the lab's timing includes gathering its batch).

The three alternate in rounds (lab, naive, TRL, lab, ...) so that a busy machine slows all
of them alike; each figure is the median over every timed step, and the ratios are ratios
of medians. It also prints where each step's time goes (the model's forward and backward
alone, measured on the same stacked batch, against everything else), tokens/s, and the
model-FLOPs utilisation (MFU) against this machine's fp32 matmul peak, measured here too.
The same figures follow for the lab's TinyGPT at notebook 04's recipe.

    python benchmarks/bench_dpo_step.py                 # about a minute or two on 2 cores
    python benchmarks/bench_dpo_step.py --rounds 8 --steps 10 --threads 2

Goals (issue 7): lab >= 1.25x faster than TRL's step and >= 1.4x faster than the naive step.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import tempfile
import time

import torch

import dpolab
from dpolab import ArithmeticTask, CharTokenizer, dpo_loss, dpo_train_step, sequence_logps
from dpolab.training.preference import PreferenceData, concatenate


def matmul_peak_gflops(n: int = 1024, repeats: int = 20) -> float:
    """Best fp32 GFLOP/s of an n×n matmul (2n³ FLOPs) over ``repeats`` runs: the machine's practical peak."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def model_flops_per_token(model: torch.nn.Module, n_layer: int, d_model: int, seq_len: int) -> float:
    """Training FLOPs per token, forward + backward: 6·N (N = non-embedding parameters, plus the LM head)
    + 12·L·d·T for attention scores and values (Kaplan et al. 2020; PaLM appendix B)."""
    n = sum(p.numel() for p in model.parameters())
    emb = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Embedding))
    head = model.get_output_embeddings().weight.numel() if hasattr(model, "get_output_embeddings") else emb
    # Tied weights are counted once in parameters(); the head's matmul still costs its FLOPs.
    return 6 * (n - emb + head) + 12 * n_layer * d_model * seq_len


def naive_step(policy, reference, batch, optimizer, beta=0.1) -> float:
    """Four forwards: policy chosen, policy rejected, reference chosen, reference rejected."""
    optimizer.zero_grad(set_to_none=True)
    c, r = batch.chosen, batch.rejected
    pc = sequence_logps(policy(c.input_ids, attention_mask=c.attention_mask).logits, c.input_ids, c.loss_mask)
    pr = sequence_logps(policy(r.input_ids, attention_mask=r.attention_mask).logits, r.input_ids, r.loss_mask)
    with torch.no_grad():
        rc = sequence_logps(
            reference(c.input_ids, attention_mask=c.attention_mask).logits, c.input_ids, c.loss_mask
        )
        rr = sequence_logps(
            reference(r.input_ids, attention_mask=r.attention_mask).logits, r.input_ids, r.loss_mask
        )
    loss = dpo_loss(pc, pr, rc, rr, beta).mean()
    loss.backward()
    optimizer.step()
    return loss.item()


def model_only(policy, batch) -> None:
    """The model's forward and backward on the stacked batch, nothing else (a fixed upstream gradient)."""
    stacked = concatenate(batch)
    out = policy(stacked.input_ids, attention_mask=stacked.attention_mask)
    logits = out.logits if hasattr(out, "logits") else out
    logits.backward(torch.ones_like(logits) * 1e-3)
    policy.zero_grad(set_to_none=True)


def timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


class StepTimer:
    """A TrainerCallback (duck-typed) that records the wall time of every training step."""

    def __init__(self):
        self.times: list[float] = []
        self._start = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter() - self._start)

    def __getattr__(self, name):  # every other callback event: do nothing
        if name.startswith("on_"):
            return lambda *a, **k: None
        raise AttributeError(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per method per round")
    parser.add_argument("--batch-size", type=int, default=32, help="pairs per step")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-trl", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    from dpolab.training.hf import hf_char_tokenizer, tiny_llama

    tok = CharTokenizer()
    hf_tok = hf_char_tokenizer(tok)
    pairs = ArithmeticTask(seed=0).preference_pairs(n=512)
    data = PreferenceData(pairs, hf_tok)
    B = args.batch_size
    layers, width = 3, 128
    policy = tiny_llama(tok.vocab_size, hidden_size=width, num_hidden_layers=layers, seed=0)
    reference = copy.deepcopy(policy).eval()
    peak = matmul_peak_gflops()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs; "
        f"fp32 matmul peak (1024³, best of 20): {peak:.1f} GFLOP/s"
    )
    print(
        f"model: Llama {layers} layers × {width}, {sum(p.numel() for p in policy.parameters()) / 1e6:.2f}M params"
    )

    # The reference, once (the lab's precompute).
    start = time.perf_counter()
    ref_c, ref_r = dpolab.precompute_reference_logps(reference, data.batches(128))
    lab_precompute = time.perf_counter() - start
    gen = torch.Generator().manual_seed(0)
    fixed_rows = [torch.randint(len(data), (B,), generator=gen) for _ in range(args.steps)]

    lab_policy, naive_policy = copy.deepcopy(policy), copy.deepcopy(policy)
    lab_opt = torch.optim.AdamW(lab_policy.parameters(), lr=1e-4)
    naive_opt = torch.optim.AdamW(naive_policy.parameters(), lr=1e-4)

    def lab_step(rows):
        dpo_train_step(lab_policy, data.batch(rows), ref_c[rows], ref_r[rows], lab_opt)

    def naive(rows):
        naive_step(naive_policy, reference, data.batch(rows), naive_opt)

    trainer, timer, trl_precompute = None, None, float("nan")
    if not args.no_trl:
        trainer, timer, trl_precompute = make_trl(policy, reference, pairs, hf_tok, B, args.steps)

    times: dict[str, list[float]] = {"lab": [], "naive": [], "TRL": [], "model fwd+bwd": []}
    for rnd in range(args.rounds + 1):  # round 0 warms up and is discarded
        lab_t = [timed(lab_step, rows) for rows in fixed_rows]
        naive_t = [timed(naive, rows) for rows in fixed_rows]
        model_t = [timed(model_only, lab_policy, data.batch(rows)) for rows in fixed_rows]
        trl_t = []
        if trainer is not None:
            timer.times.clear()
            trainer.train()
            trl_t = timer.times[1:]  # its first step includes lazy set-up
        if rnd:
            times["lab"] += lab_t
            times["naive"] += naive_t
            times["model fwd+bwd"] += model_t
            times["TRL"] += trl_t

    med = {k: statistics.median(v) for k, v in times.items() if v}
    widths = [concatenate(data.batch(rows)).input_ids.shape[1] for rows in fixed_rows]
    tokens = 2 * B * statistics.median(widths)
    flops = model_flops_per_token(policy, layers, width, int(statistics.median(widths))) * tokens
    print(
        f"\nbatch {B} pairs -> a ({2 * B}, {statistics.median(widths):.0f}) stacked batch; "
        f"{args.rounds} rounds × {args.steps} steps each, medians (ms):"
    )
    print(f"{'step':<16}{'ms/step':>9}{'tokens/s':>11}{'MFU':>8}{'model fwd+bwd':>15}{'everything else':>17}")
    for name in ("lab", "TRL", "naive"):
        if name not in med:
            continue
        ms = med[name] * 1e3
        model_ms = med["model fwd+bwd"] * 1e3  # the policy's forward and backward over the same rows
        print(
            f"{name:<16}{ms:>9.1f}{tokens / med[name]:>11.0f}{flops / med[name] / 1e9 / peak:>8.1%}"
            f"{model_ms:>12.1f} ms{ms - model_ms:>14.1f} ms"
        )
    print(
        f"{'model fwd+bwd':<16}{med['model fwd+bwd'] * 1e3:>9.1f}{tokens / med['model fwd+bwd']:>11.0f}"
        f"{flops / med['model fwd+bwd'] / 1e9 / peak:>8.1%}   (the model alone, on the stacked batch)"
    )
    print(
        "  (naive: its policy runs on two half batches, and its two reference forwards count in 'everything else')"
    )
    print(
        f"\nreference precompute (all {len(data)} pairs, once): lab {lab_precompute:.2f} s, TRL {trl_precompute:.2f} s"
    )
    if "TRL" in med:
        print(f"lab vs TRL DPOTrainer step:  {med['TRL'] / med['lab']:.2f}x faster (goal >= 1.25x)")
    print(f"lab vs naive four-forward step: {med['naive'] / med['lab']:.2f}x faster (goal >= 1.4x)")
    bench_tinygpt(peak, args)


def make_trl(policy, reference, pairs, hf_tok, batch_size, steps):
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    out = tempfile.mkdtemp()
    dataset = Dataset.from_list(
        [{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected} for p in pairs]
    )
    config = DPOConfig(
        output_dir=out,
        per_device_train_batch_size=batch_size,
        max_steps=steps + 1,
        learning_rate=1e-4,
        beta=0.1,
        precompute_ref_log_probs=True,
        precompute_ref_batch_size=128,
        bf16=False,
        gradient_checkpointing=False,
        max_grad_norm=0.0,
        logging_strategy="no",
        eval_strategy="no",
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        use_cpu=True,
        dataloader_num_workers=0,
        seed=0,
    )
    timer = StepTimer()
    start = time.perf_counter()
    trainer = DPOTrainer(
        model=copy.deepcopy(policy),
        ref_model=reference,
        args=config,
        train_dataset=dataset,
        processing_class=hf_tok,
        callbacks=[timer],
    )
    precompute = time.perf_counter() - start  # dataset tokenisation + reference log-probs
    return trainer, timer, precompute


def bench_tinygpt(peak: float, args) -> None:
    """The lab's own model at notebook 04's recipe: ms/step, tokens/s, MFU of the DPO step and of SFT."""
    recipe = dpolab.LAB_RECIPE
    tok = CharTokenizer()
    task = recipe.task(0)
    torch.manual_seed(0)
    model = dpolab.TinyGPT(recipe.model_config(tok.vocab_size))
    reference = copy.deepcopy(model).eval()
    data = PreferenceData(task.preference_pairs(), tok)
    ref_c, ref_r = dpolab.precompute_reference_logps(reference, data.batches(256))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(0)
    rows = [torch.randint(len(data), (recipe.batch_size,), generator=gen) for _ in range(args.steps)]
    t = []
    for rnd in range(args.rounds + 1):
        step_t = [
            timed(lambda r: dpo_train_step(model, data.batch(r), ref_c[r], ref_r[r], opt), r) for r in rows
        ]
        if rnd:
            t += step_t
    width = concatenate(data.batch(rows[0])).input_ids.shape[1]
    tokens = 2 * recipe.batch_size * width
    cfg = recipe.model_config(tok.vocab_size)
    n = model.num_parameters() - model.wpe.weight.numel()  # the tied head's matmul counts, positions do not
    flops = (6 * n + 12 * cfg.n_layer * cfg.n_embd * width) * tokens
    ms = statistics.median(t)
    print(
        f"\nTinyGPT (notebook 04: {cfg.n_layer} layers × {cfg.n_embd}, {model.num_parameters() / 1e6:.2f}M params), "
        f"DPO step on {recipe.batch_size} pairs ({2 * recipe.batch_size}, {width}): "
        f"{ms * 1e3:.1f} ms/step, {tokens / ms:.0f} tokens/s, MFU {flops / ms / 1e9 / peak:.1%}"
    )


if __name__ == "__main__":
    main()
