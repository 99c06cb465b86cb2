"""Adding a pruning method, a dataset, a model or an attack is one Python file and one YAML each (the worked
examples of docs/extending.md): written into a copy of the project, nothing else touched, a cell runs with each,
and a mistake in a new key is rejected with one line (before any heavy import, except a model's options: the model
modules import torch)."""
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


MODEL = '''"""A multilayer perceptron: `depth` hidden layers of `hidden` units with ReLU, then the classifier head."""
from __future__ import annotations

from typing import Literal

import torch.nn as nn

from benchmark.checks import whole
from models import MODELS, ModelConfig


class Mlp(ModelConfig):
    name: Literal["mlp"]
    hidden: whole(1, 100_000)
    depth: whole(1, 100)


@MODELS.register("mlp", config=Mlp)
def mlp(in_channels: int, image_size: int, num_classes: int, *, hidden: int, depth: int) -> nn.Module:
    layers, width = [nn.Flatten()], in_channels * image_size * image_size
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    return nn.Sequential(*layers, nn.Linear(width, num_classes))
'''

MODEL_YAML = """name: mlp
hidden: 64
depth: 2
checkpoint: null
"""

ATTACK = '''"""MI-FGSM (Dong et al. 2018): iterative FGSM whose steps follow a momentum of the normalised gradients
(ART MomentumIterativeMethod)."""
from __future__ import annotations

from typing import Literal

from attacks.evasion_attacks import EVASION_ATTACKS, NORM_ORDER, AttackConfig
from benchmark.checks import number, whole


class MiFgsm(AttackConfig):
    name: Literal["mifgsm"]
    max_iter: whole(1, 10_000)
    step_fraction: number(1e-6, 10.0)
    decay: number(0.0, 10.0)


@EVASION_ATTACKS.register("mifgsm", config=MiFgsm, norm="linf", role="iterative")
def mifgsm(classifier, eps, p):
    from art.attacks.evasion import MomentumIterativeMethod

    return MomentumIterativeMethod(classifier, norm=NORM_ORDER["linf"], eps=eps, eps_step=eps * p.step_fraction,
                                   decay=p.decay, max_iter=p.max_iter, batch_size=p.batch_size, verbose=False)
'''

ATTACK_YAML = """name: mifgsm
kind: evasion
subset: 500
eps: ${dataset.eps}
attacks:
  - name: mifgsm
    max_iter: 10
    step_fraction: 0.1
    decay: 1.0
    batch_size: 250
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A copy of the project's code and configs with the new method's, dataset's, model's and attack's files added."""
    copy = tmp_path_factory.mktemp("project")
    for folder in ("benchmark", "attacks", "models", "conf", "hydra_plugins"):
        shutil.copytree(ROOT / folder, copy / folder, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "benchmark" / "pruning" / "methods" / "global_l1.py").write_text(METHOD)
    (copy / "conf" / "pruning" / "global_l1.yaml").write_text(YAML)
    (copy / "benchmark" / "datasets" / "bars.py").write_text(DATASET)
    (copy / "conf" / "dataset" / "bars.yaml").write_text(DATASET_YAML)
    (copy / "models" / "mlp.py").write_text(MODEL)
    (copy / "conf" / "model" / "mlp.yaml").write_text(MODEL_YAML)
    (copy / "attacks" / "evasion_attacks" / "mifgsm.py").write_text(ATTACK)
    (copy / "conf" / "threat" / "mifgsm.yaml").write_text(ATTACK_YAML)
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


def test_a_new_model_runs_a_cell_from_one_file_and_one_yaml(project, tmp_path):
    out = _run(project, tmp_path, "dataset=digits", "model=mlp", "model.hidden=32", "pruning=magnitude_global")
    assert out.returncode == 0, out.stderr[-3000:]
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = mlflow.search_runs(experiment_names=["default"]).iloc[0]
    assert run["status"] == "FINISHED" and run["params.model.name"] == "mlp" and run["params.model.hidden"] == "32"
    # 16x16 digits: 256 -> 32 -> 32 -> 10
    assert run["metrics.cost/params_dense"] == 256 * 32 + 32 + 32 * 32 + 32 + 32 * 10 + 10


def test_a_new_attack_runs_a_cell_from_one_file_and_one_yaml(project, tmp_path):
    out = _run(project, tmp_path, "dataset=digits", "pruning=magnitude_global", "threat=mifgsm", "threat.subset=40",
               "train.epochs=5")
    assert out.returncode == 0, out.stderr[-3000:]
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = mlflow.search_runs(experiment_names=["default"]).iloc[0]
    assert run["status"] == "FINISHED" and run["params.threat.name"] == "mifgsm"
    robust = [run[f"metrics.robust/mifgsm/eps_{eps:g}"] for eps in (0.05, 0.1, 0.2, 0.3)]
    # robust means right on the clean image and on the attack's output: never above the subset's clean accuracy;
    # the only attack is its own worst case; 10 steps at eps 0.3 break an undefended MLP on most images
    assert all(r <= run["metrics.robust/subset_clean_acc"] for r in robust)
    assert run["metrics.robust/worst/eps_0.3"] == robust[-1]
    assert robust[-1] < 0.5 * run["metrics.robust/subset_clean_acc"]
    assert run["metrics.attack/mifgsm/budget"] == 10  # an iterative attack: its steps x one start


@pytest.mark.parametrize("overrides, said, model_option", [
    (("threat=mifgsm", "threat.attacks.0.decay=-1"), "threat.attacks[0].decay=-1 is out of range; allowed: "
                                                     "0.0 <= decay <= 10.0", False),
    (("model=mlp", "model.depth=0"), "model.depth=0 is out of range; allowed: 1 <= depth <= 100", True),
    (("model=mlp", "+model.width=3"), "model.width=3 is not a key of model", True),
])
def test_a_mistake_in_a_new_attacks_or_models_key_is_one_line(project, tmp_path, overrides, said, model_option):
    """An attack's key is checked with the schema, before the heavy imports; a model's option once torch is
    imported (after the cell's own log lines), still before any data is loaded."""
    out = _run(project, tmp_path, "dataset=digits", *overrides, importtime=True)
    assert out.returncode == 2, out.stderr[-3000:]
    imported = {line.split("|")[-1].strip() for line in out.stderr.splitlines() if line.startswith("import time:")}
    assert model_option or not HEAVY & imported, sorted(HEAVY & imported)
    lines = [line for line in (out.stdout + out.stderr).splitlines() if line and not line.startswith("import time:")]
    assert said in lines[-1] and (model_option or len(lines) == 1), lines
    assert not list(tmp_path.glob("mlruns*")) and not (tmp_path / "mlflow.db").exists()
