"""Property: whatever the overrides, a cell is either rejected before any compute (exit code 2, one line, the store
untouched) or it finishes. Never a traceback, never a FAILED run for a config mistake.

Hypothesis draws a config group option per group and a few mutations of the composed config: any key set to a
value of another type or out of its range (whole numbers, fractions, negatives, strings, booleans, null, lists),
keys deleted, unknown keys added. Most examples go through the in-process path (`compose`, then `run_cell` on a
cheap base cell); a few run `python -m benchmark.run` to pin the end-to-end contract.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from omegaconf import DictConfig, ListConfig, OmegaConf

from benchmark.validate import ConfigError, check_config

from conftest import ROOT, cli_env, make_cfg

# A cell that costs about a second when it runs: LeNet-300-100 on digits, 1 epoch, FGSM on 20 images.
BASE = ["model=lenet300", "train.epochs=1", "finetune.epochs=0", "threat.subset=20", "eval=fast"]
OPTIONS = {  # options whose cells stay cheap (offline datasets; evasion threats: no proxy models to train)
    "dataset": ["digits", "mnist5k", "cifar10"],  # cifar10: its files are not here, so it must be rejected
    "pruning": sorted(p.stem for p in (ROOT / "conf" / "pruning").glob("*.yaml")),
    "threat": ["fgsm", "pgd"],
}
# Values as Hydra reads them from the command line: every type, in and out of every range.
VALUES = ["0", "1", "2", "-1", "0.0", "0.5", "1.5", "2.0", "1e-3", "abc", "true", "false", "null", "[]", "[0.1]",
          "[1,2]", "'1'", "{}"]
# Keys that only make a valid cell slow (they are checked like every other key, but not drawn here).
SLOW = {"train.epochs", "finetune.epochs", "seed", "eval.latency.repeats", "eval.corruptions.enabled",
        "eval.interpret.enabled", "pruning.rounds", "pruning.steps", "device", "force", "results_dir",
        "tracking_uri", "experiment_name", "dataset.data_root", "dataset.download"}


def _leaves(node, prefix: str = "") -> list[str]:
    """Every key of the composed config, lists indexed like Hydra's overrides (threat.attacks.0.name)."""
    children = node.keys() if isinstance(node, DictConfig) else range(len(node)) if isinstance(node, ListConfig) else []
    keys = []
    for key in children:
        path = f"{prefix}{key}"
        keys.append(path)
        if not OmegaConf.is_interpolation(node, key) and isinstance(node[key], (DictConfig, ListConfig)):
            keys += _leaves(node[key], path + ".")
    return keys


@st.composite
def overrides(draw) -> list[str]:
    chosen = [f"{group}={draw(st.sampled_from(options))}" for group, options in OPTIONS.items()]
    keys = [k for k in _leaves(make_cfg("unused", *BASE, *chosen)) if k not in SLOW]
    mutations = []
    for _ in range(draw(st.integers(0, 3))):
        key = draw(st.sampled_from(keys))
        kind = draw(st.sampled_from(["set", "set", "set", "delete", "add"]))
        if kind == "set":
            mutations.append(f"{key}={draw(st.sampled_from(VALUES))}")
        elif kind == "delete":
            mutations.append(f"~{key}")
        else:
            group = key.rsplit(".", 1)[0] if "." in key else ""
            mutations.append(f"+{group + '.' if group else ''}unknown_key={draw(st.sampled_from(VALUES))}")
    return [*chosen, *mutations]


def _compose(results: Path, extra: list[str]):
    try:
        return make_cfg(results, *BASE, *extra)
    except Exception:  # noqa: BLE001 - Hydra refused to compose: `benchmark.run` reports it in one line, exit code 2
        return None


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(extra=overrides())
def test_a_cell_is_rejected_in_one_line_before_compute_or_finishes(tmp_path_factory, extra):
    from benchmark.cell import run_cell

    results = tmp_path_factory.mktemp("cell")
    cfg = _compose(results, extra)
    if cfg is None:
        event("Hydra refused to compose")
        assert not any(results.iterdir())
        return
    try:
        check_config(cfg)  # as benchmark.run does: the checks without torch, then run_cell's (all of them)
        result = run_cell(cfg)
    except ConfigError as err:
        event(f"rejected: {str(err).split('=')[0].split(' ')[0]}")
        assert "\n" not in str(err), str(err)
        assert not any(results.iterdir()), "a rejected cell leaves no store, cache or lock behind"
        return
    event("finished")
    assert result.status == "finished", (extra, result)


def _cli(results: Path, extra: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "benchmark.run", *BASE, *extra, "device=cpu", f"results_dir={results}"],
                          cwd=ROOT, env=cli_env(), capture_output=True, text=True, timeout=300)


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(extra=overrides().filter(lambda extra: len(extra) > len(OPTIONS)))  # at least one mutation
def test_cli_exits_2_in_one_line_with_the_store_untouched_or_finishes(tmp_path_factory, extra):
    results = tmp_path_factory.mktemp("cli")
    out = _cli(results, extra)
    text = out.stdout + out.stderr
    assert "Traceback" not in text, (extra, text[-3000:])
    if out.returncode == 2:
        said = [line for line in text.splitlines() if line.strip()]
        assert len(said) == 1 and "config rejected: " in said[0], (extra, said)
        assert not any((results / name).exists() for name in ("mlflow.db", "cache", "mlartifacts", "locks"))
        return
    assert out.returncode == 0, (extra, text[-3000:])
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{results / 'mlflow.db'}")
    assert list(mlflow.search_runs(search_all_experiments=True)["status"]) == ["FINISHED"], extra


def test_leaves_lists_every_key_hydra_can_override():
    keys = _leaves(make_cfg("unused", *BASE, "threat=pgd"))
    assert {"threat.attacks.0.max_iter", "eval.latency.threads", "pruning.sparsity", "threat.eps"} <= set(keys)
    assert "threat.eps.0" not in keys  # an interpolation (of dataset.eps) is one key
