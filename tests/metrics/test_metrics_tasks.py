"""Task scores beyond top-1: mIoU (segmentation) and negative perplexity (language),
checked against values computed by hand."""

from __future__ import annotations

import functools
import math

import pytest
import torch
import torch.nn.functional as F

from nasprune.errors import NaspruneError
from nasprune.metrics import miou, negative_perplexity
from nasprune.train.distill import soft_target_loss


def one_hot_logits(pred: list[list[list[int]]], classes: int) -> torch.Tensor:
    """(N, C, H, W) logits whose argmax is ``pred``."""
    return F.one_hot(torch.tensor(pred), classes).permute(0, 3, 1, 2).float()


def test_miou_of_a_2x2_example_by_hand():
    # target [[0, 1], [1, 2]], prediction [[0, 1], [2, 2]]:
    # class 0: I=1, U=1 -> 1; class 1: I=1, U=2 -> 1/2; class 2: I=1, U=2 -> 1/2.
    # Class 3 appears nowhere and is left out: mIoU = (1 + 1/2 + 1/2) / 3 = 2/3.
    target = torch.tensor([[[0, 1], [1, 2]]])
    logits = one_hot_logits([[[0, 1], [2, 2]]], 4)
    assert miou(4)([logits], [(None, target)]) == pytest.approx(2 / 3)


def test_miou_accumulates_over_batches_not_per_image():
    # Image 1: class 1 predicted everywhere on a target with one class-1 pixel (I=1, U=4);
    # image 2: perfect class-1 on all 4 pixels (I=4, U=4). Pooled: class 1 IoU = 5/8,
    # class 0 (only in image 1's target): I=0, U=3 -> 0. mIoU = 5/16 (a per-image mean
    # would give something else).
    t1, t2 = torch.tensor([[[1, 0], [0, 0]]]), torch.ones(1, 2, 2, dtype=torch.long)
    ones = one_hot_logits([[[1, 1], [1, 1]]], 2)
    assert miou(2)([ones, ones], [(None, t1), (None, t2)]) == pytest.approx(5 / 16)


def test_miou_ignore_index_and_errors():
    target = torch.tensor([[[0, 255], [1, 1]]])
    logits = one_hot_logits([[[0, 0], [1, 0]]], 2)
    # Ignoring the 255 pixel: class 0 I=1 U=2, class 1 I=1 U=2 -> 1/2.
    assert miou(2, ignore_index=255)([logits], [(None, target)]) == pytest.approx(0.5)
    with pytest.raises(NaspruneError, match="target classes must lie in 0..1"):
        miou(2)([logits], [(None, target)])
    with pytest.raises(NaspruneError, match=r"outputs of shape \(N, 3, H, W\)"):
        miou(3)([logits], [(None, target)])
    with pytest.raises(NaspruneError, match="num_classes"):
        miou(1)


def test_negative_perplexity_from_logits_and_from_loss_by_hand():
    # Uniform logits over 4 tokens: every token has NLL log 4, perplexity exactly 4.
    logits = torch.zeros(2, 3, 4)
    labels = torch.tensor([[1, 2, 3], [0, -100, -100]])  # padding is skipped
    assert negative_perplexity([logits], [{"labels": labels}]) == pytest.approx(-4.0)
    # Two batches with .loss 1.0 over 3 tokens and 2.0 over 1 token: the mean NLL is
    # (3·1 + 1·2) / 4 = 1.25, weighted by tokens, not (1 + 2) / 2.
    out = [type("Out", (), {"loss": torch.tensor(v)})() for v in (1.0, 2.0)]
    batches = [{"labels": torch.tensor([[5, 6, 7]])}, {"labels": torch.tensor([[5, -100]])}]
    assert negative_perplexity(out, batches) == pytest.approx(-math.exp(1.25))


def test_shifted_perplexity_matches_next_token_cross_entropy():
    torch.manual_seed(0)
    logits, labels = torch.randn(2, 5, 7), torch.randint(0, 7, (2, 5))
    expected = F.cross_entropy(logits[:, :-1].reshape(-1, 7), labels[:, 1:].reshape(-1))
    shifted = functools.partial(negative_perplexity, shift=True)
    assert shifted([logits], [(None, labels)]) == pytest.approx(-math.exp(expected.item()))
    with pytest.raises(NaspruneError, match="no tokens"):
        negative_perplexity([logits], [(None, torch.full((2, 5), -100))])


def test_soft_target_loss_uses_the_class_dimension_of_dense_outputs():
    torch.manual_seed(0)
    s, t = torch.randn(2, 5, 3, 4), torch.randn(2, 5, 3, 4)  # (N, C, H, W)
    # Per pixel: classification over C, the same as flattening pixels into samples.
    flat = soft_target_loss(s.permute(0, 2, 3, 1).reshape(-1, 5),
                            t.permute(0, 2, 3, 1).reshape(-1, 5), 2.0)
    assert soft_target_loss(s, t, 2.0) == pytest.approx(flat.item())
    # Identical logits: zero; classification and token logits keep the last dimension.
    assert soft_target_loss(s, s).item() == pytest.approx(0.0, abs=1e-6)
    c, d = torch.randn(6, 5), torch.randn(6, 5)
    by_hand = F.kl_div(F.log_softmax(c / 4, 1), F.log_softmax(d / 4, 1), reduction="batchmean",
                       log_target=True) * 16
    assert soft_target_loss(c, d).item() == pytest.approx(by_hand.item())
    assert soft_target_loss(c.view(2, 3, 5), d.view(2, 3, 5)).item() == pytest.approx(
        by_hand.item())
