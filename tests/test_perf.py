"""make perf's PGD comparison: its set-up runs, and our ART wrapper's PGD equals the plain torch loop's."""
from __future__ import annotations

import numpy as np
import torch

from benchmark.tools.perf import pgd_setup, torch_pgd, wrapper_pgd


def test_the_wrapper_and_the_plain_torch_pgd_give_the_same_adversarial_images():
    torch.set_num_threads(1)
    model, x, y, params = pgd_setup(40)
    ours, plain = wrapper_pgd(model, x, y, 0.1, params), torch_pgd(model, x, y, 0.1, params)
    assert ours.shape == tuple(x.shape)
    assert np.abs(ours - plain).max() <= 1e-6
    assert np.abs(ours - x.numpy()).max() > 0.05  # the attack moved the images


def test_old_and_new_evasion_attack_the_same_images_and_fgsm_agrees_by_construction(trained_seed_cnn, digits):
    """FGSM is deterministic per image: the grid's path (each eps attacks the images still robust) equals the old
    way's per-eps flags made monotone in eps; both see the same images and every (attack, eps)."""
    import copy

    from benchmark.data import seeded_indices
    from benchmark.tools.perf import new_evasion, old_evasion
    from conftest import make_cfg

    torch.set_num_threads(1)
    cfg = make_cfg("unused", "threat=evasion", "threat.subset=80", "threat.attacks.1.max_iter=3")
    model = copy.deepcopy(trained_seed_cnn).eval()
    index = seeded_indices(len(digits.y_test), cfg.threat.subset, cfg.seed)
    old = old_evasion(model, digits.x_test[index], digits.y_test[index], cfg.threat, cfg.seed)
    new = new_evasion(model, digits, cfg.threat, cfg.seed)
    eps_values = sorted(float(e) for e in cfg.threat.eps)
    assert set(old) == {(a.name, e) for a in cfg.threat.attacks for e in eps_values}
    assert new["robust/subset_size"] == 80 and all(len(ok) == 80 for ok in old.values())
    standing = np.ones(80, dtype=bool)
    for eps in eps_values:
        standing &= old[("fgsm", eps)]
        assert abs(new[f"robust/fgsm/eps_{eps:g}"] - standing.mean()) <= 2 / 80  # a near-tie may round apart
    assert standing.mean() < new["robust/subset_clean_acc"]  # FGSM bites, so the agreement is not trivial


def test_an_unknown_part_exits_2_with_one_line_before_any_measurement(tmp_path, capsys):
    import pytest

    from benchmark.tools.perf import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--parts", "evasion,nope", "--out", str(tmp_path / "perf.json")])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1 and "--parts='evasion,nope'" in err[0]
    assert not (tmp_path / "perf.json").exists()
