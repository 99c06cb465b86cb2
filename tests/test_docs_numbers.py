"""`make docs`: generated blocks in README.md and docs/*.md are rewritten from the results files, nothing else."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmark.tools.docs_numbers import BLOCKS, OPEN, documents, main
from benchmark.version import RESULTS_VERSION

COLUMNS = ("model,dataset,threat,method,variant,target,n_seeds,sparsity/achieved,clean/acc,clean/acc ci95,"
           "robust/worst/eps_0.1,robust/worst/eps_0.1 ci95,robust/worst/eps_0.1 binom95 low,"
           "robust/worst/eps_0.1 binom95 high,backdoor/asr,backdoor/asr ci95")
ROWS = [
    "seed_cnn,mnist5k,evasion,none,,0.0000,1,0.0000,0.9620,0.0000,0.7640,0.0000,0.7240,0.8010,,",
    "seed_cnn,mnist5k,evasion,magnitude_global,,0.5000,1,0.5000,0.9640,0.0000,0.7540,0.0000,0.7140,0.7910,,",
    "seed_cnn,mnist5k,evasion,magnitude_global,,0.9000,1,0.9000,0.7340,0.0000,0.2880,0.0000,0.2490,0.3300,,",
    "seed_cnn,mnist5k,badnets|r=0.1|poison_then_prune|ft=clean,fine_pruning,,0.9000,1,0.8987,0.9370,0.0000,,,,,"
    "0.1330,0.0000",
]
DOC = """# Title

Typed prose stays as it is.

<!-- generated:default-grid -->
stale table
<!-- /generated:default-grid -->

More prose.

