"""Measured numbers in the docs, generated from the results files: `make docs` (or `python -m benchmark.tools.docs_numbers`).

A generated block is the text between `<!-- generated:NAME -->` and `<!-- /generated:NAME -->` in README.md or
docs/*.md. BLOCKS maps each NAME to the results file it is made from (relative to `--results`) and the function
that renders it; the tool rewrites every block from its file and leaves the rest of the text alone, so running it
twice changes nothing. A block whose file exists but holds none of its rows says so in one line and names the
command that fills it. A block whose file is missing, an unknown NAME or an unclosed marker: one line, exit code 2,
nothing written.

Sources: `results/tables/summary.csv` (`make figures`, which `make benchmark` ends with), `results/perf.json`
(`make perf`), `results/perf_engines.json` (`make test-scale`), `results/defences_known_answers.json`
(`python -m benchmark.tools.defence_known_answers`), `results/clp_u_grid_dev.json` (`python -m
benchmark.tools.clp_u_grid`), `results/convergence.json` (`python -m benchmark.tools.convergence`) and
`results/clean_label_knowledge.json` (`python -m benchmark.tools.clean_label_knowledge`); the grid
sizes are counted from `conf/experiment/` itself, the reproduction targets listed from
`benchmark/reproduce_presets/*.yaml` with the status of each `results/reproduce/<target>.json` (`make reproduce`)
where one exists.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd

from benchmark.version import RESULTS_VERSION

ROOT = Path(__file__).resolve().parents[2]
SUMMARY = "tables/summary.csv"
PERF = "perf.json"
ENGINES = "perf_engines.json"
DEFENCES = "defences_known_answers.json"
CONVERGENCE = "convergence.json"
CLP_U_GRID = "clp_u_grid_dev.json"
CLEAN_LABEL_KNOWLEDGE = "clean_label_knowledge.json"
EVASION = "evasion"  # threat.name of the default grid's evasion cells
THREAT_SUCCESS = ("backdoor/asr", "backdoor/target_rate_clean", "poison/targeted_success",  # the poisoning slice:
                  "poison/targeted_success_ref", "poison/acc_drop")  # each success beside its baseline
HEADLINE_TARGET = 0.9  # the default-grid block: every method at this requested sparsity, beside the dense model
HEADLINE_EPS = "0.1"
MARKER = re.compile(r"<!-- generated:(?P<name>[\w-]+) -->\n(?P<body>.*?)<!-- /generated:(?P=name) -->", re.S)
OPEN = re.compile(r"<!-- (/?)generated:([\w-]+) -->")


class DocsError(Exception):
    """A block that cannot be generated: a missing source file, an unknown name, an unclosed marker."""


@dataclass(frozen=True)
class Block:
    source: str | None  # path under the results directory; None: read from conf/ or benchmark/reproduce_presets/ (render gets results/)
    fills: str  # the command that writes the source (None: what in conf/ it reads)
    render: Callable[[Path | None], str]  # source file -> markdown (without the trailing provenance line)


def _markdown(table: pd.DataFrame) -> str:
    """The summary table's own cell formatting (same digits and intervals), with `|` in names escaped."""
    from benchmark.figures import to_markdown

    return to_markdown(table.map(lambda v: v.replace("|", "\\|") if isinstance(v, str) else v))


def _summary(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, keep_default_na=True)


def _with_intervals(table: pd.DataFrame, metrics: list[str]) -> list[str]:
    """`metrics` plus the ci95 / binomial columns `to_markdown` folds into them, as present in `table`."""
    return [c for m in metrics for c in (m, f"{m} ci95", f"{m} binom95 low", f"{m} binom95 high") if c in table]


