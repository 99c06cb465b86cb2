"""The pruning defences' known answers (docs/defences.md): do ANP and CLP cut BadNets' attack success rate (ASR) on
the dense backdoored model by at least half at <= 3 points of clean accuracy, as the literature reports?

One BatchNorm model per model name, dataset and seed (`seed_cnn_bn` by default, `--models resnet20` for a deeper
one; BadNets at the shipped budget, trained on the poisoned training split with the cell's dense training loop and
recipe, `stages.train_loop`), each defence run through `benchmark.pruning.prune` exactly as a cell runs it
(shipped defaults, `selection=validation`) on the cell's defender split only (`data.defender_size`: clean images
held out of training; the amount is chosen on them, never on the test set), no fine-tune afterwards (as in the
papers). ASR and clean accuracy are measured on the test set before and after.

`python -m benchmark.tools.defence_known_answers` writes results/defences_known_answers.json (the `defences` block
of docs/defences.md, `make docs`); `--merge` replaces only the measured (model, dataset, seed) cases in it, so a
slow model can be added on its own. tests/test_defences.py's slow known-answer tests measure the same cases on
mnist5k, seed 0, `seed_cnn_bn`.
"""
from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = {  # dataset -> dense training of the backdoored model (Adam, the cell's fit)
    "mnist5k": {"epochs": 10, "lr": 3e-3},
    "digits": {"epochs": 8, "lr": 3e-3},
}
MODEL = "seed_cnn_bn"  # the default model: 96 BatchNorm channels, seconds per defence
CASES = {  # defence -> pruning overrides (ANP: fewer mask steps than the paper's 2000, for CPU time)
    "clp": ("pruning=clp",),
    "anp": ("pruning=anp", "pruning.iterations=300"),
}
PREMISE_EPS = 0.4  # ANP's budget: the neuron perturbation its premise is checked at
PREMISE_STEPS = 10
PREMISE_IMAGES = 500  # at most this many images of the defender split: the premise is checked on them
ASR_CUT = 0.5  # the claim: ASR after <= ASR_CUT * ASR before ...
MAX_ACC_DROP = 0.03  # ... at a clean-accuracy drop of at most this (test set)
CPU = torch.device("cpu")


def compose(dataset: str, seed: int, *overrides: str, model: str = MODEL):
    """The cell config of a known-answer case: BadNets, `model`, `dataset`, on the CPU."""
    from benchmark.validate import compose_config

    setting = SETTINGS[dataset]
    return compose_config([f"dataset={dataset}", f"model={model}", "threat=badnets", "device=cpu", f"seed={seed}",
                           f"train.epochs={setting['epochs']}", f"train.lr={setting['lr']}", *overrides])


def trained_model(dataset: str, seed: int = 0, poisoned: bool = True, model_name: str = MODEL):
    """(data, threat, model): `model_name` trained as a cell's dense model (`stages.fresh_model`,
    `stages.train_loop`) on the BadNets-poisoned training split of `dataset` (on the clean one when not
    `poisoned`), the defender split held out (`data`: the cell's data, `benchmark.data.cell_data`)."""
    from attacks import build_threat
    from benchmark import stages
    from benchmark.data import cell_data

    cfg = compose(dataset, seed, model=model_name)
    data = cell_data(cfg)
    threat = build_threat(cfg.threat)
    train = threat.poisoned_set(data, seed)[0] if poisoned else data
    model = stages.fresh_model(cfg, data)
    stages.train_loop(cfg, model, train, cfg.train.epochs, CPU, desc="dense")
    return data, threat, model.eval()


def asr_and_accuracy(threat, model, data) -> tuple[float, float]:
    from benchmark.training import accuracy_and_loss

    return (threat.threat_metrics(model, data, CPU, 0)["backdoor/asr"],
            accuracy_and_loss(model, data.x_test, data.y_test, CPU)[0])


def defend(dataset: str, seed: int, data, threat, model, defence: str, model_name: str = MODEL,
           overrides: tuple[str, ...] | None = None) -> dict:
    """One defence on a copy of `model`, as a cell prunes: the test-set ASR and clean accuracy before and after, the
    amount its rule chose (`pruning/*`) and whether the literature's claim holds. `overrides`: the pruning config
    (CASES[defence] when None)."""
    overrides = CASES[defence] if overrides is None else overrides
    from benchmark import stages
    from benchmark.pruning import prune
    from benchmark.pruning.common import finalize

    cfg = compose(dataset, seed, *overrides, model=model_name)
    started = time.perf_counter()
    outcome = prune(copy.deepcopy(model), cfg.pruning, stages.prune_context(cfg, stages.TrainingSets.clean(data), CPU))
    seconds = time.perf_counter() - started
    (asr, acc), (asr_after, acc_after) = asr_and_accuracy(threat, model, data), asr_and_accuracy(
        threat, finalize(outcome.model), data)
    return {"dataset": dataset, "seed": seed, "model": model_name, "defence": defence,
            "overrides": list(overrides), "defender_n": len(data.y_defender), "train_n": len(data.y_train),
            "asr_before": asr, "asr_after": asr_after, "acc_before": acc, "acc_after": acc_after,
            "claim_holds": asr_after <= ASR_CUT * asr and acc - acc_after <= MAX_ACC_DROP,
            "defence_s": seconds, "chosen": {k.split("/", 1)[1]: v for k, v in outcome.info.items()}}


