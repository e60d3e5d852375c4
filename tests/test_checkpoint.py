"""save / load / export: round trips (plain, pruned, masked, user models) and hostile files."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import torch
from torch import nn

import nasprune
from arch_models import ARCHITECTURES, build
from nasprune.checkpoint import (
    SPEC_FILE,
    WEIGHTS_FILE,
    WEIGHTS_FILES,
    export,
    load,
    read_spec,
    save,
)
from nasprune.errors import NaspruneError
from nasprune.metrics import count_params
from nasprune.pruning.masks import MASK, apply_masks, set_mask

X8 = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
X16 = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(2))


def _digits(width: int = 32) -> nn.Module:
    torch.manual_seed(0)
    model = nasprune.create_model("digitscnn", num_classes=10, in_channels=1, width=width)
    return _random_bn(model).eval()


@torch.no_grad()
def _random_bn(model: nn.Module) -> nn.Module:
    """Non-trivial BN statistics, so a round trip that lost them would show."""
    g = torch.Generator().manual_seed(3)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model


def _edit_spec(directory: Path, fn) -> None:
    path = directory / SPEC_FILE
    doc = json.loads(path.read_text())
    fn(doc)
    path.write_text(json.dumps(doc))


def _narrow_by_hand(model: nn.Module) -> nn.Module:
    """Physically remove channels without torch-pruning: keep the first half of features.3
    and features.7's outputs (and every layer reading them), copying the kept weights."""
    f = model.features
    keep_a, keep_b = torch.arange(16), torch.arange(40)
    with torch.no_grad():
        conv3 = nn.Conv2d(32, 16, 3, padding=1, bias=False)
        conv3.weight.copy_(f[3].weight[keep_a])
        bn4 = nn.BatchNorm2d(16)
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(bn4, name).copy_(getattr(f[4], name)[keep_a])
        conv7 = nn.Conv2d(16, 40, 3, padding=1, bias=False)
        conv7.weight.copy_(f[7].weight[keep_b][:, keep_a])
        bn8 = nn.BatchNorm2d(40)
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(bn8, name).copy_(getattr(f[8], name)[keep_b])
        conv10 = nn.Conv2d(40, 64, 3, padding=1, bias=False)
        conv10.weight.copy_(f[10].weight[:, keep_b])
    f[3], f[4], f[7], f[8], f[10] = conv3, bn4, conv7, bn8, conv10
    return model.eval()


def test_round_trip_zoo_model_identical(tmp_path):
    model = _digits()
    out = save(model, tmp_path / "ck", meta={"metrics": {"top1": 0.97}})
    assert sorted(os.listdir(out)) == [SPEC_FILE, WEIGHTS_FILE]
    loaded = load(out)
    assert torch.equal(loaded(X8), model(X8))
    assert loaded.nasprune_arch == model.nasprune_arch
    assert read_spec(out)["meta"] == {"metrics": {"top1": 0.97}}
    assert not loaded.training
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_round_trip_resnet_state_exact(tmp_path):
    torch.manual_seed(0)
    model = nasprune.create_model("resnet20", num_classes=10).eval()
    loaded = load(save(model, tmp_path / "r20"))
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_hand_narrowed_model_rebuilds(tmp_path):
    model = _narrow_by_hand(_digits())
    ref = model(X8)
    loaded = load(save(model, tmp_path / "narrow"))
    assert loaded.features[3].out_channels == 16 and loaded.features[7].out_channels == 40
    assert loaded.features[8].num_features == 40 and loaded.features[10].in_channels == 40
    assert torch.equal(loaded(X8), ref)


