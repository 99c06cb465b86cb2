"""Bring your own model, checkpoint and data: torchvision architectures, checkpoints, npz and image-folder data,
the CIFAR-10 presets on CIFAR-10's own on-disk format, and the GPU check's comparison (synthetic data only)."""
from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn
from omegaconf import OmegaConf, open_dict

from benchmark import hashing
from benchmark.cell import prepare, run_cell
from benchmark.data import load_dataset
from benchmark.inputs import DataError, dataset_shape, split_sizes
from benchmark.pruning import PRUNERS, prune
from benchmark.pruning.common import PruneContext, finalize, load_state_into
from benchmark.validate import ConfigError
from models import build_model
from conftest import compose_cfg, write_images, write_npz

CPU = torch.device("cpu")
# A cell in seconds: one epoch, tiny subsets, no corruption / attribution passes, one latency repeat.
QUICK = ("train.epochs=1", "finetune.epochs=1", "train.batch_size=32", "finetune.batch_size=32",
         "eval.train_subset=16", "threat.subset=8", "dataset.eps=[0.03]", "eval=fast", "eval.latency.batch_size=8",
         "device=cpu")


@pytest.fixture(scope="module")
def npz32(tmp_path_factory) -> Path:
    return write_npz(tmp_path_factory.mktemp("npz") / "tiny32.npz")


# ---------------------------------------------------------------------------------------------------- models
def test_torchvision_resnet_gets_the_cifar_stem_and_the_datasets_shape():
    model = build_model("torchvision", 1, 32, 7, arch="resnet18")
    assert model.conv1.in_channels == 1 and model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, nn.Identity) and model.fc.out_features == 7
    assert model(torch.zeros(2, 1, 32, 32)).shape == (2, 7)
    imagenet = build_model("torchvision", 3, 224, 5, arch="resnet18", cifar_stem="auto")  # large images: no stem
    assert imagenet.conv1.kernel_size == (7, 7) and isinstance(imagenet.maxpool, nn.MaxPool2d)


def test_torchvision_mobilenet_stem_keeps_32x32_resolution():
    with_stem = build_model("torchvision", 3, 32, 10, arch="mobilenet_v2")
    without = build_model("torchvision", 3, 32, 10, arch="mobilenet_v2", cifar_stem=False)
    assert with_stem.features[0][0].stride == (1, 1) and without.features[0][0].stride == (2, 2)


@pytest.mark.parametrize("overrides, message", [
    (("model.arch=resnet5000",), "not a torchvision classification model"),
    (("model.arch=squeezenet1_1",), "Linear layer"),  # its logits come from a conv
    (("model.arch=mobilenet_v3_small", "pruning=fine_pruning"), "hidden Linear"),
    (("model.arch=resnet18", "model.cifar_stem=maybe"), "cifar_stem"),
])
def test_unfit_architectures_and_methods_are_rejected_before_compute(tmp_path, npz32, overrides, message):
    cfg = compose_cfg(tmp_path, "dataset=npz", f"dataset.path={npz32}", "model=torchvision", *overrides)
    with pytest.raises(ConfigError, match=message):
        prepare(cfg)


def test_structured_pruning_of_attention_models_is_rejected(tmp_path, npz32):
    cfg = compose_cfg(tmp_path, "dataset=npz", f"dataset.path={npz32}", "model=torchvision", "model.arch=vit_b_32",
                      "pruning=l1_filter")
    with pytest.raises(ConfigError, match="attention"):
        prepare(cfg)


def test_structurally_pruned_depthwise_model_reloads_from_its_state(npz32):
    """torch-pruning shrinks a depthwise conv's groups with its channels: a fresh model must get them back."""
    torch.manual_seed(0)
    model = build_model("torchvision", 3, 32, 10, arch="mobilenet_v2")
    x = torch.rand(4, 3, 32, 32)
    cfg = OmegaConf.create({"method": "l1_filter", "sparsity": 0.3, "prune_head": True})
    pruned = finalize(prune(model, cfg, PruneContext(example_inputs=x[:1], calibration=(x, torch.zeros(4).long()),
                                                     seed=0)).model).eval()
    restored = load_state_into(build_model("torchvision", 3, 32, 10, arch="mobilenet_v2"), pruned.state_dict()).eval()
    assert torch.equal(restored(x), pruned(x))