def render_default_grid(path: Path) -> str:
    """Every evasion method at HEADLINE_TARGET and the dense model (`none`), per model: sparsity, clean accuracy
    and the worst-case robust accuracy at every eps, with its binomial interval."""
    table = _summary(path)
    rows = table[(table["threat"] == EVASION)
                 & (((table["target"] - HEADLINE_TARGET).abs() < 1e-9) | (table["method"] == "none"))]
    if rows.empty:
        return f"No evasion cell at sparsity {HEADLINE_TARGET} in `{SUMMARY}`: run `make benchmark`.\n"
    worst = sorted((c for c in table if re.fullmatch(r"robust/worst/eps_[\d.]+", c)),
                   key=lambda c: float(c.rsplit("_", 1)[1]))
    shown = [c for c in worst if c.endswith(f"eps_{HEADLINE_EPS}")] or worst[:1]
    rows = rows.sort_values(["model", "method"], key=lambda s: s.map(lambda v: (v != "none", v)))
    columns = ["model", "method", "target", "n_seeds", "sparsity/achieved",
               *_with_intervals(rows, ["clean/acc", *shown])]
    return _markdown(rows[columns].reset_index(drop=True))


def render_poisoning_slice(path: Path) -> str:
    """The data-threat cells of the summary table per threat, method and sparsity: clean accuracy and each
    threat's success (backdoor ASR, targeted poisoning success, the accuracy poisoning costs) where measured."""
    table = _summary(path)
    rows = table[table["threat"] != EVASION]
    if rows.empty:
        return f"No poisoning or backdoor cell in `{SUMMARY}`: run `make benchmark`.\n"
    success = [m for m in THREAT_SUCCESS if m in rows and rows[m].notna().any()]
    columns = ["threat", "method", "target", "n_seeds", "sparsity/achieved",
               *_with_intervals(rows, ["clean/acc", *success])]
    return _markdown(rows[columns].sort_values(["threat", "target", "method"]).reset_index(drop=True))


def render_perf(path: Path) -> str:
    """`make perf`'s ratios against their budgets (benchmark.tools.perf.BUDGET), with the machine they ran on."""
    from benchmark.tools.perf import BUDGET

    result = json.loads(path.read_text())
    rows = [("pgd_ratio", "ART PGD through our wrapper / plain torch PGD, median of alternated pairs", "{:.2f}×"),
            ("pgd_ratio_of_best_times", "the same, best time / best time", "{:.2f}×"),
            ("pgd_max_abs_diff", "max \\|x_adv difference\\| between the two", "{:.2g}"),
            ("bookkeeping_share", "a cell's bookkeeping (config, hashing, MLflow, cache I/O) / the cell", "{:.1%}"),
            ("default_grid_rerun_ratio", "re-running the finished default grid / its first run, wall time",
             "{:.1%}"),
            ("default_grid_rerun_cpu_ratio", "the same, CPU time", "{:.1%}"),
            ("grid_rerun_ratio", "re-running the finished small grid / its first run", "{:.0%}"),
            ("grid_rerun_minus_startup_ratio", "the same, one process start-up subtracted from both", "{:.0%}"),
            ("parallel_speedup", "`hydra/launcher=parallel` (2 workers) speed-up over sequential, small grid",
             "{:.2f}×")]
    lines = ["| measure | result | budget |", "|---|---|---|"]
    for key, what, fmt in rows:
        if key in result:
            goal = BUDGET.get(key)
            budget = "" if goal is None else f"{goal[0].replace('<=', '≤').replace('>=', '≥')} {fmt.format(goal[1])}"
            lines.append(f"| {what} | {fmt.format(result[key])} | {budget} |")
    if len(lines) == 2:
        return f"`{PERF}` holds no measurement: run `make perf`.\n"
    machine = result.get("machine", "an unnamed machine") + (f", torch {result['torch']}" if "torch" in result else "")
    load = [value for key, value in result.items() if key.startswith("load_avg_1m")]  # sampled between the parts
    where = f"Measured on {machine}" + (f"; 1-minute load average {min(load):.1f}–{max(load):.1f} during the run"
                                     if load else "")
    small = (f"; small grid: {result['grid_jobs']} jobs, {result['grid_cells']} cells"
             if "grid_jobs" in result and "grid_cells" in result else "")
    if "default_grid_first_s" in result:
        small += (f"; default grid: first run {result['default_grid_first_s'] / 60:.1f} min, "
                  f"re-run {result['default_grid_rerun_s']:.1f} s")
    return "\n".join(lines) + f"\n\n{where}{small}.\n"


