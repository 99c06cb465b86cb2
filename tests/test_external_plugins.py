"""A pruning method, an evasion attack, a model and a dataset shipped as an installed package (docs/extending.md,
"Shipping plugins as a package"): the package is written into a temporary folder, installed with pip (`--target`,
offline), and cells run with its method and its attack, and with its model on its dataset, through
`python -m benchmark.run`, with no file of this checkout changed. A plugin that cannot be imported, that takes a
built-in's name, or that ships a built-in's YAML is rejected with exit code 2 and one line naming it, before the
heavy imports."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from conftest import ROOT, cli_env
from test_extending import ATTACK, ATTACK_YAML, DATASET, DATASET_YAML, HEAVY, METHOD, MODEL, MODEL_YAML
from test_extending import YAML as METHOD_YAML

PYPROJECT = """[build-system]
requires = ["setuptools"]
build-backend = "setuptools.build_meta"

[project]
name = "prunesec-extras"
version = "0.1.0"

[project.entry-points."prunesec.pruning"]
global_l1 = "prunesec_extras.global_l1"

[project.entry-points."prunesec.evasion_attacks"]
mifgsm = "prunesec_extras.mifgsm"

[project.entry-points."prunesec.models"]
mlp = "prunesec_extras.mlp"

[project.entry-points."prunesec.datasets"]
bars = "prunesec_extras.bars"

[project.entry-points."prunesec.configs"]
prunesec_extras = "prunesec_extras.conf"

[tool.setuptools.package-data]
"*" = ["*.yaml"]
"""


def write_package(folder: Path, files: dict[str, str]) -> Path:
    for relative, text in files.items():
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_text(text)
    return folder


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The plugin package, pip-installed (no network, no build isolation: setuptools from this environment) into
    a folder of its own, as `pip install` would put it into site-packages."""
    tmp = tmp_path_factory.mktemp("plugin")
    source = write_package(tmp / "prunesec-extras", {
        "pyproject.toml": PYPROJECT,
        "prunesec_extras/__init__.py": "",
        "prunesec_extras/global_l1.py": METHOD,
        "prunesec_extras/mifgsm.py": ATTACK,
        "prunesec_extras/mlp.py": MODEL,
        "prunesec_extras/bars.py": DATASET,
        "prunesec_extras/conf/__init__.py": "",
        "prunesec_extras/conf/pruning/global_l1.yaml": METHOD_YAML,
        "prunesec_extras/conf/threat/mifgsm.yaml": ATTACK_YAML,
        "prunesec_extras/conf/model/mlp.yaml": MODEL_YAML,
        "prunesec_extras/conf/dataset/bars.yaml": DATASET_YAML,
    })
    target = tmp / "site"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
                           "--quiet", "--target", str(target), str(source)],
                          cwd=tmp, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (target / "prunesec_extras-0.1.0.dist-info" / "entry_points.txt").is_file()
    return target


def hand_installed(folder: Path, name: str, entry_points: str, files: dict[str, str]) -> Path:
    """A package installed by hand: its modules and the dist-info metadata pip would write (METADATA and
    entry_points.txt are all that importlib.metadata reads)."""
    write_package(folder, files)
    write_package(folder, {f"{name}-0.1.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n",
                           f"{name}-0.1.dist-info/entry_points.txt": entry_points})
    return folder


def run(results: Path, *paths: Path, overrides: tuple[str, ...] = (), importtime: bool = False):
    env = {**cli_env(), "PYTHONPATH": ":".join([str(ROOT), *map(str, paths)])}
    python = [sys.executable, *(["-X", "importtime"] if importtime else [])]
    return subprocess.run([*python, "-m", "benchmark.run", "debug=tiny", "model=lenet300", "train.epochs=2",
                           "finetune.epochs=1", "threat.subset=20", "eval=fast", f"results_dir={results}",
                           *overrides], cwd=results.parent, env=env, capture_output=True, text=True, timeout=600)


def said(out: subprocess.CompletedProcess) -> list[str]:
    return [line for line in (out.stdout + out.stderr).splitlines() if line and not line.startswith("import time:")]


def heavy_imports(out: subprocess.CompletedProcess) -> set[str]:
    imported = {line.split("|")[-1].strip() for line in out.stderr.splitlines() if line.startswith("import time:")}
    return HEAVY & imported


