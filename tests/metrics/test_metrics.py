"""nasprune.metrics against hand-computed values, scikit-learn and torch-pruning."""

from __future__ import annotations

import json
import math
import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import nasprune
from nasprune import metrics as M
from nasprune.errors import NaspruneError
from nasprune.pruning.masks import set_mask

# --------------------------------------------------------------------------- MACs / params


def test_simplecnn_macs_and_params_by_hand():
    model = nasprune.create_model("simplecnn", num_classes=10, in_channels=3)
    x = torch.randn(1, 3, 32, 32)
    # conv 3→32, 3×3, pad 1: output 32×32×32, each output sums 3·3·3 products.
    conv1 = 32 * 32 * 32 * (3 * 3 * 3)  # 884,736
    # conv 32→64, 3×3, pad 1: output 64×32×32, each output sums 32·3·3 products.
    conv2 = 64 * 32 * 32 * (32 * 3 * 3)  # 18,874,368
    fc1 = 2304 * 128  # 64·6·6 = 2304 inputs → 128
    fc2 = 128 * 10
    assert M.layer_macs(model, x) == {
        "features.0": conv1, "features.3": conv2, "classifier.1": fc1, "classifier.3": fc2}
    macs = conv1 + conv2 + fc1 + fc2
    assert macs == 20_055_296
    assert M.count_macs(model, x) == macs
    assert M.count_flops(model, x) == 2 * macs
    # conv weights + bias, BN gamma/beta, linear weights + bias.
    params = (3 * 32 * 9 + 32) + 2 * 32 + (32 * 64 * 9 + 64) + 2 * 64 \
        + (2304 * 128 + 128) + (128 * 10 + 10)
    assert params == 315_914
    assert M.count_params(model) == params


class SmallNet(nn.Module):
    """Strided conv, non-square kernel, flatten, two linears."""

    def __init__(self, bias: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, stride=2, padding=1, bias=bias)  # 9×9 → 5×5
        self.conv2 = nn.Conv2d(4, 6, (1, 3), bias=bias)  # 5×5 → 5×3
        self.fc1 = nn.Linear(6 * 5 * 3, 7, bias=bias)
        self.fc2 = nn.Linear(7, 3, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.fc1(self.conv2(self.conv1(x)).flatten(1)))


def test_small_net_by_hand():
    net = SmallNet()
    x = torch.randn(1, 1, 9, 9)
    expected = {
        "conv1": 4 * 5 * 5 * (1 * 3 * 3),  # 900
        "conv2": 6 * 5 * 3 * (4 * 1 * 3),  # 1,080
        "fc1": 90 * 7,  # 630
        "fc2": 7 * 3,  # 21
    }
    assert M.layer_macs(net, x) == expected
    assert M.count_macs(net, x) == 2631
    assert M.count_params(net) == (36 + 4) + (72 + 6) + (630 + 7) + (21 + 3)


def test_batch_larger_than_one_counts_one_sample():
    net = SmallNet()
    assert M.count_macs(net, torch.randn(8, 1, 9, 9)) == 2631


def test_conv1d_conv3d_and_transposed_by_hand():
    c1 = nn.Conv1d(2, 5, 3)  # length 10 → 8
    assert M.count_macs(c1, torch.randn(1, 2, 10)) == 5 * 8 * (2 * 3)
    c3 = nn.Conv3d(2, 3, (2, 3, 3))  # 4×5×5 → 3×3×3
    assert M.count_macs(c3, torch.randn(1, 2, 4, 5, 5)) == 3 * 27 * (2 * 2 * 3 * 3)
    # Transposed: each of the 2·4·4 input values is spread over (6 / 2)·3·3 weights.
    ct = nn.ConvTranspose2d(2, 6, 3, stride=2, groups=2)
    assert M.count_macs(ct, torch.randn(1, 2, 4, 4)) == 2 * 4 * 4 * 3 * 9


