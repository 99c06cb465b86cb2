"""Any nn.Module by import path (`model=custom model._target_=pkg.module.Class`): it runs a cell, its code enters
the keys by content, and a module that cannot take the data is rejected with one line (exit code 2); and
`model.normalize`, applied inside the model."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from benchmark.cell import prepare, run_cell
from benchmark.validate import ConfigError, validate
from models import build_from_config

from conftest import ROOT, cli_env, make_cfg

NETS = '''
import torch.nn as nn


class TinyNet(nn.Module):
    """A conv and a head, sized by its own keyword arguments."""

    def __init__(self, channels, side, classes, width=4):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(), nn.Flatten())
        self.head = nn.Linear(width * side * side, classes)

    def forward(self, x):
        return self.head(self.features(x))


class NotAModule:
    def __init__(self, **kwargs):
        pass


class Crashes(TinyNet):
    def forward(self, x):
        raise ValueError("no forward for you")
'''
SHAPE = ["+model.channels=1", "+model.side=16", "+model.classes=10"]
TINY_NET = ["model=custom", "model._target_=tinynets.TinyNet", "~model.in_channels", "~model.image_size",
            "~model.num_classes", *SHAPE]


@pytest.fixture
def tinynets(tmp_path, monkeypatch):
    folder = tmp_path / "code"
    folder.mkdir()
    (folder / "tinynets.py").write_text(NETS)
    monkeypatch.syspath_prepend(str(folder))
    yield folder / "tinynets.py"
    sys.modules.pop("tinynets", None)


def test_a_module_by_import_path_runs_a_cell(tinynets, tmp_path):
    result = run_cell(make_cfg(tmp_path, *TINY_NET, "threat=fgsm", "eval=fast", "threat.subset=40"))
    assert result.status == "finished" and result.run_name.startswith("TinyNet|")
    assert 0 <= result.metrics["clean/acc"] <= 1


def test_the_default_custom_option_builds_the_seed_cnn_by_its_path(tmp_path):
    cfg = make_cfg(tmp_path, "model=custom")
    validate(cfg)
    model = build_from_config(cfg.model, 1, 16, 10)
    assert [type(m).__name__ for m in model][:2] == ["Conv2d", "ReLU"]


def test_the_modules_source_enters_the_cell_hash(tinynets, tmp_path):
    before, _ = prepare(make_cfg(tmp_path, *TINY_NET))
    assert before == prepare(make_cfg(tmp_path, *TINY_NET))[0]
    assert before != prepare(make_cfg(tmp_path, *TINY_NET, "+model.width=8"))[0]  # its arguments too
    tinynets.write_text(tinynets.read_text().replace("nn.ReLU()", "nn.Tanh()"))
    assert before != prepare(make_cfg(tmp_path, *TINY_NET))[0]


def test_an_installed_packages_module_is_identified_by_its_version(tmp_path):
    from models.import_path import source_identity

    identity = source_identity("torchvision.models.resnet18")
    assert identity == {"distribution": "torchvision", "version": torchvision_version()}
    assert set(source_identity("models.seed_cnn.seed_cnn")) == {"source_sha256"}  # this checkout's file


def torchvision_version() -> str:
    import importlib.metadata

    return importlib.metadata.version("torchvision")


@pytest.mark.parametrize("overrides,message", [
    (["model._target_=tinynets.Missing"], "model._target_='tinynets.Missing' cannot be imported"),
    (["model._target_=nowhere.Net"], "model._target_='nowhere.Net' cannot be imported \\(ModuleNotFoundError"),
    (["model._target_=tinynets.NotAModule"], "returned a NotAModule; allowed: a class or function that returns"),
    (["+model.depth=3"], "cannot be built with .* got an unexpected keyword argument 'depth'"),
    (["model.classes=3"], "model._target_='tinynets.TinyNet' does not fit dataset.name='digits'; allowed: a model "
                          r"whose forward returns \(batch, 10\) logits"),
    (["model.side=8"], "forward failed"),
    (["model._target_=tinynets.Crashes"], "forward failed: no forward for you"),
    (["model._target_=not-a-path"], "is not an import path"),
])
def test_a_module_that_cannot_take_the_data_is_one_line(tinynets, tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message) as caught:
        validate(make_cfg(tmp_path, *TINY_NET, *overrides))
    assert "\n" not in str(caught.value)


def test_the_command_line_rejects_it_with_exit_code_2(tinynets, tmp_path):
    env = {**cli_env(), "PYTHONPATH": f"{ROOT}:{tinynets.parent}"}
    done = subprocess.run([sys.executable, "-m", "benchmark.run", "debug=tiny", *TINY_NET, "model.classes=3",
                           f"results_dir={tmp_path}"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line]
    assert len(lines) == 1 and "model._target_='tinynets.TinyNet' does not fit" in lines[0], lines
    assert not (tmp_path / "mlflow.db").exists()


def test_normalize_runs_inside_the_model_and_enters_the_key(tmp_path):
    plain = make_cfg(tmp_path, "model=seed_cnn")
    cfg = make_cfg(tmp_path, "model=seed_cnn", "+model.normalize={mean:[0.5],std:[0.25]}")
    validate(cfg)
    torch.manual_seed(0)
    inner = build_from_config(plain.model, 1, 16, 10)
    torch.manual_seed(0)
    wrapped = build_from_config(cfg.model, 1, 16, 10)
    assert set(wrapped.state_dict()) == set(inner.state_dict())  # a checkpoint of the plain model loads
    x = torch.rand(2, 1, 16, 16)
    assert torch.allclose(wrapped(x), inner((x - 0.5) / 0.25))
    assert prepare(cfg)[0] != prepare(plain)[0]
    assert prepare(make_cfg(tmp_path, "model=seed_cnn", "+model.normalize=null"))[0] == prepare(plain)[0]
    with pytest.raises(ConfigError, match=r"model.normalize.mean=\[0.5, 0.5, 0.5\] has 3 value\(s\); allowed: one per"):
        validate(make_cfg(tmp_path, "model=seed_cnn", "+model.normalize={mean:[0.5,0.5,0.5],std:[1,1,1]}"))
