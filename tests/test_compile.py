"""``train.compile=true`` compiles the whole step (model and every loss term) and computes what the
eager step computes. On the CPU the test compiles with the ``aot_eager`` backend: the same graph
capture and autograd tracing as the default backend, without its minutes of C++ code generation on
2 cores (tests/test_cuda.py runs the default backend on a GPU)."""
from __future__ import annotations

import functools

import torch

from conftest import SMOKE
from engine.builder import build_experiment
from engine.config import load_config
from engine.distributed import DistContext
from engine.step import apply_gradients, compute_losses

CPU = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


def experiment(*overrides):
    return build_experiment(load_config("configs/quickstart.yaml", [*SMOKE, "train.device=cpu", *overrides]), CPU)


def test_compiled_step_equals_eager_and_compiles_every_term(monkeypatch):
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    torch._dynamo.reset()
    eager, compiled = experiment(), experiment("train.compile=true")
    # One graph: the TrainingNetwork (the model and every loss term) is compiled as a whole.
    assert hasattr(compiled.network, "_orig_mod") and not hasattr(eager.network, "_orig_mod")
    assert compiled.network._orig_mod.model is compiled.model
    assert list(compiled.network._orig_mod.terms) == compiled.terms
    eager.loaders.train.set_epoch(1)
    batches = list(eager.loaders.train)[:2]
    with torch._dynamo.config.patch(error_on_recompile=False):
        for epoch, (images, targets, _) in enumerate(batches, 1):  # two epochs: the warm-up weight changes
            expected, got = (compute_losses(exp, images, targets, epoch) for exp in (eager, compiled))
            assert set(got.terms) == set(expected.terms) == {"ce", "tffd_inter", "tffd_intra"}
            for name, value in expected.terms.items():
                torch.testing.assert_close(got.terms[name], value, rtol=1e-5, atol=1e-7)
            apply_gradients(eager, expected.total)
            apply_gradients(compiled, got.total)
    for mine, theirs in zip(compiled.model.parameters(), eager.model.parameters()):
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-6)
