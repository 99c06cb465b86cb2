"""`make reproduce TARGET=<preset>` (benchmark/tools/reproduce.py): the presets validate and cite their numbers; a
store holding the preset's FINISHED cells is compared without running anything (within tolerance: exit 0; an edited
published number: exit 1; JSON and Markdown written); the CIFAR targets exit 2 with one line naming what is
missing here; the CPU target runs end to end (slow)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import initialize_config_dir

from benchmark.tools import reproduce as tool
from benchmark.tools.docs_numbers import MARKER, fill, render_reproduce
from benchmark.version import RESULTS_VERSION

from conftest import CONF_DIR, ROOT, cli_env

CPU_TARGET = "han2015_lenet300"
GPU_TARGETS = ("backdoorbench_badnets_1pct", "backdoorbench_badnets_1pct_clp", "apb_hydra_r18_90")
HAS_GPU = any(os.path.exists(path) for path in ("/dev/nvidiactl", "/dev/dxg", "/dev/kfd"))


def _cells(preset: tool.Preset) -> list:
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return tool.compose_jobs(preset, [])


def _fake_store(results: Path, target: str, preset: tool.Preset, metrics_of) -> None:
    """Every cell of `preset` as a FINISHED run with the metrics `metrics_of(cfg)` gives, in the tracking store of
    `results` (created if missing), under the experiment the tool reads for `target`."""
    from mlflow.tracking import MlflowClient

    from benchmark.tracking_store import default_tracking_uri, open_store

    uri = default_tracking_uri(results)
    open_store(uri)
    client = MlflowClient(uri)
    experiment = client.create_experiment(f"reproduce_{target}", artifact_location=str(results / "mlartifacts"))
    for _, job in _cells(preset):
        run = client.create_run(experiment, tags={"cell_hash": job.cell_hash})
        for name, value in metrics_of(job.cfg).items():
            client.log_metric(run.info.run_id, name, value)
        client.set_terminated(run.info.run_id, "FINISHED")


def _han_metrics(cfg) -> dict[str, float]:
    """Dense 0.920, pruned 0.915 (0.005 lost: inside the 2-point tolerance), 92% of the weights removed."""
    pruned = cfg.pruning.method == "magnitude_global"
    return {"clean/acc": 0.915 if pruned else 0.920, "sparsity/achieved": 0.92 if pruned else 0.0}


def _edited(tmp_path: Path, target: str, row: int, published: float) -> Path:
    data = yaml.safe_load((tool.PRESETS / f"{target}.yaml").read_text())
    data["rows"][row]["published"] = published
    path = tmp_path / f"{target}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_every_preset_validates_cites_its_rows_and_lists_its_differences():
    assert set(tool.targets()) == {CPU_TARGET, *GPU_TARGETS}
    for target in tool.targets():
        preset = tool.load_preset(tool.PRESETS / f"{target}.yaml")
        assert preset.differences and preset.source and preset.url.startswith("https://")
        for row in preset.rows:
            assert row.cited and (row.tolerance is None) == ("not checked" in row.note)


def test_cpu_preset_rows_select_its_cells():
    preset = tool.load_preset(tool.PRESETS / f"{CPU_TARGET}.yaml")
    jobs = _cells(preset)
    assert len(jobs) == 4 and len({job.cell_hash for _, job in jobs}) == 4
    for row in preset.rows:
        assert len(tool._selected(jobs, row.where, row.name)) == 2  # two seeds


@pytest.fixture(scope="module")
def han_store(tmp_path_factory) -> Path:
    """A results directory whose store holds the CPU target's 4 cells, FINISHED, with `_han_metrics`."""
    results = tmp_path_factory.mktemp("han-store")
    _fake_store(results, CPU_TARGET, tool.load_preset(tool.PRESETS / f"{CPU_TARGET}.yaml"), _han_metrics)
    return results


@pytest.mark.parametrize("target", GPU_TARGETS)
def test_gpu_presets_cells_pass_the_checks_without_torch_but_for_the_keys_they_depend_on(target):
    """Every cell of a GPU preset validates (keys, values, ranges) here, with `dataset.download=true` standing in
    for the CIFAR-10 files; an override of a key the preset depends on (`key: value` in depends_on) is left out."""
    from benchmark.grid import JobComposer, job_overrides
    from benchmark.validate import check_config

    preset = tool.load_preset(tool.PRESETS / f"{target}.yaml")
    pending = {"=".join(m.groups()) for entry in preset.depends_on if (m := re.match(r"([\w.]+): (\S+)", entry))}
    overrides = [o for o in preset.overrides if o not in pending] + ["dataset.download=true"]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        for sweep in preset.grids:
            jobs = job_overrides(tool._compose(overrides, sweep))[0]
            composer = JobComposer("config")
            for job in jobs:
                check_config(composer.compose(job))


