"""Training: optimizers, schedules, losses, determinism, faults, masks, slimming, KD, CLI."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import nasprune
from nasprune.checkpoint import read_spec
from nasprune.cli import main
from nasprune.config import TrainConfig, load_config
from nasprune.data import Split
from nasprune.errors import NaspruneError
from nasprune.pruning.masks import MASK, set_mask
from nasprune.train import (
    OPTIMIZERS,
    SCHEDULES,
    distillation_loss,
    finetune,
    fit,
    make_optimizer,
    make_schedule,
    recalibrate_bn,
)
from nasprune.train.optim import param_groups

QUICK = dict(progress=False, validate=False, augment=False, batch_size=64)


def _small(seed: int = 0, width: int = 8) -> nn.Module:
    torch.manual_seed(seed)
    return nasprune.create_model("digitscnn", num_classes=10, in_channels=1, width=width)


@torch.no_grad()
def _train_loss(model: nn.Module, digits) -> float:
    x, y = next(iter(digits.loader("train", batch_size=512)))
    model.eval()
    loss = F.cross_entropy(model(x), y).item()
    model.train()
    return loss


@pytest.mark.parametrize("name", OPTIMIZERS.names())
def test_every_optimizer_decreases_loss(digits, name):
    model = _small()
    before = _train_loss(model, digits)
    result = fit(model, digits, epochs=3, optimizer=name, max_steps=40, schedule="constant",
                 **QUICK)
    after = _train_loss(model, digits)
    assert result.steps == 40
    assert after < 0.9 * before, (name, before, after)  # adam's 1e-3 is the slowest: ×0.8


def test_optimizer_names_and_default_lrs():
    assert OPTIMIZERS.names() == sorted(["sgd", "momentum", "nesterov", "adagrad", "rmsprop",
                                         "adam", "adamw", "adadelta"])
    opt = make_optimizer("adam", _small())
    assert opt.param_groups[0]["lr"] == 1e-3
    with pytest.raises(NaspruneError, match="did you mean 'adam'"):
        make_optimizer("adamm", _small())
    with pytest.raises(NaspruneError, match="needs momentum > 0"):
        make_optimizer("nesterov", _small(), momentum=0.0)


def test_weight_decay_skips_bn_and_bias():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(144, 2))
    decay, no_decay = param_groups(model, 5e-4)
    assert decay["weight_decay"] == 5e-4 and no_decay["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(model[0].weight), id(model[3].weight)}
    assert len(no_decay["params"]) == 4  # conv bias, BN γ and β, linear bias


def _lrs(name: str, total: int = 100, lr: float = 0.1) -> list[float]:
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=lr)
    sched = make_schedule(name, opt, total)
    out = []
    for _ in range(total):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_schedule_trajectories():
    assert SCHEDULES.names() == ["constant", "cosine", "onecycle", "step"]
    assert _lrs("constant") == [0.1] * 100
    cos = _lrs("cosine")
    assert cos[0] == pytest.approx(0.1) and cos[-1] < 1e-4
    assert all(a >= b for a, b in zip(cos, cos[1:], strict=False))
    assert cos[50] == pytest.approx(0.05)
    step = _lrs("step")
    assert step[49] == pytest.approx(0.1) and step[50] == pytest.approx(0.01)
    assert step[74] == pytest.approx(0.01) and step[75] == pytest.approx(0.001)
    one = _lrs("onecycle")
    peak = max(range(100), key=one.__getitem__)
    assert 25 <= peak <= 35 and one[peak] == pytest.approx(0.1)
    assert one[0] == pytest.approx(0.1 / 25) and one[-1] < 1e-4


def test_fit_records_per_step_schedule(digits):
    result = fit(_small(), digits, epochs=2, optimizer="sgd", lr=0.05, schedule="cosine",
                 **{**QUICK, "validate": True})
    first, last = result.history
    assert first["lr"] == pytest.approx(0.05 * 0.5 * (1 + math.cos(math.pi * 0.5)), abs=1e-9)
    assert last["lr"] == pytest.approx(0.0, abs=1e-12)
    assert 0.0 <= last["val_acc"] <= 1.0 and result.best_val_acc >= last["val_acc"]
    assert result.train_seconds > 0 and result.images_per_second > 0
    assert result.samples == result.steps * 64


class FixedLogits(nn.Module):
    """Logits that do not depend on the input, so the loss is known in closed form."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = nn.Parameter(logits.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(x.shape[0], -1)