def test_depthwise_and_grouped_conv_by_hand():
    dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)  # 6×6 → 6×6, one input channel per output
    assert M.count_macs(dw, torch.randn(1, 8, 6, 6)) == 8 * 36 * (1 * 9)  # 2,592
    grouped = nn.Conv2d(8, 12, 3, padding=1, groups=4)  # 2 input channels per output
    assert M.count_macs(grouped, torch.randn(1, 8, 6, 6)) == 12 * 36 * (2 * 9)  # 7,776
    dilated = nn.Conv2d(4, 4, 3, dilation=2, stride=2, groups=2)  # 11×11 → 4×4
    assert M.count_macs(dilated, torch.randn(1, 4, 11, 11)) == 4 * 16 * (2 * 9)


def test_linear_leading_dims_multiply():
    fc = nn.Linear(6, 5)
    # Batch 1, then 3×4 positions, each a 6→5 product.
    assert M.count_macs(fc, torch.randn(1, 3, 4, 6)) == 12 * 6 * 5


class Attn(nn.Module):
    def __init__(self, **kw) -> None:
        super().__init__()
        self.mha = nn.MultiheadAttention(16, 4, **kw)

    def forward(self, q, k, v):
        return self.mha(q, k, v)[0]


def test_multihead_attention_by_hand():
    e, lq, lk = 16, 5, 7
    model = Attn(batch_first=True)
    q, kv = torch.randn(1, lq, e), torch.randn(1, lk, e)
    proj_q, proj_k, proj_v = lq * e * e, lk * e * e, lk * e * e  # 1280, 1792, 1792
    qk = lq * lk * e  # 4 heads × (5×4)(4×7) = 5·7·16 = 560
    av = lq * lk * e  # 4 heads × (5×7)(7×4)
    out_proj = lq * e * e
    expected = proj_q + proj_k + proj_v + qk + av + out_proj
    assert expected == 7264
    assert M.count_macs(model, (q, kv, kv)) == expected
    # Sequence-first layout: dim 0 is no batch, so no slicing; a batch of 3 costs 3×.
    seq_first = Attn(batch_first=False)
    inputs = (torch.randn(lq, 3, e), torch.randn(lk, 3, e), torch.randn(lk, 3, e))
    assert M.count_macs(seq_first, inputs, slice_batch=False) == 3 * expected
    assert M.count_macs(seq_first, tuple(t[:, :1] for t in inputs), slice_batch=False) \
        == expected
    # Separate key/value widths: the k and v projections read kdim=8 and vdim=12 inputs.
    model = Attn(batch_first=True, kdim=8, vdim=12)
    got = M.count_macs(model, (q, torch.randn(1, lk, 8), torch.randn(1, lk, 12)))
    assert got == proj_q + lk * 8 * e + lk * 12 * e + qk + av + out_proj


def test_multihead_attention_keyword_arguments():
    mha = nn.MultiheadAttention(8, 2, batch_first=True)
    x = torch.randn(1, 3, 8)
    expected = 3 * (3 * 8 * 8) + 2 * (3 * 3 * 8) + 3 * 8 * 8
    assert M.count_macs(mha, {"query": x, "key": x, "value": x}) == expected


def test_transformer_layer_fast_path_still_counted():
    # In eval mode PyTorch may run the whole encoder layer as one fused op; we must still
    # see the attention and both feed-forward linears.
    layer = nn.TransformerEncoderLayer(16, 4, dim_feedforward=32, batch_first=True)
    n = 5
    mha = 3 * n * 16 * 16 + 2 * n * n * 16 + n * 16 * 16
    ff = n * 16 * 32 + n * 32 * 16
    assert M.count_macs(layer, torch.randn(1, n, 16)) == mha + ff