def test_finished_cells_are_compared_without_running_and_written_as_json_and_markdown(han_store, capsys):
    preset = tool.load_preset(tool.PRESETS / f"{CPU_TARGET}.yaml")
    assert tool.main([CPU_TARGET, "--results", str(han_store), "--no-run"]) == 0
    report = json.loads((han_store / "reproduce" / f"{CPU_TARGET}.json").read_text())
    difference, sparsity, dense = report["rows"]
    assert difference["measured"] == pytest.approx(-0.005) and difference["within"] is True
    assert sparsity["measured"] == pytest.approx(0.92) and sparsity["within"] is True
    assert dense["measured"] == pytest.approx(0.92) and dense["within"] is None  # reported, not checked
    assert report["status"] == "within tolerance" and report["cells_run"] == 0
    markdown = (han_store / "reproduce" / f"{CPU_TARGET}.md").read_text()
    row = "| clean accuracy, pruned minus dense | `clean/acc` | 0.0005 | -0.0050 | -0.0055 | ±0.0200 | yes |"
    assert row in markdown
    assert preset.differences[0].split(":")[0] in markdown
    assert "within tolerance" in capsys.readouterr().out


def test_an_edited_published_number_fails_with_exit_1(han_store, tmp_path):
    edited = _edited(tmp_path, CPU_TARGET, 0, 0.05)  # 5 points gained by pruning: 5.5 points from the measurement
    assert tool.main([CPU_TARGET, "--preset", str(edited), "--results", str(han_store), "--no-run"]) == 1
    report = json.loads((han_store / "reproduce" / f"{CPU_TARGET}.json").read_text())
    assert report["status"] == "outside tolerance" and report["rows"][0]["within"] is False
    assert "| NO |" in (han_store / "reproduce" / f"{CPU_TARGET}.md").read_text()


