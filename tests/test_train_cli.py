"""``dpolab-train`` (dpolab.training.cli): TRL's DPOTrainer alone and under ``accelerate launch`` (DDP).

Every run trains the lab's tiny Llama (built in code) on the same 64 arithmetic pairs (written
by ``save_jsonl``), 6 steps of an effective batch of 8, AdamW at lr 1e-3, on CPUs:

- one process, ``--per-device-batch-size 8``;
- two processes, ``accelerate launch --config_file deploy/accelerate/cpu_ddp.yaml --num_processes 2``
  (DDP over gloo), ``--per-device-batch-size 4``: the same effective batch.

The two must log the same numbers at every step (within ``LOG_TOL``) and end with the same
parameters (within ``PARAM_TOL``). Measured on the lab's 2-core machine: the losses differ by at
most 6e-8 and the parameters by at most 5.1e-6, while 6 steps move them by 1.9e-3 on average
(the all-reduced mean of two half-batch gradients is the full-batch gradient up to float32
rounding, which AdamW's normalisation can magnify for near-zero gradients; hence a tolerance 20x
the measured figure). ``--log-batches`` proves the sharding: each process writes the pairs it
trained on, and at each step rank 0 and rank 1 hold disjoint halves of the one-process batch.
A run resumed from the one-process run's ``checkpoint-3`` ends bit for bit where it did.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dpolab import ArithmeticTask, save_jsonl
from dpolab.training import cli

pytest.importorskip("trl")
pytest.importorskip("accelerate")
from safetensors.torch import load_file  # noqa: E402  (after the skip: a TRL dependency)

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
STEPS, CHECKPOINT_STEP, EFFECTIVE_BATCH = 6, 3, 8
LOG_TOL = 1e-5  # absolute, on every logged loss / reward / log-prob / grad-norm (measured: <= 6e-8 on loss)
PARAM_TOL = 1e-4  # absolute, on every parameter after 6 steps (measured: 5.1e-6)
LOGGED = ["loss", "grad_norm", "rewards/chosen", "rewards/rejected", "rewards/margins",
          "rewards/accuracies", "logps/chosen", "logps/rejected"]  # fmt: skip
TRAIN_ARGS = ["--max-steps", str(STEPS), "--learning-rate", "1e-3", "--beta", "0.1", "--max-length", "32",
              "--logging-steps", "1", "--save-steps", str(CHECKPOINT_STEP), "--seed", "0", "--cpu",
              "--log-batches"]  # fmt: skip


def env(tmp: Path) -> dict[str, str]:
    """Offline, one thread per process (2 cores, 2 processes), no write outside ``tmp``."""
    return {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HOME": str(tmp / "hf-home"),
        "TOKENIZERS_PARALLELISM": "false",
    }


def run(cmd: list[str], tmp: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=ROOT, env=env(tmp), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def train(pairs: Path, out: Path, *extra: str, processes: int = 1) -> Path:
    """``python -m dpolab.training.cli`` (one process) or ``accelerate launch ... -m`` (several)."""
    args = [str(pairs), "--output-dir", str(out), *TRAIN_ARGS, *extra]
    if processes == 1:
        cmd = [sys.executable, "-m", "dpolab.training.cli", *args]
    else:
        with socket.socket() as s:  # a free port: other runs on this machine may hold 29500
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cmd = [str(BIN / "accelerate"), "launch", "--config_file", "deploy/accelerate/cpu_ddp.yaml",
               "--num_processes", str(processes), "--main_process_port", str(port),
               "-m", "dpolab.training.cli", *args]  # fmt: skip
    run(cmd, out.parent)
    return out


def metrics(out: Path) -> dict[int, dict]:
    """metrics.jsonl's training lines, by step."""
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {row["step"]: row for row in rows if "loss" in row}


def batches(out: Path, rank: int) -> dict[int, list[str]]:
    rows = [json.loads(line) for line in (out / f"batches-rank{rank}.jsonl").read_text().splitlines()]
    assert all(row["rank"] == rank for row in rows)
    return {row["step"]: row["pairs"] for row in rows}


def params(out: Path) -> dict[str, torch.Tensor]:
    return load_file(out / "model.safetensors")


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pairs") / "pairs.jsonl"
    save_jsonl(ArithmeticTask(seed=0).preference_pairs(n=64), path)
    return path