<!-- generated:poisoning-slice -->
<!-- /generated:poisoning-slice -->
"""


@pytest.fixture
def repo(tmp_path):
    (tmp_path / "results" / "tables").mkdir(parents=True)
    (tmp_path / "results" / "tables" / "summary.csv").write_text("\n".join([COLUMNS, *ROWS]) + "\n")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "results.md").write_text(DOC)
    return tmp_path


def run(repo: Path, *extra: str) -> int:
    return main(["--results", str(repo / "results"), "--root", str(repo), *extra])


def test_fills_blocks_from_the_summary_table_and_is_idempotent(repo):
    assert run(repo, "--check") == 1  # stale before
    assert run(repo) == 0
    text = (repo / "docs" / "results.md").read_text()
    assert "stale table" not in text
    assert text.startswith("# Title\n\nTyped prose stays as it is.\n") and "\nMore prose.\n" in text
    # the dense row and every method at sparsity 0.9, with the binomial interval; not the 0.5 point
    assert "| seed_cnn | none | 0.000 | 1 | 0.000 | 0.962 | 0.764 [0.724, 0.801] |" in text
    assert "| seed_cnn | magnitude_global | 0.900 | 1 | 0.900 | 0.734 | 0.288 [0.249, 0.330] |" in text
    assert "0.754" not in text
    # the data-threat rows, the `|` of the threat name escaped so the table keeps its columns
    # with the backdoor's success beside the clean accuracy
    assert "| badnets\\|r=0.1\\|poison_then_prune\\|ft=clean | fine_pruning | 0.900 | 1 | 0.899 | 0.937 | 0.133 |" in text
    assert "`results/tables/summary.csv`" in text
    assert run(repo) == 0 and (repo / "docs" / "results.md").read_text() == text  # idempotent
    assert run(repo, "--check") == 0


def test_missing_source_exits_2_naming_the_file_and_writes_nothing(repo, capsys):
    (repo / "results" / "tables" / "summary.csv").unlink()
    assert run(repo) == 2
    error = capsys.readouterr().err
    assert str(repo / "results" / "tables" / "summary.csv") in error and "make figures" in error
    assert (repo / "docs" / "results.md").read_text() == DOC


def test_unknown_block_and_unclosed_marker_exit_2(repo, capsys):
    (repo / "README.md").write_text("<!-- generated:nonsense -->\n<!-- /generated:nonsense -->\n")
    assert run(repo) == 2 and "nonsense" in capsys.readouterr().err
    (repo / "README.md").write_text("<!-- generated:perf -->\nno end\n")
    assert run(repo) == 2 and "unbalanced" in capsys.readouterr().err


def test_perf_block_from_perf_json(repo):
    (repo / "results" / "perf.json").write_text(json.dumps({"machine": "x86_64, 2 cores", "pgd_ratio": 1.5,
                                                            "bookkeeping_share": 0.02, "default_grid_first_s": 600,
                                                            "default_grid_rerun_s": 12,
                                                            "default_grid_rerun_ratio": 0.02}))
    (repo / "docs" / "performance.md").write_text("<!-- generated:perf -->\n<!-- /generated:perf -->\n")
    assert run(repo) == 0
    text = (repo / "docs" / "performance.md").read_text()
    assert "| 1.50× | ≤ 1.20× |" in text and "| 2.0% | ≤ 10.0% |" in text and "x86_64, 2 cores" in text
    assert "| 2.0% | ≤ 5.0% |" in text and "default grid: first run 10.0 min, re-run 12.0 s" in text


def test_a_source_without_the_blocks_rows_says_which_command_fills_it(repo):
    (repo / "results" / "tables" / "summary.csv").write_text("\n".join([COLUMNS, *ROWS[:3]]) + "\n")
    assert run(repo) == 0
    assert "No poisoning or backdoor cell in `tables/summary.csv`: run `make benchmark`." in \
        (repo / "docs" / "results.md").read_text()


def test_the_repositorys_docs_name_only_known_blocks():
    root = Path(__file__).resolve().parents[1]
    names = [m.group(2) for path in documents(root) for m in OPEN.finditer(path.read_text())]
    assert names and set(names) <= set(BLOCKS)


def test_engines_block_from_the_scale_tests_timings(repo):
    engines = {"sequential": {"wall_s": 600, "cells_s": 540, "workers": 1, "overhead_per_cell_s": 5.0},
               "slurm": {"wall_s": 420, "cells_s": 600, "workers": 2, "overhead_per_cell_s": 20.0,
                         "queue_wait_median_s": 3.0}}
    (repo / "results" / "perf_engines.json").write_text(json.dumps({
        "grid": "dataset=mnist5k", "cells": 12, "cpus": 2, "engines": engines,
        "logging_s_per_run_sqlite": 0.05, "logging_s_per_run_postgresql_server": 0.2}))
    (repo / "docs" / "scaling.md").write_text("<!-- generated:engines -->\n<!-- /generated:engines -->\n")
    assert run(repo) == 0
    text = (repo / "docs" / "scaling.md").read_text()
    assert "| sequential | 1 | 600 s | 540 s | 5.0 s |" in text and "| slurm | 2 | 420 s | 600 s | 20.0 s |" in text
    assert "median wait from submission to start: 3 s (with waiting" in text and "50 ms to a SQLite file, 200 ms through" in text


def test_defences_block_from_the_known_answers(repo):
    rows = [{"dataset": "mnist5k", "seed": 0, "model": "seed_cnn_bn", "defence": "clp", "overrides": ["pruning=clp"],
             "asr_before": 0.999, "asr_after": 0.181, "acc_before": 0.974, "acc_after": 0.958, "claim_holds": True,
             "defence_s": 3.0, "chosen": {"u": 1.75, "neurons_pruned": 7.0}, "defender_n": 500},
            {"dataset": "mnist5k", "seed": 1, "model": "seed_cnn_bn", "defence": "anp",
             "overrides": ["pruning=anp", "pruning.iterations=300"], "asr_before": 0.999, "asr_after": 0.921,
             "acc_before": 0.974, "acc_after": 0.973, "claim_holds": False, "defence_s": 50.0,
             "chosen": {"threshold": 0.9, "neurons_pruned": 7.0}, "defender_n": 500}]
    (repo / "results" / "defences_known_answers.json").write_text(json.dumps(
        {"asr_cut": 0.5, "max_acc_drop": 0.03, "rows": rows,
         "anp_premise": [{"dataset": "mnist5k", "seed": 0, "model": "seed_cnn_bn", "eps": 0.4, "steps": 10,
                          "backdoored": {"error": 0.574, "target_rate": 0.0},
                          "clean": {"error": 0.498, "target_rate": 0.01}}]}))
    (repo / "docs" / "defences.md").write_text("<!-- generated:defences -->\n<!-- /generated:defences -->\n")
    assert run(repo) == 0
    text = (repo / "docs" / "defences.md").read_text()
    assert ("| seed_cnn_bn | mnist5k | 0 | CLP | shipped defaults | 500 | u = 1.75, 7 neurons | 0.999 → 0.181 | "
            "0.974 → 0.958 (-1.6 points) | yes |") in text
    assert ("| seed_cnn_bn | mnist5k | 1 | ANP | `pruning.iterations=300` | 500 | threshold 0.9, 7 neurons | "
            "0.999 → 0.921 |") in text
    assert "right after pruning: no fine-tune" in text
    assert "| no |" in text and "drop ≤ 3 points" in text
    assert "10 signed-gradient steps of eps = 0.4" in text and "| seed_cnn_bn | mnist5k | 0 | 0.574 | 0.000 | 0.498 | 0.010 |" in text


def test_convergence_block_from_the_convergence_tool(repo):
    from benchmark.tools.convergence import row

    def metrics(acc_b, acc_2b, acc_4b, clean):
        out = {"clean/acc": clean, "sparsity/achieved": 0.99, "time/cell_s": 100.0}
        for eps, shift in (("0.1", 0.0), ("0.2", -0.5)):
            b, b2, b4 = acc_b + shift, acc_2b + shift, acc_4b + shift
            out.update({f"robust/pgd_linf/eps_{eps}": b, f"robust/pgd_linf_x2/eps_{eps}": b2,
                        f"robust/pgd_linf_x4/eps_{eps}": b4, f"robust/convergence_gap/eps_{eps}": b - b4})
        return out

    rows = [row("none", 0.0, metrics(0.687, 0.687, 0.685, 0.96)), row("l1_filter", 0.99, metrics(0.6, 0.59, 0.58, 0.83))]
    (repo / "results" / "convergence.json").write_text(json.dumps(
        {"results_version": RESULTS_VERSION, "multipliers": [2, 4], "rows": rows, "machine": "x86_64 test",
         "total_s": 600.0}))
    (repo / "docs" / "threats.md").write_text("<!-- generated:convergence -->\n<!-- /generated:convergence -->\n")
    assert run(repo) == 0
    text = (repo / "docs" / "threats.md").read_text()
    assert "stale" not in text.lower()
    assert "| model | clean acc. | eps 0.1: acc(B) / acc(2B) / acc(4B) | gap | eps 0.2: acc(B) / acc(2B) / acc(4B) | gap |" in text
    assert "| dense (`none`) | 0.960 | 0.687 / 0.687 / 0.685 | 0.2 | 0.187 / 0.187 / 0.185 | 0.2 |" in text
    assert "| `l1_filter` 0.99 | 0.830 | 0.600 / 0.590 / 0.580 | 2.0 | 0.100 / 0.090 / 0.080 | 2.0 |" in text
    assert "in 10 min" in text and "(`python -m benchmark.tools.convergence`)" in text


@pytest.mark.parametrize("recorded", [{"results_version": RESULTS_VERSION - 1}, {}])
def test_a_convergence_table_from_another_results_version_says_it_is_stale(repo, recorded):
    from benchmark.tools.convergence import row

    metrics = {"clean/acc": 0.9, "sparsity/achieved": 0.0, "time/cell_s": 1.0}
    for eps in ("0.1", "0.2"):
        metrics.update({f"robust/pgd_linf/eps_{eps}": 0.5, f"robust/pgd_linf_x2/eps_{eps}": 0.5,
                        f"robust/pgd_linf_x4/eps_{eps}": 0.5, f"robust/convergence_gap/eps_{eps}": 0.0})
    (repo / "results" / "convergence.json").write_text(json.dumps(
        {**recorded, "multipliers": [2, 4], "rows": [row("none", 0.0, metrics)], "machine": "x86_64 test",
         "total_s": 60.0}))
    (repo / "docs" / "threats.md").write_text("<!-- generated:convergence -->\n<!-- /generated:convergence -->\n")
    assert run(repo) == 0
    version = recorded.get("results_version", "unrecorded")
    assert (f"**Stale, measured under RESULTS_VERSION {version} (this code's: {RESULTS_VERSION}): re-run the tool.**"
            in (repo / "docs" / "threats.md").read_text())


def test_the_convergence_tool_measures_the_paper_presets_own_pgd_and_check(tmp_path):
    """Each case is the `paper` preset's cell with its PGD alone: the same PGD entry, images and convergence check,
    so the block's numbers are the preset's budget (a change to the preset's PGD fails here until the tool follows)."""
    from hydra import compose, initialize_config_dir

    from benchmark.tools.convergence import CASES, EPS, MULTIPLIERS, ROOT, compose as compose_case

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        paper = compose(config_name="config", overrides=["experiment=paper"])
    preset_pgd = next(a for a in paper.threat.attacks if a.name == "pgd_linf")
    for method, sparsity in CASES:
        cfg = compose_case(tmp_path, method, sparsity)
        assert list(cfg.threat.attacks) == [preset_pgd] and cfg.threat.subset == paper.threat.subset
        assert tuple(cfg.threat.convergence.multipliers) == MULTIPLIERS and cfg.threat.convergence == paper.threat.convergence
        assert tuple(cfg.dataset.eps) == EPS and cfg.train == paper.train and cfg.finetune == paper.finetune
        assert (cfg.pruning.method, cfg.pruning.sparsity, cfg.seed) == (method, sparsity, 0)


def test_clp_u_grid_block_from_the_development_seed(repo):
    rows = [{"grid": "step 0.1, 5 to 0", "chosen": {"u": 1.6, "neurons_pruned": 7.0}, "asr_before": 1.0,
             "asr_after": 0.497, "acc_before": 0.983, "acc_after": 0.96}]
    (repo / "results" / "clp_u_grid_dev.json").write_text(json.dumps(
        {"dataset": "mnist5k", "seed": 3, "model": "seed_cnn_bn", "rows": rows}))
    (repo / "docs" / "defences.md").write_text("<!-- generated:clp-u-grid -->\n<!-- /generated:clp-u-grid -->\n")
    assert run(repo) == 0
    text = (repo / "docs" / "defences.md").read_text()
    assert "seed_cnn_bn, mnist5k, seed 3" in text
    assert "| step 0.1, 5 to 0 | 1.6 | 7 | 1.000 → 0.497 | 0.983 → 0.960 (-2.3 points) |" in text


def test_grid_sizes_are_counted_from_the_presets_not_typed():
    """Jobs: the product of the preset's swept values; cells: less the repeats of a method that ignores sparsity
    (it computes one cell per model whatever the swept sparsity)."""
    import yaml

    from benchmark.pruning import PRUNERS
    from benchmark.tools.docs_numbers import ROOT, grid_size, render_grid_sizes

    params = yaml.safe_load((ROOT / "conf/experiment/default.yaml").read_text())["hydra"]["sweeper"]["params"]
    values = {key: str(value).split(",") for key, value in params.items()}
    jobs = 1
    for choices in values.values():
        jobs *= len(choices)
    ignoring = [m for m in values["pruning"] if PRUNERS[m].ignores_sparsity is True]
    repeats = len(values["model"]) * len(ignoring) * (len(values["pruning.sparsity"]) - 1)
    assert grid_size("default") == (jobs, jobs - repeats)
    assert f"| `default` | {jobs} | {jobs - repeats} |" in render_grid_sizes(None)


def test_the_config_groups_table_lists_every_option_in_conf_and_is_up_to_date():
    from benchmark.tools.docs_numbers import CONFIG_GROUPS, MARKER, ROOT, fill, render_config_groups

    table = render_config_groups(None)
    for group in CONFIG_GROUPS:
        for option in (ROOT / "conf" / group).glob("*.yaml"):
            assert f"`{option.stem}`" in table.split(f"| `{group}` |")[1].split("\n")[0]
    assert "**`mnist5k`**" in table and "**`seed_cnn`**" in table  # the defaults of conf/config.yaml
    text = (ROOT / "docs" / "pipeline.md").read_text()
    block = next(m.group(0) for m in MARKER.finditer(text) if m.group("name") == "config-groups")
    assert fill(block, ROOT / "results") == block, "docs/pipeline.md's option table is stale: run `make docs`"


def test_grid_time_block_states_the_default_grids_time_the_evasion_ratio_and_the_autoattack_gap(repo):
    perf = {"machine": "x86_64, 2 cores", "default_grid_first_s": 270, "default_grid_cells": 74,
            "default_grid_launcher": "hydra/launcher=parallel hydra.launcher.n_jobs=2 torch_threads=1",
            "load_avg_1m_before_default_grid": 0.4, "load_avg_1m_after_default_grid": 2.1,
            "evasion_new_over_old": 0.41, "evasion_images": 500,
            "cell_stages_run": "seed_cnn|magnitude_global|s=0.9|evasion|seed=0",
            "cell_stages_s": {"train_s": 9.0, "threat_s": 7.5, "cell_s": 30.0, "attack_fgsm_s": 1.0},
            "aa_gap": {"max_gap": 0.015, "ok": True, "failed_cells": [], "cells": 4, "images_per_cell": 100,
                       "max_iter": 100, "square_queries": 5000, "tolerance": 0.02}}
    (repo / "results" / "perf.json").write_text(json.dumps(perf))
    (repo / "README.md").write_text("<!-- generated:grid-time -->\n<!-- /generated:grid-time -->\n")
    assert run(repo) == 0
    text = (repo / "README.md").read_text()
    assert "74 cells; `hydra/launcher=parallel hydra.launcher.n_jobs=2 torch_threads=1`) | 4.5 min | ≤ 5 min" in text
    assert "| 0.41× |" in text and "| +1.5 points | ≤ 2 points |" in text and "4 cells × 100 images" in text
    assert "by stage: train 9.0 s, threat 7.5 s; in all 30.0 s." in text and "0.4–2.1 around the grid" in text
    perf["aa_gap"].update(max_gap=0.05, ok=False, failed_cells=["seed_cnn|random|s=0.9|evasion|seed=0"])
    perf["default_grid_first_s"] = 390
    (repo / "results" / "perf.json").write_text(json.dumps(perf))
    assert run(repo) == 0
    assert "+5.0 points (fails: `seed_cnn\\|random\\|s=0.9\\|evasion\\|seed=0`) |" in (repo / "README.md").read_text()
    assert "| 6.5 min (over the goal) | ≤ 5 min" in (repo / "README.md").read_text()
    (repo / "results" / "perf.json").write_text(json.dumps({"machine": "x86_64"}))
    assert run(repo) == 0
    assert "holds no default-grid time: run `make perf`" in (repo / "README.md").read_text()


def test_only_rewrites_the_named_blocks_and_needs_only_their_sources(repo, capsys):
    (repo / "results" / "tables" / "summary.csv").unlink()  # the default-grid block's source is missing
    (repo / "results" / "perf.json").write_text(json.dumps({"machine": "x86_64", "default_grid_first_s": 240}))
    (repo / "README.md").write_text("<!-- generated:default-grid -->\nold table\n<!-- /generated:default-grid -->\n"
                                    "<!-- generated:grid-time -->\n<!-- /generated:grid-time -->\n")
    assert run(repo) == 2  # every block: the summary table is missing
    assert run(repo, "--only", "grid-time") == 0
    text = (repo / "README.md").read_text()
    assert "old table" in text and "| 4.0 min |" in text
    assert run(repo, "--only", "grid-time,nonsense") == 2 and "nonsense" in capsys.readouterr().err


def test_clean_label_knowledge_block_from_the_knowledge_tool(repo):
    def row(case, knowledge, model, offset, asr):
        return {"case": case, "seed": 0, "knowledge": knowledge, "victim": "seed_cnn",
                "proxy": {"model": model, "seed_offset": offset, "epochs": 8, "lr": 0.003}, "train_epochs": 10,
                "finetune_epochs": 2, "finetune_data": "clean",
                "dense": {"asr": asr, "target_rate_clean": 0.012, "clean_acc": 0.975},
                "finetuned": {"asr": asr / 2, "target_rate_clean": 0.01, "clean_acc": 0.98},
                "dense_success": asr, "cell_s": 300.0}

    rows = [row("white_box", "white_box", "seed_cnn", 0, 0.7), row("transfer", "transfer", "seed_cnn", 1, 0.4321),
            {**row("white_box", "white_box", "seed_cnn", 0, 0.5), "seed": 1}]
    (repo / "results" / "clean_label_knowledge.json").write_text(json.dumps(
        {"rows": rows, "budget": "the backdoor preset's", "machine": "x86_64 test", "jobs": 2,
         "load_avg_1m": [2.0, 3.5], "total_s": 900.0}))
    (repo / "docs" / "threats.md").write_text(
        "<!-- generated:clean-label-knowledge -->\n<!-- /generated:clean-label-knowledge -->\n")
    assert run(repo) == 0
    text = (repo / "docs" / "threats.md").read_text()
    assert "| `white_box` | seed_cnn, 0 | 0 | 0.700 | 0.012 | 0.975 | 0.350 | 0.980 |" in text
    assert "| `transfer` | seed_cnn, 1 | 0 | 0.432 | 0.012 | 0.975 | 0.216 | 0.980 |" in text
    assert "| `white_box` | seed_cnn, 0 | 1 | 0.500 |" in text  # each case's seeds together, then their mean
    assert "| `white_box` | seed_cnn, 0 | mean of 2 | 0.600 | 0.012 | 0.975 | 0.300 | 0.980 |" in text
    assert text.index("| 1 | 0.500 |") < text.index("mean of 2") < text.index("`transfer`")
    assert "| `transfer` | seed_cnn, 1 | mean" not in text
    assert "Victim: seed_cnn, 10 epochs; proxy: 8 epochs; the fine-tune: 2 epochs on the clean set." in text
    assert "Budget: the backdoor preset's." in text and "in 15 min (2 cells side by side" in text
    assert "load average 2.0–3.5" in text
    assert "(`python -m benchmark.tools.clean_label_knowledge`)" in text


def test_the_clean_label_knowledge_tool_composes_white_box_and_transfer_cells(tmp_path):
    """The white-box case is the victim's twin (seed offset 0, the victim's model), the transfer cases are not, and
    each gets the tag the cell computes for it; all are the backdoor preset's clean-label cell, dense, at its
    budget."""
    from hydra import compose, initialize_config_dir

    from benchmark.tools.clean_label_knowledge import CASES, ROOT, compose as compose_case, knowledge

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        preset = compose(config_name="config", overrides=["experiment=backdoor", "threat=clean_label_backdoor"])
    expected = {"white_box": ("white_box", "seed_cnn", 0), "transfer": ("transfer", "seed_cnn", 1),
                "transfer_lenet300": ("transfer", "lenet300", 1)}
    assert set(CASES) == set(expected)
    for case, (tag, proxy_model, offset) in expected.items():
        cfg = compose_case(tmp_path, case, seed=0)
        assert (knowledge(cfg), cfg.threat.proxy.model, cfg.threat.proxy.seed_offset) == (tag, proxy_model, offset)
        assert cfg.model.name == "seed_cnn" and cfg.pruning.method == "none" and cfg.dataset.name == "mnist5k"
        assert cfg.train == preset.train and cfg.threat.trigger == preset.threat.trigger
        assert cfg.threat.proxy.epochs == preset.threat.proxy.epochs and cfg.threat.pgd == preset.threat.pgd
    reduced = compose_case(tmp_path, "transfer", seed=1, epochs=3)
    assert (reduced.train.epochs, reduced.threat.proxy.epochs, reduced.seed) == (3, 3, 1)


@pytest.mark.parametrize("argv, key", [(["--cases", "white_box,grey_box"], "--cases"), (["--epochs", "0"], "--epochs"),
                                       (["--seeds", "0,one"], "--seeds")])
def test_the_clean_label_knowledge_tool_refuses_bad_input_before_any_compute(tmp_path, capsys, argv, key):
    from benchmark.tools.clean_label_knowledge import main as knowledge_main

    with pytest.raises(SystemExit) as exit_info:
        knowledge_main([*argv, "--out", str(tmp_path / "out.json")])
    assert exit_info.value.code == 2 and key in capsys.readouterr().err and not (tmp_path / "out.json").exists()