STAGE_ORDER = ("data", "train", "prune", "finetune", "measure", "security", "threat", "bookkeeping")
GRID_GOAL_MIN = 5  # the default grid's wall-time goal on 2 idle cores


def render_grid_time(path: Path) -> str:
    """The default grid's measured wall time (`make perf`'s default_grid part) against its goal, the evasion's
    speed-up over the old way, one cell's time by stage, and the reference AutoAttack's largest gap (`make aa-gap`)."""
    result = json.loads(path.read_text())
    lines = ["| measure | result | goal |", "|---|---|---|"]
    if "default_grid_first_s" in result:
        launcher = result.get("default_grid_launcher", "one cell after another")
        cells = f", {result['default_grid_cells']} cells" if "default_grid_cells" in result else ""
        minutes = result["default_grid_first_s"] / 60
        lines.append(f"| the default grid's first run (`experiment=default`{cells}; `{launcher}`) | "
                     f"{minutes:.1f} min{' (over the goal)' if minutes > GRID_GOAL_MIN else ''} | "
                     f"≤ {GRID_GOAL_MIN} min on 2 idle cores |")
    if "evasion_new_over_old" in result:
        load = result.get("evasion_load_avg_1m")
        lines.append(f"| the grid's evasion / the old way (every attack at every eps on every image, final iterate "
                     f"only), {result['evasion_images']} images" + (f", load {min(load):.1f}–{max(load):.1f}"
                                                                   if load else "")
                     + f" | {result['evasion_new_over_old']:.2f}× | |")
    gap = result.get("aa_gap")
    if gap and gap.get("max_gap") is not None:
        cells = f"{gap['cells']} cell{'s' if gap['cells'] != 1 else ''}"
        failed = ", ".join(f"`{c}`" for c in gap["failed_cells"]).replace("|", "\\|")
        lines.append(f"| largest gap, the grid's `robust/worst` − reference AutoAttack, {cells} × "
                     f"{gap['images_per_cell']} images (APGD/FAB {gap['max_iter']} iterations, Square "
                     f"{gap['square_queries']} queries) | {gap['max_gap'] * 100:+.1f} points"
                     f"{'' if gap['ok'] else f' (fails: {failed})'} | "
                     f"≤ {gap['tolerance'] * 100:g} points |")
    if len(lines) == 2:
        return f"`{PERF}` holds no default-grid time: run `make perf`.\n"
    text = "\n".join(lines) + "\n"
    stages = result.get("cell_stages_s")
    if stages:
        parts = ", ".join(f"{name} {stages[f'{name}_s']:.1f} s" for name in STAGE_ORDER if f"{name}_s" in stages)
        load = result.get("cell_stages_load_avg_1m")
        text += (f"\nOne cell (`{result['cell_stages_run']}`, fresh store, one torch thread) by stage: {parts}; "
                 f"in all {stages['cell_s']:.1f} s" + (f" (1-minute load average {min(load):.1f}–{max(load):.1f})"
                                                        if load else "") + ".\n")
    load = [v for k, v in result.items() if k.startswith("load_avg_1m") and k.endswith("default_grid")]
    machine = result.get("machine", "an unnamed machine")
    text += f"\nMeasured on {machine}" + (f"; 1-minute load average {min(load):.1f}–{max(load):.1f} around the grid"
                                         if load else "") + ".\n"
    return text


