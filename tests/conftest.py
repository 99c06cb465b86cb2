"""Shared fixtures. Tests run on the CPU with one torch thread (deterministic and fair to a 2-core machine)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = str(ROOT / "conf")


def cli_env() -> dict[str, str]:
    """The environment of a `python -m benchmark.run` subprocess: this checkout, one CPU thread, one-line errors."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    env.pop("HYDRA_FULL_ERROR", None)
    return env


def compose_cfg(results_dir: Path | str, *overrides: str):
    """The Hydra config of one cell, as `python -m benchmark.run` composes it."""
    from benchmark.validate import compose_config

    return compose_config([f"results_dir={results_dir}", *overrides])


def make_cfg(results_dir: Path | str, *overrides: str):
    """A cell in seconds: the `debug=tiny` preset (conf/debug/tiny.yaml), then the overrides."""
    return compose_cfg(results_dir, "debug=tiny", *overrides)


def write_npz(path: Path, n_train=64, n_test=32, classes=10, side=32, channels=3, seed=0, **replace) -> Path:
    """Class-dependent images (each class a brighter band), uint8 NHWC like most image dumps."""
    rng = np.random.default_rng(seed)

    def split(n):
        y = np.arange(n) % classes
        x = rng.integers(0, 120, (n, side, side, channels), dtype=np.uint8)
        for c in range(classes):
            x[y == c, (c * side) // classes, :, :] = 255
        return x, y

    (xtr, ytr), (xte, yte) = split(n_train), split(n_test)
    arrays = {"x_train": xtr, "y_train": ytr, "x_test": xte, "y_test": yte, **replace}
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


def write_images(folder: Path, classes: dict[str, int], size=(12, 12), mode="RGB"):
    """An ImageFolder tree: folder/<class>/<i>.png, `count` plain images per class."""
    from PIL import Image

    for name, count in classes.items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            Image.new(mode, size, color=(i * 20 % 256) if mode == "L" else (i * 20 % 256, 0, 100)).save(
                folder / name / f"{i}.png")


@pytest.fixture
def cfg_factory(tmp_path):
    return lambda *overrides: make_cfg(tmp_path, *overrides)


@pytest.fixture(scope="session")
def digits():
    """digits as a cell sees it: the training split without the defender split (benchmark.data.cell_data)."""
    from benchmark.data import cell_data

    return cell_data(make_cfg("unused"))


@pytest.fixture(scope="session")
def trained_seed_cnn(digits):
    """seed_cnn trained on digits (16x16) for a few epochs: well above chance, in seconds."""
    from benchmark.training import fit
    from models import build_model

    torch.manual_seed(0)
    model = build_model("seed_cnn", digits.in_channels, digits.image_size, digits.num_classes)
    fit(model, digits.x_train, digits.y_train, epochs=8, lr=1e-3, batch_size=64, seed=0,
        device=torch.device("cpu"), desc="fixture")
    return model


def pytest_collection_modifyitems(items):
    """Under `pytest -n N --dist loadgroup` (make test), the tests that read the tiny grid's store share one worker,
    so the grid is built once per session rather than once per worker."""
    for item in items:
        if "store" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("tiny_store"))


@pytest.fixture(scope="session")
def store():
    """The tiny grid's MLflow store (tests/tiny_store.py), built once per session by the first test that asks."""
    import tiny_store

    return tiny_store.build()


# What a test session may add to the top of the checkout: Python's and pytest's caches, Hypothesis's example
# database (written when a property test fails), and the Ray venv with the project's metadata that the scale tests
# build (`make venv-ray`: pip install -e .).
CHECKOUT_CACHES = {".pytest_cache", "__pycache__", ".hypothesis", ".venv-ray", "prunesec_bench.egg-info"}


@pytest.fixture(scope="session", autouse=True)
def checkout_stays_clean():
    """Nothing a test runs writes into the checkout's top folder: a tracking store there (`mlflow.db`, `mlruns/`:
    MLflow's default when no tracking URI is set), a Slurm log (`slurm-<job>.out`: sbatch's default output in the
    submitting directory) or anything else. Fails the session naming what appeared."""
    before = set(os.listdir(ROOT))
    yield
    appeared = sorted(set(os.listdir(ROOT)) - before - CHECKOUT_CACHES)
    assert not appeared, f"the tests wrote {appeared} into the checkout {ROOT}; write under a tmp_path instead"