def test_label_smoothing_loss_value(digits):
    # Only classes 0-2 (the least likely under these logits), so smoothing changes the loss.
    keep = digits.train.y < 3
    digits = dataclasses.replace(digits, train=Split(digits.train.x[keep], digits.train.y[keep]))
    logits = torch.linspace(-1.0, 2.0, 10)
    eps = 0.2
    logp = torch.log_softmax(logits, 0)
    y = digits.train.y
    expected = ((1 - eps) * -logp[y] + eps * -logp.mean()).mean().item()
    model = FixedLogits(logits)
    n = len(digits.train)
    result = fit(model, digits, epochs=1, label_smoothing=eps, batch_size=n, lr=1e-9,
                 schedule="constant", progress=False, validate=False)
    assert result.history[0]["loss"] == pytest.approx(expected, rel=1e-5)
    plain = fit(FixedLogits(logits), digits, epochs=1, batch_size=n, lr=1e-9,
                schedule="constant", progress=False, validate=False)
    assert plain.history[0]["loss"] == pytest.approx((-logp[y]).mean().item(), rel=1e-5)
    assert result.history[0]["loss"] < plain.history[0]["loss"] - 0.1


def test_seeded_fits_bitwise_identical(digits):
    a, b, c = _small(), _small(), _small()
    kw = dict(epochs=2, optimizer="adam", max_steps=25, progress=False, validate=False)
    fit(a, digits, seed=3, **kw)
    fit(b, digits, seed=3, **kw)
    fit(c, digits, seed=4, **kw)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


class NanNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.fc(x.flatten(1))
        return out * float("nan") if self.training else out


def test_nan_loss_raises_with_epoch_and_step(digits):
    with pytest.raises(NaspruneError, match="training diverged: loss is nan at epoch 1 step 1"):
        fit(NanNet(), digits, epochs=1, **QUICK)
    with pytest.raises(NaspruneError, match=r"training diverged: loss is (nan|inf) at epoch 1 "
                                            r"step \d+"):
        fit(_small(), digits, epochs=3, lr=1e6, schedule="constant", **QUICK)


def test_masks_stay_zero_after_adam(digits):
    model = _small()
    conv = model.features[3]
    set_mask(conv, torch.rand_like(conv.weight) > 0.5)
    before = conv.weight.detach().clone()
    fit(model, digits, epochs=1, optimizer="adam", max_steps=15, **QUICK)
    mask = conv._buffers[MASK]
    assert torch.all(conv.weight[~mask] == 0)
    assert not torch.equal(conv.weight[mask], before[mask])


def _gamma_l1(model: nn.Module) -> float:
    return sum(m.weight.abs().sum().item() for m in model.modules()
               if isinstance(m, nn.BatchNorm2d))


def test_bn_l1_shrinks_gamma(digits):
    plain, slim = _small(), _small()
    kw = dict(epochs=2, optimizer="sgd", lr=0.05, max_steps=30, schedule="constant", **QUICK)
    fit(plain, digits, **kw)
    fit(slim, digits, bn_l1=0.2, **kw)
    # Each step moves every γ by lr·bn_l1 = 0.01 toward 0: ~0.3 over 30 steps, γ starts at 1.
    assert _gamma_l1(slim) < 0.8 * _gamma_l1(plain)