# -------------------------------------------------------------------------------- every method on real archs
# Target sparsity per method (fine_pruning prunes only the last conv layer: its reachable sparsity is capped).
TARGETS = {"fine_pruning": 0.1}
RATE_BASED = {"threshold", "none"}  # the achieved sparsity follows a rule, not the target
# In `make test`: one unstructured, one structured and the BatchNorm method on ResNet-18, one structured method
# on MobileNetV2's depthwise convs (fine_pruning on ResNet-18 runs in the CIFAR-10 backdoor preset's test).
FAST = [("resnet18", "magnitude_global"), ("resnet18", "l1_filter"), ("resnet18", "slimming"),
        ("mobilenet_v2", "l1_filter")]
MATRIX = [pytest.param(arch, method, marks=() if (arch, method) in FAST else pytest.mark.slow)
          for arch in ("resnet18", "mobilenet_v2") for method in sorted(PRUNERS)]


@pytest.fixture(scope="module")
def matrix_results(tmp_path_factory) -> Path:
    """One store and model cache for the matrix: each architecture's dense model is trained once."""
    return tmp_path_factory.mktemp("matrix")


@pytest.mark.parametrize("arch, method", MATRIX)
def test_every_method_prunes_torchvision_models_to_target_and_runs_a_cell(matrix_results, npz32, arch, method):
    target = TARGETS.get(method, 0.5)
    cfg = compose_cfg(matrix_results, "dataset=npz", f"dataset.path={npz32}", "model=torchvision", f"model.arch={arch}",
                      f"pruning={method}", f"pruning.sparsity={target}", "threat=pgd", "threat.attacks.0.max_iter=2",
                      *(("train.slimming_l1=1e-3",) if method == "slimming" else ()), *QUICK)
    result = run_cell(cfg)
    assert result.status == "finished"
    achieved = result.metrics["sparsity/achieved"]
    if method in RATE_BASED:
        assert (achieved == 0) == (method == "none"), achieved
    else:  # whole channels (structured) or exact counts (unstructured)
        assert abs(achieved - target) <= 0.03, achieved
    assert result.run_name.startswith(f"{arch}|{method}|")


# ------------------------------------------------------------------------------------------------ checkpoints
def _trained_state(seed=1, arch="resnet18") -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return build_model("torchvision", 3, 32, 10, arch=arch).state_dict()


def test_a_pruned_checkpoint_is_evaluated_as_is_and_its_sparsity_measured(tmp_path, npz32):
    from safetensors.torch import save_file

    state = _trained_state(arch="mobilenet_v2")  # a quarter of ResNet-18's size: a faster cell
    zeroed = total = 0
    for name, tensor in state.items():  # zero the first 40% of every conv / linear weight
        if name.endswith("weight") and tensor.dim() in (2, 4):
            k = int(0.4 * tensor.numel())
            tensor.view(-1)[:k] = 0
            zeroed, total = zeroed + k, total + tensor.numel()
    path = tmp_path / "pruned.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, path)
    cfg = compose_cfg(tmp_path, "dataset=npz", f"dataset.path={npz32}", "model=torchvision", "model.arch=mobilenet_v2",
                      f"model.checkpoint={path}", "pruning=none", *QUICK, "finetune.epochs=0", "threat=pgd",
                      "threat.attacks.0.max_iter=1")
    result = run_cell(cfg)
    zeros_in_file = sum(int((v == 0).sum()) for k, v in state.items() if k.endswith("weight") and v.dim() in (2, 4))
    assert result.metrics["sparsity/achieved"] == pytest.approx(zeros_in_file / total, abs=1e-9)
    assert result.metrics["sparsity/achieved"] >= zeroed / total
    assert result.metrics["sparsity/target"] == 0.0


