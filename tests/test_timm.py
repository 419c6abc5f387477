"""timm backbones (models/timm_backbone.py): our model contract around timm's own models, timm's state_dict
exported unchanged, local weight files only, the lazy import of timm, and train.py runs of a ResNet, a
ConvNeXt and a ViT from timm with CE and + Tf-FD."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import yaml

from core.errors import CheckpointError, ConfigError
from engine.checkpoint import load_model_weights
from engine.config import load_config
from engine.run_dir import default_run_dir
from models import build_configured_model, build_model
from models.timm_backbone import default_stages

from conftest import REPO, read_metrics, run_train
from timm_models import TINY, flow_mapping

timm = pytest.importorskip("timm")
NUM_CLASSES = 5


def _tiny(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(name, NUM_CLASSES, timm_kwargs=TINY[name][1])


@pytest.mark.parametrize("name", sorted(TINY))
def test_a_timm_model_in_our_contract_is_timms_model_with_its_stages(name):
    side, kwargs, shapes = TINY[name]
    model = _tiny(name).eval()
    images = torch.randn(2, 3, side, side)
    with torch.no_grad():
        logits, feats = model(images)
        expected = model.net(images)  # timm's own forward
        pre_logits = model.net.forward_head(model.net.forward_features(images), pre_logits=True)
        _, head_map = model.forward_maps(images)
    torch.testing.assert_close(logits, expected, rtol=0, atol=0)
    assert [tuple(f.shape[1:]) for f in feats] == shapes
    torch.testing.assert_close(head_map.flatten(1), pre_logits, rtol=0, atol=0)  # StepOutput.embedding
    # The state_dict is timm's, key for key and tensor for tensor.
    ours, theirs = model.state_dict(), model.net.state_dict()
    assert list(ours) == list(theirs) and all(torch.equal(ours[k], theirs[k]) for k in ours)
    reference = timm.create_model(name.removeprefix("timm/"), num_classes=NUM_CLASSES, **kwargs)
    reference.load_state_dict(ours)  # strict, no key changes
    assert os.environ["HF_HUB_OFFLINE"] == "1"  # set before timm (and huggingface_hub) is imported


def test_default_stages_leave_out_the_stem_and_take_4_evenly_spaced_blocks_of_a_plain_model():
    resnet = [{"module": m, "reduction": r} for m, r in (("act1", 2), ("layer1", 4), ("layer2", 8), ("layer3", 16))]
    assert default_stages(resnet) == [1, 2, 3]
    vit = [{"module": f"blocks.{i}", "reduction": 16} for i in range(12)]
    assert default_stages(vit) == [2, 5, 8, 11]
    model = build_model(
        "timm/vit_tiny_patch16_224", NUM_CLASSES, timm_kwargs=TINY["timm/vit_tiny_patch16_224"][1], timm_stages=[0, 7]
    )
    assert len(model(torch.zeros(1, 3, 16, 16))[1]) == 2
    with pytest.raises(ConfigError, match=r"model.timm_stages=\[0, 8\]: timm's vit_tiny_patch16_224 has 8 "):
        build_model(
            "timm/vit_tiny_patch16_224",
            NUM_CLASSES,
            timm_kwargs=TINY["timm/vit_tiny_patch16_224"][1],
            timm_stages=[0, 8],
        )


def test_timm_kwargs_are_a_validated_mapping():
    base = REPO / "configs/quickstart.yaml"
    config = load_config(
        base, ["model.name=timm/vit_tiny_patch16_224", "model.timm_kwargs={img_size: 32, patch_size: 4}"]
    )
    assert config.model.timm_kwargs == {"img_size": 32, "patch_size": 4}
    refused = {
        "model.timm_kwargs=[1, 2]": "model.timm_kwargs must be mapping",
        "model.timm_kwargs={a: {b: 1}}": "model.timm_kwargs.a must be a number, string, boolean, null or a list",
        "model.timm_kwargs={pretrained: true}": "model.timm_kwargs.pretrained is not allowed: weights come from a",
        "model.timm_kwargs={num_classes: 3}": "the number of classes comes from the dataset",
        "model.timm_stages=[3, 1]": "model.timm_stages must be increasing",
        "model.timm_kwargs={img_size: .nan}": "model.timm_kwargs.img_size must be a finite number",
    }
    for override, message in refused.items():
        with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("[", r"\[")):
            load_config(base, ["model.name=timm/vit_tiny_patch16_224", override])
    with pytest.raises(ConfigError, match="model.timm_kwargs applies to timm models only"):
        load_config(base, ["model.timm_kwargs={img_size: 32}"])  # resnet20
    with pytest.raises(ConfigError, match="timm cannot build resnet18 with model.timm_kwargs=.*unexpected keyword"):
        build_model("timm/resnet18", NUM_CLASSES, timm_kwargs={"img_size": 32})


@pytest.mark.parametrize(
    "override, message",
    [
        (
            "model.name=timm/resnet_18",
            "error: model.name='timm/resnet_18': timm {version} has no architecture 'resnet_18'; "
            "nearest: timm/resnet18",
        ),
        (
            "model.weights=hf-hub:timm/deit_tiny_patch16_224.fb_in1k",
            "error: model.weights='hf-hub:timm/deit_tiny_patch16_224.fb_in1k' names weights on a hub, and nothing here "
            "downloads",
        ),
        ("model.timm_kwargs={pretrained: true}", "error: model.timm_kwargs.pretrained is not allowed"),
        (
            "loss.terms=[ce,zipf_ls]",
            "error: loss.zipf_ls cannot train model.name=timm/resnet18: zipf_ls classifies every "
            "pixel of the map a classifier pools",
        ),
    ],
)
def test_an_unknown_name_or_hub_weights_are_one_error_line_and_nothing_is_written(override, message, tmp_path):
    run_dir = tmp_path / "run"
    result = run_train(
        "data.name=synthetic",
        "data.num_train=8",
        "data.num_test=8",
        "model.name=timm/resnet18",
        override,
        "--run-dir",
        str(run_dir),
    )
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith(message.format(version=timm.__version__)), lines[0]
    assert not run_dir.exists()


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_weights_from_a_local_timm_file_load_unchanged(suffix, tmp_path):
    from safetensors.torch import save_file

    name = "timm/convnext_atto"
    side, kwargs, _ = TINY[name]
    torch.manual_seed(1)
    reference = timm.create_model("convnext_atto", num_classes=NUM_CLASSES, **kwargs).eval()
    path = tmp_path / f"weights{suffix}"
    (save_file if suffix == ".safetensors" else torch.save)(reference.state_dict(), path)
    model = _tiny(name)
    load_model_weights(model, path, what="model.weights")
    images = torch.randn(2, 3, side, side)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(images)[0], reference(images), rtol=0, atol=0)


def test_commands_that_build_no_timm_model_never_import_timm(tmp_path):
    """--help-config, a refused config (a timm one among them) and a whole non-timm experiment build."""
    code = """