@pytest.mark.parametrize("name", ["digitscnn", "mobilenetv2"])
def test_structurally_pruned_zoo_model_round_trip(tmp_path, name):
    torch.manual_seed(0)
    in_ch = 1 if name == "digitscnn" else 3
    size = 8 if name == "digitscnn" else 16
    model = _random_bn(nasprune.create_model(name, num_classes=10, in_channels=in_ch)).eval()
    example = torch.randn(1, in_ch, size, size)
    pruned = nasprune.prune(model, example, 0.5).eval()
    assert count_params(pruned) < count_params(model)
    loaded = load(save(pruned, tmp_path / name))
    x = torch.randn(2, in_ch, size, size)
    assert torch.equal(loaded(x), pruned(x))
    assert loaded.nasprune_pruning["method"] == "structured"


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_pruned_user_models_round_trip_with_base(tmp_path, arch):
    """Concat, depthwise, SE, attention, grouped, residual and MLP nets, pruned then saved."""
    model = build(arch)
    example = X16[:1]
    pruned = nasprune.prune(model, example, 0.5).eval()
    d = save(pruned, tmp_path / arch)
    assert read_spec(d)["arch"] is None
    with pytest.raises(NaspruneError, match="base="):
        load(d)
    loaded = load(d, base=build(arch, seed=5))
    assert torch.allclose(loaded(X16), pruned(X16), atol=1e-6)
    assert loaded.state_dict().keys() == pruned.state_dict().keys()


def test_attention_heads_recorded(tmp_path):
    pruned = nasprune.prune(build("attention"), X16[:1], 0.5)
    spec = read_spec(save(pruned, tmp_path / "a"))["spec"]["modules"]["attn"]
    # Whole heads go (nasprune.pruning.mha): the residual width stays, 2 of 4 heads remain.
    assert spec == {"type": "NarrowMultiheadAttention", "embed_dim": 32, "num_heads": 2,
                    "head_dim": 8, "kdim": 32, "vdim": 32}


def test_layer_pruned_model_round_trip(tmp_path):
    torch.manual_seed(0)
    model = _random_bn(nasprune.create_model("resnet20", num_classes=10)).eval()
    x = torch.randn(2, 3, 16, 16)
    slim = nasprune.pruning.remove_blocks(model, x[:1], n=2).eval()
    loaded = load(save(slim, tmp_path / "blocks"))
    assert torch.equal(loaded(x), slim(x))
    removed = slim.nasprune_pruning["removed"]
    assert all(isinstance(loaded.get_submodule(n), nn.Identity) for n in removed)


def test_masks_survive_save_load(tmp_path):
    model = _digits()
    w = model.features[3].weight
    set_mask(model.features[3], w.abs() > w.abs().median())
    loaded = load(save(model, tmp_path / "masked"))
    mask = loaded.features[3]._buffers[MASK]
    assert mask.dtype == torch.bool and torch.equal(mask, model.features[3]._buffers[MASK])
    with torch.no_grad():
        loaded.features[3].weight.add_(1.0)
    apply_masks(loaded)
    assert int((loaded.features[3].weight == 0).sum()) == int((~mask).sum()) > 0


def test_tied_weights_stored_once(tmp_path):
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(10, 8)
            self.out = nn.Linear(8, 10, bias=False)
            self.out.weight = self.emb.weight

        def forward(self, idx):
            return self.out(self.emb(idx))

    model = Tied()
    d = save(model, tmp_path / "tied")
    assert read_spec(d)["aliases"] == {"out.weight": "emb.weight"}
    loaded = load(d, base=Tied())
    idx = torch.tensor([[1, 2, 3]])
    assert torch.equal(loaded(idx), model(idx))
    assert loaded.out.weight is loaded.emb.weight


def test_saved_directory_and_files_get_the_umask_modes(tmp_path):
    """Not mkdtemp's 0700: workers on other hosts and other users can read a checkpoint."""
    umask = os.umask(0o022)
    try:
        out = save(_digits(), tmp_path / "ck")
    finally:
        os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    for name in (SPEC_FILE, WEIGHTS_FILE):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o644


def test_overwrite_keeps_other_files(tmp_path):
    d = tmp_path / "ck"
    save(_digits(), d)
    (d / "notes.txt").write_text("keep me")
    model = _digits(width=16)
    save(model, d)
    assert (d / "notes.txt").read_text() == "keep me"
    assert torch.equal(load(d)(X8), model(X8))
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_overwrite_alternates_weights_files_and_removes_the_old_one(tmp_path):
    d = tmp_path / "ck"
    models = [_digits(width=w) for w in (16, 24, 32)]
    for i, model in enumerate(models):
        save(model, d)
        named = read_spec(d)["weights"]["file"]
        assert named == WEIGHTS_FILES[i % 2]
        assert sorted(os.listdir(d)) == sorted([SPEC_FILE, named])
        assert torch.equal(load(d)(X8), model(X8))