def render_aa_gap(path: Path) -> str:
    """`make aa-gap`'s rows: per sampled cell and eps, the grid's headline worst case and the reference AutoAttack's
    robust accuracy on the same images, and their gap (rows where both are 0 left out)."""
    gap = json.loads(path.read_text()).get("aa_gap")
    if not gap or not gap.get("rows"):
        return f"`{PERF}` holds no AutoAttack gap: run `make aa-gap`.\n"
    lines = ["| cell | eps | grid `robust/worst` | reference AutoAttack | gap (points) |", "|---|---|---|---|---|"]
    for row in gap["rows"]:
        if "error" in row or (row["grid_worst"] == 0 and row["aa_robust"] == 0):
            continue
        cell = row["cell"].replace("|", "\\|")
        lines.append(f"| `{cell}` | {row['eps']:g} | {row['grid_worst']:.3f} | {row['aa_robust']:.3f} | "
                     f"{row['gap'] * 100:+.1f}{'' if row['ok'] else ' ✗'} |")
    return ("\n".join(lines) + f"\n\n{gap['cells']} of {gap['cells_available']} non-collapsed cells (seed "
            f"{gap['sample_seed']}), the first {gap['images_per_cell']} attacked images of each; AutoAttack's APGD "
            f"and FAB at {gap['max_iter']} iterations, Square at {gap['square_queries']} queries; ✗: beyond "
            f"{gap['tolerance'] * 100:g} points.\n")


def render_engines(path: Path) -> str:
    """`make test-scale`'s engine timings (tests/scale/test_scale.py::test_engine_timings): one 12-cell grid on each
    engine, every cell logging to the PostgreSQL-backed server, and the logging time per run."""
    result = json.loads(path.read_text())
    lines = ["| engine | workers | wall | the cells' own time | added per cell |", "|---|---|---|---|---|"]
    for name, engine in result.get("engines", {}).items():
        lines.append(f"| {name} | {engine['workers']} | {engine['wall_s']:.0f} s | {engine['cells_s']:.0f} s | "
                     f"{engine['overhead_per_cell_s']:.1f} s |")
    if len(lines) == 2:
        return f"`{ENGINES}` holds no measurement: run `make test-scale`.\n"
    notes = [f"grid: `{result['grid']}` ({result['cells']} cells, {result['cpus']} CPUs)"]
    if (wait := result["engines"].get("slurm", {}).get("queue_wait_median_s")) is not None:
        notes.append(f"a Slurm job's median wait from submission to start: {wait:.0f} s (with waiting for a free slot)")
    if "logging_s_per_run_sqlite" in result and "logging_s_per_run_postgresql_server" in result:
        notes.append(f"MLflow logging per run, one writer: {result['logging_s_per_run_sqlite'] * 1000:.0f} ms to a "
                     f"SQLite file, {result['logging_s_per_run_postgresql_server'] * 1000:.0f} ms through the server")
    return "\n".join(lines) + "\n\n" + "; ".join(notes) + ".\n"


