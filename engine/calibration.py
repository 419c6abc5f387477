"""Calibration and selective-prediction metrics of a classifier's test predictions, as pure functions.

The confidence of a prediction is its max-softmax probability, and it is correct when its arg-max is
the label.

- **ECE** (expected calibration error; Guo et al., ICML 2017), in percent. The confidences fall into
  15 equal-width bins, (0, 1/15], (1/15, 2/15], ..., (14/15, 1]. ECE = sum over bins b of
  (n_b / n) * |accuracy_b - mean confidence_b|; an empty bin adds nothing. It is computed from the
  per-bin sums (count, confidence, correct), which add up exactly over batches and DDP ranks.
- **AURC** (area under the risk-coverage curve; Geifman et al., ICLR 2019), x 10^3 as PS-KD's tables
  give it. The predictions are sorted by decreasing confidence; the risk at coverage k/n is the error
  rate of the k most confident. AURC is the mean of the risk over k = 1..n. Tied confidences cannot be
  ordered, so the curve is taken only where the confidence changes: every prediction of a tie group
  gets the risk of the whole group, the same whatever order the ties came in.
"""

from __future__ import annotations

import torch

ECE_BINS = 15


def confidences_and_hits(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Max-softmax confidence (float32) and correctness (bool) of each row."""
    probabilities = logits.float().softmax(dim=1)
    confidence, predicted = probabilities.max(dim=1)
    return confidence, predicted == targets


def calibration_sums(confidence: torch.Tensor, hits: torch.Tensor, bins: int = ECE_BINS) -> torch.Tensor:
    """3 x bins: per bin, the count, the sum of confidences and the number correct."""
    inner = torch.arange(1, bins, device=confidence.device, dtype=torch.float64) / bins
    index = torch.bucketize(confidence.double(), inner)  # (lower, upper] bins
    sums = torch.zeros(3, bins, device=confidence.device, dtype=torch.float64)
    sums[0].index_add_(0, index, torch.ones_like(index, dtype=torch.float64))
    sums[1].index_add_(0, index, confidence.double())
    sums[2].index_add_(0, index, hits.double())
    return sums


def expected_calibration_error(sums: torch.Tensor) -> float:
    """ECE in percent from ``calibration_sums`` (added over batches and ranks)."""
    counts, confidence, correct = sums.double()
    total = counts.sum()
    if total == 0:
        return float("nan")
    return float(100 * (correct - confidence).abs().sum() / total)  # n_b/n * |correct_b/n_b - conf_b/n_b|


def aurc(confidence: torch.Tensor, hits: torch.Tensor) -> float:
    """Area under the risk-coverage curve, x 10^3, ties taken as one group (module docstring)."""
    if confidence.numel() == 0:
        return float("nan")
    order = torch.argsort(confidence.double(), descending=True, stable=True)
    confidence, errors = confidence.double()[order], (~hits[order]).double()
    risk = errors.cumsum(0) / torch.arange(1, len(errors) + 1, dtype=torch.float64, device=errors.device)
    # The last position of each tie group, for every position: where the next confidence differs.
    group_end = torch.ones_like(confidence, dtype=torch.bool)
    group_end[:-1] = confidence[1:] != confidence[:-1]
    ends = torch.nonzero(group_end).squeeze(1)
    end_of = ends[torch.searchsorted(ends, torch.arange(len(confidence), device=ends.device))]
    return float(1000 * risk[end_of].mean())