def test_overwrite_interrupted_before_the_spec_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    """The new weights are in place but the spec rename fails: the old save still loads."""
    d = tmp_path / "ck"
    old = _digits(width=16)
    save(old, d)
    real_replace = os.replace

    def spec_fails(src, dst):
        if Path(dst).name == SPEC_FILE:
            raise OSError(5, "Input/output error")
        real_replace(src, dst)

    monkeypatch.setattr("nasprune.checkpoint.os.replace", spec_fails)
    with pytest.raises(NaspruneError, match="Input/output error"):
        save(_digits(width=24), d)
    monkeypatch.undo()
    assert torch.equal(load(d)(X8), old(X8))
    new = _digits(width=32)  # the next save writes over the stray file, drops the old one
    save(new, d)
    assert torch.equal(load(d)(X8), new(X8))
    assert sorted(os.listdir(d)) == [SPEC_FILE, WEIGHTS_FILES[1]]


def test_failed_save_leaves_nothing(tmp_path, monkeypatch):
    def boom(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("nasprune.checkpoint.os.fsync", boom)
    with pytest.raises(NaspruneError, match="No space left"):
        save(_digits(), tmp_path / "ck")
    assert list(tmp_path.iterdir()) == []


# ---- hostile and broken checkpoints ------------------------------------------------------

@pytest.fixture
def saved(tmp_path) -> Path:
    return save(_digits(), tmp_path / "ck")


def test_tampered_weights_rejected(saved):
    path = saved / WEIGHTS_FILE
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(NaspruneError, match="sha256"):
        load(saved)


def test_truncated_weights_rejected(saved):
    path = saved / WEIGHTS_FILE
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(NaspruneError, match="truncated"):
        load(saved)


def test_garbage_weights_with_matching_hash_rejected(saved):
    """A consistent-looking spec cannot make safetensors parse garbage."""
    import hashlib

    blob = b"\xff" * 64
    (saved / WEIGHTS_FILE).write_bytes(blob)

    def fix(doc):
        doc["weights"].update(sha256=hashlib.sha256(blob).hexdigest(), bytes=len(blob))

    _edit_spec(saved, fix)
    with pytest.raises(NaspruneError, match="not a valid safetensors"):
        load(saved)


@pytest.mark.parametrize("evil", ["os.system", "torch.nn.modules.conv.Conv2d",
                                  "builtins.eval", "Conv2d; import os", "Sequential"])
def test_spec_naming_python_paths_rejected(saved, evil):
    def poison(doc):
        doc["spec"]["modules"]["features.0"]["type"] = evil

    _edit_spec(saved, poison)
    with pytest.raises(NaspruneError, match="not an allowed layer type"):
        load(saved)


def test_spec_with_bad_field_values_rejected(saved):
    def poison(doc):
        doc["spec"]["modules"]["features.0"]["out_channels"] = "__import__('os')"

    _edit_spec(saved, poison)
    with pytest.raises(NaspruneError, match="out_channels must be a positive integer"):
        load(saved)


def test_spec_shapes_not_matching_weights_rejected(saved):
    def poison(doc):
        doc["spec"]["modules"]["features.3"]["out_channels"] = 8

    _edit_spec(saved, poison)
    with pytest.raises(NaspruneError, match="features.3"):
        load(saved)


def test_absurd_widths_fail_without_allocating(saved):
    """Rebuilding happens on the meta device first: 10⁹ channels would need ~36 GB."""
    def poison(doc):
        doc["spec"]["modules"]["features.0"]["out_channels"] = 10**9
        doc["arch"]["kwargs"]["width"] = 10**6

    _edit_spec(saved, poison)
    with pytest.raises(NaspruneError, match="features.0.weight"):
        load(saved)


def test_huge_family_kwargs_are_overridden_by_spec(saved):
    """The widths come from the spec; the family's own kwargs only give the structure."""
    _edit_spec(saved, lambda doc: doc["arch"]["kwargs"].update(width=10**6))
    assert torch.equal(load(saved)(X8), _digits()(X8))


def test_bf16_model_round_trip(tmp_path):
    model = _digits().to(torch.bfloat16)
    loaded = load(save(model, tmp_path / "bf16"))
    assert all(p.dtype == torch.bfloat16 for p in loaded.parameters())
    assert torch.equal(loaded(X8.bfloat16()), model(X8.bfloat16()))


def test_weights_file_path_cannot_escape(saved):
    def poison(doc):
        doc["weights"]["file"] = "../../etc/passwd"

    _edit_spec(saved, poison)
    with pytest.raises(NaspruneError, match="weights"):
        load(saved)


def test_unknown_model_family_rejected(saved):
    _edit_spec(saved, lambda doc: doc["arch"].update(name="digitcnn"))
    with pytest.raises(NaspruneError, match="did you mean 'digitscnn'"):
        load(saved)


def test_wrong_model_family_rejected(saved):
    _edit_spec(saved, lambda doc: doc["arch"].update(name="lenet5", kwargs={
        "num_classes": 10, "in_channels": 1}))
    with pytest.raises(NaspruneError, match="different model"):
        load(saved)
    with pytest.raises(NaspruneError, match="different model"):
        load(saved, base=nasprune.create_model("simplecnn", in_channels=1))


def test_bad_arch_kwargs_rejected(saved):
    _edit_spec(saved, lambda doc: doc["arch"]["kwargs"].update(depth="os.system"))
    with pytest.raises(NaspruneError, match="'digitscnn' has no option 'depth'"):
        load(saved)


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "not a nasprune checkpoint"),
    ('{"format": "nasprune-checkpoint", "version": 99}', "version 99"),
])
def test_malformed_spec_rejected(saved, content, message):
    (saved / SPEC_FILE).write_text(content)
    with pytest.raises(NaspruneError, match=message):
        load(saved)