import sys, io, contextlib
import train
from engine.cli import status_of
with contextlib.redirect_stdout(io.StringIO()):
    assert status_of(train.main, ["--help-config"]) == 0
assert status_of(train.main, ["--config", "configs/quickstart.yaml", "train.epochs=0"]) == 2
assert status_of(train.main, ["--config", "configs/cifar100/timm/deit_tiny_ce.yaml",
                              "model.timm_kwargs={pretrained: true}"]) == 2
import torch
from engine.builder import build_experiment
from engine.config import load_config
from engine.distributed import DistContext
config = load_config("configs/quickstart.yaml", ["data.name=synthetic", "data.num_train=8", "data.num_test=8",
                     "train.optimizer=adamw", "train.schedule=cosine", "train.weight_decay_norms=false"])
build_experiment(config, DistContext(0, 1, 0, torch.device("cpu")))
print("timm imported" if "timm" in sys.modules else "timm not imported")
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "timm not imported"


def test_a_run_directory_named_after_a_timm_model_has_no_stray_separator():
    run_dir = default_run_dir("configs/quickstart.yaml", ["model.name=timm/resnet18"])
    assert run_dir.parent.name == "quickstart" and "/" not in run_dir.name and "timm_resnet18" in run_dir.name


FAMILY_CONFIGS = {
    "timm/vit_tiny_patch16_224": "configs/cifar100/timm/deit_tiny_{method}.yaml",
    "timm/convnext_atto": "configs/cifar100/timm/convnext_atto_{method}.yaml",
    "timm/resnet18": "configs/cifar100/timm/deit_tiny_{method}.yaml",
}


