"""Adding a pruning method or a dataset is one Python file and one YAML each: written into a copy of the project,
nothing else touched, a cell runs with both and a mistake in a new key is rejected before any heavy import."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = {"torch", "art", "mlflow", "captum", "torch_pruning", "torchvision", "sklearn"}

METHOD = '''"""Global L1: the smallest |w| over all prunable layers, with torch's global_unstructured; `skip_first` leaves
the first layer dense."""
from __future__ import annotations

from typing import Literal

from benchmark.pruning import PRUNERS, PruningConfig


class GlobalL1(PruningConfig):
    method: Literal["global_l1"]
    skip_first: bool


@PRUNERS.register("global_l1", config=GlobalL1)
def global_l1(model, cfg, ctx):
    from torch.nn.utils import prune as torch_prune

    from benchmark.pruning.common import PruneOutcome, prunable_layers

    layers = prunable_layers(model, cfg.prune_head)[1 if cfg.skip_first else 0:]
    torch_prune.global_unstructured([(m, "weight") for _, m in layers], pruning_method=torch_prune.L1Unstructured,
                                    amount=float(cfg.sparsity))
    return PruneOutcome(model, structured=False)
'''

YAML = """method: global_l1
sparsity: 0.5
prune_head: true
skip_first: false
"""

DATASET = '''"""Three classes of 8x8 images: a bright bar in the top, middle or bottom rows, plus noise (seeded)."""
from __future__ import annotations

from typing import Literal

from benchmark.checks import whole
from benchmark.datasets import DATASETS, DatasetConfig


class Bars(DatasetConfig):
    name: Literal["bars"]
    per_class: whole(10, 10_000)


@DATASETS.register("bars", config=Bars, shape=(1, 8, 3), sizes=(450, 150))  # train, test at per_class 200
def load_bars(cfg, seed: int):
    import numpy as np

    from benchmark.data import from_arrays, stratified_split

    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(3), cfg.per_class)
    x = rng.uniform(0, 0.3, size=(len(y), 1, 8, 8)).astype(np.float32)
    for label in range(3):
        x[y == label, 0, 1 + 2 * label: 3 + 2 * label, :] = 0.9
    xtr, xte, ytr, yte = stratified_split(x, y, 0.25, seed)
    return from_arrays("bars", xtr, ytr, xte, yte, cfg.num_classes)
'''

DATASET_YAML = """name: bars
in_channels: 1
image_size: 8
num_classes: 3
per_class: 200
eps: [0.1]
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A copy of the project's code and configs with the new method's two files added."""
    copy = tmp_path_factory.mktemp("project")
    for folder in ("benchmark", "attacks", "models", "conf", "hydra_plugins"):
        shutil.copytree(ROOT / folder, copy / folder, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "benchmark" / "pruning" / "methods" / "global_l1.py").write_text(METHOD)
    (copy / "conf" / "pruning" / "global_l1.yaml").write_text(YAML)
    (copy / "benchmark" / "datasets" / "bars.py").write_text(DATASET)
    (copy / "conf" / "dataset" / "bars.yaml").write_text(DATASET_YAML)
    return copy


def _run(project: Path, results: Path, *overrides: str, importtime: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(project)}
    python = [sys.executable, *(["-X", "importtime"] if importtime else [])]
    return subprocess.run([*python, "-m", "benchmark.run", "model=lenet300", "threat=fgsm",
                           "train.epochs=1", "finetune.epochs=1", "threat.subset=20", "device=cpu", "eval=fast",
                           f"results_dir={results}", *overrides],
                          cwd=project, env=env, capture_output=True, text=True, timeout=600)


def test_a_new_method_runs_a_cell_from_one_file_and_one_yaml(project, tmp_path):
    out = _run(project, tmp_path, "dataset=digits", "pruning=global_l1", "pruning.sparsity=0.6",
               "pruning.skip_first=true")
    assert out.returncode == 0, out.stderr[-3000:]
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["default"])
    assert len(runs) == 1 and runs["status"][0] == "FINISHED"
    run = runs.iloc[0]
    assert run["params.pruning.method"] == "global_l1" and run["params.pruning.skip_first"] == "True"
    assert run["tags.mlflow.runName"].startswith("lenet300|global_l1|s=0.6|")
    # lenet300 on 16x16 digits: 256x300, 300x100, 100x10 prunable weights; the first layer stays dense, the other
    # two lose 0.6 of their weights together (one global ranking): 0.6 * 31,000 / 107,800 of all prunable weights
    per_layer = mlflow.artifacts.load_dict(f"runs:/{run['run_id']}/sparsity_per_layer.json")
    first, second, head = per_layer.values()
    assert first == 0.0 and (second * 30_000 + head * 1_000) / 31_000 == pytest.approx(0.6, abs=1e-4), per_layer
    assert run["metrics.sparsity/achieved"] == pytest.approx(0.6 * 31_000 / 107_800, abs=1e-4)


def test_a_mistake_in_the_new_methods_key_is_rejected_before_the_heavy_imports(project, tmp_path):
    for key, value, allowed in (("pruning.skip_first", "3", "true or false"),
                                ("dataset.per_class", "5", "10 <= per_class <= 10000")):
        out = _run(project, tmp_path, "dataset=bars", "pruning=global_l1", f"{key}={value}", importtime=True)
        assert out.returncode == 2, out.stderr[-3000:]
        imported = {line.split("|")[-1].strip() for line in out.stderr.splitlines() if line.startswith("import time:")}
        assert not HEAVY & imported, sorted(HEAVY & imported)
        said = [line for line in (out.stdout + out.stderr).splitlines() if line and not line.startswith("import time:")]
        assert len(said) == 1 and f"{key}={value}" in said[0] and allowed in said[0], said


def test_a_new_dataset_runs_a_cell_from_one_file_and_one_yaml(project, tmp_path):
    out = _run(project, tmp_path, "dataset=bars", "pruning=global_l1", "pruning.sparsity=0.5", "train.epochs=20",
               "train.lr=0.01")
    assert out.returncode == 0, out.stderr[-3000:]
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = mlflow.search_runs(experiment_names=["default"]).iloc[0]
    assert run["status"] == "FINISHED" and run["params.dataset.name"] == "bars"
    # 600 images split 450/150; three well-separated classes: far above chance (1/3)
    assert run["metrics.cost/params_dense"] == 8 * 8 * 300 + 300 + 300 * 100 + 100 + 100 * 3 + 3
    assert run["metrics.clean/acc"] >= 0.9
