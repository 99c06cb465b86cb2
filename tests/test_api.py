"""The Python API (`from benchmark import evaluate, prune`): the cell of the command line for the same config (same
hash, same numbers), a module object identified by its weights and structure, arrays identified by their content,
no MLflow run on request, and an `import benchmark` that loads no heavy library."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from benchmark import evaluate, prune
from benchmark.api import _config
from benchmark.cell import prepare, run_cell
from benchmark.checks import ConfigError
from models import build_model

from conftest import ROOT, cli_env, make_cfg

TINY = ["debug=tiny", "eval=fast", "threat.subset=40"]
# Metrics that measure the machine's speed, not the model: never equal between two runs.
TIMING = ("time/", "cost/latency", "cost/speedup")


def _computed(metrics) -> dict[str, float]:
    return {k: float(v) for k, v in dict(metrics).items() if not k.startswith(TIMING)}


def test_import_benchmark_loads_no_heavy_library_until_evaluate_is_asked_for():
    code = ("import sys, benchmark; heavy = {'torch', 'art', 'mlflow'} & set(sys.modules); assert not heavy, heavy; "
            "from benchmark import evaluate, prune; assert 'torch' in sys.modules; print('ok')")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=cli_env(), capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_evaluate_is_the_command_lines_cell_same_hash_same_numbers(trained_seed_cnn, tmp_path):
    """`model=seed_cnn model.checkpoint=<the module's weights> pruning=none finetune.epochs=0` run by the cell
    function of `python -m benchmark.run`, and evaluate() on the module with `model=seed_cnn`: one cell."""
    checkpoint = tmp_path / "mine.safetensors"
    save_file(trained_seed_cnn.state_dict(), str(checkpoint))
    cli = run_cell(make_cfg(tmp_path / "cli", "model=seed_cnn", f"model.checkpoint={checkpoint}", "pruning=none",
                            "finetune.epochs=0", "threat=fgsm", *TINY[1:]))
    report = evaluate(trained_seed_cnn, "digits", threat="fgsm", overrides=["model=seed_cnn", *TINY],
                      results_dir=str(tmp_path / "api"))
    assert report.attrs["cell_hash"] == cli.cell_hash and report.attrs["status"] == "finished"
    assert report.name == cli.run_name and report.attrs["run_id"]
    assert _computed(report) == pytest.approx(_computed(cli.metrics), abs=1e-9)
    assert report["clean/acc"] > 0.5  # the module's own weights were measured, not a fresh model's

    again = evaluate(trained_seed_cnn, "digits", threat="fgsm", overrides=["model=seed_cnn", *TINY],
                     results_dir=str(tmp_path / "api"))  # FINISHED in the store: its logged metrics
    assert again.attrs["status"] == "skipped" and again.attrs["run_id"] == report.attrs["run_id"]
    assert _computed(again) == pytest.approx(_computed(report), abs=1e-9)


def test_log_false_creates_no_run_and_computes_the_same_cell(trained_seed_cnn, tmp_path):
    logged = evaluate(trained_seed_cnn, "digits", threat="fgsm", overrides=TINY, results_dir=str(tmp_path / "a"))
    quiet = evaluate(trained_seed_cnn, "digits", threat="fgsm", log=False, overrides=TINY,
                     results_dir=str(tmp_path / "b"))
    assert not (tmp_path / "b" / "mlflow.db").exists() and (tmp_path / "a" / "mlflow.db").exists()
    assert quiet.attrs["run_id"] is None and quiet.attrs["cell_hash"] == logged.attrs["cell_hash"]
    assert _computed(quiet) == pytest.approx(_computed(logged), abs=1e-9)
    assert quiet.name.startswith("Sequential|none|")  # a module object is named by its class


def test_a_module_object_is_identified_by_its_weights_and_structure(trained_seed_cnn, tmp_path):
    def identity(model):
        cfg = _config(model, "digits", [*TINY, f"results_dir={tmp_path}"])
        return prepare(cfg)[0], cfg

    same, cfg = identity(trained_seed_cnn)
    assert cfg.model.name == "instance" and cfg.model.checkpoint.startswith(str(tmp_path / "inputs" / "models"))
    copy = build_model("seed_cnn", 1, 16, 10)
    copy.load_state_dict(trained_seed_cnn.state_dict())
    assert identity(copy)[0] == same  # another object with the same weights: the same cell
    with torch.no_grad():
        copy[0].bias[0] += 1.0
    assert identity(copy)[0] != same  # one weight changed: another cell
    wider = build_model("lenet300", 1, 16, 10)
    assert identity(wider)[0] != same


def test_arrays_and_tensors_are_identified_by_their_content(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.random((60, 1, 12, 12), dtype=np.float32), np.arange(60) % 3
    net = build_model("seed_cnn", 1, 12, 3)

    def composed(data):
        return _config(net, data, [*TINY, f"results_dir={tmp_path}"])

    as_numpy, as_tensors = composed((x, y)), composed((torch.from_numpy(x), torch.from_numpy(y)))
    assert as_numpy.dataset.name == "npz" and as_numpy.dataset.path == as_tensors.dataset.path
    assert prepare(as_numpy)[0] == prepare(as_tensors)[0]
    by_path = composed(as_numpy.dataset.path)  # the written archive, named like any npz file
    assert prepare(by_path)[0] == prepare(as_numpy)[0]
    y_changed = y.copy()
    y_changed[0] = 1
    assert composed((x, y_changed)).dataset.path != as_numpy.dataset.path


@pytest.mark.parametrize("data,match", [("mnist6k", "data='mnist6k' is no dataset option"),
                                        ((np.zeros(3),), "data of type tuple"),
                                        ({"x": np.zeros((4, 8, 8))}, r"data has arrays \['x'\]")])
def test_bad_data_is_one_line_before_any_compute(tmp_path, data, match):
    with pytest.raises(ConfigError, match=match):
        _config(build_model("seed_cnn", 1, 16, 10), data, [f"results_dir={tmp_path}"])


def test_a_module_that_cannot_take_the_data_is_rejected_before_any_compute(tmp_path):
    rgb = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.Linear(4 * 14 * 14, 10))
    with pytest.raises(ConfigError, match=r"model.name='instance' does not fit dataset.name='digits'.*forward failed"):
        evaluate(rgb, "digits", threat="fgsm", overrides=TINY, results_dir=str(tmp_path))
    assert not (tmp_path / "mlflow.db").exists()
    with pytest.raises(ConfigError, match="model=str is not a torch.nn.Module"):
        evaluate("seed_cnn", "digits", results_dir=str(tmp_path))


def test_prune_returns_the_pruned_module_and_its_achieved_sparsity(trained_seed_cnn, tmp_path):
    before = {k: v.clone() for k, v in trained_seed_cnn.state_dict().items()}
    pruned = prune(trained_seed_cnn, "magnitude_global", 0.5, "digits", overrides=["debug=tiny"],
                   results_dir=str(tmp_path))
    weights = [m.weight for m in pruned.model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    assert pruned.sparsity == pytest.approx(zeros) and abs(pruned.sparsity - 0.5) < 0.01
    assert all(torch.equal(v, trained_seed_cnn.state_dict()[k]) for k, v in before.items())  # the input is kept
    structured = prune(trained_seed_cnn, "l1_filter", 0.5, "digits", overrides=["debug=tiny"],
                       results_dir=str(tmp_path))
    assert structured.model[0].out_channels < trained_seed_cnn[0].out_channels and structured.sparsity > 0.3
    with pytest.raises(ConfigError, match="pruning.method"):
        prune(trained_seed_cnn, "slimming", 0.5, "digits", overrides=["debug=tiny"], results_dir=str(tmp_path))