def test_checkpoint_content_not_path_enters_the_dense_key(tmp_path, npz32):
    state = _trained_state()
    torch.save(state, tmp_path / "a.pt")
    shutil.copy(tmp_path / "a.pt", tmp_path / "copy.pt")  # torch.save writes the file's name into the archive
    torch.save(_trained_state(seed=2), tmp_path / "other.pt")

    def keys(name):
        cfg = compose_cfg(tmp_path, "dataset=npz", f"dataset.path={npz32}", "model=torchvision",
                          f"model.checkpoint={tmp_path / name}")
        return hashing.dense_key(cfg, None), hashing.cell_hash(cfg)

    assert keys("a.pt") == keys("copy.pt")
    assert keys("a.pt")[0] != keys("other.pt")[0] and keys("a.pt")[1] != keys("other.pt")[1]
    trained = compose_cfg(tmp_path, "dataset=npz", f"dataset.path={npz32}", "model=torchvision")
    assert hashing.dense_key(trained, None) != keys("a.pt")[0]


@pytest.mark.parametrize("threat", ["badnets", "label_flip"])
def test_a_checkpoint_with_a_data_threat_is_rejected_before_compute(tmp_path, threat):
    """The checkpoint replaces dense training, so the poisoned training set would never reach the model."""
    torch.manual_seed(0)
    torch.save(build_model("seed_cnn", 1, 16, 10).state_dict(), tmp_path / "cnn.pt")
    cfg = compose_cfg(tmp_path, "debug=tiny", "model=seed_cnn", f"model.checkpoint={tmp_path / 'cnn.pt'}",
                      f"threat={threat}")
    with pytest.raises(ConfigError, match=r"^model.checkpoint=.*threat.kind=.*allowed: model.checkpoint=null"):
        prepare(cfg)


def test_checkpoint_of_another_architecture_fails_before_compute_listing_keys(tmp_path, npz32):
    torch.manual_seed(0)
    torch.save(build_model("torchvision", 3, 32, 10, arch="resnet34").state_dict(), tmp_path / "r34.pt")
    cfg = compose_cfg(tmp_path, "dataset=npz", f"dataset.path={npz32}", "model=torchvision", "model.arch=resnet18",
                      f"model.checkpoint={tmp_path / 'r34.pt'}")
    with pytest.raises(ConfigError, match=r"model.checkpoint=.*unexpected keys \(\d+\): layer1.2"):
        prepare(cfg)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    cfg.model.checkpoint = str(tmp_path / "junk.pt")
    with pytest.raises(ConfigError, match="cannot be read"):
        prepare(cfg)


# ------------------------------------------------------------------------------------------------- your data
def test_npz_shape_comes_from_the_file_and_matches_the_loaded_data(tmp_path):
    path = write_npz(tmp_path / "g.npz", n_train=30, n_test=12, classes=3, side=12, channels=1)
    cfg = compose_cfg(tmp_path, "dataset=npz", f"dataset.path={path}").dataset
    data = load_dataset(cfg, seed=0)
    shape = dataset_shape(cfg)
    assert (shape.in_channels, shape.image_size, shape.num_classes) == (1, 12, 3)
    assert (data.in_channels, data.image_size, data.num_classes) == (1, 12, 3)
    assert split_sizes(cfg) == (len(data.y_train), len(data.y_test)) == (30, 12)
    raw = np.load(path)
    assert torch.equal(data.x_train[0, 0], torch.from_numpy(raw["x_train"][0, :, :, 0] / np.float32(255)))


