"""The training engine: a real run end to end, resume exactness, Ctrl-C, NaN, no overwrites."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from pydantic import PrivateAttr
from typer.testing import CliRunner

import workbench as wb
from workbench import registry as registry_module
from workbench import runs
from workbench.cli import make_app
from workbench.experiment import load_experiment
from workbench.registry import Registry
from workbench.trainer import adamw, fast_bf16
from workbench.training import Interrupted, NonFiniteLoss, prepare, train

REPO = Path(__file__).resolve().parents[1]

TINY = """\
[tiny]
description = "a tiny swiss roll run"
seed = 1
dataset   = { name = "swissroll", n = 600 }
scheduler = { name = "linear", timesteps = 50, scale_with_timesteps = false, beta_end = 0.2 }
backbone  = { name = "mlp", width = 32, depth = 2 }
sampler   = { name = "ddpm" }
train     = { steps = 20, batch_size = 64, lr = 1e-3, log_every = 5, checkpoint_every = 5, ema = 0.9 }
eval      = { samples = 200, metrics = ["swd", { name = "nll", examples = 50 }] }

[tiny_dropout]
extends = "tiny"
backbone = { name = "mlp", width = 32, depth = 2, dropout = 0.1 }
train = { accumulate = 2 }

[tiny_unet]
extends = "tiny"
dataset = { name = "shapes", size = 8, n = 200 }
backbone = { name = "unet", channels = 8, channel_mult = [1, 2], groups = 4, num_heads = 2, dropout = 0.1 }
train = { batch_size = 16 }

[tiny_unet_bf16]
extends = "tiny_unet"
train = { precision = "bf16" }

[tiny_cond]
extends = "tiny"
dataset = { name = "eight_gaussians", n = 600 }
condition = { labels = true, dropout = 0.2 }
sampler = { name = "ddim", steps = 10, guidance = 2.0 }

