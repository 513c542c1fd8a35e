"""The grade cells of the solution notebooks catch the mistakes students make, and only those.

Mutation tests for the hidden tests, without a Jupyter kernel: each solution notebook is
run by ``exec``-ing its first code cell (imports and set-up), its answer cells and its
graded test cells, in order, in one fresh namespace (demos, plots and widgets are skipped).
A *mutation* replaces one substring of one answer cell by a typical student mistake; the
test then records which grade cells raise and compares that set with the expected one:

* every mistake must be caught (the point of this module), and
* it must be caught by the cells of its own part only, so partial credit stays where it
  belongs (the ``forward`` parts of Exercise 1 plug in a known-good ``compute_log_probs``,
  so a log-prob bug costs the log-prob part only).

Correct rewrites written differently (other formulas, loops, other library calls) must
make no cell fail, and importing the reference from ``dpolab`` must score nothing, as must an
answer that patches the comparisons and the guard (``CHEATS``): the grade cells' records are
judged against the solution's outside the cells.

A case the grade cells get wrong is marked ``xfail(strict=True)`` with the reason: fix the
hidden test in ``solutions/`` (then the xfail turns into an error and is removed here).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import io
import json
import os
import textwrap
import warnings
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = ROOT / "solutions" / "lab_3_1_5_dpo"
NB1, NB2, NB3 = "01_dpo_loss", "02_dpo_variants", "03_preference_data"


@pytest.fixture(autouse=True)
def _cpu(monkeypatch):
    monkeypatch.setenv("DPOLAB_DEVICE", "cpu")


@pytest.fixture(autouse=True)
def _one_thread():
    """The grade cells' tensors are tiny: one thread is faster than two that wait for each other
    (several times faster on a busy 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------- running a notebook
@dataclass(frozen=True)
class Cell:
    grade_id: str
    source: str


@dataclass(frozen=True)
class Notebook:
    name: str
    setup: str
    answers: tuple[Cell, ...]  # nbgrader solution cells, in order
    tests: tuple[Cell, ...]  # nbgrader grade cells, in order
    order: tuple[Cell, ...]  # answers and tests interleaved as in the notebook

    def answer(self, grade_id: str) -> Cell:
        (cell,) = (c for c in self.answers if c.grade_id == grade_id)
        return cell

    @property
    def test_ids(self) -> frozenset[str]:
        return frozenset(c.grade_id for c in self.tests)


@functools.cache
def load(name: str) -> Notebook:
    nb = nbformat.read(SOLUTIONS / f"{name}.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    answers, tests, order = [], [], []
    for c in code[1:]:
        meta = c.metadata.get("nbgrader", {})
        if meta.get("solution"):
            cell = Cell(meta["grade_id"], c.source)
            answers.append(cell)
            order.append(cell)
        elif meta.get("grade"):
            cell = Cell(meta["grade_id"], c.source)
            tests.append(cell)
            order.append(cell)
    assert answers and tests, f"{name}: no answer or grade cells found"
    return Notebook(name, code[0].source, tuple(answers), tuple(tests), tuple(order))


# Modules whose functions a cheating answer may patch (see CHEATS): the cells run in this process,
# so what they patched is put back before anything else runs (the grader's kernel is thrown away).
PATCHABLE = ("builtins", "json", "math", "random", "sys", "torch", "torch.testing", "dpolab.grading")


@contextlib.contextmanager
def _undo_patches():

    modules = [importlib.import_module(m) for m in PATCHABLE]
    saved = [(vars(m), dict(vars(m))) for m in modules]
    try:
        yield
    finally:
        for namespace, before in saved:
            for key in [k for k in namespace if k not in before]:
                del namespace[key]
            for key, value in before.items():
                if namespace.get(key) is not value:
                    namespace[key] = value


def run_cells(name: str, replace: dict[str, str] | None = None) -> tuple[dict[str, str], dict[str, list]]:
    """Run notebook ``name`` with some answer cells' sources replaced.

    Returns ``({grade_id: error}, {grade_id: records})``: the cells that raised, and what each
    grade cell's hidden tests recorded (:class:`dpolab.grading.Probe`) for the grader to judge.
    """
    from dpolab.records import ENV, collect_into

    nb = load(name)
    replace = replace or {}
    unknown = set(replace) - {c.grade_id for c in nb.answers}
    assert not unknown, f"{name} has no answer cells {unknown}"
    ns: dict = {"__name__": "__main__"}
    failures: dict[str, str] = {}
    records: dict[str, list] = {}
    sink: list = []
    previous = os.environ.get(ENV)
    os.environ[ENV] = "1"
    collect_into(sink)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings(), _undo_patches():
            warnings.simplefilter("ignore")  # a warning fails no cell at grading either (JudgeRecords)
            exec(compile(nb.setup, f"<{name} setup>", "exec"), ns)
            for cell in nb.order:
                source = replace.get(cell.grade_id, cell.source)
                sink.clear()
                try:
                    exec(compile(source, f"<{name} {cell.grade_id}>", "exec"), ns)
                except Exception as err:  # any error fails the cell, as in nbgrader
                    if cell in nb.answers:  # the notebook does not even define the answer
                        every = {t: f"answer cell {cell.grade_id} raised {err!r}" for t in nb.test_ids}
                        return every, {}
                    failures[cell.grade_id] = f"{type(err).__name__}: {err}"
                if cell in nb.tests and sink:
                    records[cell.grade_id] = [json.loads(json.dumps(r)) for r in sink]
    finally:
        collect_into(None)
        if previous is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = previous
    return failures, records


@functools.cache
def fixtures(name: str) -> dict[str, list]:
    """What the hidden tests record on the solution itself: the grader's expected values."""
    failures, records = run_cells(name)
    assert not failures, f"{name}: the solution fails {failures}"
    return records


def failing_cells(name: str, replace: dict[str, str] | None = None) -> dict[str, str]:
    """``{grade_id: why}`` for the grade cells that would score nothing, as ``dpolab-grade`` judges:
    the cell raised in the kernel, or its records differ from the solution's (judged outside)."""
    from dpolab_grade.judge import judge

    failures, records = run_cells(name, replace)
    for grade_id, want in fixtures(name).items():
        if grade_id not in failures:
            wrong = judge(records.get(grade_id), want)
            if wrong:
                failures[grade_id] = "hidden test failed: " + wrong[0]
    return failures


@dataclass(frozen=True)
class Block:
    """The ``index``-th ``### BEGIN SOLUTION`` block of an answer cell (a whole method body)."""

    index: int

    def replace(self, source: str, new: str) -> str:
        begin, end = "### BEGIN SOLUTION\n", "### END SOLUTION"
        starts = [i for i in range(len(source)) if source.startswith(begin, i)]
        assert self.index < len(starts), f"the cell has {len(starts)} solution blocks, not {self.index + 1}"
        start = starts[self.index] + len(begin)
        stop = source.rindex("\n", 0, source.index(end, start)) + 1
        return source[:start] + new + source[stop:]


def mutate(name: str, answer: str, *edits: tuple[str | Block, str]) -> dict[str, str]:
    """The answer cell ``answer`` with each ``old`` (found exactly once) replaced by its ``new``."""
    source = load(name).answer(answer).source
    for old, new in edits:
        if isinstance(old, Block):
            source = old.replace(source, new)
            continue
        n = source.count(old)
        assert n == 1, (
            f"{name}/{answer}: the text to replace occurs {n} times (the notebook changed?):\n{old}"
        )
        source = source.replace(old, new)
    return {answer: source}


def body(code: str, indent: int = 8) -> str:
    """``code`` dedented then indented by ``indent`` spaces: a method body to splice in."""
    return textwrap.indent(textwrap.dedent(code).strip("\n"), " " * indent) + "\n"


def report(failures: dict[str, str]) -> str:
    return "\n".join(f"  {k}: {v[:300]}" for k, v in sorted(failures.items())) or "  (none)"


# ---------------------------------------------------------------- baseline
@pytest.mark.parametrize("name", [NB1, NB2, NB3])
def test_solutions_pass_every_grade_cell(name):
    failures = failing_cells(name)
    assert not failures, f"{name}: the unmodified solution fails grade cells:\n{report(failures)}"


def test_an_answer_cell_that_does_not_run_fails_its_whole_notebook():
    failures = failing_cells(NB2, {"kto_answer": "class KTOLoss(nn.Module:\n    pass\n"})
    assert set(failures) == load(NB2).test_ids and len(failures) == 5, report(failures)


# ---------------------------------------------------------------- cases
@dataclass(frozen=True)
class Case:
    notebook: str
    name: str
    answer: str  # grade_id of the answer cell that is edited
    old: str | Block
    new: str
    fails: frozenset[str]  # grade cells that must fail (empty for a correct rewrite)
    edits: tuple[tuple[str | Block, str], ...] = ()  # more (old, new) replacements in the same cell

    def run(self) -> dict[str, str]:
        return failing_cells(
            self.notebook, mutate(self.notebook, self.answer, (self.old, self.new), *self.edits)
        )


def case(notebook, name, answer, old, new, fails=(), edits=(), xfail: str | None = None):
    marks = [pytest.mark.xfail(strict=True, reason=xfail)] if xfail else []
    c = Case(notebook, name, answer, old, new, frozenset(fails), tuple(edits))
    return pytest.param(c, id=f"{notebook[:2]}-{name}", marks=marks)


# notebook 01: one exercise (DPOLoss), five graded parts
DPO = "dpo_loss_answer"
LOGP, LOSS, LS, FREE, METRICS = (
    "test_log_probs",
    "test_dpo_loss",
    "test_label_smoothing",
    "test_reference_free",
    "test_metrics",
)
LOSS_CELLS = {LOSS, LS, FREE, METRICS}  # every part that checks a loss value (metrics["loss"] too)
# The forward() parts plug in a known-good compute_log_probs (dpolab.grading.with_correct_log_probs),
# so a log-prob bug costs the log-prob part only.
LOG_PROBS, FORWARD = Block(0), Block(1)

SHIFT = """\
        logits = logits[:, :-1]
        targets = labels[:, 1:]
        mask = loss_mask[:, 1:].bool()
"""
UPCAST = "logits = logits.to(torch.promote_types(logits.dtype, torch.float32))"
SUM = "return torch.where(mask, token_logps, torch.zeros_like(token_logps)).sum(dim=-1)"
REWARDS = """\
        chosen_rewards = self.beta * (policy_chosen_logps - ref_chosen_logps)
        rejected_rewards = self.beta * (policy_rejected_logps - ref_rejected_logps)
"""
SMOOTH = "losses = -(1 - eps) * F.logsigmoid(logits) - eps * F.logsigmoid(-logits)"
METRIC_REWARDS = """\
                "chosen_reward": chosen_rewards.mean(),
                "rejected_reward": rejected_rewards.mean(),
                "reward_margin": (chosen_rewards - rejected_rewards).mean(),
"""
LOGIT_LINE = "logits = chosen_rewards - rejected_rewards  # beta * h"
CHOSEN_LOGP_METRIC = '"chosen_log_prob": policy_chosen_logps.mean(),'

# notebook 02: four exercises, one grade cell each (and one for estimate_kl)
IPO, KL, KTO, ORPO, SIMPO = "ipo_answer", "kl_answer", "kto_answer", "orpo_answer", "simpo_answer"
T_IPO, T_KL, T_KTO, T_ORPO, T_SIMPO = "test_ipo", "test_kl_estimate", "test_kto", "test_orpo", "test_simpo"
KTO_TERMS = """\
        gain = self.desirable_weight * (1 - torch.sigmoid(self.beta * (r - z0)))
        loss = self.undesirable_weight * (1 - torch.sigmoid(self.beta * (z0 - r)))
"""
LOG_ODDS = """\
            x = avg_logps.clamp(max=-torch.finfo(avg_logps.dtype).tiny)  # P < 1: finite odds
            return x - log1mexp(x)
"""
AVERAGES = """\
        chosen_avg = chosen_tok.sum(-1) / chosen_m.sum(-1).clamp(min=1)
        rejected_avg = rejected_tok.sum(-1) / rejected_m.sum(-1).clamp(min=1)
"""
SFT = "sft_loss = -chosen_tok.sum() / chosen_m.sum().clamp(min=1)"
LOG1MEXP_BODY = """\
            near = x > -math.log(2)
            x_near = torch.where(near, x, torch.full_like(x, -1.0))  # each branch sees only safe inputs
            x_far = torch.where(near, torch.full_like(x, -1.0), x)
            return torch.where(near, torch.log(-torch.expm1(x_near)), torch.log1p(-torch.exp(x_far)))
"""
IPO_UPCAST = "margin = margin.to(torch.promote_types(margin.dtype, torch.float32))  # at least float32"
KTO_UPCAST = "r = log_ratios.to(torch.promote_types(log_ratios.dtype, torch.float32))  # at least float32"
SIMPO_LOSS = "-F.logsigmoid(self.beta * margin - self.gamma).mean()"

# notebook 03: PreferencePair (1 cell) and the generator (4 cells)
PAIR, GEN = "pair_answer", "generator_answer"
T_PAIR, T_SCORERS = "test_pair", "test_scorers"
SCORED, SINGLE, VALIDATE = "test_scored_pairs", "test_single_responses", "test_validate_export"
QUALITY, FROM_SCORED, VALIDATE_PAIRS = Block(2), Block(3), Block(5)
KEY_CHECK = """\
            for key in (prompt_key, response_key, score_key):
                if key not in record:
                    raise ValueError(f"record {index} has no {key!r} key")
            by_prompt.setdefault(record[prompt_key], []).append(record)
"""
RNG = "self.rng = random.Random(seed)  # private: the same seed gives the same data set"
UNKNOWN = 'raise ValueError(f"unknown rejection_strategy {rejection_strategy!r}: use one of {STRATEGIES}")'
LENGTHS = "len(p.chosen) >= 10 and len(p.rejected) >= 10"
PERTURB = """\
                    out.append(word)
                    if i % 5 == 0 and self.rng.random() > 0.5:
                        out.append(self.rng.choice(FILLERS))
"""
PERTURB_FALLBACK = """\
                if len(out) == len(words):  # nothing inserted: make sure the text changes
                    out.insert(1, self.rng.choice(FILLERS))
"""
SHUFFLE_FALLBACK = """\
                if shuffled == sentences:  # same order (or one sentence): reverse instead
                    shuffled = sentences[::-1] if len(sentences) > 1 else [" ".join(words[::-1])]
"""
REFUSE = """\
            else:  # refuse
                rejected = REFUSAL
"""

# ---------------------------------------------------------------- mistakes
MISTAKES = [
    # ---- 01 DPOLoss.compute_log_probs
    case(NB1, "no-shift", DPO, SHIFT, "        targets = labels\n        mask = loss_mask.bool()\n", {LOGP}),
    case(NB1, "labels-not-shifted", DPO, "targets = labels[:, 1:]", "targets = labels[:, :-1]", {LOGP}),
    case(NB1, "mask-shifted-wrong-way", DPO, "mask = loss_mask[:, 1:].bool()", "mask = loss_mask[:, :-1].bool()", {LOGP}),
    case(NB1, "mask-ignored", DPO, SUM, "return token_logps.sum(dim=-1)", {LOGP}),
    case(NB1, "mean-over-tokens", DPO, SUM, SUM + " / mask.sum(dim=-1).clamp(min=1)", {LOGP}),
    case(NB1, "log-of-softmax", DPO, "F.log_softmax(logits, dim=-1)", "torch.log(torch.softmax(logits, dim=-1))", {LOGP}),
    case(NB1, "no-upcast", DPO, UPCAST, "logits = logits.to(logits.dtype)", {LOGP}),
    case(NB1, "half-precision-math-cast-at-the-end", DPO, UPCAST, "pass", {LOGP}, edits=[(SUM, SUM + ".float()")]),
    # ---- 01 DPOLoss.forward
    case(NB1, "margin-sign-flipped", DPO, "logits = chosen_rewards - rejected_rewards", "logits = rejected_rewards - chosen_rewards", LOSS_CELLS),
    case(NB1, "beta-missing", DPO, REWARDS, REWARDS.replace("self.beta * ", ""), LOSS_CELLS),
    case(NB1, "beta-missing-in-loss-only", DPO, SMOOTH, SMOOTH.replace("logits)", "logits / self.beta)"), LOSS_CELLS),
    case(NB1, "smoothing-weights-swapped", DPO, SMOOTH, "losses = -eps * F.logsigmoid(logits) - (1 - eps) * F.logsigmoid(-logits)", LOSS_CELLS),
    case(NB1, "smoothing-ignored", DPO, "eps = self.label_smoothing", "eps = 0.0", {LS}),
    case(NB1, "reference-free-ignored", DPO, "if self.reference_free or reference_chosen_logits is None:", "if reference_chosen_logits is None:", {FREE}),
    case(NB1, "gradient-reaches-reference", DPO, "with torch.no_grad():  # the reference model is frozen", "if True:", {LOSS}),
    case(NB1, "batch-sum", DPO, "loss = losses.mean()", "loss = losses.sum()", LOSS_CELLS),
    case(NB1, "accuracy-counts-ties", DPO, "(chosen_rewards > rejected_rewards)", "(chosen_rewards >= rejected_rewards)", {METRICS}),
    case(NB1, "metrics-not-detached", DPO, "        with torch.no_grad():\n            metrics = {", "        if True:\n            metrics = {", {METRICS}),
    case(NB1, "metric-rewards-without-beta", DPO, METRIC_REWARDS, METRIC_REWARDS.replace(".mean()", ".mean() / self.beta"), {METRICS}),
    # ---- 02 IPO
    case(NB2, "ipo-target-1-over-beta", IPO, "1 / (2 * self.beta)", "1 / self.beta", {T_IPO}),
    case(NB2, "ipo-margin-sign", IPO, "margin = chosen_log_ratio - rejected_log_ratio", "margin = rejected_log_ratio - chosen_log_ratio", {T_IPO}),
    case(NB2, "ipo-batch-sum", IPO, "** 2).mean()", "** 2).sum()", {T_IPO}),
    # ---- 02 estimate_kl
    case(NB2, "kl-not-clamped", KL, ".mean().clamp(min=0).detach()", ".mean().detach()", {T_KL}),
    case(NB2, "kl-not-detached", KL, ".mean().clamp(min=0).detach()", ".mean().clamp(min=0)", {T_KL}),
    # ---- 02 KTO
    case(NB2, "kto-logsigmoid-z0-outside-beta", KTO, KTO_TERMS, body("""
        gain = self.desirable_weight * -F.logsigmoid(self.beta * r - z0)
        loss = self.undesirable_weight * -F.logsigmoid(z0 - self.beta * r)
    """), {T_KTO}),
    case(NB2, "kto-z0-not-clamped", KTO, ".detach().clamp(min=0)", ".detach()", {T_KTO}),
    case(NB2, "kto-z0-not-detached", KTO, ".detach().clamp(min=0)", ".clamp(min=0)", {T_KTO}),
    case(NB2, "kto-mean-per-group", KTO, "return torch.where(desirable, gain, loss).mean()", "return (gain[desirable].mean() + loss[~desirable].mean()) / 2", {T_KTO}),
    case(NB2, "kto-weights-swapped", KTO, KTO_TERMS, body("""
        gain = self.undesirable_weight * (1 - torch.sigmoid(self.beta * (r - z0)))
        loss = self.desirable_weight * (1 - torch.sigmoid(self.beta * (z0 - r)))
    """), {T_KTO}),
    case(NB2, "kto-labels-not-made-bool", KTO, "device=r.device).bool()", "device=r.device)", {T_KTO}),
    # ---- 02 ORPO
    case(NB2, "orpo-summed-logps", ORPO, AVERAGES, "        chosen_avg = chosen_tok.sum(-1)\n        rejected_avg = rejected_tok.sum(-1)\n", {T_ORPO}),
    case(NB2, "orpo-naive-odds-clamp-1e-6", ORPO, LOG_ODDS, body("""
        x = avg_logps.clamp(max=-1e-6)
        return x - torch.log1p(-torch.exp(x))
    """, 12), {T_ORPO}),
    case(NB2, "orpo-naive-odds-no-clamp", ORPO, LOG_ODDS, body("return avg_logps - torch.log1p(-torch.exp(avg_logps))", 12), {T_ORPO}),
    case(NB2, "orpo-sft-mean-of-sequence-means", ORPO, SFT, "sft_loss = -chosen_avg.mean()", {T_ORPO}),
    case(NB2, "orpo-no-upcast", ORPO, "logits[:, :-1].to(torch.promote_types(logits.dtype, torch.float32))", "logits[:, :-1]", {T_ORPO}),
    case(NB2, "orpo-metrics-not-detached", ORPO, '"sft_loss": sft_loss.detach(),', '"sft_loss": sft_loss,', {T_ORPO}),
    case(NB2, "orpo-accuracy-counts-ties", ORPO, "(log_odds_ratio > 0)", "(log_odds_ratio >= 0)", {T_ORPO}),
    # ---- 02 SimPO
    case(NB2, "simpo-gamma-inside-beta", SIMPO, "self.beta * margin - self.gamma", "self.beta * (margin - self.gamma)", {T_SIMPO}),
    case(NB2, "simpo-gamma-sign", SIMPO, "self.beta * margin - self.gamma", "self.beta * margin + self.gamma", {T_SIMPO}),
    case(NB2, "simpo-log-of-sigmoid", SIMPO, "-F.logsigmoid(self.beta * margin - self.gamma)", "-torch.log(torch.sigmoid(self.beta * margin - self.gamma))", {T_SIMPO}),
    # ---- 03 PreferencePair, PreferenceDatasetGenerator
    case(NB3, "to-dict-metadata-none", PAIR, '"metadata": self.metadata or {},', '"metadata": self.metadata,', {T_PAIR}),
    case(NB3, "quality-score-sum", GEN, ") / len(self.quality_scorers)", ")", {T_SCORERS}),
    case(NB3, "pairs-adjacent", GEN, "best, worst = ranked[i], ranked[-(i + 1)]", "best, worst = ranked[i], ranked[i + 1]", {SCORED}),
    case(NB3, "pairs-best-with-worst-only", GEN, "for i in range(len(ranked) // 2):", "for i in range(min(1, len(ranked) // 2)):", {SCORED}),
    case(NB3, "threshold-strict", GEN, ">= self.min_score_diff", "> self.min_score_diff", {SCORED}),
    case(NB3, "missing-score-is-0", GEN, KEY_CHECK, body("""
            for key in (prompt_key, response_key):
                if key not in record:
                    raise ValueError(f"record {index} has no {key!r} key")
            record = {**record, score_key: record.get(score_key, 0)}
            by_prompt.setdefault(record[prompt_key], []).append(record)
    """, 12), {SCORED}),
    case(NB3, "global-random-unseeded", GEN, RNG, "self.rng = random", {SINGLE}),
    case(NB3, "global-random-seeded-in-init", GEN, RNG, "random.seed(seed)\n        self.rng = random", {SINGLE}),
    case(NB3, "truncate-half", GEN, "len(words) // 3", "len(words) // 2", {SINGLE}),
    case(NB3, "unknown-strategy-refuses", GEN, UNKNOWN, 'rejection_strategy = "refuse"', {SINGLE}),
    case(NB3, "validate-strict-length", GEN, LENGTHS, LENGTHS.replace(">=", ">"), {VALIDATE}),
    case(NB3, "validate-no-strip", GEN, "p.chosen.strip() != p.rejected.strip()", "p.chosen != p.rejected", {VALIDATE}),
    case(NB3, "validate-chosen-length-only", GEN, LENGTHS, "len(p.chosen) >= 10", {VALIDATE}),
    # ---------------- round 2: every promise of the specs (tests/promises/*.md)
    # ---- 01 compute_log_probs
    case(NB1, "logps-keepdim", DPO, SUM, SUM.replace("sum(dim=-1)", "sum(dim=-1, keepdim=True)"), {LOGP}),
    case(NB1, "logps-empty-row-nan", DPO, SUM, "n = mask.sum(dim=-1)\n        return (token_logps * mask).sum(dim=-1) / n * n", {LOGP}),
    case(NB1, "logps-detached", DPO, SUM, SUM + ".detach()", {LOGP}),
    # ---- 01 forward
    case(NB1, "forward-returns-metrics-first", DPO, "        return loss, metrics\n", "        return metrics, loss\n", LOSS_CELLS),
    case(NB1, "loss-log-of-sigmoid", DPO, SMOOTH, "losses = -(1 - eps) * torch.log(torch.sigmoid(logits)) - eps * torch.log(torch.sigmoid(-logits))", {LOSS, LS}),
    case(NB1, "loss-logits-clamped", DPO, LOGIT_LINE, "logits = (chosen_rewards - rejected_rewards).clamp(-50, 50)", {LOSS, LS}),
    case(NB1, "smoothing-term-log-of-sigmoid", DPO, SMOOTH, body("""
        losses = -(1 - eps) * F.logsigmoid(logits)
        if eps > 0:
            losses = losses - eps * torch.log(torch.sigmoid(-logits))
    """).strip(), {LS}),
    case(NB1, "smoothing-term-detached", DPO, SMOOTH, "losses = -(1 - eps) * F.logsigmoid(logits) - eps * F.logsigmoid(-logits).detach()", {LS}),
    case(NB1, "no-reference-logits-crash", DPO, "if self.reference_free or reference_chosen_logits is None:", "if self.reference_free:", {FREE}),
    case(NB1, "metric-keys-renamed", DPO, CHOSEN_LOGP_METRIC, '"chosen_logp": policy_chosen_logps.mean(),', {METRICS}),
    case(NB1, "metric-log-prob-is-log-ratio", DPO, CHOSEN_LOGP_METRIC, '"chosen_log_prob": (policy_chosen_logps - ref_chosen_logps).mean(),', {METRICS}),
    case(NB1, "metric-loss-ignores-smoothing", DPO, '"loss": loss.detach(),', '"loss": -F.logsigmoid(logits).mean(),', {METRICS}),
    case(NB1, "metric-margin-absolute", DPO, '"reward_margin": (chosen_rewards - rejected_rewards).mean(),',
         '"reward_margin": (chosen_rewards - rejected_rewards).abs().mean(),', {METRICS}),
    case(NB1, "loss-not-reduced", DPO, "loss = losses.mean()", "loss = losses", LOSS_CELLS),
    case(NB1, "metric-accuracy-from-loss", DPO, "(chosen_rewards > rejected_rewards).float().mean()", "(losses < math.log(2)).float().mean()", {METRICS}),
    # ---- 02 IPO
    case(NB2, "ipo-rejected-detached", IPO, "margin = chosen_log_ratio - rejected_log_ratio", "margin = chosen_log_ratio - rejected_log_ratio.detach()", {T_IPO}),
    case(NB2, "ipo-margin-clipped", IPO, "torch.float32))  # at least float32", "torch.float32)).clamp(-100, 100)", {T_IPO}),
    case(NB2, "ipo-no-upcast", IPO, IPO_UPCAST, "pass", {T_IPO}),
    # ---- 02 estimate_kl
    case(NB2, "kl-clamped-per-example", KL, "(policy_kl_logps - ref_kl_logps).mean().clamp(min=0)", "(policy_kl_logps - ref_kl_logps).clamp(min=0).mean()", {T_KL}),
    case(NB2, "kl-sum", KL, ".mean().clamp(min=0).detach()", ".sum().clamp(min=0).detach()", {T_KL}),
    case(NB2, "kl-returns-python-float", KL, ".mean().clamp(min=0).detach()", ".mean().clamp(min=0).item()", {T_KL}),
    # ---- 02 KTO
    case(NB2, "kto-naive-sigmoid", KTO, KTO_TERMS, body("""
        def sigmoid(x):
            return torch.exp(x) / (1 + torch.exp(x))

        gain = self.desirable_weight * (1 - sigmoid(self.beta * (r - z0)))
        loss = self.undesirable_weight * (1 - sigmoid(self.beta * (z0 - r)))
    """), {T_KTO}),
    case(NB2, "kto-no-upcast", KTO, KTO_UPCAST, "r = log_ratios", {T_KTO}),
    case(NB2, "kto-kl-estimate-assumed-tensor", KTO, "z0 = torch.as_tensor(kl_estimate, dtype=r.dtype, device=r.device).detach().clamp(min=0)",
         "z0 = kl_estimate.detach().clamp(min=0)", {T_KTO}),
    # ---- 02 ORPO
    case(NB2, "orpo-average-no-guard", ORPO, AVERAGES, AVERAGES.replace(".clamp(min=1)", ""), {T_ORPO}),
    case(NB2, "orpo-log-of-sigmoid", ORPO, "orpo_loss = -F.logsigmoid(log_odds_ratio).mean()", "orpo_loss = -torch.log(torch.sigmoid(log_odds_ratio)).mean()", {T_ORPO}),
    case(NB2, "orpo-log-odds-via-expm1-of-minus-x", ORPO, LOG_ODDS, body("""
        x = avg_logps.clamp(max=-torch.finfo(avg_logps.dtype).tiny)
        return -torch.log(torch.expm1(-x))
    """, 12), {T_ORPO}),
    case(NB2, "orpo-clamp-at-zero", ORPO, "avg_logps.clamp(max=-torch.finfo(avg_logps.dtype).tiny)", "avg_logps.clamp(max=0.0)", {T_ORPO}),
    case(NB2, "orpo-log1mexp-branches-swapped", ORPO,
         "return torch.where(near, torch.log(-torch.expm1(x_near)), torch.log1p(-torch.exp(x_far)))",
         "return torch.where(near, torch.log1p(-torch.exp(x_near)), torch.log(-torch.expm1(x_far)))", {T_ORPO}),
    case(NB2, "orpo-log1mexp-unsafe-where", ORPO, LOG1MEXP_BODY,
         "            return torch.where(x > -math.log(2), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))\n", {T_ORPO}),
    case(NB2, "orpo-rejected-detached", ORPO, "rejected_avg = rejected_tok.sum(-1) / rejected_m.sum(-1).clamp(min=1)",
         "rejected_avg = (rejected_tok.sum(-1) / rejected_m.sum(-1).clamp(min=1)).detach()", {T_ORPO}),
    case(NB2, "orpo-lambda-ignored", ORPO, "total_loss = sft_loss + self.lambda_orpo * orpo_loss", "total_loss = sft_loss + orpo_loss", {T_ORPO}),
    case(NB2, "orpo-metric-log-odds-ratio-sum", ORPO, '"log_odds_ratio": log_odds_ratio.mean().detach(),', '"log_odds_ratio": log_odds_ratio.sum().detach(),', {T_ORPO}),
    case(NB2, "orpo-returns-metrics-first", ORPO, "        return total_loss, metrics\n", "        return metrics, total_loss\n", {T_ORPO}),
    case(NB2, "orpo-metric-total-without-lambda", ORPO, '"total_loss": total_loss.detach(),', '"total_loss": (sft_loss + orpo_loss).detach(),', {T_ORPO}),
    # ---- 02 SimPO
    case(NB2, "simpo-rejected-detached", SIMPO, "margin = chosen_avg_log_probs - rejected_avg_log_probs", "margin = chosen_avg_log_probs - rejected_avg_log_probs.detach()", {T_SIMPO}),
    case(NB2, "simpo-logits-clamped", SIMPO, SIMPO_LOSS, "-F.logsigmoid((self.beta * margin - self.gamma).clamp(-50, 50)).mean()", {T_SIMPO}),
    case(NB2, "simpo-no-upcast", SIMPO, "margin = margin.to(torch.promote_types(margin.dtype, torch.float32))  # at least float32", "pass", {T_SIMPO}),
    case(NB2, "simpo-batch-sum", SIMPO, SIMPO_LOSS, SIMPO_LOSS.replace(".mean()", ".sum()"), {T_SIMPO}),
    # ---- 03 PreferencePair, PreferenceDatasetGenerator
    case(NB3, "to-dict-missing-scores", PAIR, '"chosen_score": self.chosen_score,', "", {T_PAIR}),
    case(NB3, "add-scorer-replaces", GEN, "self.quality_scorers.append(scorer)", "self.quality_scorers = [scorer]", {T_SCORERS}),
    case(NB3, "scorer-arguments-swapped", GEN, "scorer(prompt, response) for scorer", "scorer(response, prompt) for scorer", {T_SCORERS}),
    case(NB3, "quality-score-no-guard", GEN, "        if not self.quality_scorers:\n            return 0.0\n", "", {T_SCORERS}),
    case(NB3, "threshold-not-kept", GEN, "self.min_score_diff = min_score_diff", "self.min_score_diff = 0.5", {SCORED}),
    case(NB3, "pairs-prompts-sorted", GEN, "for prompt, records in by_prompt.items():", "for prompt, records in sorted(by_prompt.items()):", {SCORED}),
    case(NB3, "pairs-closest-first", GEN, "for i in range(len(ranked) // 2):", "for i in reversed(range(len(ranked) // 2)):", {SCORED}),
    case(NB3, "pairs-scores-swapped", GEN, "chosen_score=best[score_key],", "chosen_score=worst[score_key],", {SCORED},
         edits=[("rejected_score=worst[score_key],", "rejected_score=best[score_key],")]),
    case(NB3, "rng-restarted-every-call", GEN, RNG, "self.seed = seed\n        self.rng = random.Random(seed)", {SINGLE},
         edits=[("        if rejection_strategy not in STRATEGIES:\n",
                 "        self.rng = random.Random(self.seed)\n        if rejection_strategy not in STRATEGIES:\n")]),
    case(NB3, "seed-ignored", GEN, RNG, "self.rng = random.Random()", {SINGLE}),
    case(NB3, "shuffle-global-random", GEN, "self.rng.shuffle(shuffled)", "random.shuffle(shuffled)", {SINGLE}),
    case(NB3, "perturb-filler-before-word", GEN, PERTURB, body("""
        if i % 5 == 0 and self.rng.random() > 0.5:
            out.append(self.rng.choice(FILLERS))
        out.append(word)
    """, 20), {SINGLE}),
    case(NB3, "perturb-after-any-word", GEN, "if i % 5 == 0 and self.rng.random() > 0.5:", "if self.rng.random() > 0.5:", {SINGLE}),
    case(NB3, "perturb-without-coin-flip", GEN, "if i % 5 == 0 and self.rng.random() > 0.5:", "if i % 5 == 0:", {SINGLE}),
    case(NB3, "truncate-rounds-up", GEN, "words[: max(1, len(words) // 3)]", "words[: max(1, -(-len(words) // 3))]", {SINGLE}),
    case(NB3, "unknown-strategy-checked-per-record", GEN, UNKNOWN, "pass", {SINGLE}, edits=[(REFUSE, body("""
        elif rejection_strategy == "refuse":
            rejected = REFUSAL
        else:
            raise ValueError(f"unknown rejection_strategy {rejection_strategy!r}")
    """, 12))]),
    case(NB3, "single-prompt-key-unchecked", GEN, "for key in (prompt_key, response_key):", "for key in (response_key,):", {SINGLE}),
    case(NB3, "single-response-key-ignored", GEN, "chosen = record[response_key]", 'chosen = record["response"]', {SINGLE}),
    case(NB3, "single-records-reversed", GEN, "        for index, record in enumerate(data):\n            for key in (prompt_key, response_key):",
         "        for index, record in reversed(list(enumerate(data))):\n            for key in (prompt_key, response_key):", {SINGLE}),
    case(NB3, "shuffle-may-keep-order", GEN, SHUFFLE_FALLBACK, "", {SINGLE}),
    case(NB3, "shuffle-splits-words", GEN, 'sentences = chosen.split(". ")', "sentences = chosen.split()", {SINGLE}),
    case(NB3, "single-metadata-missing", GEN, 'metadata={"strategy": rejection_strategy},', "metadata=None,", {SINGLE}),
    case(NB3, "refuse-empty", GEN, REFUSE, body("""
        else:  # refuse
            rejected = ""
    """, 12), {SINGLE}),
    case(NB3, "export-every-field", GEN, '[{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected} for p in pairs]',
         "[p.to_dict() for p in pairs]", {VALIDATE}),
    # ---- 03: the rules the 3b text spells out (odd n, word 0, FILLERS, the fallbacks)
    case(NB3, "pairs-odd-middle-with-itself", GEN, "for i in range(len(ranked) // 2):", "for i in range((len(ranked) + 1) // 2):", {SCORED}),
    case(NB3, "perturb-counts-from-1", GEN, "if i % 5 == 0 and self.rng.random() > 0.5:", "if (i + 1) % 5 == 0 and self.rng.random() > 0.5:", {SINGLE}),
    case(NB3, "perturb-own-filler", GEN, "out.append(self.rng.choice(FILLERS))", 'out.append("uh")', {SINGLE}),
    case(NB3, "perturb-no-fallback", GEN, PERTURB_FALLBACK, "", {SINGLE}),
    case(NB3, "perturb-fallback-at-end", GEN, "out.insert(1, self.rng.choice(FILLERS))", "out.append(self.rng.choice(FILLERS))", {SINGLE}),
    case(NB3, "shuffle-one-sentence-unchanged", GEN, 'shuffled = sentences[::-1] if len(sentences) > 1 else [" ".join(words[::-1])]',
         "shuffled = sentences[::-1]", {SINGLE}),
]  # fmt: skip


@pytest.mark.parametrize("mistake", MISTAKES)
def test_mistake_is_caught_by_its_own_cells(mistake: Case):
    failures = mistake.run()
    assert set(failures) == mistake.fails, (
        f"{mistake.notebook}, {mistake.name}: expected exactly {sorted(mistake.fails)} to fail, got:\n"
        f"{report(failures)}"
    )


# ---------------------------------------------------------------- correct alternatives
ALTERNATIVES = [
    # ---- 01 compute_log_probs, whole body rewritten
    case(NB1, "logps-cross-entropy", DPO, LOG_PROBS, body("""
        shifted = logits[:, :-1]
        if shifted.dtype in (torch.float16, torch.bfloat16):
            shifted = shifted.float()
        token_logps = -F.cross_entropy(shifted.transpose(1, 2), labels[:, 1:], reduction="none")
        return (token_logps * loss_mask[:, 1:]).sum(-1)
    """)),
    case(NB1, "logps-logsumexp", DPO, LOG_PROBS, body("""
        x = logits[:, :-1]
        x = x.to(torch.promote_types(x.dtype, torch.float32))
        picked = x.gather(-1, labels[:, 1:].unsqueeze(-1)).squeeze(-1)
        token_logps = picked - torch.logsumexp(x, dim=-1)
        return (token_logps * loss_mask[:, 1:].to(token_logps.dtype)).sum(dim=-1)
    """)),
    case(NB1, "logps-torch-log-softmax-masked-fill", DPO, LOG_PROBS, body("""
        logps = torch.log_softmax(logits.float() if logits.element_size() < 4 else logits, dim=-1)
        logps = logps[:, :-1].gather(2, labels[:, 1:, None])[..., 0]
        return logps.masked_fill(loss_mask[:, 1:] == 0, 0.0).sum(1)
    """)),
    case(NB1, "logps-python-loop", DPO, LOG_PROBS, body("""
        dtype = torch.promote_types(logits.dtype, torch.float32)
        out = []
        for b in range(logits.shape[0]):
            total = torch.zeros((), dtype=dtype, device=logits.device)
            for t in range(1, logits.shape[1]):
                if loss_mask[b, t]:
                    total = total + torch.log_softmax(logits[b, t - 1].to(dtype), dim=-1)[labels[b, t]]
            out.append(total)
        return torch.stack(out)
    """)),
    # ---- 01 forward
    case(NB1, "loss-softplus", DPO, SMOOTH, "losses = (1 - eps) * F.softplus(-logits) + eps * F.softplus(logits)"),
    case(NB1, "loss-bce-soft-targets", DPO, SMOOTH,
         "losses = F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, 1 - eps), reduction='none')"),
    case(NB1, "smoothing-torch-where", DPO, SMOOTH, body("""
        losses = torch.where(
            torch.full_like(logits, eps) > 0,
            -(1 - eps) * F.logsigmoid(logits) - eps * F.logsigmoid(-logits),
            -F.logsigmoid(logits),
        )
    """).strip()),
    case(NB1, "forward-trl-style-detach", DPO, FORWARD, body("""
        policy_chosen = self.compute_log_probs(policy_chosen_logits, chosen_labels, chosen_mask)
        policy_rejected = self.compute_log_probs(policy_rejected_logits, rejected_labels, rejected_mask)
        if self.reference_free or reference_chosen_logits is None:
            ref_chosen = ref_rejected = 0.0
        else:  # detach() instead of torch.no_grad(): the reference is a constant either way
            ref_chosen = self.compute_log_probs(reference_chosen_logits, chosen_labels, chosen_mask).detach()
            ref_rejected = self.compute_log_probs(reference_rejected_logits, rejected_labels, rejected_mask).detach()
        pi_logratios = policy_chosen - policy_rejected
        ref_logratios = ref_chosen - ref_rejected
        logits = self.beta * (pi_logratios - ref_logratios)
        eps = self.label_smoothing
        loss = (-(1 - eps) * F.logsigmoid(logits) - eps * F.logsigmoid(-logits)).mean()
        chosen_rewards = self.beta * (policy_chosen - ref_chosen)
        rejected_rewards = self.beta * (policy_rejected - ref_rejected)
        metrics = {
            "loss": loss,
            "accuracy": (logits > 0).float().mean(),
            "chosen_reward": chosen_rewards.mean(),
            "rejected_reward": rejected_rewards.mean(),
            "reward_margin": (chosen_rewards - rejected_rewards).mean(),
            "chosen_log_prob": policy_chosen.mean(),
            "rejected_log_prob": policy_rejected.mean(),
        }
        return loss, {name: value.detach() for name, value in metrics.items()}
    """)),
    # ---- 02
    case(NB2, "ipo-mse-loss", IPO, Block(0), body("""
        margin = chosen_log_ratio - rejected_log_ratio
        if margin.dtype in (torch.float16, torch.bfloat16):
            margin = margin.float()
        return F.mse_loss(margin, torch.full_like(margin, 1 / (2 * self.beta)))
    """)),
    case(NB2, "kl-no-grad-relu", KL, Block(0), body("""
        with torch.no_grad():
            return torch.relu(policy_kl_logps.mean() - ref_kl_logps.mean())
    """, 4)),
    case(NB2, "kto-python-loop", KTO, Block(0), body("""
        z0 = max(float(kl_estimate), 0.0)  # float(): detached; max: clamped
        terms = []
        for r_i, d_i in zip(log_ratios, is_desirable):
            r_i = r_i.to(torch.promote_types(r_i.dtype, torch.float32))
            if bool(d_i):
                terms.append(self.desirable_weight * (1 - torch.sigmoid(self.beta * (r_i - z0))))
            else:
                terms.append(self.undesirable_weight * (1 - torch.sigmoid(self.beta * (z0 - r_i))))
        return torch.stack(terms).mean()
    """)),
    case(NB2, "kto-arithmetic-mask", KTO, Block(0), body("""
        r = log_ratios.to(torch.promote_types(log_ratios.dtype, torch.float32))
        d = torch.as_tensor(is_desirable, device=r.device).to(r.dtype)
        z0 = torch.clamp(torch.as_tensor(kl_estimate, device=r.device).detach().to(r.dtype), min=0.0)
        v_desirable = self.desirable_weight * torch.sigmoid(self.beta * (r - z0))
        v_undesirable = self.undesirable_weight * torch.sigmoid(self.beta * (z0 - r))
        weight = d * self.desirable_weight + (1 - d) * self.undesirable_weight
        return (weight - d * v_desirable - (1 - d) * v_undesirable).mean()
    """)),
    case(NB2, "orpo-log-odds-expm1-only", ORPO, LOG_ODDS, body("""
        x = avg_logps.clamp(max=-torch.finfo(avg_logps.dtype).tiny)
        return x - torch.log(-torch.expm1(x))
    """, 12)),
    case(NB2, "orpo-sft-cross-entropy-ignore-index", ORPO, SFT, body("""
        sft_targets = chosen_labels[:, 1:].masked_fill(~chosen_m, -100)
        sft_logits = chosen_logits[:, :-1].to(torch.promote_types(chosen_logits.dtype, torch.float32))
        sft_loss = F.cross_entropy(sft_logits.transpose(1, 2), sft_targets, ignore_index=-100)
    """).strip(), edits=[("orpo_loss = -F.logsigmoid(log_odds_ratio).mean()", "orpo_loss = F.softplus(-log_odds_ratio).mean()")]),
    case(NB2, "simpo-inline", SIMPO, Block(0), body("""
        c, r = (x.float() if x.dtype in (torch.float16, torch.bfloat16) else x for x in (chosen_avg_log_probs, rejected_avg_log_probs))
        return -F.logsigmoid(self.beta * (c - r) - self.gamma).mean()
    """)),
    case(NB2, "simpo-softplus", SIMPO, Block(0), body("""
        margin = (chosen_avg_log_probs - rejected_avg_log_probs).to(torch.promote_types(chosen_avg_log_probs.dtype, torch.float32))
        return F.softplus(self.gamma - self.beta * margin).mean()
    """)),
    # ---- 03
    case(NB3, "to-dict-asdict", PAIR, Block(0), body("""
        from dataclasses import asdict

        d = asdict(self)
        d["metadata"] = {} if d["metadata"] is None else d["metadata"]
        return d
    """)),
    case(NB3, "quality-score-fmean", GEN, QUALITY, body("""
        import statistics

        return statistics.fmean(s(prompt, response) for s in self.quality_scorers) if self.quality_scorers else 0.0
    """)),
    case(NB3, "scored-pairs-itertools-groupby", GEN, FROM_SCORED, body("""
        import itertools

        for index, record in enumerate(data):
            for key in (prompt_key, response_key, score_key):
                if key not in record:
                    raise ValueError(f"record {index} has no {key!r} key")
        first_seen = {}
        for index, record in enumerate(data):
            first_seen.setdefault(record[prompt_key], index)
        ordered = sorted(data, key=lambda rec: (first_seen[rec[prompt_key]], -rec[score_key]))
        pairs = []
        for prompt, group in itertools.groupby(ordered, key=lambda rec: rec[prompt_key]):
            ranked = list(group)
            half = len(ranked) // 2
            for best, worst in zip(ranked[:half], ranked[::-1][:half]):
                if best[score_key] - worst[score_key] >= self.min_score_diff:
                    pairs.append(
                        PreferencePair(
                            prompt, best[response_key], worst[response_key], best[score_key], worst[score_key]
                        )
                    )
        return pairs
    """)),
    case(NB3, "scored-pairs-two-pointers", GEN, FROM_SCORED, body("""
        from collections import defaultdict

        groups = defaultdict(list)
        for index, record in enumerate(data):
            missing = [k for k in (prompt_key, response_key, score_key) if k not in record]
            if missing:
                raise ValueError(f"record {index}: missing key {missing[0]!r}")
            groups[record[prompt_key]].append((record[score_key], record[response_key]))
        pairs = []
        for prompt, items in groups.items():
            items.sort(key=lambda item: item[0], reverse=True)
            lo, hi = 0, len(items) - 1
            while lo < hi:
                (s_best, best), (s_worst, worst) = items[lo], items[hi]
                if s_best - s_worst >= self.min_score_diff:
                    pairs.append(PreferencePair(prompt, best, worst, chosen_score=s_best, rejected_score=s_worst))
                lo, hi = lo + 1, hi - 1
        return pairs
    """)),
    case(NB3, "truncate-or-first-word", GEN, "words[: max(1, len(words) // 3)]", "(words[: len(words) // 3] or words[:1])"),
    case(NB3, "validate-loop", GEN, VALIDATE_PAIRS, body("""
        kept = []
        for pair in pairs:
            if min(len(pair.chosen), len(pair.rejected)) < 10:
                continue
            if pair.chosen.strip() == pair.rejected.strip():
                continue
            kept.append(pair)
        return kept
    """)),
    # ---------------- round 2
    # ---- 01
    case(NB1, "logps-always-float32", DPO, UPCAST, "logits = logits.float()  # at least float32: float32 is enough"),
    case(NB1, "loss-cdpo-linear-form", DPO, SMOOTH, "losses = -F.logsigmoid(logits) + eps * logits  # the same function, rearranged"),
    case(NB1, "loss-logaddexp", DPO, SMOOTH, body("""
        zero = torch.zeros_like(logits)
        losses = (1 - eps) * torch.logaddexp(zero, -logits) + eps * torch.logaddexp(zero, logits)
    """).strip()),
    case(NB1, "smoothing-if-branch", DPO, SMOOTH, body("""
        if eps == 0:
            losses = -F.logsigmoid(logits)
        else:
            losses = -(1 - eps) * F.logsigmoid(logits) - eps * F.logsigmoid(-logits)
    """).strip()),
    case(NB1, "forward-float64-throughout", DPO, FORWARD, body("""
        pc = self.compute_log_probs(policy_chosen_logits, chosen_labels, chosen_mask).double()
        pr = self.compute_log_probs(policy_rejected_logits, rejected_labels, rejected_mask).double()
        rc = torch.zeros_like(pc)
        rr = torch.zeros_like(pr)
        if not self.reference_free and reference_chosen_logits is not None:
            with torch.no_grad():
                rc = self.compute_log_probs(reference_chosen_logits, chosen_labels, chosen_mask).double()
                rr = self.compute_log_probs(reference_rejected_logits, rejected_labels, rejected_mask).double()
        chosen_rewards, rejected_rewards = self.beta * (pc - rc), self.beta * (pr - rr)
        z = chosen_rewards - rejected_rewards
        eps = self.label_smoothing
        loss = (F.softplus(-z) * (1 - eps) + F.softplus(z) * eps).mean()
        metrics = {
            "loss": loss,
            "accuracy": (z > 0).double().mean(),
            "chosen_reward": chosen_rewards.mean(),
            "rejected_reward": rejected_rewards.mean(),
            "reward_margin": z.mean(),
            "chosen_log_prob": pc.mean(),
            "rejected_log_prob": pr.mean(),
        }
        return loss, {k: v.detach() for k, v in metrics.items()}
    """)),
    case(NB1, "metrics-python-floats", DPO, "        return loss, metrics\n",
         "        return loss, {name: value.item() for name, value in metrics.items()}\n"),
    # ---------------- round 3: from the student text alone (Exercise 1's spec and hints)
    # F.cross_entropy with ignore_index: the masked positions are ignored, an empty row sums to 0
    case(NB1, "logps-cross-entropy-ignore-index", DPO, LOG_PROBS, body("""
        x = logits[:, :-1]
        if x.dtype in (torch.float16, torch.bfloat16):  # at least float32
            x = x.float()
        targets = labels[:, 1:].masked_fill(loss_mask[:, 1:] == 0, -100)
        nll = F.cross_entropy(x.reshape(-1, x.shape[-1]), targets.reshape(-1), ignore_index=-100, reduction="none")
        return -nll.view(targets.shape).sum(dim=-1)
    """)),
    # one pair at a time, metrics as Python floats, one reference logit alone refused (the text allows it)
    case(NB1, "forward-loop-over-pairs-float-metrics", DPO, FORWARD, body("""
        if (reference_chosen_logits is None) != (reference_rejected_logits is None):
            raise ValueError("pass both reference logits or neither")
        use_ref = not self.reference_free and reference_chosen_logits is not None
        pc = self.compute_log_probs(policy_chosen_logits, chosen_labels, chosen_mask)
        pr = self.compute_log_probs(policy_rejected_logits, rejected_labels, rejected_mask)
        if use_ref:
            with torch.no_grad():
                rc = self.compute_log_probs(reference_chosen_logits, chosen_labels, chosen_mask)
                rr = self.compute_log_probs(reference_rejected_logits, rejected_labels, rejected_mask)
        eps, n = self.label_smoothing, pc.shape[0]
        losses, chosen, rejected, wins = [], [], [], 0
        for i in range(n):
            c = self.beta * (pc[i] - rc[i]) if use_ref else self.beta * pc[i]
            r = self.beta * (pr[i] - rr[i]) if use_ref else self.beta * pr[i]
            losses.append(-(1 - eps) * F.logsigmoid(c - r) - eps * F.logsigmoid(r - c))
            chosen.append(c.item())
            rejected.append(r.item())
            wins += chosen[-1] > rejected[-1]
        loss = sum(losses) / n
        metrics = {
            "loss": loss.item(),
            "accuracy": wins / n,
            "chosen_reward": sum(chosen) / n,
            "rejected_reward": sum(rejected) / n,
            "reward_margin": sum(c - r for c, r in zip(chosen, rejected)) / n,
            "chosen_log_prob": pc.mean().item(),
            "rejected_log_prob": pr.mean().item(),
        }
        return loss, metrics
    """)),
    # ---- 02
    case(NB2, "ipo-float64-throughout", IPO, Block(0), body("""
        margin = chosen_log_ratio.double() - rejected_log_ratio.double()
        return ((margin - 1 / (2 * self.beta)) ** 2).mean()
    """)),
    case(NB2, "ipo-expanded-square", IPO, "return ((margin - 1 / (2 * self.beta)) ** 2).mean()",
         "return (margin**2 - margin / self.beta + 1 / (4 * self.beta**2)).mean()"),
    case(NB2, "kto-sigmoid-of-negated", KTO, KTO_TERMS, body("""
        gain = self.desirable_weight * torch.sigmoid(self.beta * (z0 - r))  # 1 - sigmoid(x) = sigmoid(-x)
        loss = self.undesirable_weight * torch.sigmoid(self.beta * (r - z0))
    """)),
    case(NB2, "kto-float64-throughout", KTO, KTO_UPCAST, "r = log_ratios.double()"),
    case(NB2, "orpo-float64-throughout", ORPO, "logits[:, :-1].to(torch.promote_types(logits.dtype, torch.float32))",
         "logits[:, :-1].double()"),
    case(NB2, "orpo-expm1-only-clamp-1e-30", ORPO, LOG_ODDS, body("""
        x = avg_logps.clamp(max=-1e-30)  # just below 0, a normal number in float32 and float64
        return x - torch.log(-torch.expm1(x))
    """, 12)),
    case(NB2, "simpo-bce-with-logits", SIMPO, SIMPO_LOSS,
         "F.binary_cross_entropy_with_logits(self.beta * margin - self.gamma, torch.ones_like(margin))"),
    case(NB2, "simpo-gamma-over-beta-inside", SIMPO, "self.beta * margin - self.gamma", "self.beta * (margin - self.gamma / self.beta)"),
    case(NB2, "simpo-float64-throughout", SIMPO, "margin.to(torch.promote_types(margin.dtype, torch.float32))", "margin.double()"),
    # ---- 02, written from the student's text in other styles: loops, a float or a tensor kl_estimate, the safe torch.where
    case(NB2, "ipo-python-loop", IPO, Block(0), body("""
        total = 0.0
        for r_w, r_l in zip(chosen_log_ratio, rejected_log_ratio):
            r_w, r_l = (v.float() if v.dtype in (torch.float16, torch.bfloat16) else v for v in (r_w, r_l))
            total = total + (r_w - r_l - 0.5 / self.beta) ** 2
        return total / len(chosen_log_ratio)
    """)),
    case(NB2, "kl-torch-maximum", KL, Block(0), body("""
        mean_log_ratio = (policy_kl_logps - ref_kl_logps).mean().detach()
        return torch.maximum(mean_log_ratio, torch.zeros_like(mean_log_ratio))
    """, 4)),
    case(NB2, "kl-python-loop", KL, Block(0), body("""
        total = 0.0
        for p, q in zip(policy_kl_logps.tolist(), ref_kl_logps.tolist()):
            total += p - q
        return torch.tensor(max(0.0, total / len(policy_kl_logps)), device=policy_kl_logps.device)
    """, 4)),
    case(NB2, "kl-where-on-sums", KL, Block(0), body("""
        with torch.no_grad():
            z0 = (policy_kl_logps.sum() - ref_kl_logps.sum()) / policy_kl_logps.numel()
            return torch.where(z0 > 0, z0, torch.zeros_like(z0))
    """, 4)),
    case(NB2, "kto-kl-tensor-or-float-index-assign", KTO, Block(0), body("""
        r = log_ratios.float() if log_ratios.dtype in (torch.float16, torch.bfloat16) else log_ratios
        if isinstance(kl_estimate, torch.Tensor):
            z0 = kl_estimate.detach().to(device=r.device, dtype=r.dtype)
        else:
            z0 = torch.tensor(float(kl_estimate), device=r.device, dtype=r.dtype)
        z0 = z0.clamp(min=0.0)
        desirable = torch.as_tensor(is_desirable, device=r.device) != 0
        per_example = torch.empty_like(r)
        per_example[desirable] = self.desirable_weight * (1 - torch.sigmoid(self.beta * (r[desirable] - z0)))
        per_example[~desirable] = self.undesirable_weight * (1 - torch.sigmoid(self.beta * (z0 - r[~desirable])))
        return per_example.mean()
    """)),
    case(NB2, "kto-kl-as-float", KTO, Block(0), body("""
        r = log_ratios.to(torch.promote_types(log_ratios.dtype, torch.float32))
        z0 = max(0.0, float(kl_estimate))  # a Python float: detached, whatever kl_estimate was
        desirable = torch.as_tensor(is_desirable, device=r.device) != 0
        gain = self.desirable_weight * torch.sigmoid(self.beta * (z0 - r))
        loss = self.undesirable_weight * torch.sigmoid(self.beta * (r - z0))
        return torch.where(desirable, gain, loss).mean()
    """)),
    case(NB2, "orpo-safe-where-clamped-branches", ORPO, LOG1MEXP_BODY, body("""
        near = x > -math.log(2)
        near_x = x.clamp(min=-math.log(2))  # the expm1 formula's own domain
        far_x = x.clamp(max=-math.log(2))  # the log1p formula's own domain
        return torch.where(near, torch.log(-torch.expm1(near_x)), torch.log1p(-torch.exp(far_x)))
    """, 12)),
    case(NB2, "orpo-per-row-loop", ORPO, Block(0), body("""
        def token_logps(logits, labels, mask):
            logits = logits[:, :-1]
            if logits.dtype in (torch.float16, torch.bfloat16):
                logits = logits.float()
            logps = -F.cross_entropy(logits.transpose(1, 2), labels[:, 1:], reduction="none")
            keep = mask[:, 1:].to(logps.dtype)
            return logps * keep, keep

        def log_odds(avg):
            x = torch.clamp(avg, max=-1e-30)
            if x.item() > -math.log(2):  # one formula per row: nothing infinite is ever computed
                return x - torch.log(-torch.expm1(x))
            return x - torch.log1p(-torch.exp(x))

        chosen_tok, chosen_keep = token_logps(chosen_logits, chosen_labels, chosen_mask)
        rejected_tok, rejected_keep = token_logps(rejected_logits, rejected_labels, rejected_mask)
        ratios = []
        for i in range(chosen_tok.shape[0]):
            chosen_avg = chosen_tok[i].sum() / max(chosen_keep[i].sum().item(), 1.0)
            rejected_avg = rejected_tok[i].sum() / max(rejected_keep[i].sum().item(), 1.0)
            ratios.append(log_odds(chosen_avg) - log_odds(rejected_avg))
        log_odds_ratio = torch.stack(ratios)
        sft_loss = -chosen_tok.sum() / max(chosen_keep.sum().item(), 1.0)
        orpo_loss = F.softplus(-log_odds_ratio).mean()
        total_loss = sft_loss + self.lambda_orpo * orpo_loss
        metrics = {
            "sft_loss": sft_loss,
            "orpo_loss": orpo_loss,
            "total_loss": total_loss,
            "log_odds_ratio": log_odds_ratio.mean(),
            "accuracy": (log_odds_ratio > 0).float().mean(),
        }
        return total_loss, {name: value.detach() for name, value in metrics.items()}
    """)),
    case(NB2, "simpo-python-loop", SIMPO, Block(0), body("""
        losses = []
        for w, l in zip(chosen_avg_log_probs, rejected_avg_log_probs):
            w, l = (v.float() if v.dtype in (torch.float16, torch.bfloat16) else v for v in (w, l))
            losses.append(F.softplus(self.gamma - self.beta * (w - l)))
        return torch.stack(losses).mean()
    """)),
    # ---- 03
    case(NB3, "rng-private-name", GEN, RNG, "self._random = random.Random(seed)", edits=[
        ("self.rng.shuffle(shuffled)", "self._random.shuffle(shuffled)"),
        ("if i % 5 == 0 and self.rng.random() > 0.5:", "if i % 5 == 0 and self._random.random() > 0.5:"),
        ("out.append(self.rng.choice(FILLERS))", "out.append(self._random.choice(FILLERS))"),
        ("out.insert(1, self.rng.choice(FILLERS))", "out.insert(1, self._random.choice(FILLERS))"),
    ]),
    case(NB3, "shuffle-via-sample", GEN, "self.rng.shuffle(shuffled)", "shuffled = self.rng.sample(sentences, len(sentences))"),
    case(NB3, "perturb-choice-by-index", GEN, "out.append(self.rng.choice(FILLERS))",
         "out.append(FILLERS[self.rng.randrange(len(FILLERS))])"),
    case(NB3, "scored-pairs-negative-score-key", GEN, "sorted(records, key=lambda r: r[score_key], reverse=True)",
         "sorted(records, key=lambda r: -r[score_key])"),
    # The 3b text lets the 10 characters be counted before or after strip(): both are accepted.
    case(NB3, "validate-length-after-strip", GEN, LENGTHS, "len(p.chosen.strip()) >= 10 and len(p.rejected.strip()) >= 10"),
    # ---- 03: more answers written from the student's text alone
    case(NB3, "to-dict-explicit-keys", PAIR, Block(0), body("""
        metadata = self.metadata
        if metadata is None:
            metadata = {}
        return dict(prompt=self.prompt, chosen=self.chosen, rejected=self.rejected,
                    chosen_score=self.chosen_score, rejected_score=self.rejected_score, metadata=metadata)
    """)),
    case(NB3, "to-dict-fields-loop", PAIR, Block(0), body("""
        from dataclasses import fields

        out = {}
        for field in fields(self):
            out[field.name] = getattr(self, field.name)
        if out["metadata"] is None:
            out["metadata"] = {}
        return out
    """)),
    case(NB3, "scorers-loop-total", GEN, QUALITY, body("""
        total, count = 0.0, 0
        for scorer in self.quality_scorers:
            total += scorer(prompt, response)
            count += 1
        return total / count if count else 0.0
    """)),
    case(NB3, "scorers-tuple-registry", GEN, Block(1), body("""
        self.quality_scorers = (*self.quality_scorers, scorer)  # a new tuple: the scorers so far, then this one
    """), edits=[(QUALITY, body("""
        import math

        if len(self.quality_scorers) == 0:
            return 0.0
        return math.fsum(f(prompt, response) for f in self.quality_scorers) / len(self.quality_scorers)
    """))]),
    case(NB3, "scored-pairs-break-with-metadata", GEN, FROM_SCORED, body("""
        groups = {}
        for index, record in enumerate(data):
            for key in (prompt_key, response_key, score_key):
                if key not in record:
                    raise ValueError(f"record {index}: no {key!r}")
            groups.setdefault(record[prompt_key], []).append((record[score_key], record[response_key]))
        pairs = []
        for prompt, group in groups.items():
            group = sorted(group, key=lambda item: item[0], reverse=True)
            n = len(group)
            for i in range(n // 2):
                (best_score, best), (worst_score, worst) = group[i], group[n - 1 - i]
                if best_score - worst_score < self.min_score_diff:
                    break  # the gaps only shrink as i grows
                pairs.append(PreferencePair(prompt, best, worst, best_score, worst_score, {"source": "scores", "i": i}))
        return pairs
    """)),
    case(NB3, "single-responses-helpers", GEN, Block(4), body("""
        if rejection_strategy not in ("perturb", "truncate", "shuffle", "refuse"):
            raise ValueError(f"{rejection_strategy!r} is not a rejection strategy")

        def perturb(words):
            out, inserted = [], 0
            for i, word in enumerate(words):
                out.append(word)
                if i % 5 == 0 and self.rng.random() > 0.5:
                    out.append(FILLERS[self.rng.randrange(len(FILLERS))])
                    inserted += 1
            if not inserted:
                out[1:1] = [self.rng.choice(FILLERS)]
            return " ".join(out)

        def truncate(words):
            keep = len(words) // 3
            return " ".join(words[: keep if keep >= 1 else 1])

        def shuffle(text):
            sentences = text.split(". ")
            if len(sentences) == 1:
                return " ".join(reversed(text.split()))
            order = self.rng.sample(sentences, k=len(sentences))
            if order == sentences:
                order.reverse()
            return ". ".join(order)

        pairs = []
        for index, record in enumerate(data):
            missing = [key for key in (prompt_key, response_key) if key not in record]
            if missing:
                raise ValueError(f"record {index} lacks {missing[0]!r}")
            chosen = record[response_key]
            if rejection_strategy == "perturb":
                rejected = perturb(chosen.split())
            elif rejection_strategy == "truncate":
                rejected = truncate(chosen.split())
            elif rejection_strategy == "shuffle":
                rejected = shuffle(chosen)
            else:
                rejected = "I cannot help with this request."
            pairs.append(PreferencePair(record[prompt_key], chosen, rejected, metadata={"strategy": rejection_strategy}))
        return pairs
    """)),
    # "when i % 5 == 0 and rng.random() > 0.5" read the other way round: a coin flip for every word
    case(NB3, "perturb-coin-for-every-word", GEN, "if i % 5 == 0 and self.rng.random() > 0.5:",
         "if self.rng.random() > 0.5 and i % 5 == 0:"),
    case(NB3, "validate-filter-helper", GEN, VALIDATE_PAIRS, body("""
        def long_enough(text):
            return len(text) >= 10

        def differ(p):
            return p.chosen.strip() != p.rejected.strip()

        return list(filter(lambda p: long_enough(p.chosen) and long_enough(p.rejected) and differ(p), pairs))
    """)),
    case(NB3, "export-loop-from-to-dict", GEN, Block(6), body("""
        records = []
        for pair in pairs:
            d = pair.to_dict()
            records.append({key: d[key] for key in ("prompt", "chosen", "rejected")})
        return records
    """)),
    case(NB3, "export-dict-constructor", GEN, Block(6), body("""
        return [dict(prompt=p.prompt, chosen=p.chosen, rejected=p.rejected) for p in pairs]
    """)),
]  # fmt: skip


@pytest.mark.parametrize("alternative", ALTERNATIVES)
def test_correct_alternative_passes_every_cell(alternative: Case):
    failures = alternative.run()
    assert not failures, (
        f"{alternative.notebook}, {alternative.name}: a correct rewrite fails:\n{report(failures)}"
    )


# ---------------------------------------------------------------- importing the reference, patching the checks
# An answer that patches what a check in its kernel would trust (issue 9 part B) earns nothing: the
# hidden tests only record what the answer returned, and the records are judged outside the kernel.
PATCHES = """\
import builtins
import math

import torch
import torch.testing

import dpolab.grading

torch.allclose = lambda *args, **kwargs: True
torch.isclose = lambda a, b, *args, **kwargs: torch.ones_like(torch.as_tensor(a), dtype=torch.bool)
torch.isfinite = lambda x: torch.ones_like(torch.as_tensor(x), dtype=torch.bool)
torch.testing.assert_close = lambda *args, **kwargs: None
math.isclose = lambda *args, **kwargs: True
math.isfinite = lambda x: True
builtins.abs = lambda x: 0
dpolab.grading.run_own_code = lambda fn, *args, allow=(), **kwargs: fn(*args, **kwargs)


"""
STUB = "        # YOUR CODE HERE\n        raise NotImplementedError()\n"
# Answers the visible tests cannot tell from right once abs() is patched: shapes, dtypes, keys, detached.
CONSTANT_LOG_PROBS = "        return logits[:, 0, 0].float() * 0  # differentiable, shape (B,), float32\n"
CONSTANT_FORWARD = body("""
    keys = ("loss", "accuracy", "chosen_reward", "rejected_reward", "reward_margin", "chosen_log_prob", "rejected_log_prob")
    return torch.zeros((), requires_grad=True), {key: torch.tensor(0.0) for key in keys}
""")


def patched(notebook: str, answer: str, *edits: tuple[str | Block, str]) -> str:
    """The answer cell with ``edits``, after a block that patches the comparisons and the guard."""
    return PATCHES + mutate(notebook, answer, *edits)[answer]


def patching(notebook: str, answer: str, *edits: tuple[str | Block, str]) -> str:
    """The answer cell with ``edits``, after code that patches the checks (``PATCHES``)."""
    return PATCHES + mutate(notebook, answer, *edits)[answer]


# notebook 02: a placeholder (right shapes, a gradient, nothing computed) or a known mistake, under PATCHES
NB2_PATCHED = [
    (IPO, T_IPO, "ipo", body("return (chosen_log_ratio - rejected_log_ratio).float().sum() * 0.0"),
     ("1 / (2 * self.beta)", "1 / self.beta")),
    (KL, T_KL, "kl", body("return torch.zeros(())", 4), (".mean().clamp(min=0).detach()", ".mean().detach()")),
    (KTO, T_KTO, "kto", body("return log_ratios.float().sum() * 0.0"),
     ("1 - torch.sigmoid(self.beta * (r - z0))", "-F.logsigmoid(self.beta * r - z0)")),
    (ORPO, T_ORPO, "orpo", body("""
        zero = (chosen_logits.float().sum() + rejected_logits.float().sum()) * 0.0
        names = ("sft_loss", "orpo_loss", "total_loss", "log_odds_ratio", "accuracy")
        return zero, {name: zero.detach() for name in names}
    """), (AVERAGES, "        chosen_avg = chosen_tok.sum(-1)\n        rejected_avg = rejected_tok.sum(-1)\n")),
    (SIMPO, T_SIMPO, "simpo", body("return (chosen_avg_log_probs - rejected_avg_log_probs).float().sum() * 0.0"),
     ("self.beta * margin - self.gamma", "self.beta * (margin - self.gamma)")),
]  # fmt: skip

# ---------------------------------------------------------------- importing the reference
# Notebook 03: answers that patch what a hidden test could use to decide in the kernel.
NB3_PATCH_GUARD = """\
import sys

import dpolab.grading

dpolab.grading.run_own_code = lambda fn, *a, allow=(), **k: fn(*a, **k)
sys.setprofile = lambda *a, **k: None
"""
NB3_PATCH_RANDOM = """\
import itertools
import random

_halves = itertools.cycle([0.9, 0.1])  # a filler after every other word i with i % 5 == 0
random.seed = lambda *a, **k: None
random.random = lambda: next(_halves)
random.getstate = lambda: (3, tuple(range(625)), None)
random.shuffle = lambda x, *a, **k: x.reverse()
"""
NB3_PATCH_SORTED = """\
import builtins

builtins.sorted = lambda iterable, *a, **k: []  # sorted(a) == sorted(b) for any a and b
"""
NB3_PATCH_ALL = (
    NB3_PATCH_GUARD
    + NB3_PATCH_RANDOM
    + NB3_PATCH_SORTED
    + """\
import json

builtins.len = lambda obj: 10  # every text is long enough
builtins.abs = lambda x: 0
json.dumps = lambda obj, *a, **k: "{}"
"""
)
NB3_PAIR_WRONG = """
from dataclasses import dataclass


@dataclass
class PreferencePair:
    prompt: str
    chosen: str
    rejected: str
    chosen_score: float | None = None
    rejected_score: float | None = None
    metadata: dict | None = None

    def to_dict(self) -> dict:
        return {"prompt": self.prompt, "chosen": self.chosen, "rejected": self.rejected}
"""
NB3_GENERATOR_STUB = """
class PreferenceDatasetGenerator:
    def __init__(self, min_score_diff=0.5, seed=None):
        raise NotImplementedError()

    def add_scorer(self, scorer):
        raise NotImplementedError()

    def compute_quality_score(self, prompt, response):
        raise NotImplementedError()

    def from_scored_responses(self, data, prompt_key="prompt", response_key="response", score_key="score"):
        raise NotImplementedError()

    def from_single_responses(self, data, prompt_key="prompt", response_key="response", rejection_strategy="perturb"):
        raise NotImplementedError()

    def validate_pairs(self, pairs):
        raise NotImplementedError()

    def to_huggingface_format(self, pairs):
        raise NotImplementedError()
"""

CHEATS = [
    pytest.param(NB1, DPO, "from dpolab import DPOLoss", {LOGP} | LOSS_CELLS, id="01-import-DPOLoss"),
    pytest.param(NB1, DPO, "import dpolab\n\n\nclass DPOLoss(dpolab.DPOLoss):\n    pass\n", {LOGP} | LOSS_CELLS, id="01-subclass-DPOLoss"),
    pytest.param(NB1, DPO, patched(NB1, DPO, (LOG_PROBS, STUB), (FORWARD, STUB)), {LOGP} | LOSS_CELLS,
                 id="01-patched-checks-stub"),
    pytest.param(NB1, DPO, patched(NB1, DPO, (LOG_PROBS, CONSTANT_LOG_PROBS), (FORWARD, CONSTANT_FORWARD)),
                 {LOGP} | LOSS_CELLS, id="01-patched-checks-constant-answers"),
    pytest.param(NB1, DPO, patched(NB1, DPO, (SHIFT, "        targets = labels\n        mask = loss_mask.bool()\n")),
                 {LOGP}, id="01-patched-checks-no-shift"),
    pytest.param(NB1, DPO, patched(NB1, DPO, ("logits = chosen_rewards - rejected_rewards", "logits = rejected_rewards - chosen_rewards")),
                 LOSS_CELLS, id="01-patched-checks-margin-sign-flipped"),
    pytest.param(NB1, DPO, patched(NB1, DPO, ("(chosen_rewards > rejected_rewards)", "(chosen_rewards >= rejected_rewards)")),
                 {METRICS}, id="01-patched-checks-accuracy-counts-ties"),
    pytest.param(NB1, DPO, patched(NB1, DPO, ("with torch.no_grad():  # the reference model is frozen", "if True:")),
                 {LOSS}, id="01-patched-checks-gradient-reaches-reference"),
    pytest.param(NB2, KTO, "from dpolab import KTOLoss", {T_KTO}, id="02-import-KTOLoss"),
    pytest.param(NB2, KL, "from dpolab import estimate_kl", {T_KL}, id="02-import-estimate_kl"),
    pytest.param(NB2, IPO, "from dpolab import IPOLoss", {T_IPO}, id="02-import-IPOLoss"),
    pytest.param(NB2, ORPO, "from dpolab import ORPOLoss", {T_ORPO}, id="02-import-ORPOLoss"),
    pytest.param(NB2, SIMPO, "from dpolab import SimPOLoss", {T_SIMPO}, id="02-import-SimPOLoss"),
    *(pytest.param(NB2, answer, patching(NB2, answer, (Block(0), placeholder)), {test}, id=f"02-patched-checks-{name}-placeholder")
      for answer, test, name, placeholder, _ in NB2_PATCHED),
    *(pytest.param(NB2, answer, patching(NB2, answer, mistake), {test}, id=f"02-patched-checks-{name}-wrong")
      for answer, test, name, _, mistake in NB2_PATCHED),
    pytest.param(NB3, PAIR, "from dpolab import PreferencePair", {T_PAIR}, id="03-import-PreferencePair"),
    pytest.param(NB3, GEN, "from dpolab import PreferenceDatasetGenerator", {T_SCORERS, SCORED, SINGLE, VALIDATE},
                 id="03-import-PreferenceDatasetGenerator"),
    # Patching what the hidden tests use in the kernel earns nothing: they only record, the grader judges.
    pytest.param(NB3, PAIR, NB3_PATCH_GUARD + NB3_PAIR_WRONG, {T_PAIR}, id="03-patch-guard-pair-wrong"),
    pytest.param(NB3, GEN, NB3_PATCH_ALL + NB3_GENERATOR_STUB, {T_SCORERS, SCORED, SINGLE, VALIDATE},
                 id="03-patch-all-generator-stub"),
    pytest.param(NB3, GEN, NB3_PATCH_GUARD + NB3_PATCH_RANDOM + mutate(NB3, GEN, (RNG, "self.rng = random"))[GEN],
                 {SINGLE}, id="03-patch-random-global-stream"),
    # sorted() patched to say "equal" breaks the tests' own sorting too: both cells that sort score nothing
    pytest.param(NB3, GEN, NB3_PATCH_GUARD + NB3_PATCH_SORTED + mutate(NB3, GEN, (
        "ranked = sorted(records, key=lambda r: r[score_key], reverse=True)",
        "ranked = list(records)\n            ranked.sort(key=lambda r: r[score_key], reverse=True)",
    ), ("best, worst = ranked[i], ranked[-(i + 1)]", "best, worst = ranked[i], ranked[i + 1]"))[GEN],
                 {SCORED, SINGLE}, id="03-patch-sorted-pairs-adjacent"),
    pytest.param(NB3, GEN, NB3_PATCH_ALL + mutate(NB3, GEN, (LENGTHS, "len(p.chosen) >= 10"))[GEN],
                 {T_SCORERS, SCORED, SINGLE, VALIDATE}, id="03-patch-all-validate-chosen-only"),
    # With the guard switched off, the reference's own results match the solution's: only where the
    # methods were written (recorded) tells them apart here; the package students get holds no reference.
    pytest.param(NB3, PAIR, NB3_PATCH_GUARD + "from dpolab import PreferencePair\n", {T_PAIR},
                 id="03-patch-guard-import-PreferencePair"),
    pytest.param(NB3, GEN, NB3_PATCH_GUARD + "import dpolab\n\n\nclass PreferenceDatasetGenerator(dpolab.PreferenceDatasetGenerator):\n"
                 "    pass\n", {T_SCORERS, SCORED, SINGLE, VALIDATE}, id="03-patch-guard-subclass-generator"),
    pytest.param(
        NB3,
        GEN,
        NB3_PATCH_GUARD + "import inspect\n\nimport dpolab.data.preferences\n\n"
        "exec(inspect.getsource(dpolab.data.preferences))  # the reference's source, run as my own\n",
        {T_SCORERS, SCORED, SINGLE, VALIDATE},
        id="03-copy-reference-source",
        marks=pytest.mark.xfail(strict=True, reason="only the graded-course package (no reference source in it) "
                                "stops this: run from the full package, the copy is code of the notebook"),
    ),
]  # fmt: skip


@pytest.mark.parametrize(("name", "answer", "source", "fails"), CHEATS)
def test_importing_the_reference_scores_nothing(name, answer, source, fails):
    failures = failing_cells(name, {answer: source})
    assert set(failures) == set(fails), f"{name}: {source!r} instead of {answer}:\n{report(failures)}"


def test_forward_delegating_to_the_reference_keeps_only_the_log_prob_point():
    delegate = body("""
        import dpolab

        return dpolab.DPOLoss(self.beta, self.label_smoothing, self.reference_free)(
            policy_chosen_logits, policy_rejected_logits, chosen_labels, rejected_labels, chosen_mask,
            rejected_mask, reference_chosen_logits, reference_rejected_logits,
        )
    """)  # fmt: skip
    failures = failing_cells(NB1, mutate(NB1, DPO, (FORWARD, delegate)))
    assert set(failures) == LOSS_CELLS, report(failures)
    assert all("dpolab's reference" in v for v in failures.values()), report(failures)


# ---------------------------------------------------------------- notebook 03: the records alone decide
def hidden_only(nb: Notebook) -> Notebook:
    """``nb`` with no visible assert deciding anything: in each grade cell the visible part runs with
    its errors ignored (the hidden block may use what it defines), then the hidden block."""
    hidden = "### BEGIN HIDDEN TESTS"

    def cut(c: Cell) -> Cell:
        visible, rest = c.source.split(hidden, 1)
        swallowed = f"try:\n    exec(compile({visible!r}, '<visible>', 'exec'), globals())\nexcept Exception:\n    pass\n"
        return Cell(c.grade_id, swallowed + hidden + rest)

    tests = {c: cut(c) for c in nb.tests}
    return Notebook(
        nb.name, nb.setup, nb.answers, tuple(tests.values()), tuple(tests.get(c, c) for c in nb.order)
    )


NB3_EVERY_CASE = [
    pytest.param(mutate(c.notebook, c.answer, (c.old, c.new), *c.edits), c.fails, id=p.id)
    for p in MISTAKES + ALTERNATIVES
    for c in p.values
    if c.notebook == NB3
] + [
    pytest.param({p.values[1]: p.values[2]}, frozenset(p.values[3]), id=p.id, marks=p.marks)
    for p in CHEATS
    if p.values[0] == NB3
]


@pytest.mark.parametrize(("replace", "fails"), NB3_EVERY_CASE)
def test_nb3_hidden_tests_alone_catch_every_case(replace, fails, monkeypatch):
    """Each notebook-03 case gets the same outcome from the hidden tests alone (the records the grader
    judges, and errors the student's code raises): the visible asserts are not what catches it."""
    stripped = hidden_only(load(NB3))
    monkeypatch.setattr(f"{__name__}.load", lambda name, _load=load: stripped if name == NB3 else _load(name))
    failures = failing_cells(NB3, replace)
    assert set(failures) == fails, report(failures)
