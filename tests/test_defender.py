"""The defender split: clean training images held out of every training stage, the only data the pruning-based
defences read, and what `threat.finetune_data=defender` fine-tunes on (benchmark/data.hold_out_defender)."""
from __future__ import annotations

import copy

import pytest
import torch

from benchmark import hashing, stages
from benchmark.checks import ConfigError
from benchmark.data import cell_data, defender_indices, hold_out_defender, load_dataset
from benchmark.inputs import defender_count
from benchmark.pruning import prune
from benchmark.validate import check_config

CPU = torch.device("cpu")


def test_default_size_is_500_or_5_percent_capped_at_an_eighth_of_train():
    assert defender_count(4000, None) == 500  # mnist5k: the reference ANP's 500 images
    assert defender_count(50000, None) == 2500  # CIFAR-10: 5% of train
    assert defender_count(1437, None) == 1437 // 8  # digits: capped, a small dataset keeps 7/8 of its images
    assert defender_count(4000, 200) == 200 and defender_count(4000, 0.1) == 400


def test_defender_split_is_seeded_and_disjoint_from_train_and_test_by_sample_index(cfg_factory):
    base = load_dataset(cfg_factory().dataset, seed=0)
    n = len(base.y_train)
    kept, held = defender_indices(n, defender_count(n, None), seed=0)
    assert set(kept.tolist()).isdisjoint(held.tolist()) and sorted(kept.tolist() + held.tolist()) == list(range(n))
    data = cell_data(cfg_factory())
    assert torch.equal(data.x_defender, base.x_train[held]) and torch.equal(data.x_train, base.x_train[kept])
    assert torch.equal(data.x_test, base.x_test)  # the test split is the loader's: the defender split is not in it
    again = hold_out_defender(base, len(held), seed=0)
    assert torch.equal(again.y_defender, data.y_defender)
    assert not torch.equal(defender_indices(n, len(held), seed=1)[1], held)  # another seed, another split


def test_defender_size_enters_the_dense_key_and_an_impossible_size_is_rejected(cfg_factory):
    cfg, other = cfg_factory(), cfg_factory("data.defender_size=100")
    assert hashing.dense_key(cfg, None) != hashing.dense_key(other, None)
    assert hashing.cell_hash(cfg) != hashing.cell_hash(other)
    with pytest.raises(ConfigError, match=r"data\.defender_size=5000 .* allowed: fewer than"):
        check_config(cfg_factory("data.defender_size=5000"))
    with pytest.raises(ConfigError, match=r"data\.defender_size"):
        check_config(cfg_factory("data.defender_size=-1"))


def test_finetune_data_defender_fine_tunes_on_the_defender_split_only(cfg_factory):
    from attacks import build_threat

    cfg = cfg_factory("threat=badnets", "threat.finetune_data=defender")
    data = cell_data(cfg)
    plan = build_threat(cfg.threat).plan(data, CPU, cfg.seed)
    assert plan.sets.finetune is plan.sets.defender and plan.sets.pruning_finetune is plan.sets.defender
    assert torch.equal(plan.sets.finetune.x_train, data.x_defender)
    assert plan.sets.roles(data)["data.finetune"] == "defender"
    clean = build_threat(cfg_factory("threat=badnets").threat).plan(data, CPU, cfg.seed)
    assert clean.finetune_data_key != plan.finetune_data_key  # another fine-tune, another pruned model


@pytest.mark.parametrize("method", ["anp", "clp", "fine_pruning"])
def test_defences_read_the_defender_split_and_nothing_else(cfg_factory, digits, trained_seed_cnn, method):
    overrides = {"anp": ("pruning=anp", "pruning.iterations=5"), "clp": ("pruning=clp",),
                 "fine_pruning": ("pruning=fine_pruning", "pruning.channel_fraction=0.25")}[method]
    cfg = cfg_factory(*overrides)
    ctx = stages.prune_context(cfg, stages.TrainingSets.clean(digits), CPU)
    assert torch.equal(ctx.defender[0], digits.x_defender)
    # the training images are out of reach: a defence that read them would see NaNs
    poisoned_train = digits.replace(x_train=torch.full_like(digits.x_train, float("nan")))
    sets = stages.TrainingSets(digits, poisoned_train, poisoned_train, poisoned_train, digits.defender())
    blind = stages.prune_context(cfg, sets, CPU)
    outcome = prune(copy.deepcopy(trained_seed_cnn), cfg.pruning, blind)
    if method == "anp":
        assert outcome.info["pruning/clean_images"] + outcome.info["pruning/val_images"] == len(digits.y_defender)
    if method == "clp":
        assert outcome.info["pruning/clean_images"] == len(digits.y_defender)
    assert all(torch.isfinite(p).all() for p in outcome.model.parameters())


def test_every_data_threat_tracks_its_numbers_right_after_pruning(cfg_factory, trained_seed_cnn):
    from attacks import build_threat
    from benchmark.cell import before_finetune

    cfg = cfg_factory("threat=badnets")  # poison_then_prune, fine-tune on clean data
    plan = build_threat(cfg.threat).plan(cell_data(cfg), CPU, cfg.seed)
    assert plan.tracker is not None
    tracked = plan.tracker(trained_seed_cnn)
    metrics = before_finetune({"tracked": [tracked, {"clean/acc": -1.0}]})  # step 0: just pruned
    assert metrics["backdoor/asr_pruned"] == tracked["backdoor/asr"]
    assert metrics["clean/acc_pruned"] == tracked["clean/acc"]
    assert before_finetune({}) == {}


@pytest.mark.slow
def test_a_backdoor_cell_logs_its_numbers_before_and_after_the_fine_tune(cfg_factory):
    from benchmark.cell import run_cell

    result = run_cell(cfg_factory("threat=badnets", "threat.finetune_data=defender", "pruning=clp",
                                  "model=seed_cnn_bn", "threat.clean_reference=false"))
    metrics = result.metrics
    for name in ("backdoor/asr", "clean/acc"):
        assert f"{name}_pruned" in metrics and 0 <= metrics[f"{name}_pruned"] <= 1
    assert metrics["data/defender_n"] == defender_count(int(metrics["data/train_n"] + metrics["data/defender_n"]),
                                                        None)


def test_a_tracked_cell_rebuilds_a_pruned_model_cached_without_its_numbers_after_pruning(cfg_factory, digits,
                                                                                     trained_seed_cnn, tmp_path):
    from benchmark.cache import ModelCache

    cfg = cfg_factory("pruning=magnitude_global", "pruning.sparsity=0.5")
    cache, sets = ModelCache(tmp_path / "cache"), stages.TrainingSets.clean(digits)
    track = lambda model: {"clean/acc": 0.5}  # noqa: E731
    untracked = stages.pruned_model(cfg, trained_seed_cnn, sets, "key", cache, CPU)[1]
    assert "tracked" not in untracked
    rebuilt = stages.pruned_model(cfg, trained_seed_cnn, sets, "key", cache, CPU, track=track)[1]
    assert not rebuilt["cache_hit"] and rebuilt["tracked"][0] == {"clean/acc": 0.5}
    again = stages.pruned_model(cfg, trained_seed_cnn, sets, "key", cache, CPU, track=track)[1]
    assert again["cache_hit"] and again["tracked"][0] == {"clean/acc": 0.5}