[tiny_streamed]
extends = "tiny_unet"
dataset = { name = "folder", path = "images", size = 8, in_memory_limit = 0 }
train = { batch_size = 12 }
eval = { samples = 4 }
"""


@pytest.fixture
def workdir(tmp_path, monkeypatch, png_folder):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WB_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.delenv("WB_EXPERIMENTS", raising=False)
    (tmp_path / "experiments.toml").write_text(TINY)
    return tmp_path


def with_plugin(monkeypatch, name: str, module: types.ModuleType) -> Registry:
    """Make the process-wide registry the installed plugins plus `module`."""
    registry = Registry.load(modules=[(name, module)])
    monkeypatch.setattr(registry_module, "_default", registry)
    return registry


def test_a_short_real_run_through_the_cli_writes_a_complete_run_directory(workdir):
    result = CliRunner().invoke(make_app(), ["run", "tiny"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    (run_dir,) = (workdir / "runs" / "tiny").iterdir()
    for name in ("experiment.toml", "metrics.jsonl", "checkpoint.pt", "summary.json", "samples.png",
                 "trajectory.png", "forward.png", "loss.png", "nll_terms.png"):
        assert (run_dir / name).is_file(), name
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "done" and summary["step"] == 20
    assert set(summary["metrics"]) == {"swd", "nll"} and all(map(lambda v: v == v, summary["metrics"].values()))
    assert [r["step"] for r in runs.read_metrics(run_dir)] == [5, 10, 15, 20]
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert state["step"] == 20 and {"model", "ema", "optimizer", "generator", "torch_rng"} <= set(state)
    # the stored experiment is the resolved one, and reloads
    assert load_experiment("tiny", file=run_dir / "experiment.toml").to_dict() == load_experiment("tiny").to_dict()
    assert "nll" in result.output and str(run_dir) in result.output


def test_a_new_run_never_overwrites_an_existing_one(workdir):
    exp = load_experiment("tiny", overrides=["train.steps=2", "eval.metrics=[]"])
    first = train(exp, evaluate_at_end=False).dir
    second = train(exp, evaluate_at_end=False).dir
    assert first != second and first.exists() and second.exists()
    assert runs.latest_run_dir(workdir / "runs", "tiny") == second


def final_state(run_dir: Path) -> dict:
    return torch.load(run_dir / runs.CHECKPOINT, weights_only=True)


def interrupt_at(step: int) -> types.ModuleType:
    """A plugin that presses Ctrl-C (SIGINT to this process) after logging `step`."""
    module = types.ModuleType("interrupter")

    @wb.hookimpl
    def on_log(run, step: int, metrics):
        if step == interrupt_step:
            os.kill(os.getpid(), signal.SIGINT)

    interrupt_step = step
    module.on_log = on_log
    return module


# tiny_streamed: 36 training images in 3 batches an epoch, so step 10 stops in mid-epoch.
@pytest.mark.parametrize("name", ["tiny", "tiny_dropout", "tiny_unet", "tiny_unet_bf16", "tiny_streamed", "tiny_cond"])
def test_resume_after_ctrl_c_ends_bit_for_bit_where_an_uninterrupted_run_ends(workdir, monkeypatch, name):
    exp = load_experiment(name)
    straight = final_state(train(exp, evaluate_at_end=False).dir)

    with_interrupter = load_experiment(name, registry=with_plugin(monkeypatch, "interrupter", interrupt_at(10)))
    with pytest.raises(Interrupted, match="interrupted at step 10.*") as excinfo:
        train(with_interrupter, evaluate_at_end=False)
    assert f"wb run {name} --resume" in excinfo.value.hint
    run_dir = runs.latest_run_dir(workdir / "runs", name)
    assert final_state(run_dir)["step"] == 10
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "interrupted"

    monkeypatch.setattr(registry_module, "_default", None)
    train(load_experiment(name, file=run_dir / runs.EXPERIMENT), resume_dir=run_dir, evaluate_at_end=False)
    resumed = final_state(run_dir)
    assert resumed["step"] == straight["step"] == 20
    for part in ("model", "ema"):
        for key, value in straight[part].items():
            assert torch.equal(value, resumed[part][key]), f"{part}.{key} differs"
    assert torch.equal(straight["generator"], resumed["generator"])
    assert [r["step"] for r in runs.read_metrics(run_dir)] == [5, 10, 15, 20]


def test_adamw_is_fused_where_torch_has_the_kernel_and_computes_the_same_update():
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 4).double()  # float64: the two kernels' ~10 roundings a step stay ~1e-15
    fused = adamw(model.parameters(), lr=1e-2, weight_decay=0.1)
    twin = copy.deepcopy(model)
    plain = torch.optim.AdamW(twin.parameters(), lr=1e-2, weight_decay=0.1, foreach=False)
    assert fused.defaults["fused"] is True  # torch >= 2.4 has the CPU kernel; this project pins 2.13
    x = torch.randn(16, 8, dtype=torch.float64)
    for _ in range(3):
        for net, optimizer in ((model, fused), (twin, plain)):
            optimizer.zero_grad()
            net(x).square().mean().backward()
            optimizer.step()
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
DEVICES = ["cpu", pytest.param("cuda", marks=needs_cuda)]


@pytest.mark.parametrize("device", DEVICES)
def test_bf16_autocasts_the_network_where_the_device_has_fast_bf16(workdir, device):
    device = torch.device(device)
    trainer, train_data, _ = prepare(load_experiment("tiny_unet_bf16"), device)
    dtypes = []
    trainer.model.register_forward_hook(lambda module, args, output: dtypes.append(output.dtype))
    loss, _ = trainer.step(trainer.batches(train_data))
    assert torch.isfinite(loss)
    assert dtypes == [torch.bfloat16 if fast_bf16(device) else torch.float32]
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())  # autocast keeps fp32 weights
    if device.type == "cuda":  # every GPU PyTorch supports since Ampere has bf16; channels_last suits its tensor cores
        assert fast_bf16(device)
        convolutions = [p for p in trainer.model.parameters() if p.ndim == 4]
        assert all(p.is_contiguous(memory_format=torch.channels_last) for p in convolutions)


def test_train_compile_trains_through_the_compiled_network(workdir, monkeypatch):
    """The wiring on the CPU (compiling itself takes tens of seconds): train.compile wraps the network
    (outside DDP, PyTorch's recommended order) and every training forward goes through the wrapper."""
    calls = []

    def fake_compile(module):
        def compiled(*args, **kwargs):
            calls.append(module)
            return module(*args, **kwargs)
        return compiled

    monkeypatch.setattr(torch, "compile", fake_compile)
    trainer, train_data, _ = prepare(load_experiment("tiny", overrides=["train.compile=true"]), torch.device("cpu"))
    trainer.step(trainer.batches(train_data))
    assert calls == [trainer.model]


@needs_cuda
def test_torch_compile_on_cuda_trains_as_eager_does(workdir):
    def weights_after_3_steps(compile: bool) -> dict[str, torch.Tensor]:
        exp = load_experiment("tiny_unet", overrides=[f"train.compile={str(compile).lower()}"])
        trainer, train_data, _ = prepare(exp, torch.device("cuda"))
        source = trainer.batches(train_data)
        for _ in range(3):
            trainer.step(source)
        return trainer.model.state_dict()

    compiled, eager = weights_after_3_steps(True), weights_after_3_steps(False)
    for key, value in eager.items():
        torch.testing.assert_close(compiled[key], value, rtol=1e-3, atol=1e-4)


@needs_cuda
@pytest.mark.parametrize("name", ["tiny_unet", "tiny_unet_bf16"])
def test_a_cuda_run_checkpoints_for_any_machine_and_resumes_where_it_stopped(workdir, monkeypatch, name):
    """`--device cuda`: Ctrl-C and --resume end where the uninterrupted run ends (the same t and noise
    from the CUDA generator; the weights within float tolerance, since cuDNN's kernels may sum in
    another order), and the checkpoint loads on a machine without a GPU."""
    exp = load_experiment(name)
    straight_run = train(exp, device="cuda", evaluate_at_end=False)
    straight = final_state(straight_run.dir)
    assert json.loads((straight_run.dir / "summary.json").read_text())["device"].startswith("cuda")
    assert all(value.device.type == "cpu" for value in runs.load_checkpoint(straight_run.dir / runs.CHECKPOINT)["model"].values())

    with_interrupter = load_experiment(name, registry=with_plugin(monkeypatch, "interrupter", interrupt_at(10)))
    with pytest.raises(Interrupted):
        train(with_interrupter, device="cuda", evaluate_at_end=False)
    monkeypatch.setattr(registry_module, "_default", None)
    run_dir = runs.latest_run_dir(workdir / "runs", name)
    train(load_experiment(name, file=run_dir / runs.EXPERIMENT), device="cuda", resume_dir=run_dir, evaluate_at_end=False)
    resumed = final_state(run_dir)
    assert resumed["step"] == straight["step"] == 20
    assert torch.equal(resumed["generator"], straight["generator"])
    tolerance = {"rtol": 2e-2, "atol": 2e-3} if name.endswith("bf16") else {"rtol": 1e-3, "atol": 1e-4}
    for key, value in straight["model"].items():
        torch.testing.assert_close(resumed["model"][key], value, **tolerance)


def test_resume_through_the_cli_uses_the_stored_experiment(workdir, monkeypatch):
    with_plugin(monkeypatch, "interrupter", interrupt_at(5))
    result = CliRunner().invoke(make_app(), ["run", "tiny"])
    assert result.exit_code == 130 and "wb run tiny --resume" in result.output
    assert "interrupted: " in result.output and "error:" not in result.output  # the user chose it: said plainly
    monkeypatch.setattr(registry_module, "_default", None)
    (workdir / "experiments.toml").write_text(TINY.replace("steps = 20", "steps = 999"))  # ignored by --resume
    result = CliRunner().invoke(make_app(), ["run", "tiny", "--resume", "--set", "eval.metrics=[]"])
    assert result.exit_code == 0, result.output
    assert final_state(runs.latest_run_dir(workdir / "runs", "tiny"))["step"] == 20


def test_ctrl_c_on_the_real_cli_leaves_a_loadable_checkpoint(workdir):
    (workdir / "experiments.toml").write_text(TINY.replace("steps = 20", "steps = 1000000"))
    process = subprocess.Popen(
        [sys.executable, "-m", "workbench", "run", "tiny"], cwd=workdir, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    for line in process.stdout:  # wait until training has started
        if "parameters" in line:
            break
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "wb run tiny --resume" in err and "Traceback" not in err
    state = final_state(runs.latest_run_dir(workdir / "runs", "tiny"))
    assert 0 <= state["step"] < 1000000 and "ema" in state


class ExplodingLoss(wb.Loss):
    """L_simple that turns NaN from a chosen step on (to test the engine's guard)."""

    name = "exploding"
    after: int = 7
    _calls: int = PrivateAttr(0)

    def terms(self, model, diffusion, x0, t, noise, weights=None):
        from workbench.plugins.losses import MSE

        loss = MSE().terms(model, diffusion, x0, t, noise, weights).loss
        self._calls += 1
        return wb.LossTerms(loss * float("nan") if self._calls > self.after else loss)


@pytest.mark.parametrize("name", ["tiny", "tiny_cond"])
def test_a_nan_loss_stops_cleanly_keeping_the_last_good_checkpoint(workdir, monkeypatch, name):
    module = types.ModuleType("nan_plugin")
    module.register_losses = wb.hookimpl(lambda register: register(ExplodingLoss))
    module.register_losses.__name__ = "register_losses"
    with_plugin(monkeypatch, "nan_plugin", module)
    exp = load_experiment(name, overrides=["loss.name=exploding", "train.log_every=1"])
    with pytest.raises(NonFiniteLoss, match="the loss became nan at step 8") as excinfo:
        train(exp)
    assert "last good checkpoint (step 5)" in excinfo.value.hint
    run_dir = runs.latest_run_dir(workdir / "runs", name)
    state = final_state(run_dir)
    assert state["step"] == 5 and all(torch.isfinite(v).all() for v in state["model"].values())
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "failed"


def test_a_missing_dataset_path_is_a_clear_error_and_makes_no_run_directory(workdir):
    (workdir / "experiments.toml").write_text(TINY + '\n[mine]\nextends = "tiny"\ndataset = { name = "folder", path = "no/such/dir", size = 8 }\nbackbone = { name = "unet", channels = 8, channel_mult = [1], groups = 4 }\n')
    result = CliRunner().invoke(make_app(), ["run", "mine"])
    assert result.exit_code != 0 and "no/such/dir" in result.output and "Traceback" not in result.output
    assert not (workdir / "runs" / "mine").exists() or not any((workdir / "runs" / "mine").iterdir())


def test_the_python_api_trains_opens_and_samples(workdir):
    exp = wb.load_experiment("tiny", file="experiments.toml", overrides=["train.steps=3", "eval.metrics=[]"])
    run = wb.train(exp)
    opened = wb.open_run(run.dir)
    assert opened.status == "done" and opened.experiment.to_dict() == exp.to_dict()
    x = opened.sample(16, sampler="ddim", steps=5, seed=3)
    assert x.shape == (16, 2) and torch.isfinite(x).all()
    assert torch.equal(x, opened.sample(16, sampler="ddim", steps=5, seed=3))


# --- conditional runs -----------------------------------------------------------------------


def test_a_conditional_run_trains_on_labels_with_dropout_and_samples_each_class(workdir):
    exp = wb.load_experiment("tiny_cond", file="experiments.toml", overrides=["train.steps=3", "eval.metrics=[]"])
    run = wb.train(exp)
    opened = wb.open_run(run.dir)
    model = opened.pipeline().model
    assert model.label_embed.num_embeddings == 9  # 8 classes and "no label"
    # The guidance scale is the run's: another sampler keeps it unless told otherwise.
    assert opened.pipeline().sampler("ddpm").guidance == 2.0
    assert opened.pipeline().sampler("ddpm", {"guidance": 1.5}).guidance == 1.5
    x = opened.sample(16, labels=3, guidance=1.0, sampler="ddim", steps=5)
    assert x.shape == (16, 2) and torch.isfinite(x).all()
    by_name = opened.sample(16, labels="northwest", guidance=1.0, sampler="ddim", steps=5)
    assert torch.equal(x, by_name)
    unclipped = dict(labels=3, sampler="ddim", steps=5, clip_denoised=False)
    assert not torch.equal(opened.sample(16, guidance=1.0, **unclipped), opened.sample(16, guidance=3.0, **unclipped))
    for bad, message in ((8, "class 8 is out of range"), ("up", "has no class 'up'")):
        with pytest.raises(wb.ConfigError, match=message):
            opened.sample(4, labels=bad)
    assert (run.dir / "samples.png").exists()


def test_label_dropout_draws_from_the_training_stream_after_t_and_noise(workdir):
    """One coin per example of the global batch, from the training generator after t and noise (so the
    process count does not change them); an unconditional run's draws are the same as before conditioning."""
    exp = wb.load_experiment("tiny_cond", file="experiments.toml")
    trainer, train_data, _ = prepare(exp, torch.device("cpu"))
    g = torch.Generator().set_state(trainer.generator.get_state())
    x0, y = next(trainer.batches(train_data))
    index = torch.randint(len(train_data), (64,), generator=g)
    assert y.dtype == torch.long and len(y) == len(x0) == 64 and torch.equal(y, trainer.pipeline.train_labels[index])
    trainer.timesteps.sample(64, torch.device("cpu"), trainer.generator)
    torch.randn((64, 2), generator=trainer.generator)
    trainer.timesteps.sample(64, torch.device("cpu"), g)
    torch.randn((64, 2), generator=g)
    drop = torch.rand(64, generator=g) < 0.2
    assert torch.equal(trainer.drop_labels(y, 64), torch.where(drop, 8, y))
    assert 0 < int(drop.sum()) < 64

    plain, data, _ = prepare(wb.load_experiment("tiny", file="experiments.toml"), torch.device("cpu"))
    assert isinstance(next(plain.batches(data)), torch.Tensor)  # no labels, no extra draws
