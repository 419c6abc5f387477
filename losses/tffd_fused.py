"""The fast path of the Tf-FD term: the same losses as ``intra_fd`` and ``inter_fd`` in
``losses/tffd.py`` (read those for the method), computed so that Tf-FD costs next to nothing on top of
cross-entropy. ``tests/test_tffd.py`` checks values and gradients against the readable functions.

All that the term reads from one stage feature (salience order, intra_fd, pooled copies for
inter_fd) is one autograd function, ``feature_work``, planned by a ``FeaturePlan``. Its backward
writes the feature's whole gradient into a single buffer: the Tf-FD part (where autograd would build
a zero-filled scatter per channel half and per pooled copy and add them up one by one) plus the
network's own gradient, when the network goes on with the function's view of the feature, as it
does behind a stage tap (``losses/tffd_taps.py``). The channel-sorted copy of the feature is not
kept; the backward needs only the feature, which the network keeps anyway.

The work is done by one of two interchangeable sets of ops:
- ``CpuKernelOps``: C++ kernels (``losses/tffd_cpu.py``) for contiguous fp32 CPU features, one pass
  over the feature per step where PyTorch's ops take several;
- ``TorchOps``: PyTorch's ops, for everything else (GPUs, AMP, channels_last).
Each loss value is bit-for-bit the ``F.mse_loss`` of the readable version in fp32, with either set.
(The kernels rank channels by a salience accumulated in float64, the readable function in float32:
their orders could differ only between two channels whose saliences agree to within rounding.)
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Sequence

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from .salience import NORM_EPS, check_intra_channels, salience_order
from .tffd_cpu import cpu_kernels


class FeaturePlan(NamedTuple):
    """What the Tf-FD term computes from one stage feature whose per-sample shape is ``shape``
    (C x H x W): intra_fd or not (and whether the salient half learns), and one average-pooled copy per
    deeper target, of the first ``channels[k]`` channels at the target's size ``sizes[k]``."""
    shape: tuple[int, ...]
    intra: bool
    detach_salient: bool
    channels: tuple[int, ...]
    sizes: tuple[tuple[int, int], ...]

    @classmethod
    def of(cls, shape, intra: bool, detach_salient: bool, deeper_shapes: Sequence):
        """The plan for a feature of ``shape`` and deeper targets of ``deeper_shapes`` (each N x C x H x W
        or C x H x W)."""
        if intra:
            check_intra_channels(shape)
        return cls(tuple(shape[-3:]), intra, detach_salient,
                   tuple(min(shape[-3], deep[-3]) for deep in deeper_shapes),
                   tuple(tuple(deep[-2:]) for deep in deeper_shapes))

    def fits(self, feature: torch.Tensor) -> bool:
        return tuple(feature.shape[1:]) == self.shape

    def losses(self, outputs: Sequence[torch.Tensor], deeper: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """The losses from ``feature_work``'s outputs: intra_fd (if planned), then inter_fd towards
        each of ``deeper``, which is detached."""
        _, *outputs = outputs  # the feature's view
        intra = [outputs.pop(0)] if self.intra else []
        inter = [F.mse_loss(pooled, d[:, :c].detach()) for pooled, d, c in zip(outputs, deeper, self.channels)]
        return (*intra, *inter)


def feature_losses(feature: torch.Tensor, intra: bool, detach_salient: bool,
                   deeper: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """``intra_fd(feature, detach_salient)`` if ``intra``, then ``inter_fd(feature, d)`` for each ``d``
    in ``deeper``, computed together so that the backward forms ``feature``'s gradient in one buffer."""
    plan = FeaturePlan.of(feature.shape, intra, detach_salient, [d.shape for d in deeper])
    return plan.losses(feature_work(feature, plan), deeper)


def feature_work(feature: torch.Tensor, plan: FeaturePlan) -> tuple[torch.Tensor, ...]:
    """(``feature`` itself, as a view; the intra_fd loss if ``plan.intra``; the pooled copies): all
    that the Tf-FD term reads from ``feature``, done in one autograd function. Whether the network
    goes on with the view (a stage tap, ``losses/tffd_taps.py``) or with ``feature`` itself, the
    backward hands on the network's gradient with the Tf-FD gradient added, in one buffer."""
    return _FeatureWork.apply(feature, plan)


class _FeatureWork(torch.autograd.Function):
    @staticmethod
    def forward(ctx, feature, plan):
        ctx.set_materialize_grads(False)  # unused outputs send no gradient: skip them
        ctx.has_intra = plan.intra
        ctx.ops = ops = ops_for(feature, plan.sizes)
        order, pooled = ops.scan(feature, plan.intra, list(plan.channels), list(plan.sizes))
        outputs, saved = [feature.view_as(feature)], [feature]  # the network keeps the feature anyway
        if plan.intra:
            half = feature.shape[1] // 2
            outputs.append(ops.intra_loss(feature, order[: 2 * half]))
            ctx.intra_numel = feature.numel() // feature.shape[1] * half
            saved += [order, _learning_channels(order, plan.detach_salient)]
        ctx.save_for_backward(*saved)
        return (*outputs, *pooled)

    @staticmethod
    @once_differentiable
    def backward(ctx, incoming, *grads):
        feature, *saved = ctx.saved_tensors
        intra = None
        if ctx.has_intra:
            (order, learning), (intra_grad, *grads) = saved, grads
            if intra_grad is not None:
                scale = intra_grad * (2.0 / ctx.intra_numel)
                intra = (feature.to(scale.dtype), order, scale * learning)
        pooled_grads = [grad for grad in grads if grad is not None]
        if intra is None and not pooled_grads:
            return incoming, None
        return ctx.ops.feature_grad(feature, intra, pooled_grads, incoming), None


class TorchOps:
    """The steps of ``_FeatureWork`` in PyTorch ops: any device, dtype and memory format."""

    @staticmethod
    def scan(feature, intra: bool, channels: list[int], sizes: list[tuple[int, int]]):
        """(channels by descending salience if ``intra`` else None, [adaptive average pooling of
        ``feature[:, :channels[k]]`` to ``sizes[k]`` for each k])."""
        order = salience_order(feature) if intra else None
        return order, [_adaptive_avg_pool(feature[:, :c], size) for c, size in zip(channels, sizes)]

    @staticmethod
    def intra_loss(feature: torch.Tensor, ranked_order: torch.Tensor) -> torch.Tensor:
        """F.mse_loss(redundant half, salient half), ``ranked_order`` listing the salient channels first."""
        half = ranked_order.numel() // 2
        ranked = _gather_channels(feature, ranked_order)
        return F.mse_loss(ranked[:, half:], ranked[:, :half])

    @staticmethod
    def feature_grad(feature, intra, pooled_grads, incoming) -> torch.Tensor:
        """The feature's gradient in its dtype: its Tf-FD gradient plus ``incoming`` (the network's
        gradient, or None). ``intra``: None or (the feature in the gradient's dtype, channels by
        salience, coefficient per channel: the loss's scale, 0 where no gradient goes);
        ``pooled_grads``: the gradient of each pooled copy."""
        grad = None
        if intra is not None:
            cast_feature, order, coefficient = intra
            grad = _intra_grad(cast_feature, _partner(order), coefficient)
        for pooled_grad in pooled_grads:
            grad = _add_pooling_grad(grad, pooled_grad, feature.shape)
        grad = grad.to(feature.dtype)
        return grad if incoming is None else incoming + grad


class CpuKernelOps:
    """The same steps through the C++ kernels of ``losses/tffd_cpu.py`` (one pass over the feature
    each), for contiguous fp32 CPU features whose pooling windows tile the map."""

    def __init__(self, kernels):
        self.kernels = kernels

    @staticmethod
    def supports(feature: torch.Tensor, sizes) -> bool:
        plain = feature.device.type == "cpu" and feature.dtype == torch.float32 and feature.is_contiguous()
        return plain and all(tuple(size) != (1, 1) and _tiles(feature.shape[-2:], size) for size in sizes)

    def scan(self, feature, intra, channels, sizes):
        order, *pooled = self.kernels.scan(feature, NORM_EPS, channels, [side for size in sizes for side in size])
        return (order if intra else None), pooled

    def intra_loss(self, feature, ranked_order):
        return self.kernels.intra_squared_error(feature, ranked_order).mean()

    def feature_grad(self, feature, intra, pooled_grads, incoming):
        if intra is None:  # no intra-layer part: an empty coefficient says so
            intra = (feature, torch.arange(feature.shape[1]), feature.new_empty(0))
        return self.kernels.feature_grad(*intra, [_plain(grad) for grad in pooled_grads],
                                         None if incoming is None else _plain(incoming))


def ops_for(feature: torch.Tensor, sizes: Sequence[Sequence[int]]):
    """The C++ kernels where they apply to ``feature`` pooled to ``sizes`` and could be built, else
    PyTorch's ops: the same values."""
    if CpuKernelOps.supports(feature, sizes):
        kernels = cpu_kernels()
        if kernels is not None:
            return CpuKernelOps(kernels)
    return TorchOps


def _plain(grad: torch.Tensor) -> torch.Tensor:
    """A gradient as the kernels read it: contiguous fp32 (it nearly always is already)."""
    return grad.float().contiguous()


def _tiles(full, part) -> bool:
    return all(p > 0 and f % p == 0 for f, p in zip(full, part))


def _learning_channels(order: torch.Tensor, detach_salient: bool) -> torch.Tensor:
    """1 for each channel that intra_fd sends gradient into, else 0 (the salient half when detached)."""
    learning = torch.ones(order.numel(), device=order.device)
    if detach_salient:
        learning[order[: order.numel() // 2]] = 0.0
    return learning


def _partner(order: torch.Tensor) -> torch.Tensor:
    """``partner[c]``: the channel that channel c is compared with (itself for the channel an odd
    count leaves out)."""
    half = order.numel() // 2
    partner = torch.arange(order.numel(), device=order.device)
    partner[order[:half]] = order[half : 2 * half]
    partner[order[half : 2 * half]] = order[:half]
    return partner


def _intra_grad(feature, partner, coefficient) -> torch.Tensor:
    """coefficient[c] * (feature[:, c] - feature[:, partner[c]]): d MSE / d feature[:, c] when the
    coefficient holds 2 / numel, the salient and the redundant side alike; 0 for a channel compared
    with itself. One gather, two in-place ops."""
    grad = _gather_channels(feature, partner)
    torch.sub(feature, grad, out=grad)
    return grad.mul_(coefficient.view(1, -1, 1, 1))


def _gather_channels(feature: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``feature[:, index]``. A contiguous feature is gathered as rows of its (N*C) x (H*W) view:
    PyTorch spreads a gather of rows over threads, one of channels (index_select on dim 1) not."""
    if not feature.is_contiguous():
        return feature.index_select(1, index)
    batch, channels = feature.shape[:2]
    rows = (torch.arange(batch, device=index.device)[:, None] * channels + index).flatten()
    return feature.view(batch * channels, -1).index_select(0, rows).view(batch, index.numel(), *feature.shape[2:])


def _adaptive_avg_pool(feature: torch.Tensor, size) -> torch.Tensor:
    """``F.adaptive_avg_pool2d(feature, size)``, the same numbers, faster on CPUs where it can be.

    PyTorch's CPU kernel for channels-first input is scalar. For windows of power-of-two sides it is
    matched exactly (each window summed row by row from its first element, then divided by a power
    of two, which is exact) by four strided adds for 2 x 2 windows and by ``avg_pool2d`` for larger
    ones, 2-4x faster. The output keeps the input's memory format, as PyTorch's does. A 1x1 output
    is computed as a mean() instead, so it is left alone."""
    windows = [full // part if full % part == 0 else 0 for full, part in zip(feature.shape[-2:], size)]
    power_of_two = all(k > 0 and k & (k - 1) == 0 for k in windows)
    if feature.device.type != "cpu" or tuple(size) == (1, 1) or not power_of_two:
        return F.adaptive_avg_pool2d(feature, size)
    if windows == [2, 2]:
        pooled = feature[:, :, 0::2, 0::2] + feature[:, :, 0::2, 1::2]
        return pooled.add_(feature[:, :, 1::2, 0::2]).add_(feature[:, :, 1::2, 1::2]).div_(2).div_(2)
    return F.avg_pool2d(feature, windows)


def _add_pooling_grad(grad: Optional[torch.Tensor], pooled_grad: torch.Tensor, shape) -> torch.Tensor:
    """``grad`` (None: zeros of ``shape``) plus the gradient through adaptive average pooling of the
    first channels of a ``shape`` feature, given the gradient ``pooled_grad`` of the pooled output."""
    n, c, h, w = pooled_grad.shape
    height, width = shape[-2:]
    if grad is None:
        grad = pooled_grad.new_zeros(shape)
    if height % h or width % w:  # overlapping windows: PyTorch's own backward
        like = pooled_grad.new_empty((n, c, height, width))
        grad[:, :c] += torch.ops.aten._adaptive_avg_pool2d_backward(pooled_grad, like)
        return grad
    kh, kw = height // h, width // w
    share = pooled_grad / kh / kw  # divided as PyTorch's backward divides
    # Nearest upsampling as two broadcasts whose innermost dimension is a whole row: one 6-d
    # broadcast whose innermost dimension is the kw-wide window is several times slower on CPUs.
    rows = share.unsqueeze(-1).expand(n, c, h, w, kw).reshape(n, c, h, width)
    grad[:, :c].view(n, c, h, kh, width).add_(rows.unsqueeze(3))
    return grad