def test_npz_x_y_is_split_here_seeded_and_stratified(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.random((50, 3, 8, 8), dtype=np.float32), np.repeat(np.arange(5), 10)
    np.savez(tmp_path / "xy.npz", x=x, y=y)
    cfg = compose_cfg(tmp_path, "dataset=npz", f"dataset.path={tmp_path / 'xy.npz'}", "dataset.test_size=0.2").dataset
    data = load_dataset(cfg, seed=0)
    assert split_sizes(cfg) == (40, 10)
    assert torch.equal(torch.bincount(data.y_test), torch.full((5,), 2))  # stratified: 2 test images per class
    assert data.x_train.shape[1:] == (3, 8, 8) and data.num_classes == 5


@pytest.mark.parametrize("replace, message", [
    ({"x_train": np.zeros((64, 3072), np.uint8)}, r"x_train has shape \(64, 3072\)"),
    ({"x_train": np.zeros((64, 32, 32, 3), np.int32)}, "dtype int32"),
    ({"x_train": np.zeros((64, 32, 16, 3), np.uint8)}, "32x16 images"),
    ({"y_train": np.arange(64) * 0.5}, "y_train has dtype float64"),
    ({"y_train": np.arange(64) % 10 - 1}, "label -1"),
    ({"y_train": np.arange(63) % 10}, r"y_train has shape \(63,\)"),
    ({"y_train": np.where(np.arange(64) % 10 == 4, 5, np.arange(64) % 10)}, r"class\(es\) \[4\]"),  # class 4 empty
    ({"x_test": None, "y_test": None}, "holds arrays"),
])
def test_npz_that_does_not_fit_fails_validation_naming_the_problem(tmp_path, replace, message):
    path = write_npz(tmp_path / "bad.npz", **replace)
    cfg = compose_cfg(tmp_path, "dataset=npz", f"dataset.path={path}", "model=torchvision")
    with pytest.raises(DataError, match=message):
        prepare(cfg)


def test_npz_float_images_outside_unit_range_fail_the_check_without_torch(tmp_path):
    path = write_npz(tmp_path / "f.npz", x_train=np.full((64, 3, 32, 32), 2.0, np.float32))
    with pytest.raises(DataError, match=r"x_train has float pixel values in \[2, 2\]"):
        dataset_shape(compose_cfg(tmp_path, "dataset=npz", f"dataset.path={path}").dataset)


def test_missing_dataset_path_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="dataset.path is required"):
        prepare(compose_cfg(tmp_path, "dataset=npz"))


def test_image_folder_unsplit_and_presplit(tmp_path):
    write_images(tmp_path / "flat", {"cat": 6, "dog": 4, "emu": 5}, mode="L")
    cfg = compose_cfg(tmp_path, "dataset=image_folder", f"dataset.root={tmp_path / 'flat'}",
                      "dataset.test_size=0.4").dataset
    data = load_dataset(cfg, seed=0)
    assert (data.in_channels, data.image_size, data.num_classes) == (1, 12, 3)
    assert split_sizes(cfg) == (len(data.y_train), len(data.y_test)) == (9, 6)
    write_images(tmp_path / "split" / "train", {"a": 3, "b": 3})
    write_images(tmp_path / "split" / "test", {"a": 1, "b": 2})
    cfg = compose_cfg(tmp_path, "dataset=image_folder", f"dataset.root={tmp_path / 'split'}").dataset
    data = load_dataset(cfg, seed=0)
    assert (data.in_channels, data.num_classes) == (3, 2) and data.y_test.tolist() == [0, 1, 1]
    assert split_sizes(cfg) == (6, 3)


def test_image_folder_problems_are_named(tmp_path):
    write_images(tmp_path / "empty", {"a": 3})
    (tmp_path / "empty" / "b").mkdir()
    with pytest.raises(DataError, match="no valid file"):
        dataset_shape(compose_cfg(tmp_path, "dataset=image_folder", f"dataset.root={tmp_path / 'empty'}").dataset)
    write_images(tmp_path / "sizes", {"a": 3, "b": 3})
    write_images(tmp_path / "sizes", {"b": 1}, size=(10, 10))  # b/0.png is now 10x10
    cfg = compose_cfg(tmp_path, "dataset=image_folder", f"dataset.root={tmp_path / 'sizes'}").dataset
    with pytest.raises(DataError, match="one size for all images"):
        load_dataset(cfg, seed=0)
    cfg.resize = 8
    assert load_dataset(cfg, seed=0).image_size == 8


def test_data_identity_is_the_content_not_the_path(tmp_path, npz32):
    shutil.copy(npz32, tmp_path / "moved.npz")
    same = [compose_cfg(tmp_path, "dataset=npz", f"dataset.path={p}") for p in (npz32, tmp_path / "moved.npz")]
    assert hashing.cell_hash(same[0]) == hashing.cell_hash(same[1])
    other = compose_cfg(tmp_path, "dataset=npz", f"dataset.path={write_npz(tmp_path / 'o.npz', seed=1)}")
    assert hashing.dense_key(other, None) != hashing.dense_key(same[0], None)