def test_distillation_loss_value():
    s = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    t = torch.tensor([[1.0, 1.0, 0.0], [0.0, 2.0, 0.0]])
    y = torch.tensor([0, 1])
    T, w = 2.0, 0.7
    p_t = torch.softmax(t / T, 1)
    kl = (p_t * (torch.log(p_t) - torch.log_softmax(s / T, 1))).sum(1).mean() * T * T
    ce = F.cross_entropy(s, y)
    assert distillation_loss(s, t, y, T, w).item() == pytest.approx((w * kl + (1 - w) * ce)
                                                                    .item(), rel=1e-6)
    assert distillation_loss(s, s, y, T, 1.0).item() == pytest.approx(0.0, abs=1e-6)


def test_fit_with_teacher(digits):
    teacher = _small(seed=1, width=16)
    t_state = {k: v.clone() for k, v in teacher.state_dict().items()}
    teacher.train()
    student = _small()
    before = _train_loss(student, digits)
    result = fit(student, digits, epochs=2, optimizer="adam", teacher=teacher, kd_weight=0.5,
                 max_steps=20, **QUICK)
    assert result.steps == 20 and _train_loss(student, digits) < before
    assert all(torch.equal(t_state[k], v) for k, v in teacher.state_dict().items())
    assert teacher.training  # mode restored
    with pytest.raises(NaspruneError, match="teacher outputs shape"):
        fit(_small(), digits, teacher=nasprune.create_model("digitscnn", num_classes=5,
                                                            in_channels=1, width=8),
            max_steps=1, **QUICK)


def test_max_steps_and_callbacks(digits):
    seen = []
    result = fit(_small(), digits, epochs=5, max_steps=30, callbacks=[
        lambda e, m, r: seen.append((e, r["steps"]))], **QUICK)
    steps_per_epoch = len(digits.train) // 64
    assert result.steps == 30 and result.stopped == "max_steps"
    assert seen == [(1, steps_per_epoch), (2, 30)]
    stopped = fit(_small(), digits, epochs=5, callbacks=[lambda e, m, r: e == 2], **QUICK)
    assert stopped.stopped == "callback" and len(stopped.history) == 2


def test_finetune_defaults_to_tenth_lr(digits):
    result = finetune(_small(), digits, epochs=1, schedule="constant", **QUICK)
    assert result.history[0]["lr"] == pytest.approx(0.01)


def test_cpu_bf16_autocast_trains(digits):
    model = _small()
    before = _train_loss(model, digits)
    fit(model, digits, epochs=1, amp="bf16", optimizer="adam", max_steps=20, **QUICK)
    assert _train_loss(model, digits) < before
    assert all(p.dtype == torch.float32 for p in model.parameters())
    with pytest.raises(NaspruneError, match="fp16"):
        fit(_small(), digits, amp="fp16", max_steps=1, **QUICK)


@pytest.mark.parametrize("kwargs, message", [
    ({"epochs": -1}, "epochs must be ≥ 0"),
    ({"lr": -0.1}, "lr must be > 0"),
    ({"lr": float("nan")}, "lr must be a finite number"),
    ({"optimizer": "sgdd"}, "did you mean 'sgd'"),
    ({"schedule": "cos"}, "unknown schedule 'cos'"),
    ({"label_smoothing": 1.0}, "label_smoothing must be < 1"),
    ({"batch_size": 0}, "batch_size must be ≥ 1"),
    ({"device": "tpu"}, "device"),
    ({"device": "cuda:7"}, "cuda"),
    ({"kd_weight": 1.5}, "kd_weight must be ≤ 1"),
])
def test_bad_arguments(digits, kwargs, message):
    if kwargs.get("device") == "cuda:7" and torch.cuda.device_count() > 7:
        pytest.skip("machine has 8 GPUs")
    with pytest.raises(NaspruneError, match=message):
        fit(_small(), digits, **{**QUICK, **kwargs})


def test_wrong_input_shape_is_user_error(digits):
    rgb = nasprune.create_model("digitscnn", num_classes=10, in_channels=3, width=8)
    with pytest.raises(NaspruneError, match="cannot process input of shape"):
        fit(rgb, digits, max_steps=1, **QUICK)


