"""Tf-FD losses against METHOD.md on small hand-computed tensors, gradient flow included."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from losses import StepOutput
from losses.tffd import (TeacherFreeFD, TfFDConfig, channel_salience, inter_fd, intra_fd, salience_order,
                         warmup_weight)
from losses import tffd_cpu, tffd_fused
from losses.tffd_fused import CpuKernelOps, TorchOps, feature_losses
from engine.errors import ConfigError


def feature(*channels, n=1, h=1, w=2):
    """A 1 x C x h x w feature from per-channel value lists, requiring grad."""
    return torch.tensor(channels, dtype=torch.float32).view(n, len(channels), h, w).clone().requires_grad_(True)


# ---------------------------------------------------------------- intra-layer
# Channels of one 1x4x1x2 feature and their saliences (mean of the L2-normalised map):
#   c0 = [3, 4]  -> [0.6, 0.8]        -> 0.7
#   c1 = [1, 0]  -> [1, 0]            -> 0.5
#   c2 = [1, 1]  -> [0.7071, 0.7071]  -> 0.7071
#   c3 = [-1, 2] -> [-0.4472, 0.8944] -> 0.2236
# Descending: c2, c0 | c1, c3. Pairs: (c2, c1) and (c0, c3).
# MSE = ((1-1)^2 + (1-0)^2 + (3+1)^2 + (4-2)^2) / 4 = (0 + 1 + 16 + 4) / 4 = 5.25
HAND = ([3.0, 4.0], [1.0, 0.0], [1.0, 1.0], [-1.0, 2.0])


def test_salience_is_mean_of_l2_normalised_maps():
    salience = channel_salience(feature(*HAND))
    expected = torch.tensor([0.7, 0.5, math.sqrt(0.5), (-1 + 2) / math.sqrt(5) / 2])
    torch.testing.assert_close(salience, expected)


def test_intra_value_and_both_halves_get_gradient():
    f = feature(*HAND)
    loss = intra_fd(f)
    assert loss.item() == pytest.approx(5.25)
    loss.backward()
    # d/d redundant = 2 (r - s) / 4; d/d salient = -that
    expected = torch.tensor([[2.0, 1.0], [0.0, -0.5], [0.0, 0.5], [-2.0, -1.0]]).view(1, 4, 1, 2)
    torch.testing.assert_close(f.grad, expected)


def test_intra_detach_salient_stops_gradient_into_salient_half():
    f = feature(*HAND)
    intra_fd(f, detach_salient=True).backward()
    expected = torch.tensor([[0.0, 0.0], [0.0, -0.5], [0.0, 0.0], [-2.0, -1.0]]).view(1, 4, 1, 2)
    torch.testing.assert_close(f.grad, expected)


def test_intra_odd_channel_count_leaves_out_least_salient():
    # A fifth, all-zero channel (a dead ReLU map) has salience 0: it is the one left out.
    f = feature(*HAND, [0.0, 0.0])
    loss = intra_fd(f)
    assert loss.item() == pytest.approx(5.25)
    loss.backward()
    assert torch.count_nonzero(f.grad[0, 4]) == 0


def test_intra_orders_by_normalised_not_raw_magnitude():
    # c0 = [10, -1]: raw mean 4.5 but normalised mean 0.448; c1 = [1, 1]: raw 1, normalised 0.707.
    # So c1 is salient and c0 redundant: MSE = ((10-1)^2 + (-1-1)^2) / 2 = 42.5
    assert intra_fd(feature([10.0, -1.0], [1.0, 1.0])).item() == pytest.approx(42.5)


def test_intra_salience_averages_over_the_batch():
    # 1x1 maps normalise to their sign. c0 over N=2: [+1, -1] -> 0; c1: [+1, +1] -> 1. c1 is salient.
    f = torch.tensor([[[[1.0]], [[2.0]]], [[[-1.0]], [[3.0]]]]).requires_grad_(True)  # N=2, C=2
    assert intra_fd(f).item() == pytest.approx(((1 - 2) ** 2 + (-1 - 3) ** 2) / 2)


# ---------------------------------------------------------------- inter-layer
def test_inter_pools_crops_channels_and_detaches_deep():
    shallow = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[0.0, 0.0], [0.0, 4.0]]]]).requires_grad_(True)  # 1x2x2x2
    deep = torch.tensor([5.0, -1.0, 7.0]).view(1, 3, 1, 1).requires_grad_(True)  # 3 channels, 1x1
    loss = inter_fd(shallow, deep)
    # pooled shallow = [2.5, 1.0]; deep's first 2 channels = [5, -1]: ((2.5-5)^2 + (1+1)^2) / 2
    assert loss.item() == pytest.approx(5.125)
    loss.backward()
    assert deep.grad is None, "the deep feature teaches: it must get no gradient"
    expected = torch.tensor([-2.5 / 4] * 4 + [2.0 / 4] * 4).view(1, 2, 2, 2)
    torch.testing.assert_close(shallow.grad, expected)


def test_inter_pooling_matches_avg_pool_for_power_of_two_sizes():
    torch.manual_seed(0)
    shallow, deep = torch.randn(2, 16, 8, 8), torch.randn(2, 32, 2, 2)
    expected = F.mse_loss(F.avg_pool2d(shallow, kernel_size=4), deep[:, :16])
    torch.testing.assert_close(inter_fd(shallow, deep), expected)


# ---------------------------------------------------------------- the term, weights and warm-up
def reference_intra(f):
    """A literal transcription of METHOD.md (full channel-permuted copy, F.normalize)."""
    with torch.no_grad():
        salience = F.normalize(f.flatten(2), dim=2).mean(dim=(0, 2))
    order = torch.sort(salience, descending=True, stable=True).indices
    permuted = f[:, order]
    h = f.shape[1] // 2
    return F.mse_loss(permuted[:, :h], permuted[:, h : 2 * h])


def reference_inter(shallow, deep):
    c = min(shallow.shape[1], deep.shape[1])
    return F.mse_loss(F.adaptive_avg_pool2d(shallow, deep.shape[-2:])[:, :c], deep[:, :c].detach())


def three_stage_feats(seed=0):
    generator = torch.Generator().manual_seed(seed)
    shapes = [(4, 16, 16, 16), (4, 32, 8, 8), (4, 64, 4, 4)]
    return [torch.randn(s, generator=generator).relu().requires_grad_(True) for s in shapes]


def test_fast_losses_equal_reference_transcription_in_fp32():
    feats = three_stage_feats()
    for f in feats:
        assert torch.equal(intra_fd(f), reference_intra(f))
    for i in range(3):
        for j in range(i + 1, 3):
            assert torch.equal(inter_fd(feats[i], feats[j]), reference_inter(feats[i], feats[j]))


@pytest.mark.parametrize("epoch, weight", [(1, 0.05), (10, 0.5), (20, 1.0), (30, 1.0)])
def test_total_with_warmup(epoch, weight):
    assert warmup_weight(epoch, 20) == pytest.approx(weight)
    feats = three_stage_feats()
    term = TeacherFreeFD(TfFDConfig(lambda_intra=4e-4, lambda_inter=5e-3, warmup_epochs=20))
    out = term(StepOutput(torch.zeros(4, 10), feats, torch.zeros(4, dtype=torch.long), epoch))
    pairs = [(0, 1), (0, 2), (1, 2)]
    inter = sum(reference_inter(feats[i], feats[j]) for i, j in pairs) / 3
    intra = sum(reference_intra(f) for f in feats) / 3
    torch.testing.assert_close(out["tffd_inter"], weight * 5e-3 * inter)
    torch.testing.assert_close(out["tffd_intra"], weight * 4e-4 * intra)


def test_stage_subset_and_explicit_pairs():
    feats = three_stage_feats(1)
    term = TeacherFreeFD(TfFDConfig(lambda_intra=1.0, lambda_inter=1.0, warmup_epochs=0, stages=[2, 3], pairs=[[1, 3]]))
    out = term(StepOutput(torch.zeros(4, 10), feats, torch.zeros(4, dtype=torch.long), 1))
    torch.testing.assert_close(out["tffd_inter"], reference_inter(feats[0], feats[2]))
    torch.testing.assert_close(out["tffd_intra"], (reference_intra(feats[1]) + reference_intra(feats[2])) / 2)
    term.check_features(3)
    with pytest.raises(ConfigError, match="stage 3"):
        term.check_features(2)


def test_default_pairs_follow_the_chosen_stages():
    term = TeacherFreeFD(TfFDConfig(stages=[2, 3, 4]))
    assert term._pairs(4) == [[2, 3], [2, 4], [3, 4]]


def test_zero_lambda_skips_the_term_and_negative_is_rejected():
    term = TeacherFreeFD(TfFDConfig(lambda_intra=0.0, lambda_inter=1.0))
    out = term(StepOutput(torch.zeros(4, 10), three_stage_feats(), torch.zeros(4, dtype=torch.long), 30))
    assert set(out) == {"tffd_inter"}
    with pytest.raises(ConfigError, match="lambda_intra"):
        TfFDConfig(lambda_intra=-1e-3)


# ---------------------------------------------------------------- the fused training path
def fused_intra(feature, detach_salient=False):
    return feature_losses(feature, True, detach_salient, [])[0]


def fused_inter(shallow, deep):
    return feature_losses(shallow, False, False, [deep])[0]


def values_and_grads(fn, *tensors):
    leaves = [t.detach().clone().requires_grad_(True) for t in tensors]
    value = fn(*leaves)
    return value, torch.autograd.grad(value, leaves[0])[0]


@pytest.mark.parametrize("shape, detach, channels_last", [
    ((4, 16, 8, 8), False, False), ((4, 16, 8, 8), True, False), ((3, 7, 5, 5), False, False),
    ((4, 16, 8, 8), False, True), ((2, 6, 1, 1), True, False),
])
def test_fused_intra_equals_readable(shape, detach, channels_last, backend):
    f = torch.randn(shape, generator=torch.Generator().manual_seed(3)).relu()
    if channels_last:
        f = f.contiguous(memory_format=torch.channels_last)
    fast, fast_grad = values_and_grads(lambda x: fused_intra(x, detach), f)
    slow, slow_grad = values_and_grads(lambda x: intra_fd(x, detach), f)
    assert torch.equal(fast, slow)
    torch.testing.assert_close(fast_grad, slow_grad, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("shallow_shape, deep_shape", [
    ((4, 16, 16, 16), (4, 32, 8, 8)), ((4, 16, 16, 16), (4, 64, 4, 4)), ((2, 8, 7, 7), (2, 8, 3, 3)),
    ((2, 8, 8, 8), (2, 16, 1, 1)), ((2, 24, 8, 6), (2, 16, 4, 3)), ((3, 8, 9, 12), (3, 4, 3, 2)),
])
def test_fused_inter_equals_readable_and_detaches_deep(shallow_shape, deep_shape, backend):
    generator = torch.Generator().manual_seed(4)
    shallow, deep = torch.randn(shallow_shape, generator=generator), torch.randn(deep_shape, generator=generator)
    fast, fast_grad = values_and_grads(fused_inter, shallow, deep)
    slow, slow_grad = values_and_grads(inter_fd, shallow, deep)
    assert torch.equal(fast, slow)
    torch.testing.assert_close(fast_grad, slow_grad, rtol=1e-6, atol=1e-9)
    deep_leaf = deep.clone().requires_grad_(True)
    fused_inter(shallow.clone().requires_grad_(True), deep_leaf).backward()
    assert deep_leaf.grad is None


def test_term_gradients_equal_readable_composition(backend):
    feats = three_stage_feats(5)
    term = TeacherFreeFD(TfFDConfig(lambda_intra=0.3, lambda_inter=0.7, warmup_epochs=0))
    out = term(StepOutput(torch.zeros(4, 10), feats, torch.zeros(4, dtype=torch.long), 1))
    fast_grads = torch.autograd.grad(out["tffd_intra"] + out["tffd_inter"], feats)
    pairs = [(0, 1), (0, 2), (1, 2)]
    readable = 0.7 * sum(inter_fd(feats[i], feats[j]) for i, j in pairs) / 3 + 0.3 * sum(intra_fd(f) for f in feats) / 3
    for fast, slow in zip(fast_grads, torch.autograd.grad(readable, feats)):
        torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-10)


def test_feature_with_intra_and_several_inter_losses_equals_readable(backend):
    """An odd channel count (one channel left out of intra), two deeper targets of other widths."""
    generator = torch.Generator().manual_seed(6)
    shallow = torch.randn(3, 7, 16, 16, generator=generator).relu()
    deep = [torch.randn(3, 5, 8, 8, generator=generator), torch.randn(3, 9, 2, 2, generator=generator)]
    weights = (0.3, 0.5, 0.2)

    def fused(x):
        return sum(w * loss for w, loss in zip(weights, feature_losses(x, True, False, deep)))

    def readable(x):
        return weights[0] * intra_fd(x) + weights[1] * inter_fd(x, deep[0]) + weights[2] * inter_fd(x, deep[1])

    leaves = [shallow.clone().requires_grad_(True) for _ in range(2)]
    fast_losses = feature_losses(leaves[0], True, False, deep)
    assert torch.equal(fast_losses[0], intra_fd(shallow))
    assert all(torch.equal(fast, inter_fd(shallow, d)) for fast, d in zip(fast_losses[1:], deep))
    fast_grad = torch.autograd.grad(fused(leaves[0]), leaves[0])[0]
    slow_grad = torch.autograd.grad(readable(leaves[1]), leaves[1])[0]
    torch.testing.assert_close(fast_grad, slow_grad, rtol=1e-6, atol=1e-10)


def kernels_or_skip():
    if not tffd_cpu.enabled():
        pytest.skip("TFFD_CPU_KERNELS=0")
    kernels = tffd_cpu.cpu_kernels()
    assert kernels is not None, "the Tf-FD CPU kernels did not build: see the message above"
    return kernels


def test_kernels_take_plain_fp32_cpu_features_and_pytorch_the_rest():
    kernels_or_skip()
    f = torch.randn(2, 8, 8, 8)
    assert isinstance(tffd_fused.ops_for(f, [(4, 4)]), CpuKernelOps)
    assert tffd_fused.ops_for(f.contiguous(memory_format=torch.channels_last), [(4, 4)]) is TorchOps
    assert tffd_fused.ops_for(f.bfloat16(), [(4, 4)]) is TorchOps
    assert tffd_fused.ops_for(f, [(3, 3)]) is TorchOps  # windows that overlap
    assert tffd_fused.ops_for(f, [(1, 1)]) is TorchOps  # PyTorch pools to 1 x 1 by mean()


def test_kernel_salience_order_matches_readable_including_ties():
    kernels = kernels_or_skip()
    generator = torch.Generator().manual_seed(7)
    for shape in [(4, 16, 8, 8), (3, 7, 5, 5), (2, 32, 16, 16)]:
        f = torch.randn(shape, generator=generator).relu()
        f[:, 1] = 0.0  # dead channels tie at salience 0 and keep channel order
        f[:, 4] = 0.0
        order = kernels.scan(f, 1e-12, [], [])[0]
        assert torch.equal(order, salience_order(f)), shape


@pytest.mark.parametrize("shape, size", [
    ((4, 16, 32, 32), (16, 16)), ((4, 16, 32, 32), (8, 8)), ((2, 8, 56, 56), (7, 7)), ((5, 8, 9, 12), (3, 2)),
    ((3, 6, 15, 15), (5, 5)), ((3, 6, 4, 6), (4, 3)),
])
def test_kernel_pooling_is_bitwise_pytorchs(shape, size):
    kernels = kernels_or_skip()
    f = torch.randn(shape, generator=torch.Generator().manual_seed(8))
    channels = shape[1] // 2
    pooled = kernels.scan(f, 1e-12, [channels, shape[1]], [*size, *size])[1:]
    assert torch.equal(pooled[0], F.adaptive_avg_pool2d(f[:, :channels], size))
    assert torch.equal(pooled[1], F.adaptive_avg_pool2d(f, size))


def test_kernels_reject_tensors_they_cannot_read():
    kernels = kernels_or_skip()
    with pytest.raises(RuntimeError, match="contiguous 4-d float32 CPU tensor"):
        kernels.scan(torch.randn(2, 8, 4, 4).transpose(2, 3), 1e-12, [], [])
    with pytest.raises(RuntimeError, match="windows that do not tile"):
        kernels.scan(torch.randn(2, 8, 4, 4), 1e-12, [8], [3, 3])
    with pytest.raises(RuntimeError, match="permutation"):
        kernels.feature_grad(torch.randn(2, 4, 4, 4), torch.tensor([0, 0, 1, 2]), torch.ones(4), [], None)
    with pytest.raises(RuntimeError, match="does not fit the feature"):
        kernels.feature_grad(torch.randn(2, 4, 4, 4), torch.arange(4), torch.ones(4), [torch.randn(2, 4, 3, 3)], None)


def test_unbuildable_kernels_fall_back_to_pytorch_with_one_message(monkeypatch, capsys):
    from torch.utils import cpp_extension

    def no_compiler(**kwargs):
        raise RuntimeError("Error building extension 'tffd_cpu'\nc++: not found")

    monkeypatch.setattr(cpp_extension, "load", no_compiler)
    monkeypatch.setattr(tffd_cpu, "_tried", False)
    monkeypatch.setattr(tffd_cpu, "_kernels", None)
    f = torch.randn(2, 8, 8, 8).relu().requires_grad_(True)
    assert tffd_fused.ops_for(f, []) is TorchOps
    assert torch.equal(feature_losses(f, True, False, [])[0], intra_fd(f))
    assert tffd_fused.ops_for(f, []) is TorchOps
    message = capsys.readouterr().err.strip().splitlines()
    assert len(message) == 1 and "could not be built" in message[0] and "c++: not found" in message[0]


def test_kernels_can_be_switched_off(monkeypatch, capsys):
    monkeypatch.setenv(tffd_cpu.ENV_SWITCH, "0")
    monkeypatch.setattr(tffd_cpu, "_tried", False)
    monkeypatch.setattr(tffd_cpu, "_kernels", None)
    assert tffd_fused.ops_for(torch.randn(2, 8, 8, 8), []) is TorchOps
    assert capsys.readouterr().err == ""