# ------------------------------------------------------------------------------------- CIFAR-10 presets
def _write_cifar10(root: Path, per_class_train=1, per_class_test=1) -> None:
    """A tiny data set in CIFAR-10's own on-disk format: pickled batches of uint8 rows (N x 3072) and labels."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)

    def batch(n_per_class):
        labels = [c for c in range(10) for _ in range(n_per_class)]
        return {"data": rng.integers(0, 256, (len(labels), 3072), dtype=np.uint8), "labels": labels}

    for name in [f"data_batch_{i}" for i in range(1, 6)]:
        with open(folder / name, "wb") as f:
            pickle.dump(batch(per_class_train), f)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump(batch(per_class_test), f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{c}" for c in range(10)]}, f)


def _debug_attacks(cfg) -> None:
    """The preset's attacks at one or two iterations on four images: the code path, not the strength."""
    for attack in cfg.threat.get("attacks") or []:
        with open_dict(attack):
            attack.subset = 4
        for key, value in (("max_iter", 2), ("random_restarts", 1), ("binary_search_steps", 1),
                           ("square_queries", 4), ("nb_grads", 2)):
            if key in attack:
                attack[key] = value


@pytest.mark.parametrize("preset, extra", [("cifar10_resnet18", ("pruning=l1_filter", "pruning.sparsity=0.5")),
                                           ("cifar10_backdoor", ("pruning=fine_pruning", "pruning.sparsity=0.1",
                                                                 "threat.clean_reference=false"))])
def test_cifar10_presets_run_on_torchvisions_cifar10_loader_offline(tmp_path, monkeypatch, preset, extra):
    import torchvision

    _write_cifar10(tmp_path / "data")
    # torchvision checks the real files' md5 sums; everything else (unpickling, layout, labels) is its own code
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *args, **kwargs: True)
    cfg = compose_cfg(tmp_path, f"experiment={preset}", f"dataset.data_root={tmp_path / 'data'}", *extra,
                      *[o for o in QUICK if not o.startswith("dataset.eps")], "dataset.eps=[0.03137]")
    _debug_attacks(cfg)
    assert cfg.model.arch == "resnet18" and cfg.dataset.name == "cifar10"
    result = run_cell(cfg)
    assert result.status == "finished"
    data = load_dataset(cfg.dataset, cfg.seed)
    assert (len(data.y_train), len(data.y_test), data.num_classes, data.image_size) == (50, 10, 10, 32)
    if preset == "cifar10_backdoor":
        assert "backdoor/asr" in result.metrics
    else:
        assert {"robust/pgd_linf/eps_0.03137", "robust/pgd_l2/eps_0.5"} <= set(result.metrics)


# --------------------------------------------------------------------------------------------- GPU check
def test_gpu_check_refuses_without_cuda(capsys):
    from benchmark.tools import gpu_check

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(SystemExit) as exit_info:
        gpu_check.main([])
    assert exit_info.value.code == 2 and "needs a CUDA GPU" in capsys.readouterr().err


def test_gpu_check_rejects_a_bad_timeout_before_looking_for_a_gpu(capsys):
    from benchmark.tools import gpu_check

    for bad, named in ((["--timeout", "0"], "--timeout=0"), (["--cuda-jobs", "0"], "--cuda-jobs=0")):
        with pytest.raises(SystemExit) as exit_info:
            gpu_check.main(bad)
        err = capsys.readouterr().err.strip().splitlines()
        assert exit_info.value.code == 2 and len(err) == 1 and named in err[0]