@pytest.mark.parametrize("factory", [
    lambda: SmallNet(bias=False),
    lambda: nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.Conv2d(8, 8, 3, groups=4, bias=False),
                          nn.Conv2d(8, 8, 3, groups=8, padding=1, bias=False),
                          nn.Flatten(), nn.Linear(8 * 5 * 5, 10, bias=False)),
])
def test_agrees_with_torch_pruning_on_bias_free_conv_linear(factory):
    import torch_pruning as tp  # cross-check only; torch-pruning also counts biases and BN

    model = factory()
    x = torch.randn(1, 1, 9, 9) if isinstance(model, SmallNet) else torch.randn(1, 3, 9, 9)
    tp_macs, tp_params = tp.utils.count_ops_and_params(model, x)
    assert M.count_macs(model, x) == int(tp_macs)
    assert M.count_params(model) == tp_params


@pytest.mark.skipif("resnet20" not in nasprune.list_models(), reason="resnet20 not in the zoo")
def test_resnet20_macs_and_params():
    model = nasprune.create_model("resnet20")
    x = torch.randn(1, 3, 32, 32)
    per_layer = M.layer_macs(model, x)
    shortcut = {n: v for n, v in per_layer.items() if "shortcut" in n}
    main = sum(v for n, v in per_layer.items() if "shortcut" not in n)
    # 3×3 path: stem 3→16 at 32×32; stage 1: six 16→16 at 32×32; stage 2: 16→32 stride 2
    # then five 32→32 at 16×16; stage 3: 32→64 stride 2 then five 64→64 at 8×8; fc 64→10.
    by_hand = (16 * 3 * 9 * 1024 + 6 * 16 * 16 * 9 * 1024
               + 32 * 16 * 9 * 256 + 5 * 32 * 32 * 9 * 256
               + 64 * 32 * 9 * 64 + 5 * 64 * 64 * 9 * 64 + 64 * 10)
    assert by_hand == 40_551_040
    assert main == by_hand
    # Option-B projections, if the zoo uses them: 1×1 16→32 at 16×16 and 32→64 at 8×8.
    assert all(v in (32 * 16 * 256, 64 * 32 * 64) for v in shortcut.values())
    total = M.count_macs(model, x)
    assert total == by_hand + sum(shortcut.values())
    assert abs(total - 40.55e6) / 40.55e6 < 0.015
    params = M.count_params(model)
    assert abs(params - 0.27e6) / 0.27e6 < 0.02


# ---------------------------------------------------------------------------- sparse MACs