def under_adversarial_neuron_noise(model, x: torch.Tensor, y: torch.Tensor, target: int, seed: int) -> dict:
    """ANP's premise, measured: the error on (x, y), and the share of the non-target images predicted as `target`,
    after PREMISE_STEPS signed-gradient ascent steps on the loss over every neuron's perturbation (delta on its
    weight part, xi on its bias, in [-PREMISE_EPS, PREMISE_EPS], from a uniform start), as ANP perturbs them."""
    import torch.nn.functional as F

    from benchmark.pruning.neurons import Modulation, neuron_layers
    from benchmark.training import frozen_parameters

    layers = neuron_layers(model)
    generator = torch.Generator().manual_seed(seed)
    noise = [((torch.rand(layer.size, generator=generator) * 2 - 1) * PREMISE_EPS).requires_grad_()
             for layer in layers for _ in range(2)]
    with frozen_parameters(model), Modulation(layers, [1 + n for n in noise[0::2]],
                                               [1 + n for n in noise[1::2]]) as modulation:
        for _ in range(PREMISE_STEPS):
            grads = torch.autograd.grad(F.cross_entropy(model(x), y), noise)
            with torch.no_grad():
                for n, grad in zip(noise, grads):
                    n.add_(grad.sign(), alpha=PREMISE_EPS / 4).clamp_(-PREMISE_EPS, PREMISE_EPS)
            modulation.weight[:] = [1 + n for n in noise[0::2]]
            modulation.bias[:] = [1 + n for n in noise[1::2]]
        with torch.no_grad():
            predicted = model(x).argmax(1)
    return {"error": float((predicted != y).float().mean()),
            "target_rate": float((predicted[y != target] == target).float().mean())}


def premise(dataset: str, seed: int, data, threat, backdoored, model_name: str = MODEL) -> dict:
    """ANP's premise on the defender split: the backdoored model under adversarial neuron noise, beside the same
    model trained on the clean set."""
    x, y = data.x_defender[:PREMISE_IMAGES], data.y_defender[:PREMISE_IMAGES]
    _, _, clean = trained_model(dataset, seed, poisoned=False, model_name=model_name)
    target = int(threat.cfg.target_class)
    return {"dataset": dataset, "seed": seed, "model": model_name, "eps": PREMISE_EPS, "steps": PREMISE_STEPS,
            "backdoored": under_adversarial_neuron_noise(backdoored, x, y, target, seed),
            "clean": under_adversarial_neuron_noise(clean, x, y, target, seed)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "results" / "defences_known_answers.json"))
    parser.add_argument("--models", nargs="+", default=[MODEL], help="BatchNorm models (conf/model/)")
    parser.add_argument("--datasets", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="one backdoored model per seed")
    parser.add_argument("--no-premise", action="store_true",
                        help="skip ANP's premise (it trains a second, clean model per case)")
    parser.add_argument("--merge", action="store_true",
                        help="keep the other cases already in --out; replace only the ones measured now")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # the numbers of one CPU thread, as the tests measure them
    rows, premises = [], []
    for model_name in args.models:
        for dataset in args.datasets:
            for seed in args.seeds:
                data, threat, model = trained_model(dataset, seed, model_name=model_name)
                if not args.no_premise:
                    premises.append(premise(dataset, seed, data, threat, model, model_name))
                for defence in CASES:
                    row = defend(dataset, seed, data, threat, model, defence, model_name)
                    rows.append(row)
                    print(f"{model_name} {dataset} seed {seed} {defence}: ASR {row['asr_before']:.3f} -> "
                          f"{row['asr_after']:.3f}, clean accuracy {row['acc_before']:.3f} -> {row['acc_after']:.3f} "
                          f"({row['defence_s']:.0f} s)", flush=True)
    out = Path(args.out)
    if args.merge and out.exists():
        rows, premises = merged(json.loads(out.read_text()), rows, premises)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"asr_cut": ASR_CUT, "max_acc_drop": MAX_ACC_DROP, "rows": rows,
                                "anp_premise": premises}, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


def merged(earlier: dict, rows: list[dict], premises: list[dict]) -> tuple[list[dict], list[dict]]:
    """The earlier result's rows and premises, each replaced where its case was measured now, in a stable order (an
    earlier premise without a model was measured on the default model)."""
    case = lambda entry: (entry["model"], entry["dataset"], entry["seed"])
    order = lambda entry: (entry["model"] != MODEL, entry["model"], entry["dataset"] != "mnist5k", entry["dataset"],
                           entry["seed"])

    def replace(entries: list[dict], now: list[dict]) -> list[dict]:
        measured = {case(entry) for entry in now}
        return sorted([entry for entry in entries if case(entry) not in measured] + now, key=order)

    for entry in earlier.get("anp_premise", []):
        entry.setdefault("model", MODEL)
    return replace(earlier.get("rows", []), rows), replace(earlier.get("anp_premise", []), premises)


if __name__ == "__main__":
    raise SystemExit(main())