def test_gpu_check_stops_a_step_and_its_children_at_the_deadline(tmp_path):
    """A step that outlives the check's time is stopped with its whole process group (a grid's workers too), and
    a step with no time left does not start."""
    import os
    import sys
    import time

    from benchmark.tools.gpu_check import Deadline, run_step

    child_pid = tmp_path / "child.pid"
    script = ("import subprocess, sys, time; "
              "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
              f"open({str(child_pid)!r}, 'w').write(str(child.pid)); time.sleep(60)")
    started = time.monotonic()
    wall, status = run_step([sys.executable, "-c", script], Deadline(4.0), margin_s=1.0)
    assert status == "timed out" and wall < 10 and time.monotonic() - started < 10
    pid = int(child_pid.read_text())
    for _ in range(50):  # the orphaned grandchild is gone once its parent's group is killed
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"process {pid}, started by the step, still runs")
    assert run_step([sys.executable, "-c", "pass"], Deadline(0.5), margin_s=1.0) == (0.0, "not run: no time left")
    assert run_step([sys.executable, "-c", "raise SystemExit(3)"], Deadline(60.0))[1] == "failed (exit 3)"


def test_gpu_check_resnet18_cell_is_a_valid_cell_on_cifar_format_data(tmp_path):
    """The check's ResNet-18 cell: its CIFAR-format npz and overrides compose into a valid ResNet-18 (CIFAR stem)
    cell on 32 x 32 RGB images of 10 classes."""
    from benchmark.tools.gpu_check import resnet_command, write_cifar_format

    data = write_cifar_format(tmp_path / "c.npz", n_train=40, n_test=20)
    with np.load(data) as archive:
        assert archive["x_train"].shape == (40, 32, 32, 3) and archive["x_train"].dtype == np.uint8
        assert sorted(set(archive["y_test"].tolist())) == list(range(10))
    command = resnet_command("cpu", tmp_path / "results", data)
    overrides = command[command.index("benchmark.run") + 2:]  # after `-m benchmark.run -m`
    cfg = compose_cfg(tmp_path / "results", *overrides)
    prepare(cfg)  # every check a cell makes before compute
    assert (cfg.model.arch, cfg.model.cifar_stem, cfg.dataset.name) == ("resnet18", True, "npz")
    shape = dataset_shape(cfg.dataset)
    assert (shape.in_channels, shape.image_size, shape.num_classes) == (3, 32, 10)


def test_gpu_check_compares_cells_within_the_binomial_interval():
    from benchmark.tools.gpu_check import compare, within_interval

    assert within_interval(0.90, 0.88, 1000) and not within_interval(0.90, 0.85, 1000)
    assert within_interval(0.0, 0.0, 500) and not within_interval(0.0, 0.02, 500)

    def store(clean, robust, sparsity, method="l1_filter"):
        return pd.DataFrame([{"params.pruning.method": method, "tags.mlflow.runName": "cell",
                              "metrics.clean/acc": clean, "metrics.robust/pgd_linf/eps_0.1": robust,
                              "metrics.robust/worst/eps_0.1": robust, "metrics.robust/subset_size": 100.0,
                              "metrics.sparsity/achieved": sparsity}], index=["c1"])

    cpu = store(0.9, 0.5, 0.5)
    assert compare(cpu, store(0.905, 0.52, 0.5), n_test=1000)[1]
    table, agree = compare(cpu, store(0.905, 0.70, 0.5), n_test=1000)  # robust 0.5 vs 0.7 over 100 images
    assert not agree and "pgd_linf" in table.loc[0, "accuracies"]
    assert not compare(cpu, store(0.9, 0.5, 0.51), n_test=1000)[1]
    assert compare(store(0.9, 0.5, 0.5, "threshold"), store(0.9, 0.5, 0.51, "threshold"), n_test=1000)[1]


def test_gpu_check_reads_and_matches_every_cell_of_a_real_store(store):
    """The tiny grid's store against itself: every cell found, matched by its params, and in agreement."""
    import tiny_store
    from benchmark.tools.gpu_check import compare, load_cells, stage_times

    cells = load_cells(store.results, store.experiment)
    table, agree = compare(cells, cells, n_test=360)
    assert agree and len(table) == len(cells) == tiny_store.N_CELLS
    assert set(table["sparsity"]) == {"identical"}
    times = stage_times(cells, cells)
    assert "time/cell_s" in set(times["stage"]) and (times["cpu/gpu"] == 1).all()