def render_defences(path: Path) -> str:
    """The pruning defences' known answers (benchmark.tools.defence_known_answers): per dataset and defence, the
    test-set ASR and clean accuracy before and after, the amount the defender's rule chose, and the verdict."""
    result = json.loads(path.read_text())
    lines = ["| model | dataset | seed | defence | settings | defender images | chosen | ASR before → after | "
             "clean accuracy before → after | claim holds |", "|---|---|---|---|---|---|---|---|---|---|"]
    for row in result.get("rows", []):
        chosen = row["chosen"]
        amount = (f"u = {chosen['u']:g}" if "u" in chosen else f"threshold {chosen['threshold']:g}")
        amount += f", {chosen['neurons_pruned']:.0f} neurons"
        settings = ", ".join(f"`{o}`" for o in row["overrides"][1:]) or "shipped defaults"
        drop = (row["acc_before"] - row["acc_after"]) * 100
        lines.append(f"| {row['model']} | {row['dataset']} | {row['seed']} | {row['defence'].upper()} | {settings} | "
                     f"{row.get('defender_n', '?')} | {amount} | {row['asr_before']:.3f} → {row['asr_after']:.3f} | "
                     f"{row['acc_before']:.3f} → "
                     f"{row['acc_after']:.3f} ({-drop:+.1f} points) | {'yes' if row['claim_holds'] else 'no'} |")
    if len(lines) == 2:
        return f"`{DEFENCES}` holds no measurement: run `python -m benchmark.tools.defence_known_answers`.\n"
    text = "\n".join(lines) + (f"\n\nThe claim: ASR after ≤ {result['asr_cut']:g} × ASR before at a clean-accuracy "
                               f"drop ≤ {result['max_acc_drop'] * 100:g} points (test set), right after pruning: "
                               "no fine-tune, as in the papers.\n")
    premise = result.get("anp_premise", [])
    if premise:
        first = premise[0]
        text += (f"\nANP's premise: the defender split's images under {first['steps']} signed-gradient steps of "
                 f"eps = {first['eps']:g} noise on every neuron's weight part and bias, the backdoored model beside "
                 "the same model trained without poison (error; share of non-target images sent to the target "
                 "class).\n\n| model | dataset | seed | backdoored: error | backdoored: to the target | "
                 "clean-trained: error | clean-trained: to the target |\n|---|---|---|---|---|---|---|\n")
        text += "".join(f"| {p['model']} | {p['dataset']} | {p['seed']} | {p['backdoored']['error']:.3f} | "
                        f"{p['backdoored']['target_rate']:.3f} | {p['clean']['error']:.3f} | "
                        f"{p['clean']['target_rate']:.3f} |\n" for p in premise)
    return text


def stale_note(result: dict) -> str:
    """Empty for a measurement taken under this code's RESULTS_VERSION; else what makes it stale (a measurement
    that does not record its version is taken to be older)."""
    measured = result.get("results_version", "unrecorded")
    return "" if measured == RESULTS_VERSION else (
        f"stale, measured under RESULTS_VERSION {measured} (this code's: {RESULTS_VERSION})")