def test_sparse_macs_scales_each_layer_by_density():
    net = SmallNet()
    x = torch.randn(1, 1, 9, 9)
    assert M.sparse_macs(net, x) == M.count_macs(net, x)
    with torch.no_grad():
        net.conv1.weight.view(-1)[:18] = 0  # 18 of 36 weights → half the conv1 MACs
        net.fc1.weight.view(-1)[:630 * 9 // 10] = 0  # 10 % of fc1 left
    assert M.sparse_macs(net, x) == 900 // 2 + 1080 + 63 + 21
    assert M.count_macs(net, x) == 2631  # the dense count ignores zeros


def test_sparse_macs_attention_keeps_activation_matmuls():
    mha = nn.MultiheadAttention(8, 2, batch_first=True)
    x = torch.randn(1, 3, 8)
    with torch.no_grad():
        mha.in_proj_weight[8:16] = 0  # the whole key projection
    dense = M.count_macs(mha, (x, x, x))
    assert M.sparse_macs(mha, (x, x, x)) == dense - 3 * 8 * 8


def test_counting_leaves_model_untouched():
    model = nasprune.create_model("simplecnn")
    model.train()
    model.features[1].eval()  # a deliberately frozen BN must stay frozen
    before = {k: v.clone() for k, v in model.state_dict().items()}
    M.count_macs(model, torch.randn(4, 3, 32, 32))
    M.sparse_macs(model, torch.randn(1, 3, 32, 32))
    assert model.training and not model.features[1].training and model.features[4].training
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN stats not updated
    assert all(not m._forward_hooks for m in model.modules())


# ---------------------------------------------------------------------- classification


def test_accuracy_on_crafted_logits():
    logits = torch.tensor([
        [9.0, 1, 2, 3, 4, 5, 6],  # label 0: top-1 hit
        [1.0, 9, 8, 7, 6, 5, 0],  # label 5: rank 5 → top-5 hit, top-1 miss
        [1.0, 9, 8, 7, 6, 5, 0],  # label 6: rank 7 → miss both
        [0.0, 1, 2, 3, 4, 5, 6],  # label 6: top-1 hit
    ])
    targets = torch.tensor([0, 5, 6, 6])
    acc = M.accuracy(logits, targets, topk=(1, 2, 5))
    assert acc == {1: 0.5, 2: 0.5, 5: 0.75}
    # With fewer classes than k every label is inside the top k.
    assert M.accuracy(logits[:, :3], torch.tensor([0, 1, 2, 0]), topk=(5,)) == {5: 1.0}
    with pytest.raises(NaspruneError):
        M.accuracy(logits, targets[:3])


def test_precision_recall_f1_match_sklearn():
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    g = torch.Generator().manual_seed(1)
    targets = torch.randint(0, 6, (500,), generator=g)
    preds = torch.randint(0, 6, (500,), generator=g)
    preds[preds == 4] = 5  # a class that is never predicted
    rep = M.classification_report(preds, targets, num_classes=7)  # class 6 never occurs
    p, r, f, _ = precision_recall_fscore_support(
        targets.numpy(), preds.numpy(), average="macro", zero_division=0)
    assert rep["precision"] == pytest.approx(p, abs=1e-12)
    assert rep["recall"] == pytest.approx(r, abs=1e-12)
    assert rep["f1"] == pytest.approx(f, abs=1e-12)
    cm = confusion_matrix(targets.numpy(), preds.numpy(), labels=list(range(7)))
    assert rep["confusion"] == cm.tolist()
    assert sum(map(sum, rep["confusion"])) == 500
    assert [sum(row) for row in rep["confusion"]] == torch.bincount(targets, minlength=7).tolist()
    pc, rc, fc, sc = precision_recall_fscore_support(
        targets.numpy(), preds.numpy(), labels=list(range(7)), zero_division=0)
    assert rep["per_class"]["precision"] == pytest.approx(pc.tolist())
    assert rep["per_class"]["f1"] == pytest.approx(fc.tolist())
    assert rep["per_class"]["support"] == sc.tolist()
    # Logits are accepted and reduced by argmax.
    onehot = F.one_hot(preds, 7).float()
    assert M.classification_report(onehot, targets, 7)["f1"] == rep["f1"]


def test_confusion_rejects_out_of_range_labels():
    with pytest.raises(NaspruneError, match="0..2"):
        M.classification_report(torch.tensor([0, 3]), torch.tensor([0, 1]), num_classes=3)


# ------------------------------------------------------------------------------- size


def test_dense_size_counts_params_and_buffers():
    fc = nn.Linear(10, 5)
    assert M.model_size_bytes(fc) == (50 + 5) * 4
    assert M.model_size_mb(fc) == (50 + 5) * 4 / 2**20
    bn = nn.BatchNorm2d(3)
    # weight, bias, running mean, running var in fp32 + num_batches_tracked as int64.
    assert M.model_size_bytes(bn) == 4 * 3 * 4 + 8
    # A half-precision copy still reports its fp32 size; masks are not part of the model.
    assert M.model_size_bytes(nn.Linear(10, 5).half()) == 220
    masked = nn.Linear(10, 5)
    set_mask(masked, torch.ones(5, 10, dtype=torch.bool))
    assert M.model_size_bytes(masked) == 220
    # A weight tied in two places is stored once.
    shared = nn.Sequential(fc, fc)
    assert M.model_size_bytes(shared) == 220


def test_csr_size_of_hand_pruned_weight():
    fc = nn.Linear(6, 4)
    with torch.no_grad():
        fc.weight.zero_()
        fc.weight[0, 1] = 1.0
        fc.weight[0, 5] = 2.0
        fc.weight[2, 0] = 3.0
        fc.weight[3, 3] = 4.0
        fc.weight[3, 4] = 5.0
    # 5 non-zeros × (4-byte value + 4-byte column index) + (4 rows + 1) × 4-byte pointers,
    # and the bias stays dense: 4 × 4 bytes.
    assert M.csr_bytes(fc.weight) == 5 * 8 + 5 * 4
    assert M.sparse_size_bytes(fc) == 60 + 16
    assert M.sparse_size_mb(fc) == 76 / 2**20
    assert M.weight_sparsity(fc) == pytest.approx(19 / 24)


def test_ninety_percent_sparse_model_is_smaller():
    model = nasprune.create_model("simplecnn")
    dense = M.model_size_mb(model)
    assert M.sparse_size_mb(model) > dense  # CSR only pays off on sparse weights
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                cut = p.abs().flatten().kthvalue(int(0.9 * p.numel())).values
                p.mul_(p.abs() > cut)
    assert M.weight_sparsity(model) == pytest.approx(0.9, abs=0.01)
    assert M.model_size_mb(model) == dense
    assert M.sparse_size_mb(model) < 0.25 * dense


# ---------------------------------------------------------------------------- latency


def _convnet(width: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 10))


