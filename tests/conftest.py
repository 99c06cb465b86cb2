"""Shared fixtures. Tests run on the CPU with one torch thread (deterministic and fair to a 2-core machine)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

torch.set_num_threads(1)
CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")



def compose_cfg(results_dir: Path | str, *overrides: str):
    """The Hydra config of one cell, as `python -m benchmark.run` composes it."""
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="config", overrides=[f"results_dir={results_dir}", *overrides])


def make_cfg(results_dir: Path | str, *overrides: str):
    """A cell in seconds: the `debug=tiny` preset (conf/debug/tiny.yaml), then the overrides."""
    return compose_cfg(results_dir, "debug=tiny", *overrides)


@pytest.fixture
def cfg_factory(tmp_path):
    return lambda *overrides: make_cfg(tmp_path, *overrides)


@pytest.fixture(scope="session")
def digits():
    from benchmark.data import load_dataset

    return load_dataset(make_cfg("unused").dataset, seed=0)


@pytest.fixture(scope="session")
def trained_seed_cnn(digits):
    """seed_cnn trained on digits (16x16) for a few epochs: ~95% test accuracy in ~2 s."""
    from benchmark.training import fit
    from models import build_model

    torch.manual_seed(0)
    model = build_model("seed_cnn", digits.in_channels, digits.image_size, digits.num_classes)
    fit(model, digits.x_train, digits.y_train, epochs=8, lr=1e-3, batch_size=64, seed=0,
        device=torch.device("cpu"), desc="fixture")
    return model