def test_teacher_for_other_input_is_user_error(digits):
    rgb = nasprune.create_model("digitscnn", num_classes=10, in_channels=3, width=8)
    with pytest.raises(NaspruneError, match="the teacher cannot process input of shape"):
        fit(_small(), digits, teacher=rgb, max_steps=1, **QUICK)


def test_recalibrate_bn(digits):
    model = _small()
    bn = model.features[1]
    with torch.no_grad():
        bn.running_mean.fill_(5.0)
    loader = digits.loader("train", batch_size=128)
    recalibrate_bn(model, loader, batches=3)
    assert not model.training and bn.momentum == 0.1
    xs = torch.cat([x for _, (x, _) in zip(range(3), loader, strict=False)])
    with torch.no_grad():
        expected = model.features[0](xs).mean((0, 2, 3))
    assert torch.allclose(bn.running_mean, expected, atol=1e-4)
    assert int(bn.num_batches_tracked) == 3


# ---- CLI -----------------------------------------------------------------------------

def test_cli_train_writes_loadable_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["train", "--model", "digitscnn", "--data", "digits", "--epochs", "1",
               "--batch-size", "32", "--out", str(out), "--quiet"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "test top-1" in printed and "images/s" in printed
    results = json.loads((out / "results.json").read_text())
    model = nasprune.load(out)
    again = nasprune.evaluate(model, nasprune.load_dataset("digits"))
    assert again["top1"] == pytest.approx(results["test"]["top1"])
    assert results["test"]["top1"] > 0.5  # one epoch is far above 10 % chance
    cfg = load_config(TrainConfig, out / "config.yaml")
    assert (cfg.epochs, cfg.batch_size, cfg.optimizer) == (1, 32, "sgd")
    assert read_spec(out)["meta"]["input_shape"] == [1, 8, 8]


def test_cli_train_config_file_and_flag_precedence(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train:\n  epochs: 1\n  optimizer: adamw\n  batch_size: 256\n")
    out = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--batch-size", "128", "--out", str(out),
                 "--quiet"]) == 0
    resolved = json.loads((out / "results.json").read_text())["config"]
    assert (resolved["optimizer"], resolved["batch_size"], resolved["epochs"]) == ("adamw",
                                                                                   128, 1)


def test_cli_train_bundled_config_by_name(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--config", "demo", "--epochs", "1", "--out", str(out),
                 "--quiet"]) == 0
    cfg = load_config(TrainConfig, out / "config.yaml")
    assert (cfg.optimizer, cfg.schedule, cfg.epochs, cfg.out) == ("nesterov", "onecycle", 1,
                                                                  str(out))


@pytest.mark.parametrize("argv, message", [
    (["--model", "resnet21"], "unknown model 'resnet21'"),
    (["--data", "digitz"], "did you mean 'digits'"),
    (["--epochs", "-2"], "train.epochs must be ≥ 0"),
    (["--lr", "nan"], "train.lr must be a finite number"),
    (["--data", "cifar10", "--data-dir", "/nonexistent/cifar"], "does not exist"),
    (["--config", "/nonexistent.yaml"], "config file '/nonexistent.yaml' does not exist"),
])
def test_cli_train_bad_input_exit_2(tmp_path, capsys, argv, message):
    rc = main(["train", *argv, "--out", str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and err.startswith("error: ")
    assert "Traceback" not in err and not (tmp_path / "o").exists()


@pytest.mark.slow
def test_demo_end_to_end(demo_run):
    rc, printed, tmp_path = demo_run  # the one demo run of the suite (conftest)
    assert rc == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["test_accuracy"] >= 0.95
    assert results["rows"][0]["method"] == "unpruned"
    assert "test accuracy" in printed
    model = nasprune.load(tmp_path / "baseline")
    assert nasprune.evaluate(model, nasprune.load_dataset("digits"))["top1"] == pytest.approx(
        results["test_accuracy"])