def test_latency_keys_and_order():
    model = _convnet(8).train()
    threads = torch.get_num_threads()
    res = M.measure_latency(model, (3, 16, 16), batch_sizes=(1, 4), warmup=2, repeats=7,
                            num_threads=1)
    assert torch.get_num_threads() == threads  # restored
    assert set(res) == {1, 4}
    for stats in res.values():
        assert {"median_ms", "p90_ms", "mean_ms", "min_ms", "std_ms", "images_per_s",
                "repeats"} <= set(stats)
        assert stats["p90_ms"] >= stats["median_ms"] >= stats["min_ms"] > 0
        assert stats["repeats"] == 7
    assert model.training  # mode restored
    with pytest.raises(NaspruneError):
        M.measure_latency(model, (3, 16, 16), repeats=0)


def test_wider_model_is_slower():
    # 4× the channels is ~16× the MACs of the inner 3×3 conv. One thread, and the fastest
    # run as well as the median, keep this robust when other jobs share the cores.
    narrow, wide = _convnet(8), _convnet(32)
    kw = dict(batch_sizes=(64,), warmup=2, repeats=9, num_threads=1)
    t_narrow = M.measure_latency(narrow, (3, 16, 16), **kw)[64]
    t_wide = M.measure_latency(wide, (3, 16, 16), **kw)[64]
    assert t_wide["min_ms"] > 2 * t_narrow["min_ms"]
    assert t_wide["median_ms"] > t_narrow["median_ms"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_latency_on_cuda_leaves_model_on_cpu():
    model = _convnet(16)
    res = M.measure_latency(model, (3, 16, 16), batch_sizes=(1, 64), device="cuda")
    assert res[64]["p90_ms"] >= res[64]["median_ms"] > 0
    assert next(model.parameters()).device.type == "cpu"


def test_cuda_without_gpu_is_a_user_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(NaspruneError, match="CUDA"):
        M.measure_latency(_convnet(4), (3, 8, 8), device="cuda")


# ------------------------------------------------------------------------------ timer


def test_timer_measures_wall_clock():
    with M.Timer() as t:
        time.sleep(0.05)
        running = t.seconds
    assert 0 < running <= t.seconds
    assert 0.05 <= t.seconds < 1.0
    done = t.seconds
    time.sleep(0.01)
    assert t.seconds == done  # frozen after the block


# --------------------------------------------------------------------------- evaluate


@pytest.fixture(scope="module")
def trained(digits):
    """Softmax regression on the 64 digit pixels: trains to > 90 % in well under a second."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(8):
        for x, y in digits.loader("train", batch_size=128, shuffle=True):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
    return model


def test_evaluate_matches_direct_computation(digits, trained):
    trained.train()
    res = M.evaluate(trained, digits, split="test", batch_size=50)
    assert trained.training  # mode restored
    assert set(res) >= {"top1", "top5", "precision", "recall", "f1", "loss", "n", "confusion"}
    x, y = next(iter(digits.loader("test", batch_size=10_000)))
    with torch.no_grad():
        logits = trained.eval()(x)
    assert res["n"] == len(digits.test) == 359
    assert res["top1"] == pytest.approx((logits.argmax(1) == y).double().mean().item())
    assert res["top1"] > 0.9
    assert res["top5"] >= res["top1"]
    assert res["loss"] == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-5)
    from sklearn.metrics import f1_score

    assert res["f1"] == pytest.approx(
        f1_score(y.numpy(), logits.argmax(1).numpy(), average="macro", zero_division=0))
    assert sum(map(sum, res["confusion"])) == 359
    assert [sum(r) for r in res["confusion"]] == torch.bincount(y, minlength=10).tolist()
    # The batch size changes nothing but speed.
    other = M.evaluate(trained, digits, batch_size=256)
    assert other["top1"] == res["top1"] and other["confusion"] == res["confusion"]
    assert M.evaluate(trained, digits, split="val")["n"] == len(digits.val)


def test_evaluate_user_errors(digits, trained):
    with pytest.raises(NaspruneError, match="split"):
        M.evaluate(trained, digits, split="holdout")
    wrong = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    with pytest.raises(NaspruneError, match="3 classes"):
        M.evaluate(wrong, digits)


def test_summary_and_atomic_json(digits, trained, tmp_path):
    s = M.summarize(trained, digits, latency=True, latency_batch_sizes=(1, 8))
    assert s["macs"] == 640 and s["flops"] == 1280 and s["params"] == 650
    assert s["size_mb"] == 650 * 4 / 2**20
    assert s["top1"] == M.evaluate(trained, digits)["top1"]
    assert set(s["latency"]["batches"]) == {"1", "8"}
    table = M.format_summary(s)
    assert "top-1 accuracy" in table and "FLOPs (2 x MACs)" in table and "0.001 M" in table
    path = M.write_json(s, tmp_path / "sub" / "m.json")
    assert json.loads(path.read_text()) == json.loads(json.dumps(s))
    assert [p.name for p in path.parent.iterdir()] == ["m.json"]  # no temp file left
    with pytest.raises(NaspruneError, match="does not accept"):
        M.summarize(nasprune.create_model("simplecnn"), digits)


def test_flops_doc_says_two_times_macs():
    assert "2 × MACs" in (M.count_flops.__doc__ or "")
    assert math.isclose(M.count_flops(nn.Linear(3, 2), torch.randn(1, 3)), 12)


def test_layer_scope_threshold_pruning_shows_in_sparse_metrics():
    # Real unstructured pruning with masks: 80 % of every conv/linear layer's weights go.
    from nasprune.pruning import threshold

    model = nasprune.create_model("simplecnn")
    x = torch.randn(1, 3, 32, 32)
    dense_macs, dense_mb = M.count_macs(model, x), M.model_size_mb(model)
    threshold(model, sparsity=0.8, scope="layer")
    assert M.count_macs(model, x) == dense_macs
    assert M.weight_sparsity(model) == pytest.approx(0.8, abs=1e-3)
    # Every layer keeps 20 % of its weights, so 20 % of its MACs.
    assert M.sparse_macs(model, x) == pytest.approx(0.2 * dense_macs, rel=1e-3)
    assert M.model_size_mb(model) == dense_mb  # masks are not counted
    nnz = sum(int(p.count_nonzero()) for p in model.parameters() if p.dim() >= 2)
    rows = sum(p.shape[0] + 1 for p in model.parameters() if p.dim() >= 2)
    small = sum(p.numel() for p in model.parameters() if p.dim() < 2) * 4 \
        + sum(b.numel() * (4 if b.is_floating_point() else 8)
              for n, b in model.named_buffers() if not n.endswith("nasprune_mask"))
    assert M.sparse_size_bytes(model) == nnz * 8 + rows * 4 + small