@pytest.mark.parametrize("method", ["ce", "tffd"])
@pytest.mark.parametrize("name", sorted(TINY))
def test_a_cifar100_timm_config_trains_and_exports_timms_state_dict(name, method, tmp_path):
    side, kwargs, _ = TINY[name]
    run_dir = tmp_path / "run"
    run_train(
        "data.name=synthetic",
        "data.num_classes=5",
        "data.num_train=48",
        "data.num_test=16",
        f"data.image_size={side}",
        "train.batch_size=16",
        "train.eval_batch_size=16",
        "train.epochs=2",
        "train.lr_warmup_epochs=1",
        "train.grad_clip=1.0",
        "train.log_interval=1",
        "loss.tffd.warmup_epochs=0",
        f"model.name={name}",
        f"model.timm_kwargs={flow_mapping(kwargs)}",
        "--run-dir",
        str(run_dir),
        config=FAMILY_CONFIGS[name].format(method=method),
        check=True,
    )
    metrics = read_metrics(run_dir)
    assert metrics["finished"] and metrics["epochs_done"] == 2
    logged = set(metrics["history"][-1])
    assert ({"train_tffd_intra", "train_tffd_inter"} <= logged) == (method == "tffd")
    resolved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert resolved["train"]["optimizer"] == "adamw" and resolved["train"]["schedule"] == "cosine"
    exported = torch.load(run_dir / "best.pt", map_location="cpu", weights_only=True)["model"]
    net = timm.create_model(name.removeprefix("timm/"), num_classes=5, **resolved["model"]["timm_kwargs"])
    net.load_state_dict(exported)  # strict: exactly timm's keys and shapes
    # and the exported weights are the trained model's: it gives the logits our model gives
    model = build_configured_model(load_config(run_dir / "config.yaml").model, 5)
    model.load_state_dict(exported)
    images = torch.randn(2, 3, side, side)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(images)[0], net.eval()(images), rtol=0, atol=0)


def test_the_selfkd_table_script_takes_a_timm_model(tmp_path):
    result = subprocess.run(
        [
            "bash",
            "scripts/reproduce_selfkd.sh",
            "--dry-run",
            "--epochs",
            "2",
            "--seeds",
            "0",
            "--root",
            str(tmp_path / "table"),
            "--model",
            "timm/resnet18",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHON": sys.executable},
    )
    assert result.returncode == 0, result.stderr
    commands = [line for line in result.stdout.splitlines() if line.startswith("python train.py ")]
    assert commands and all(" model.name=timm/resnet18 " in command for command in commands)
    run_dirs = [command.split("--run-dir ")[1] for command in commands]
    assert all(
        d.startswith(f"{tmp_path}/table/timm_resnet18_") and d.count("/") == str(tmp_path).count("/") + 3
        for d in run_dirs
    ), run_dirs
    assert not any("zipf_ls" in command for command in commands)
    assert "note: timm/resnet18 cannot train zipf_ls; left out" in result.stderr


def test_fine_tuning_a_timm_file_to_another_number_of_classes_keeps_the_models_own_head(tmp_path):
    from safetensors.torch import save_file

    name = "timm/convnext_atto"
    side, kwargs, _ = TINY[name]
    torch.manual_seed(1)
    pretrained = timm.create_model("convnext_atto", num_classes=7, **kwargs)  # "ImageNet": 7 classes
    path = tmp_path / "pretrained.safetensors"
    save_file(pretrained.state_dict(), path)
    model = _tiny(name)  # 5 classes
    fresh_head = model.net.head.fc.weight.detach().clone()
    with pytest.raises(
        CheckpointError, match=r"shape mismatches \(file vs model\) head.fc.weight \(7, 32\) vs \(5, 32\)"
    ):
        load_model_weights(model, path, what="model.weights")
    load_model_weights(model, path, what="model.weights", skip=["head.fc"])
    assert torch.equal(model.net.head.fc.weight, fresh_head)
    theirs = pretrained.state_dict()
    assert all(
        torch.equal(value, theirs[key]) for key, value in model.state_dict().items() if not key.startswith("head.fc.")
    )
    with pytest.raises(CheckpointError, match="model.weights_skip: 'haed' names no key of the model"):
        load_model_weights(model, path, what="model.weights", skip=["haed"])
