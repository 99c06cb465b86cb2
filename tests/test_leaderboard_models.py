"""The leaderboards' CIFAR models (PreActResNet-18, WRN-28-10, WRN-34-10, VGG-16-BN): their published sizes, and
a structured and an unstructured pruning method on a CIFAR-format batch (3x32x32).

Pruning the full-size models takes 5 s (PreActResNet-18) to 55 s (WRN-28-10's l1_filter) on one CPU thread, so
`make test` prunes narrow copies (the builders' `width` / `widen_factor` keyword, used by tests only: the configs
build the published widths); the full-size cells are `slow`."""
from __future__ import annotations

import copy

import pytest
import torch

from benchmark.cell import run_cell
from benchmark.pruning import prune
from benchmark.pruning.common import (PruneContext, achieved_sparsity, finalize, layer_weight_counts,
                                      load_state_into)
from models import build_model
from conftest import compose_cfg, write_npz

# name -> (keyword that narrows it for the tests, its narrow value)
NARROW = {"preact_resnet18": {"width": 8}, "wrn28_10": {"widen_factor": 1}, "wrn34_10": {"widen_factor": 1},
          "vgg16_bn": {"width": 8}}
# Parameters at CIFAR-10's shape, as published: WRN-28-10 36.5 M and WRN-34-10 46.2 M (Zagoruyko & Komodakis 2016;
# RobustBench's model cards), PreActResNet-18 11.2 M (BackdoorBench's), VGG-16-BN 15.3 M (HYDRA's CIFAR VGG-16).
PARAMETERS = {"preact_resnet18": 11_171_146, "wrn28_10": 36_479_194, "wrn34_10": 46_160_474, "vgg16_bn": 15_311_818}
METHODS = {"magnitude_global": False, "l1_filter": True}  # method -> structured


@pytest.mark.parametrize("name", sorted(PARAMETERS))
def test_full_size_models_have_their_published_size_and_classify_cifar_batches(name):
    torch.manual_seed(0)
    model = build_model(name, 3, 32, 10).eval()
    assert sum(p.numel() for p in model.parameters()) == PARAMETERS[name]
    with torch.no_grad():
        assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("name", sorted(NARROW))
def test_structured_and_unstructured_pruning_reach_target_on_a_cifar_batch(tmp_path, name, method):
    """Half the prunable weights removed (structured: whole channels, within 3%), the head keeps 10 outputs, and a
    fresh model of the architecture reloads the pruned state with the same outputs."""
    torch.manual_seed(0)
    dense = build_model(name, 3, 32, 10, **NARROW[name])
    x, y = torch.rand(8, 3, 32, 32), torch.arange(8) % 10
    cfg = compose_cfg(tmp_path, f"pruning={method}", "pruning.sparsity=0.5").pruning
    outcome = prune(copy.deepcopy(dense), cfg, PruneContext(example_inputs=x[:1], calibration=(x, y), seed=0))
    assert outcome.structured == METHODS[method]
    model = finalize(outcome.model).eval()
    achieved = achieved_sparsity(layer_weight_counts(dense, True), model, True)[0]
    assert abs(achieved - 0.5) <= (0.03 if METHODS[method] else 0.01), achieved
    restored = load_state_into(build_model(name, 3, 32, 10, **NARROW[name]), model.state_dict()).eval()
    with torch.no_grad():
        out = model(x)
        assert out.shape == (8, 10) and torch.equal(restored(x), out)


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("name", sorted(NARROW))
def test_full_size_models_run_a_cell(tmp_path, name, method):
    """A whole cell (train, prune, fine-tune, PGD) on 64 synthetic CIFAR-format images at the published width."""
    npz = write_npz(tmp_path / "tiny32.npz")
    cfg = compose_cfg(tmp_path, "dataset=npz", f"dataset.path={npz}", f"model={name}", f"pruning={method}",
                      "pruning.sparsity=0.5", "threat=pgd", "threat.attacks.0.max_iter=2", "train.epochs=1",
                      "finetune.epochs=1", "train.batch_size=32", "finetune.batch_size=32", "eval.train_subset=16",
                      "threat.subset=8", "dataset.eps=[0.03]", "eval=fast", "eval.latency.batch_size=8", "device=cpu")
    result = run_cell(cfg)
    assert result.status == "finished", result.error
    assert abs(result.metrics["sparsity/achieved"] - 0.5) <= 0.03