def the_finished_run(out: subprocess.CompletedProcess, results: Path):
    """The one run a successful cell logged under `results`, FINISHED."""
    assert out.returncode == 0, out.stderr[-3000:]
    mlflow.set_tracking_uri(f"sqlite:///{results / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["default"])
    assert len(runs) == 1 and runs["status"][0] == "FINISHED"
    return runs.iloc[0]


def test_a_cell_runs_with_an_installed_packages_method_and_attack(site, tmp_path):
    results = tmp_path / "results"
    out = run(results, site, overrides=("pruning=global_l1", "pruning.sparsity=0.6", "pruning.skip_first=true",
                                        "threat=mifgsm"))
    run_ = the_finished_run(out, results)
    assert run_["params.pruning.method"] == "global_l1" and run_["params.pruning.skip_first"] == "True"
    assert run_["params.threat.name"] == "mifgsm" and run_["metrics.attack/mifgsm/budget"] == 10
    # the plugin's ranking: the first layer stays dense, the other two lose 0.6 of their weights together
    # (lenet300 on 16x16 digits: 256x300, 300x100, 100x10 prunable weights)
    per_layer = mlflow.artifacts.load_dict(f"runs:/{run_['run_id']}/sparsity_per_layer.json")
    first, second, head = per_layer.values()
    assert first == 0.0 and (second * 30_000 + head * 1_000) / 31_000 == pytest.approx(0.6, abs=1e-4), per_layer
    robust = [run_[f"metrics.robust/mifgsm/eps_{eps:g}"] for eps in (0.05, 0.1, 0.2, 0.3)]
    assert all(r <= run_["metrics.robust/subset_clean_acc"] for r in robust)
    assert run_["tags.plugin.prunesec-extras"] == "0.1.0"


def test_a_cell_runs_with_an_installed_packages_model_on_its_dataset(site, tmp_path):
    results = tmp_path / "results"
    out = run(results, site, overrides=("dataset=bars", "model=mlp", "model.hidden=32", "train.epochs=20",
                                        "train.lr=0.01", "pruning=magnitude_global", "pruning.sparsity=0.5"))
    run_ = the_finished_run(out, results)
    assert run_["params.dataset.name"] == "bars" and run_["params.model.name"] == "mlp"
    # the package's MLP on its 8x8 three-class bars: 64 -> 32 -> 32 -> 3, far above chance (1/3)
    assert run_["metrics.cost/params_dense"] == 64 * 32 + 32 + 32 * 32 + 32 + 32 * 3 + 3
    assert run_["metrics.clean/acc"] >= 0.9
    assert run_["tags.plugin.prunesec-extras"] == "0.1.0"


HASHES = """
import json
from hydra import compose, initialize_config_dir
from benchmark import hashing
with initialize_config_dir(config_dir={conf!r}, version_base="1.3"):
    cells = [compose(config_name="config", overrides=["debug=tiny", *overrides]) for overrides in
             (["pruning=global_l1", "threat=mifgsm"], ["pruning=magnitude_global", "threat=fgsm"])]
print(json.dumps([[hashing.cell_hash(cfg), hashing.plugin_versions(cfg)] for cfg in cells]))
"""


def test_the_plugins_version_enters_the_keys_of_the_cells_that_use_it(site, tmp_path):
    """A new version of the package makes its cells' cached models and finished runs stale, and no other's."""
    upgraded = tmp_path / "site"
    shutil.copytree(site, upgraded)
    metadata = upgraded / "prunesec_extras-0.1.0.dist-info" / "METADATA"
    metadata.write_text(metadata.read_text().replace("Version: 0.1.0", "Version: 0.2.0"))
    hashes = []
    for folder in (site, upgraded):
        env = {**cli_env(), "PYTHONPATH": f"{ROOT}:{folder}"}
        done = subprocess.run([sys.executable, "-c", HASHES.format(conf=str(ROOT / "conf"))], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        hashes.append(json.loads(done.stdout.strip().splitlines()[-1]))
    (plugin_old, versions_old), (builtin_old, none_old) = hashes[0]
    (plugin_new, versions_new), (builtin_new, none_new) = hashes[1]
    assert versions_old == {"prunesec-extras": "0.1.0"} and versions_new == {"prunesec-extras": "0.2.0"}
    assert plugin_old != plugin_new
    assert none_old == none_new == {} and builtin_old == builtin_new


def test_a_mistake_in_a_plugins_key_is_one_line_before_the_heavy_imports(site, tmp_path):
    out = run(tmp_path / "results", site, overrides=("pruning=global_l1", "pruning.skip_first=3"), importtime=True)
    assert out.returncode == 2, out.stderr[-3000:]
    assert not heavy_imports(out), sorted(heavy_imports(out))
    lines = said(out)
    assert len(lines) == 1 and "pruning.skip_first=3" in lines[0] and "true or false" in lines[0], lines


def test_a_plugin_that_cannot_be_imported_is_one_line_naming_it(tmp_path):
    broken = hand_installed(tmp_path / "broken", "prunesec_broken",
                            "[prunesec.pruning]\nbroken = prunesec_broken.method\n",
                            {"prunesec_broken/__init__.py": "", "prunesec_broken/method.py": "import not_installed\n"})
    out = run(tmp_path / "results", broken, importtime=True)
    assert out.returncode == 2, out.stderr[-3000:]
    assert not heavy_imports(out), sorted(heavy_imports(out))
    lines = said(out)
    assert len(lines) == 1, lines
    assert ("plugin 'broken' (prunesec.pruning = prunesec_broken.method, from prunesec_broken 0.1) cannot be "
            "imported: ModuleNotFoundError: No module named 'not_installed'") in lines[0], lines
    assert not (tmp_path / "results" / "mlflow.db").exists()
    # a process that goes on (a notebook) gets the same error each time it asks, never the registry without it
    again = ("from benchmark.pruning import PRUNERS\nfor _ in range(2):\n    try:\n        PRUNERS.names()\n"
             "    except Exception as err:\n        print(type(err).__name__, err)\n")
    done = subprocess.run([sys.executable, "-c", again], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**cli_env(), "PYTHONPATH": f"{ROOT}:{broken}"})
    lines = done.stdout.splitlines()
    assert len(lines) == 2 and lines[0] == lines[1] and lines[0].startswith("PluginError plugin 'broken'"), lines


CLASHING = """from benchmark.pruning import PRUNERS


@PRUNERS.register('magnitude_global')
def magnitude_global(model, cfg, ctx):
    return model
"""


@pytest.mark.parametrize("entry_points, files, expected", [
    ("[prunesec.pruning]\nmagnitude_global = prunesec_clash.method\n", {"prunesec_clash/method.py": CLASHING},
     "plugin 'magnitude_global' (prunesec.pruning = prunesec_clash.method, from prunesec_clash 0.1) registers "
     "pruning.method='magnitude_global', which benchmark.pruning.methods.magnitude_global registers too"),
    ("[prunesec.pruning]\nmine = prunesec_clash.method\n", {"prunesec_clash/method.py": CLASHING.replace(
        "'magnitude_global'", "'mine_too'")},
     "plugin 'mine' (prunesec.pruning = prunesec_clash.method, from prunesec_clash 0.1) registers "
     "pruning.method='mine_too', which its package lists under no entry point 'mine_too' of prunesec.pruning"),
    ("[prunesec.configs]\nmine = prunesec_clash.conf\n",
     {"prunesec_clash/conf/__init__.py": "", "prunesec_clash/conf/pruning/magnitude_global.yaml": "method: x\n"},
     "plugin 'mine' (prunesec.configs = prunesec_clash.conf, from prunesec_clash 0.1) ships "
     "pruning/magnitude_global.yaml, which this repository's conf/ has too"),
    ("[prunesec.pruning]\nempty = prunesec_clash.method\n", {"prunesec_clash/method.py": ""},
     "plugin 'empty' (prunesec.pruning = prunesec_clash.method, from prunesec_clash 0.1) registers no "
     "pruning.method='empty'"),
    ("[prunesec.configs]\nmine = prunesec_clash.missing\n", {},
     "plugin 'mine' (prunesec.configs = prunesec_clash.missing, from prunesec_clash 0.1): its config package cannot "
     "be imported: ModuleNotFoundError: No module named 'prunesec_clash.missing'"),
])
def test_a_plugin_that_clashes_or_lists_what_is_not_there_is_one_line(tmp_path, entry_points, files, expected):
    clash = hand_installed(tmp_path / "clash", "prunesec_clash", entry_points,
                           {"prunesec_clash/__init__.py": "", **files})
    out = run(tmp_path / "results", clash, importtime=True)
    assert out.returncode == 2, out.stderr[-3000:]
    assert not heavy_imports(out), sorted(heavy_imports(out))
    lines = said(out)
    assert len(lines) == 1 and expected in lines[0], lines