def test_missing_files_rejected(tmp_path, saved):
    with pytest.raises(NaspruneError, match="does not exist"):
        load(tmp_path / "nowhere")
    (saved / WEIGHTS_FILE).unlink()
    with pytest.raises(NaspruneError, match="no weights.safetensors"):
        load(saved)
    (saved / SPEC_FILE).unlink()
    with pytest.raises(NaspruneError, match="spec.json is missing"):
        load(saved)


def test_load_never_unpickles(saved, monkeypatch):
    import pickle

    def forbidden(*a, **k):
        raise AssertionError("unpickling attempted")

    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    assert isinstance(load(saved), nn.Module)


# ---- export ------------------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_export_torchscript_matches(tmp_path):
    model = nasprune.prune(_digits(), X8[:1], 0.5).eval()
    path = export(model, tmp_path / "m.pt", X8[:1], format="torchscript")
    scripted = torch.jit.load(str(path))
    assert torch.allclose(scripted(X8), model(X8), atol=1e-6)


def test_export_onnx_valid(tmp_path):
    onnx = pytest.importorskip("onnx")
    model = nasprune.prune(_digits(), X8[:1], 0.5).eval()
    path = export(model, tmp_path / "m.onnx", X8[:1])
    graph = onnx.load(str(path))
    onnx.checker.check_model(graph)
    conv_weights = [i for i in graph.graph.initializer if len(i.dims) == 4]
    assert sorted(i.dims[0] for i in conv_weights) == sorted(
        m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d))
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_export_bad_format(tmp_path):
    with pytest.raises(NaspruneError, match="unknown export format 'tflite'"):
        export(_digits(), tmp_path / "m", X8[:1], format="tflite")


def test_write_atomic_gives_files_the_usual_permissions(tmp_path) -> None:
    import os
    import stat

    from nasprune.checkpoint import write_atomic

    umask = os.umask(0o022)
    try:
        path = write_atomic(tmp_path / "out.json", "{}")
    finally:
        os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert path.read_text() == "{}"