def render_convergence(path: Path) -> str:
    """The `paper` budget's PGD convergence (benchmark.tools.convergence): per case, its clean accuracy, and per eps
    the robust accuracy at B and at each multiple of B, and the gap acc(B) - acc(largest multiple x B) in points."""
    result = json.loads(path.read_text())
    rows = result.get("rows", [])
    if not rows:
        return f"`{CONVERGENCE}` holds no measurement: run `python -m benchmark.tools.convergence`.\n"
    budgets = ["B", *(f"{m}B" for m in result["multipliers"])]
    eps_values = list(rows[0]["eps"])
    header = ["model", "clean acc."]
    for eps in eps_values:
        header += [f"eps {eps}: " + " / ".join(f"acc({b})" for b in budgets), "gap"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        name = "dense (`none`)" if row["method"] == "none" else f"`{row['method']}` {row['sparsity']:g}"
        cells = [name, f"{row['clean_acc']:.3f}"]
        for eps in eps_values:
            measured = row["eps"][eps]
            cells += [" / ".join(f"{measured['acc'][k]:.3f}" for k in measured["acc"]), f"{measured['gap'] * 100:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    minutes = result["total_s"] / 60
    side = f"{result['jobs']} cells side by side" if result.get("jobs", 1) > 1 else "one cell after the other"
    stale = stale_note(result)
    return (f"**{stale[:1].upper()}{stale[1:]}: re-run the tool.**\n\n" if stale else "") + "\n".join(lines) + (
        f"\n\nMeasured on {result['machine']} in {minutes:.0f} min ({side}, one CPU thread each).\n")


def render_clp_u_grid(path: Path) -> str:
    """CLP's candidate u grids on the development seed (benchmark.tools.clp_u_grid): the u each grid's rule chose
    and the test-set ASR and clean accuracy right after pruning."""
    result = json.loads(path.read_text())
    lines = [f"Development case: {result['model']}, {result['dataset']}, seed {result['seed']}.\n",
             "| candidate grid | u chosen | neurons | ASR before → after | clean accuracy before → after |",
             "|---|---|---|---|---|"]
    for row in result["rows"]:
        drop = (row["acc_before"] - row["acc_after"]) * 100
        lines.append(f"| {row['grid']} | {row['chosen']['u']:g} | {row['chosen']['neurons_pruned']:.0f} | "
                     f"{row['asr_before']:.3f} → {row['asr_after']:.3f} | {row['acc_before']:.3f} → "
                     f"{row['acc_after']:.3f} ({-drop:+.1f} points) |")
    return "\n".join(lines) + "\n"


def _knowledge_line(row: dict, seed: str, dense: dict, tuned: dict) -> str:
    proxy = row["proxy"]
    return (f"| `{row['knowledge']}` | {proxy['model']}, {proxy['seed_offset']} | {seed} | {dense['asr']:.3f} | "
            f"{dense['target_rate_clean']:.3f} | {dense['clean_acc']:.3f} | {tuned['asr']:.3f} | "
            f"{tuned['clean_acc']:.3f} |")


def render_clean_label_knowledge(path: Path) -> str:
    """The clean-label backdoor's dense-model ASR by what the attacker knows (benchmark.tools.clean_label_knowledge):
    per case and seed (and their mean), the `threat/knowledge` tag, the proxy, the dense model's ASR beside the clean
    images' rate of the target class and its clean accuracy, and the ASR and clean accuracy after the cell's
    fine-tune."""
    result = json.loads(path.read_text())
    rows = result.get("rows", [])
    if not rows:
        return (f"`{CLEAN_LABEL_KNOWLEDGE}` holds no measurement: run "
                "`python -m benchmark.tools.clean_label_knowledge`.\n")
    lines = ["| knowledge | proxy (model, seed offset) | seed | dense: ASR | dense: target rate on clean images | "
             "dense: clean acc. | after the fine-tune: ASR | after the fine-tune: clean acc. |",
             "|---|---|---|---|---|---|---|---|"]
    cases = list(dict.fromkeys(row["case"] for row in rows))  # in the order measured; each case's seeds together
    for case in cases:
        measured = [row for row in rows if row["case"] == case]
        for row in measured:
            lines.append(_knowledge_line(row, str(row["seed"]), row["dense"], row["finetuned"]))
        if len(measured) > 1:
            mean = {part: {key: sum(row[part][key] for row in measured) / len(measured) for key in measured[0][part]}
                    for part in ("dense", "finetuned")}
            lines.append(_knowledge_line(measured[0], f"mean of {len(measured)}", mean["dense"], mean["finetuned"]))
    first = rows[0]
    setting = (f"Victim: {first['victim']}, {first['train_epochs']} epochs; proxy: {first['proxy']['epochs']} epochs; "
               f"the fine-tune: {first['finetune_epochs']} epochs on the {first['finetune_data']} set. ")
    load = result.get("load_avg_1m")
    side = f"{result['jobs']} cells side by side" if result.get("jobs", 1) > 1 else "one cell after the other"
    return "\n".join(lines) + (f"\n\n{setting}Budget: {result['budget']}. Measured on {result['machine']} in "
                               f"{result['total_s'] / 60:.0f} min ({side}, one CPU thread each"
                               + (f"; 1-minute load average {min(load):.1f}–{max(load):.1f} at start and end"
                                  if load else "") + ").\n")


MAKE_BENCHMARK_GRIDS = ("default", "default_poisoning")  # the presets `make benchmark` runs by default


def grid_size(experiment: str) -> tuple[int, int]:
    """(jobs, distinct cells) of a grid preset, counted as the grid's own pre-check counts them: every job composed
    and canonicalised, cells told apart by their hash. Nothing is computed."""
    from hydra import compose, initialize_config_dir

    from benchmark.grid import check_jobs

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        config = compose(config_name="config", overrides=[f"experiment={experiment}"], return_hydra_config=True)
        errors, jobs = check_jobs(config)
    if errors:
        raise DocsError(f"experiment={experiment}: {errors[0]}")
    return len(jobs), len({job.cell_hash for job in jobs})


def render_grid_sizes(_: Path | None) -> str:
    """The jobs and distinct cells of the grids `make benchmark` runs (jobs that compute one cell run it once)."""
    lines = ["| preset (`conf/experiment/`) | jobs | distinct cells |", "|---|---|---|"]
    for experiment in MAKE_BENCHMARK_GRIDS:
        jobs, cells = grid_size(experiment)
        lines.append(f"| `{experiment}` | {jobs} | {cells} |")
    return "\n".join(lines) + "\n"


# The config groups, in the order the pipeline uses them, with the page that documents their options.
CONFIG_GROUPS = {"dataset": "byo.md", "model": "byo.md", "pruning": "methods.md", "threat": "threats.md",
                 "train": None, "finetune": None, "eval": "metrics.md", "debug": None, "experiment": "results.md",
                 "hydra/launcher": "scaling.md"}


def render_config_groups(_: Path | None) -> str:
    """Every option of every config group, read from conf/ (one YAML per option), the default in bold."""
    import yaml

    defaults = {}
    for entry in yaml.safe_load((ROOT / "conf" / "config.yaml").read_text())["defaults"]:
        if isinstance(entry, dict):
            defaults.update({k: v for k, v in entry.items() if not k.startswith("override")})
    lines = ["| group | options | documented in |", "|---|---|---|"]
    for group, page in CONFIG_GROUPS.items():
        options = sorted(path.stem for path in (ROOT / "conf" / group).glob("*.yaml"))
        names = ", ".join(f"**`{o}`**" if defaults.get(group) == o else f"`{o}`" for o in options)
        lines.append(f"| `{group}` | {names} | {f'[{page}]({page})' if page else ''} |")
    return "\n".join(lines) + "\n"


def render_reproduce(results: Path) -> str:
    """Every reproduction preset (benchmark/reproduce_presets/*.yaml): its source, what it needs, its expected time and its measured
    status from results/reproduce/<target>.json (`make reproduce TARGET=<target>`), "not yet run" without one, and
    marked stale when it was measured under another RESULTS_VERSION (its cells are no longer this code's)."""
    from benchmark.tools.reproduce import OUT_DIR, PRESETS, load_preset, targets

    lines = ["| target | what | source | expected time | status |", "|---|---|---|---|---|"]
    for target in targets():
        preset = load_preset(PRESETS / f"{target}.yaml")
        report = results / OUT_DIR / f"{target}.json"
        status = "not yet run"
        if report.is_file():
            measured = json.loads(report.read_text())
            checked = [row["within"] for row in measured["rows"] if row["within"] is not None]
            status = (f"{measured['status']} ({sum(checked)} of {len(checked)} checked rows within), "
                      f"{measured['measured_at']}, {measured['seconds']:.0f} s")
            if stale := stale_note(measured):
                status = f"{stale}: {status}"
        source = f"[{preset.cited_as}]({preset.url})"
        lines.append(f"| `{target}` | {preset.title} | {source} | {preset.expected_time} | {status} |")
    return "\n".join(lines) + "\n"


BLOCKS: dict[str, Block] = {
    "grid-sizes": Block(None, "conf/experiment/", render_grid_sizes),
    "config-groups": Block(None, "conf/", render_config_groups),
    "reproduce-targets": Block(None, "benchmark/reproduce_presets/*.yaml, results/reproduce/*.json",
                               render_reproduce),
    "default-grid": Block(SUMMARY, "make figures", render_default_grid),
    "poisoning-slice": Block(SUMMARY, "make figures", render_poisoning_slice),
    "perf": Block(PERF, "make perf", render_perf),
    "grid-time": Block(PERF, "make perf", render_grid_time),
    "aa-gap": Block(PERF, "make aa-gap", render_aa_gap),
    "engines": Block(ENGINES, "make test-scale", render_engines),
    "defences": Block(DEFENCES, "python -m benchmark.tools.defence_known_answers", render_defences),
    "convergence": Block(CONVERGENCE, "python -m benchmark.tools.convergence", render_convergence),
    "clp-u-grid": Block(CLP_U_GRID, "python -m benchmark.tools.clp_u_grid", render_clp_u_grid),
    "clean-label-knowledge": Block(CLEAN_LABEL_KNOWLEDGE, "python -m benchmark.tools.clean_label_knowledge",
                                   render_clean_label_knowledge),
}


def fill(text: str, results: Path, where: str = "text", only: set[str] | None = None) -> str:
    """`text` with every generated block (or the blocks named in `only`) rewritten from its source under
    `results`."""
    names = [(m.group(1), m.group(2)) for m in OPEN.finditer(text)]
    opened = [n for closing, n in names if not closing]
    if sorted(opened) != sorted(n for closing, n in names if closing) or len(MARKER.findall(text)) != len(opened):
        raise DocsError(f"{where}: unbalanced generated markers {[n for _, n in names]}; "
                        f"each `<!-- generated:NAME -->` needs its own `<!-- /generated:NAME -->` after it")

    def replace(match: re.Match) -> str:
        name = match.group("name")
        if name not in BLOCKS:
            raise DocsError(f"{where}: unknown generated block {name!r}; known: {', '.join(sorted(BLOCKS))}")
        block = BLOCKS[name]
        if only is not None and name not in only:
            return match.group(0)
        if block.source is None:  # read from conf/ or the reproduction presets (and maybe files under `results`)
            body = block.render(results)
            provenance = f"<sub>Generated by `make docs` from `{block.fills}`.</sub>\n"
        else:
            source = results / block.source
            if not source.is_file():
                raise DocsError(f"{where}: block {name!r} needs {source}, which is missing: run `{block.fills}`")
            body = block.render(source)
            provenance = f"<sub>Generated by `make docs` from `results/{block.source}` (`{block.fills}`).</sub>\n"
        return f"<!-- generated:{name} -->\n{body}\n{provenance}<!-- /generated:{name} -->"

    return MARKER.sub(replace, text)


def documents(root: Path) -> list[Path]:
    return [p for p in [root / "README.md", *sorted((root / "docs").glob("*.md"))] if p.is_file()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=str(ROOT / "results"), help="the results directory to read")
    parser.add_argument("--root", default=str(ROOT), help="the repository whose README.md and docs/*.md to rewrite")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 when a document is out of date")
    parser.add_argument("--only", default=None,
                        help="comma-separated block names: rewrite these, leave the others as they are")
    args = parser.parse_args(argv)
    results, root = Path(args.results), Path(args.root)
    only = None if args.only is None else {name for name in args.only.split(",") if name}
    if only is not None and (not only or only - set(BLOCKS)):
        print(f"--only={args.only!r}: allowed: comma-separated names of {', '.join(sorted(BLOCKS))}", file=sys.stderr)
        return 2
    try:
        updated = {path: fill(path.read_text(), results, str(path.relative_to(root)), only)
                   for path in documents(root)}
    except DocsError as error:
        print(error, file=sys.stderr)
        return 2
    stale = [path for path, text in updated.items() if text != path.read_text()]
    if args.check:
        for path in stale:
            print(f"{path.relative_to(root)} is out of date: run `make docs`", file=sys.stderr)
        return 1 if stale else 0
    for path in stale:
        path.write_text(updated[path])
        print(f"rewrote {path.relative_to(root)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
