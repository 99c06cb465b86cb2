"""Choosing CLP's `u_grid` (conf/pruning/clp.yaml) on a development seed that the known-answer tests never assert
on: per candidate grid, the u the defender's rule picks on the defender split and the test-set ASR and clean
accuracy it gives, right after pruning (benchmark/tools/defence_known_answers.py's backdoored model and protocol).

`python -m benchmark.tools.clp_u_grid` writes results/clp_u_grid_dev.json; the shipped grid is the one with the
lowest ASR whose clean-accuracy drop stays within the claim's margin on that seed (docs/defences.md).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from benchmark.tools.defence_known_answers import MODEL, ROOT, defend, trained_model

DEV_SEED = 3  # the known-answer tests assert on seed 0 and the published table measures seeds 0-2
GRIDS = {  # name -> u values, from the least to the most pruning
    "step 0.5, 5 to 0": [5.0 - 0.5 * i for i in range(11)],
    "step 0.25, 5 to 0": [5.0 - 0.25 * i for i in range(21)],
    "step 0.1, 5 to 0": [round(5.0 - 0.1 * i, 2) for i in range(51)],
    "step 0.25, 5 to -1": [5.0 - 0.25 * i for i in range(25)],
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "results" / "clp_u_grid_dev.json"))
    parser.add_argument("--dataset", default="mnist5k")
    parser.add_argument("--seed", type=int, default=DEV_SEED)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    data, threat, model = trained_model(args.dataset, args.seed)
    rows = []
    for name, grid in GRIDS.items():
        override = "pruning.u_grid=[" + ",".join(f"{u:g}" for u in grid) + "]"
        row = defend(args.dataset, args.seed, data, threat, model, "clp", overrides=("pruning=clp", override))
        rows.append({"grid": name, "u_grid": grid, **row})
        print(f"{name}: u = {row['chosen']['u']:g}, ASR {row['asr_before']:.3f} -> {row['asr_after']:.3f}, clean "
              f"accuracy {row['acc_before']:.3f} -> {row['acc_after']:.3f}", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"dataset": args.dataset, "seed": args.seed, "model": MODEL, "rows": rows},
                              indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
