"""Hydra's basic sweeper for PruneSec grids (conf/hydra/sweeper/grid.yaml): the same jobs, in the same order and
with the same numbers, except that the jobs whose cell the grid's pre-check found FINISHED (benchmark/grid.py) are
not launched: they go to the grid's ledger as skipped. The others go to the launcher in runs of consecutive job
numbers, so that each keeps its number (its sweep subfolder, its place in the summary). Hydra's own check that each
batch composes (`validate_batch_is_legal`, one composition per job) is left out when the grid's pre-check ran: it
composed and checked every job already.

Hydra takes sweepers from the `hydra_plugins` namespace package only; this module lives there for that reason."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf


def runs_to_launch(n_jobs: int, skipped: set[int], max_batch_size: int | None) -> list[range]:
    """Job numbers to launch, as runs of consecutive numbers of at most `max_batch_size` jobs each."""
    runs: list[range] = []
    for num in range(n_jobs):
        if num in skipped:
            continue
        last = runs[-1] if runs else None
        if last is not None and last.stop == num and (not max_batch_size or max_batch_size < 0
                                                       or len(last) < max_batch_size):
            runs[-1] = range(last.start, num + 1)
        else:
            runs.append(range(num, num + 1))
    return runs


class GridSweeper(BasicSweeper):
    def sweep(self, arguments: list[str]) -> Any:
        from benchmark.grid import SKIPS_FILE, record_skipped_jobs
        from benchmark.tracking_store import redact_file

        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        overrides = parser.parse_overrides(self._parse_config() + list(arguments))
        jobs = [job for batch in self.split_arguments(overrides, None) for job in batch]
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        redact_file(sweep_dir / "multirun.yaml")  # no credentials (a tracking URI's password) on disk
        prechecked = (sweep_dir / SKIPS_FILE).exists()  # written by the grid's pre-check (benchmark/grid.py)
        skipped = record_skipped_jobs(sweep_dir)
        returns = []
        for nums in runs_to_launch(len(jobs), skipped, self.max_batch_size):
            batch = jobs[nums.start:nums.stop]
            if not prechecked:
                self.validate_batch_is_legal(batch)
            results = self.launcher.launch(batch, initial_job_idx=nums.start)
            for result in results:
                _ = result.return_value  # re-raises a job's exception, as the basic sweeper does
            returns.append(results)
        return returns