def test_cells_missing_from_the_store_are_not_compared_with_no_run(tmp_path, capsys):
    assert tool.main([CPU_TARGET, "--results", str(tmp_path), "--no-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "4 of its 4 cells are not FINISHED" in err
    assert not (tmp_path / "reproduce").exists()


def test_a_gpu_preset_is_compared_from_a_store_filled_elsewhere(han_store, tmp_path, capsys):
    """A preset whose cells run on `device=cuda` (their hashes differ from the CPU cells'): without a GPU here its
    missing cells are named (exit 2); once the store holds them, as if filled on a GPU machine, they are compared."""
    data = yaml.safe_load((tool.PRESETS / f"{CPU_TARGET}.yaml").read_text())
    data["overrides"] = [o.replace("device=cpu", "device=cuda") for o in data["overrides"]]
    path = tmp_path / "on_gpu.yaml"
    path.write_text(yaml.safe_dump(data))
    command = ["on_gpu", "--preset", str(path), "--results", str(han_store), "--no-run"]
    assert tool.main(command) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and ("needs a CUDA GPU" in err) == (not HAS_GPU)
    _fake_store(han_store, "on_gpu", tool.load_preset(path), _han_metrics)
    assert tool.main(command) == 0


@pytest.mark.parametrize("target", GPU_TARGETS)
def test_cifar_targets_exit_2_with_one_line_naming_the_data_and_the_gpu(tmp_path, capsys, target):
    empty = tmp_path / "no-cifar"
    assert tool.main([target, "--results", str(tmp_path), f"dataset.data_root={empty}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"needs CIFAR-10 under {empty}" in err
    assert ("a CUDA GPU" in err) == (not HAS_GPU)
    assert not (tmp_path / "reproduce").exists() and not (tmp_path / "mlflow.db").exists()


def test_no_or_an_unknown_target_exits_2_listing_the_targets(capsys):
    assert tool.main([]) == 2 and tool.main(["nope"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and all(", ".join(tool.targets()) in line for line in lines)


def test_a_preset_that_does_not_validate_exits_2_naming_the_key(tmp_path, capsys):
    path = _edited(tmp_path, CPU_TARGET, 0, 0.0)
    data = yaml.safe_load(path.read_text())
    data["rows"][0]["tolerance"] = -0.01
    path.write_text(yaml.safe_dump(data))
    assert tool.main([CPU_TARGET, "--preset", str(path), "--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "rows.0.tolerance" in err and "-0.01" in err


def test_make_reproduce_passes_target_results_and_overrides(tmp_path):
    done = subprocess.run(["make", "-n", "-o", ".venv/.installed", "reproduce", "TARGET=apb_hydra_r18_90",
                           f"RESULTS={tmp_path}", "REPRODUCE_ARGS=dataset.data_root=/nowhere"],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (f'-m benchmark.tools.reproduce "apb_hydra_r18_90" --results {tmp_path} --tracking-uri '
            f'"sqlite:///{tmp_path}/mlflow.db" dataset.data_root=/nowhere') in done.stdout


def test_make_reproduce_on_a_cifar_target_says_what_is_missing_and_fails(tmp_path):
    """make exits 2 for any failing command and names the command's own code (`Error 2`) in its last line."""
    done = subprocess.run(["make", "-s", "-o", ".venv/.installed", "reproduce", "TARGET=backdoorbench_badnets_1pct",
                           f"RESULTS={tmp_path}", f"REPRODUCE_ARGS=dataset.data_root={tmp_path / 'none'}"],
                          cwd=ROOT, env=cli_env(), capture_output=True, text=True, timeout=120)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 2 and lines[-1].endswith("Error 2"), done.stderr
    assert lines[0].startswith("reproduce backdoorbench_badnets_1pct: needs CIFAR-10 under")


def test_the_targets_block_lists_every_preset_with_its_status(tmp_path):
    assert render_reproduce(tmp_path).count("not yet run") == len(tool.targets())
    (tmp_path / "reproduce").mkdir()
    report = {"status": "within tolerance", "measured_at": "2026-01-01 00:00 UTC", "seconds": 42.0,
              "results_version": RESULTS_VERSION, "rows": [{"within": True}, {"within": True}, {"within": None}]}
    (tmp_path / "reproduce" / f"{CPU_TARGET}.json").write_text(json.dumps(report))
    table = render_reproduce(tmp_path)
    assert table.count("not yet run") == len(GPU_TARGETS)
    assert "| within tolerance (2 of 2 checked rows within), 2026-01-01 00:00 UTC, 42 s |" in table
    assert "stale" not in table


@pytest.mark.parametrize("recorded", [{"results_version": RESULTS_VERSION - 1}, {}])
def test_a_report_measured_under_another_results_version_is_marked_stale(tmp_path, recorded):
    (tmp_path / "reproduce").mkdir()
    (tmp_path / "reproduce" / f"{CPU_TARGET}.json").write_text(json.dumps({
        "status": "within tolerance", "measured_at": "2026-01-01 00:00 UTC", "seconds": 42.0,
        "rows": [{"within": True}], **recorded}))
    version = recorded.get("results_version", "unrecorded")
    assert (f"| stale, measured under RESULTS_VERSION {version} (this code's: {RESULTS_VERSION}): within tolerance"
            in render_reproduce(tmp_path))


def test_the_published_targets_block_is_current():
    text = (ROOT / "docs" / "reproduce.md").read_text()
    block = next(m.group(0) for m in MARKER.finditer(text) if m.group("name") == "reproduce-targets")
    assert fill(block, ROOT / "results") == block, "docs/reproduce.md's targets table is stale: run `make docs`"


@pytest.mark.slow
def test_cpu_target_runs_end_to_end_within_tolerance_and_an_edited_number_fails(tmp_path):
    """The CPU target's 4 cells trained, pruned and measured through the grid (a minute or more on 2 shared
    cores), then compared again from the store with an edited published number."""
    command = [sys.executable, "-m", "benchmark.tools.reproduce", CPU_TARGET, "--results", str(tmp_path)]
    done = subprocess.run(command, cwd=ROOT, env=cli_env(), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "reproduce" / f"{CPU_TARGET}.json").read_text())
    assert report["cells_run"] == 4 and all(row["within"] is not False for row in report["rows"])
    edited = _edited(tmp_path, CPU_TARGET, 1, 0.5)  # half the weights removed: far from the 92% measured
    done = subprocess.run([*command, "--preset", str(edited), "--no-run"], cwd=ROOT, env=cli_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
