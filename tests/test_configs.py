"""Every option of every config group composes with the debug preset and passes the project's validation, so a
YAML added to conf/ is checked without a line of test code. Combinations that cannot work are rejected with a
ConfigError, never skipped."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

from benchmark.hashing import cell_hash
from benchmark.datasets import DATASETS
from benchmark.validate import ConfigError, validate

from conftest import CONF_DIR, ROOT, compose_cfg, write_images, write_npz

RUN_SETTINGS = {"hydra"}  # launchers: where cells run, not what they compute
DATASET_FILES = {entry.name: entry.files for entry in DATASETS.entries() if entry.files}  # torchvision's


def _group_options() -> dict[str, list[str]]:
    """The options Hydra offers per group (sub-folders such as pruning/base/ are not options)."""
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        return {group: loader.get_group_options(group) for group in loader.list_groups("") if group not in RUN_SETTINGS}


OPTIONS = _group_options()
PAIRS = [(group, option) for group, options in OPTIONS.items() for option in options]


def _inputs(group: str, option: str, folder: Path) -> list[str]:
    """What a dataset option needs before it can be validated here: its files, or permission to fetch them."""
    if group != "dataset":
        return []
    if option in DATASET_FILES:
        return ["dataset.download=true"]  # validation only checks that they could be had: nothing is fetched
    if option == "npz":
        return [f"dataset.path={write_npz(folder / 'data.npz', n_train=20, n_test=10, side=12, channels=1)}"]
    if option == "image_folder":
        write_images(folder / "images", {"a": 3, "b": 3})
        return [f"dataset.root={folder / 'images'}"]
    return []


def test_groups_are_the_documented_ones_and_bases_are_no_options():
    assert set(OPTIONS) == {"dataset", "model", "train", "finetune", "eval", "pruning", "threat", "experiment", "debug"}
    assert "base" not in OPTIONS["pruning"] and "base" not in OPTIONS["threat"]
    assert {"default", "fast"} <= set(OPTIONS["eval"]) and "tiny" in OPTIONS["debug"]


@pytest.mark.parametrize("group,option", PAIRS, ids=[f"{g}={o}" for g, o in PAIRS])
def test_every_option_composes_with_the_debug_preset_and_validates(tmp_path, group, option):
    """Validated as `python -m benchmark.run` does before any compute (schema, registries, model fit). An option the
    default model cannot take (e.g. a BatchNorm method) is rejected with a ConfigError and must fit another model."""
    overrides = ["debug=tiny", f"{group}={option}", *_inputs(group, option, tmp_path)]
    try:
        validate(compose_cfg(tmp_path, *overrides))
    except ConfigError:
        if group == "model":
            raise
        fits = []
        for model in OPTIONS["model"]:
            try:
                validate(compose_cfg(tmp_path, *overrides, f"model={model}"))
                fits.append(model)
            except ConfigError:
                pass
        assert fits, f"{group}={option} fits no model"


@pytest.mark.parametrize("option,key", [("npz", "dataset.path"), ("image_folder", "dataset.root"),
                                        *[(name, "dataset.data_root") for name in sorted(DATASET_FILES)]])
def test_a_dataset_without_its_input_is_rejected(tmp_path, option, key):
    cfg = compose_cfg(tmp_path, "debug=tiny", f"dataset={option}",
                      *([f"dataset.data_root={tmp_path}"] if key == "dataset.data_root" else []))
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(cfg)


def test_every_model_and_pruning_method_fit_or_are_rejected_with_a_config_error(tmp_path):
    """Each pair is validated: a method that cannot work on a model (BatchNorm scales on a model without
    BatchNorm, the last conv's channels on a model whose head does not read them) is a ConfigError naming both."""
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        models = {m: compose("config", overrides=["debug=tiny", f"model={m}", f"results_dir={tmp_path}"])
                  for m in OPTIONS["model"]}
        methods = {p: compose("config", overrides=["debug=tiny", f"pruning={p}"]).pruning for p in OPTIONS["pruning"]}
    rejected = set()
    for model, base in models.items():
        for method, pruning in methods.items():
            cfg = copy.deepcopy(base)
            cfg.pruning = pruning  # the groups are independent: the same config as composing both
            try:
                validate(cfg)
            except ConfigError as err:
                named = f"model.name={model!r}" in str(err) or f"model._target_={base.model.get('_target_')!r}" in str(err)
                assert f"pruning.method={pruning.method!r}" in str(err) and named, err
                rejected.add((model, method))
    assert {("seed_cnn", "slimming"), ("lenet300", "slimming"), ("lenet300", "fine_pruning")} <= rejected
    assert not {m for m, p in rejected if p in ("magnitude_global", "none")}  # unstructured fits every model


def _leaf_keys(cfg: DictConfig) -> set[str]:
    def walk(node, prefix):
        if isinstance(node, dict):
            return set().union(*(walk(v, f"{prefix}{k}.") for k, v in node.items())) if node else {prefix}
        return {prefix.rstrip(".")}
    return walk({k: v for k, v in OmegaConf.to_container(cfg).items() if k != "hydra"}, "")


@pytest.mark.parametrize("preset", OPTIONS["debug"])
def test_a_debug_preset_only_sets_values(tmp_path, preset):
    """The cell a preset composes has exactly the keys of the cell composed from the same group choices without it:
    it changes the cell hash only through the values it sets."""
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        debug = compose("config", overrides=[f"debug={preset}"], return_hydra_config=True)
        choices = {g: c for g, c in debug.hydra.runtime.choices.items() if g in OPTIONS and g != "debug" and c}
        plain = compose("config", overrides=[f"{g}={c}" for g, c in choices.items()])
    assert _leaf_keys(debug) == _leaf_keys(plain)


def test_debug_tiny_is_the_tiny_cell_given_by_hand(tmp_path):
    by_hand = compose_cfg(tmp_path, "dataset=digits", "train.epochs=8", "finetune.epochs=1", "threat.subset=100",
                          "device=cpu")
    preset = compose_cfg(tmp_path, "debug=tiny")
    assert OmegaConf.to_container(preset, resolve=True) == OmegaConf.to_container(by_hand, resolve=True)
    assert cell_hash(preset) == cell_hash(by_hand)
    fast = compose_cfg(tmp_path, "debug=tiny", "eval=fast")
    spelled = compose_cfg(tmp_path, "debug=tiny", "eval.corruptions.enabled=false", "eval.interpret.enabled=false",
                          "eval.latency.repeats=1")
    assert OmegaConf.to_container(fast, resolve=True) == OmegaConf.to_container(spelled, resolve=True)


APB_SPARSITIES = {False: {0.9, 0.95, 0.99}, True: {0.5, 0.75, 0.9}}  # unstructured, structured (Piras et al. 2024)


def test_the_apb_presets_sweep_the_adversarial_pruning_benchmarks_sparsities_per_method_kind():
    """experiment=apb (unstructured) and apb_structured (structured) expand to exactly APB's levels for every method
    of their kind, start from a PGD-AT dense model, fine-tune adversarially, share one MLflow experiment, and
    `make benchmark EXPERIMENT=apb` runs both sweeps."""
    import subprocess

    from benchmark.grid import job_overrides
    from benchmark.pruning import PRUNERS

    per_preset: dict[str, dict[str, set[float]]] = {}
    for preset in ("apb", "apb_structured"):
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            config = compose("config", overrides=[f"experiment={preset}"], return_hydra_config=True)
        assert config.finetune.adversarial and config.experiment_name == "apb", preset
        assert config.train.adversarial == "pgd", preset  # APB's methods start from adversarially trained models
        swept = per_preset.setdefault(preset, {})
        for overrides in job_overrides(config)[0]:
            job = dict(o.split("=", 1) for o in overrides)
            swept.setdefault(job["pruning"], set()).add(float(job["pruning.sparsity"]))
    assert not set(per_preset["apb"]) & set(per_preset["apb_structured"])  # each method in one sweep
    swept = {**per_preset["apb"], **per_preset["apb_structured"]}
    assert {"hydra", "magnitude_global", "l1_filter"} <= set(swept)
    for method, sparsities in swept.items():
        if method != "none":  # the dense reference ignores sparsity
            assert sparsities == APB_SPARSITIES[PRUNERS[method].structured], method
    dry_run = subprocess.run(["make", "-n", "-o", ".venv/.installed", "benchmark", "EXPERIMENT=apb"], cwd=ROOT,
                             capture_output=True, text=True, timeout=60).stdout
    assert "experiment=apb\n" in dry_run and "experiment=apb_structured\n" in dry_run


def test_the_hydra_at_preset_compares_learned_scores_with_lwm_from_a_trades_model():
    """experiment=hydra_at: every cell is HYDRA under the reference code's TRADES loss on a TRADES-trained dense
    model with the adversarial fine-tune, at the paper's sparsities, with and without score epochs (0: the LWM
    baseline); every job passes the grid's pre-check."""
    from benchmark.grid import check_jobs

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        config = compose("config", overrides=["experiment=hydra_at"], return_hydra_config=True)
        errors, jobs = check_jobs(config)
    assert not errors, errors
    assert {(job.cfg.pruning.score_epochs, job.cfg.pruning.sparsity) for job in jobs} == {
        (epochs, s) for epochs in (0, 3) for s in (0.9, 0.95, 0.99)}
    for job in jobs:
        cfg = job.cfg
        assert (cfg.pruning.method, cfg.pruning.loss, cfg.pruning.scope) == ("hydra", "trades", "layerwise")
        assert cfg.train.adversarial == "trades" and cfg.finetune.adversarial and cfg.experiment_name == "hydra_at"
    assert len({job.cell_hash for job in jobs}) == 6