@pytest.fixture(scope="module")
def one(pairs, tmp_path_factory) -> Path:
    return train(
        pairs, tmp_path_factory.mktemp("one") / "run", "--per-device-batch-size", str(EFFECTIVE_BATCH)
    )


@pytest.fixture(scope="module")
def two(pairs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("two") / "run"
    return train(pairs, out, "--per-device-batch-size", str(EFFECTIVE_BATCH // 2), processes=2)


# ---------------------------------------------------------------------- one process vs two


def test_two_processes_log_what_one_process_logs(one, two):
    single, ddp = metrics(one), metrics(two)
    assert sorted(single) == sorted(ddp) == list(range(1, STEPS + 1))
    diffs = {key: max(abs(single[s][key] - ddp[s][key]) for s in single) for key in LOGGED}
    print("max |1 process - 2 processes| per logged key:", diffs)
    assert all(d <= LOG_TOL for d in diffs.values()), diffs
    assert single[1]["loss"] == pytest.approx(0.693147, abs=1e-6)  # policy == reference at step 1: ln 2
    assert len({round(single[s]["loss"], 4) for s in single}) == STEPS  # it trains: six different losses
    assert [ddp[s]["epoch"] for s in ddp] == [s * EFFECTIVE_BATCH / 64 for s in range(1, STEPS + 1)]


def test_two_processes_end_with_the_parameters_of_one(one, two):
    a, b = params(one), params(two)
    assert a.keys() == b.keys()
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    print(f"max |1 process - 2 processes| over the final parameters: {diff:.3g}")
    assert diff <= PARAM_TOL
    # the comparison means something: training moved the parameters far more than the tolerance
    from dpolab.training.hf import tiny_llama

    start = tiny_llama(len(a["model.embed_tokens.weight"]), max_position_embeddings=32, seed=0).state_dict()
    moved = torch.cat([(a[k] - start[k]).abs().flatten() for k in a]).mean().item()
    assert moved > 10 * PARAM_TOL, moved  # measured: 1.9e-3 on average


def test_each_process_trains_on_its_own_half_of_every_batch(one, two):
    single, rank0, rank1 = batches(one, 0), batches(two, 0), batches(two, 1)
    assert not (two / "batches-rank2.jsonl").exists() and not (one / "batches-rank1.jsonl").exists()
    assert sorted(single) == sorted(rank0) == sorted(rank1) == list(range(1, STEPS + 1))
    for step in single:
        assert len(rank0[step]) == len(rank1[step]) == EFFECTIVE_BATCH // 2
        assert not set(rank0[step]) & set(rank1[step]), step
        assert sorted(rank0[step] + rank1[step]) == sorted(single[step]), step
    seen0 = [p for s in rank0 for p in rank0[s]]
    seen1 = [p for s in rank1 for p in rank1[s]]
    assert not set(seen0) & set(seen1)  # disjoint over the whole run (6 steps < one epoch of 8)
    assert len(set(seen0 + seen1)) == STEPS * EFFECTIVE_BATCH
    prompts = {p.prompt + p.chosen + "<eos>" for p in ArithmeticTask(seed=0).preference_pairs(n=64)}
    assert set(seen0 + seen1) <= prompts  # the pairs of the file, as the trainer saw them


# ---------------------------------------------------------------------- checkpoints, resume, --model


def test_checkpoints_metrics_and_final_model_are_written(one):
    for step in (CHECKPOINT_STEP, STEPS):
        checkpoint = one / f"checkpoint-{step}"
        for name in (
            "model.safetensors",
            "optimizer.pt",
            "scheduler.pt",
            "trainer_state.json",
            "rng_state.pth",
        ):
            assert (checkpoint / name).is_file(), (checkpoint, name)
        assert json.loads((checkpoint / "trainer_state.json").read_text())["global_step"] == step
    lines = [json.loads(line) for line in (one / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in lines] == [*range(1, STEPS + 1), STEPS]  # + the run's summary
    assert "train_runtime" in lines[-1] and "learning_rate" in lines[0]
    config = json.loads((one / "config.json").read_text())
    assert config["model_type"] == "llama" and (one / "tokenizer.json").is_file()


def test_resume_from_a_checkpoint_ends_where_the_uninterrupted_run_ends(one, pairs, tmp_path):
    """A run stopped after checkpoint-3 (its folder and metrics copied) and resumed to step 6."""
    out = tmp_path / "run"
    out.mkdir()
    shutil.copytree(one / f"checkpoint-{CHECKPOINT_STEP}", out / f"checkpoint-{CHECKPOINT_STEP}")
    shutil.copy(one / "metrics.jsonl", out / "metrics.jsonl")  # holds steps 4-6 too: they are redone
    train(pairs, out, "--per-device-batch-size", str(EFFECTIVE_BATCH), "--resume")
    a, b = params(one), params(out)
    assert max((a[k] - b[k]).abs().max().item() for k in a) == 0.0
    got, want = metrics(out), metrics(one)
    assert {s: [got[s][k] for k in LOGGED] for s in got} == {s: [want[s][k] for k in LOGGED] for s in want}
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [
        *range(1, STEPS + 1), STEPS
    ]  # fmt: skip
    assert batches(out, 0) == {s: p for s, p in batches(one, 0).items() if s > CHECKPOINT_STEP}


def test_a_model_folder_trains_like_the_built_in_model(one, pairs, tmp_path):
    """``--model DIR``: a model and tokenizer saved with save_pretrained (no network) load and train."""
    from dpolab.training.hf import hf_char_tokenizer, tiny_llama

    tok = hf_char_tokenizer()
    tiny_llama(len(tok), max_position_embeddings=32, seed=0).save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    out = train(pairs, tmp_path / "run", "--per-device-batch-size", "8", "--model", str(tmp_path / "model"))
    got, want = metrics(out), metrics(one)
    # the same model, data order and step-1 learning rate: the first two steps log the same numbers
    for step in (1, 2):
        for key in LOGGED:
            assert got[step][key] == pytest.approx(want[step][key], abs=LOG_TOL), (step, key)


# ---------------------------------------------------------------------- the command line


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--beta", "0"], "--beta must be > 0, got 0.0"),
        (["--learning-rate", "-0.001"], "--learning-rate must be > 0, got -0.001"),
        (["--per-device-batch-size", "0"], "--per-device-batch-size must be a positive integer, got 0"),
        (["--max-steps", "0"], "--max-steps must be a positive integer, got 0"),
        (["--max-length", "-4"], "--max-length must be a positive integer"),
        (["--loss", "sigmoid", "ipo", "--loss-weights", "1"], "--loss-weights needs one weight per --loss"),
        (["--loss", "dpo"], "argument --loss: invalid choice: 'dpo'"),
        (["--loss", "robust", "--label-smoothing", "0.5"], "--label-smoothing must be in [0, 0.5)"),
        (["--loss", "exo_pair"], "--loss exo_pair needs --label-smoothing > 0"),
        (["--loss", "sft", "--nll-weight", "1"], "--nll-weight adds the 'sft' loss"),
        (["--nll-weight", "-1"], "--nll-weight must be >= 0"),
        (["--resume"], "--resume: no checkpoint-<step> folder in --output-dir"),
        (["--seed", "one"], "argument --seed: invalid int value: 'one'"),
    ],
)
def test_argument_errors_name_the_argument(argv, message, pairs, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([str(pairs), "--output-dir", str(tmp_path / "out"), *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: dpolab-train") and f"dpolab-train: error: {message}" in err, err


def test_missing_arguments_and_files_are_named(pairs, tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli.main([str(pairs)])
    assert "the following arguments are required: --output-dir" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main([str(tmp_path / "nope.jsonl"), "--output-dir", str(tmp_path)])
    assert f"error: PAIRS.jsonl: no such file: {tmp_path / 'nope.jsonl'}" in capsys.readouterr().err
    (tmp_path / "out" / "checkpoint-2").mkdir(parents=True)
    with pytest.raises(SystemExit):
        cli.main([str(pairs), "--output-dir", str(tmp_path / "out")])
    assert "already holds checkpoints: pass --resume" in capsys.readouterr().err
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(SystemExit):
        cli.main([str(tmp_path / "empty.jsonl"), "--output-dir", str(tmp_path / "o2")])
    assert "no pairs in" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"prompt": "1+1=", "chosen": "2"}', "line 3: no 'rejected' key"),
        ('{"prompt": "1+1=", "chosen": 2, "rejected": "3"}', "line 3: 'chosen' must be a string, got int"),
        ('{"prompt": "1+1=", "chosen": "2", ', "line 3: invalid JSON"),
        ('["1+1=", "2", "3"]', "line 3: expected a JSON object, got list"),
    ],
)
def test_a_bad_record_names_its_line(line, message, pairs, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    good = pairs.read_text().splitlines()
    bad.write_text("\n".join([good[0], good[1], line, good[2]]) + "\n")
    with pytest.raises(SystemExit) as exit_info:
        cli.main([str(bad), "--output-dir", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    assert f"dpolab-train: error: {bad}, {message}" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing trained, nothing written


def test_console_script_and_module_run_the_same_command(tmp_path):
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^dpolab-train = "dpolab\.training\.cli:main"$', pyproject, re.M)  # [project.scripts]
    script = BIN / "dpolab-train"
    assert script.is_file(), f"{script} missing: reinstall the lab (pip install -e .)"
    via_script = run([str(script), "--help"], tmp_path).stdout
    via_module = run([sys.executable, "-m", "dpolab.training.cli", "--help"], tmp_path).stdout
    assert (
        via_script == via_module
        and "usage: dpolab-train PAIRS.jsonl --output-dir DIR [options]" in via_script
    )
    for option in ("--model", "--loss", "--nll-weight", "--resume", "--seed", "--per-device-batch-size",
                   "--learning-rate", "--beta", "--max-length", "--max-steps"):  # fmt: skip
        assert option in via_script, option


def test_loss_types_are_trl_1_16s_and_the_nll_term_is_its_sft_loss(tmp_path):
    from trl import DPOConfig

    from dpolab.training.trl_dpo import dpo_config

    documented = DPOConfig.__dataclass_fields__["loss_type"].metadata["help"]
    assert all(f"`'{name}'`" in documented for name in cli.LOSS_TYPES)
    assert documented.count("`'") == len(cli.LOSS_TYPES)  # none missing either
    args = cli.build_parser().parse_args(["p.jsonl", "--output-dir", str(tmp_path), "--nll-weight", "0.5"])
    config = dpo_config(args)
    assert (config.loss_type, config.loss_weights) == (["sigmoid", "sft"], [1.0, 0.5])
    assert (config.bf16, config.gradient_checkpointing, config.learning_rate) == (False, False, 1e-6)
    args = cli.build_parser().parse_args(["p.jsonl", "--output-dir", str(tmp_path), "--loss", "ipo", "hinge",
                                          "--loss-weights", "0.3", "0.7"])  # fmt: skip
    assert (dpo_config(args).loss_type, dpo_config(args).loss_weights) == (["ipo", "hinge"], [0.3, 0.7])


def test_deploy_configs_load(tmp_path):
    """The accelerate configs parse as accelerate reads them; the DeepSpeed files are ZeRO-2 and -3."""
    from accelerate.commands.config.config_args import load_config_from_file

    kinds = {"cpu_ddp": "MULTI_GPU", "multi_gpu": "MULTI_GPU", "deepspeed_zero2": "DEEPSPEED",
             "deepspeed_zero3": "DEEPSPEED"}  # fmt: skip
    for name, kind in kinds.items():
        config = load_config_from_file(str(ROOT / "deploy" / "accelerate" / f"{name}.yaml"))
        assert config.distributed_type.value == kind, name
        # precision comes from dpolab-train's --bf16 (DeepSpeed: its JSON's "auto", filled in from it)
        assert config.mixed_precision == ("no" if kind != "DEEPSPEED" else None), name
    for stage in (2, 3):
        config = load_config_from_file(str(ROOT / "deploy" / "accelerate" / f"deepspeed_zero{stage}.yaml"))
        ds_file = ROOT / config.deepspeed_config["deepspeed_config_file"]
        assert json.loads(ds_file.read_text())["zero_optimization"]["stage"] == stage
        assert config.deepspeed_config["zero3_init_flag"] is (stage == 3)
