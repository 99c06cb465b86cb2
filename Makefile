# PruneSec Bench. `make benchmark` and `make test` set themselves up (.venv from requirements.lock).
PYTHON_SYS ?= python3.11
VENV       := .venv
PY         := $(VENV)/bin/python
STAMP      := $(VENV)/.installed
RESULTS    ?= results
TRACKING_URI ?= sqlite:///$(abspath $(RESULTS))/mlflow.db
EXPERIMENT ?= default
UI_PORT    ?= 5000

.PHONY: venv venv-ray benchmark grid figures docs verify paper reproduce test test-slow test-scale ui clean perf aa-gap server gpu-check

venv: $(STAMP)

# The optional Ray launcher in its own venv (it needs cloudpickle<3; docs/scaling.md), the project installed editable.
VENV_RAY   := .venv-ray
venv-ray: $(VENV_RAY)/.installed
$(VENV_RAY)/.installed: requirements-ray.lock pyproject.toml
	$(PYTHON_SYS) -m venv $(VENV_RAY)
	$(VENV_RAY)/bin/pip install --quiet --disable-pip-version-check -r requirements-ray.lock
	$(VENV_RAY)/bin/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

$(STAMP): requirements.lock pyproject.toml
	@command -v $(PYTHON_SYS) >/dev/null || { echo "need $(PYTHON_SYS) on PATH (or: make PYTHON_SYS=/path/to/python3.11)"; exit 1; }
	$(PYTHON_SYS) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements.lock
	touch $(STAMP)

# The default grid (conf/experiment/default.yaml; with its poisoning slice) or EXPERIMENT's (apb: with its
# structured half), then the figures from the tracking store.
# LAUNCHER: how the cells run (Hydra's launcher, conf/hydra/launcher/; docs/scaling.md): joblib = JOBS worker
# processes on this machine, one torch thread each (parallel.yaml; the default on a machine with several cores,
# where it measured fastest), basic = one cell after another in this process (the default on one core),
# slurm = a Slurm job per cell (slurm.yaml), ray = Ray tasks from .venv-ray (ray_cluster.yaml). It goes on the
# command line: Hydra ignores a launcher set inside a swept experiment file. BENCHMARK_ARGS: more overrides for
# every grid, e.g. "tracking_uri=http://host:5001 results_dir=/shared/prunesec".
NPROC          := $(shell nproc 2>/dev/null || echo 1)
LAUNCHER       ?= $(if $(filter 1,$(NPROC)),basic,joblib)
JOBS           ?= $(NPROC)
BENCHMARK_ARGS ?=
LAUNCHER_basic  :=
LAUNCHER_joblib := hydra/launcher=parallel hydra.launcher.n_jobs=$(JOBS) torch_threads=1
LAUNCHER_slurm  := hydra/launcher=slurm
LAUNCHER_ray    := hydra/launcher=ray_cluster
# recursive (=): a bad LAUNCHER stops `make benchmark` only (exit 2, one line), not every target
LAUNCHER_OVERRIDE = $(if $(filter basic joblib slurm ray,$(LAUNCHER)),$(LAUNCHER_$(LAUNCHER)),$(error LAUNCHER=$(LAUNCHER) is not a launcher; allowed: joblib, slurm, ray, basic (one cell after another)))
BENCHMARK_PY   := $(if $(filter ray,$(LAUNCHER)),$(VENV_RAY)/bin/python,$(PY))
GRID_RUN        = $(BENCHMARK_PY) -m benchmark.run -m $(LAUNCHER_OVERRIDE) $(BENCHMARK_ARGS)
benchmark: $(STAMP) $(if $(filter ray,$(LAUNCHER)),$(VENV_RAY)/.installed)
	$(GRID_RUN) experiment=$(EXPERIMENT)
	$(if $(filter default,$(EXPERIMENT)),$(GRID_RUN) experiment=default_poisoning)
	$(if $(filter apb,$(EXPERIMENT)),$(GRID_RUN) experiment=apb_structured)
	$(MAKE) figures

figures: $(STAMP)
	$(PY) -m benchmark.figures --tracking-uri "$(TRACKING_URI)" --experiment $(EXPERIMENT) --out $(RESULTS)

# The measured numbers in README.md and docs/*.md (generated blocks), rewritten from $(RESULTS)/tables/summary.csv
# (make figures) and $(RESULTS)/perf.json (make perf); exit 2 naming a missing file.
docs: $(STAMP)
	$(PY) -m benchmark.tools.docs_numbers --results $(RESULTS)

# Cross-check logged cells from the store alone (docs/verify.md): recount sparsity from the logged weights, re-run
# L-inf PGD without ART; exit 1 beyond tolerance. VERIFY_ARGS: e.g. --all, --sample 20, --seed 1.
VERIFY_ARGS ?=
verify: $(STAMP)
	$(PY) -m benchmark.tools.verify --tracking-uri "$(TRACKING_URI)" --experiment $(EXPERIMENT) $(VERIFY_ARGS)

# The paper's figures and LaTeX tables, read from the store only, into $(RESULTS)/paper/{figures,tables}.
# Needs the paper grid in the store first: `make benchmark EXPERIMENT=paper` (long; see conf/experiment/paper.yaml).
paper: $(STAMP)
	$(PY) -m benchmark.figures --tracking-uri "$(TRACKING_URI)" --experiment paper --out $(RESULTS)/paper

# A reproduction preset (benchmark/reproduce_presets/TARGET.yaml, docs/reproduce.md): its cells run (or are read FINISHED from the
# store) and compared with the published numbers; the table goes to $(RESULTS)/reproduce/TARGET.{json,md}. Exit 1
# when a row is outside its tolerance, 2 (one line) without a TARGET or the data or GPU it needs.
# REPRODUCE_ARGS: overrides for its cells and grids, e.g. "dataset.data_root=/data hydra/launcher=parallel".
TARGET         ?=
REPRODUCE_ARGS ?=
reproduce: $(STAMP)
	$(PY) -m benchmark.tools.reproduce "$(TARGET)" --results $(RESULTS) --tracking-uri "$(TRACKING_URI)" $(REPRODUCE_ARGS)

# TEST_JOBS pytest-xdist workers (one torch thread each; tests/conftest.py); the tests that share the tiny grid's
# store run on one of them (--dist loadgroup), so that grid is built once.
TEST_JOBS ?= $(NPROC)
test: $(STAMP)
	$(PY) -m pytest $(if $(filter 1,$(TEST_JOBS)),,-n $(TEST_JOBS) --dist loadgroup)

# The conda environment: pyproject.toml's direct pins (and its locked extras), written by a tool, never by hand.
environment.yml: pyproject.toml
	$(PY) -m benchmark.tools.environment_yml

test-slow: $(STAMP)
	$(PY) -m pytest -m slow

# The UI of one user on loopback; it prints the link to EXPERIMENT's training runs (MLflow 3 opens on GenAI pages).
ui: $(STAMP)
	@$(PY) -m benchmark.tracking ui-url "$(TRACKING_URI)" $(EXPERIMENT) $(UI_PORT)
	$(VENV)/bin/mlflow ui --backend-store-uri "$(TRACKING_URI)" --host 127.0.0.1 --port $(UI_PORT) --workers 1

# Performance budget -> $(RESULTS)/perf.json: ART wrapper vs plain torch PGD, the grid's evasion vs the old way, one
# cell's time by stage, bookkeeping share, re-run and joblib speed-ups, the default grid's wall time as
# `make benchmark` launches it (the longest part). PERF_ARGS: e.g. --parts evasion,stages (benchmark/tools/perf.py).
PERF_ARGS ?=
perf: $(STAMP)
	$(PY) -m benchmark.tools.perf --out $(RESULTS)/perf.json $(PERF_ARGS)

# The grid's headline robust accuracy against the reference standard AutoAttack on the same images, for a seeded
# sample of EXPERIMENT's finished cells in the store -> key aa_gap of $(RESULTS)/perf.json; exit 1 when a gap exceeds
# 2 points. AA_GAP_ARGS: e.g. --cells 8 --images 200, or a CPU-sized --max-iter 20 --square-queries 500.
AA_GAP_ARGS ?=
aa-gap: $(STAMP)
	$(PY) -m benchmark.tools.aa_gap --tracking-uri "$(TRACKING_URI)" --experiment $(EXPERIMENT) \
		--out $(RESULTS)/perf.json $(AA_GAP_ARGS)

# The grid (EXPERIMENT) with device=cuda and device=cpu, each into its own store under $(RESULTS)/gpu_check: every
# cell compared (accuracies within the binomial 95% interval, sparsity identical), time per stage on each device;
# then a ResNet-18 cell on synthetic CIFAR-format data on each device. Every timing in
# $(RESULTS)/gpu_check/gpu_check.json; ends within GPU_CHECK_TIMEOUT seconds. Refuses (exit 2) without a CUDA GPU.
GPU_CHECK_TIMEOUT ?= 500
gpu-check: $(STAMP)
	$(PY) -m benchmark.tools.gpu_check --experiment $(EXPERIMENT) --out $(RESULTS)/gpu_check --timeout $(GPU_CHECK_TIMEOUT)

# An MLflow tracking server for many workers (grids: tracking_uri=http://127.0.0.1:$(SERVER_PORT)). On loopback it
# is open to this machine's users; beyond it (SERVER_HOST=0.0.0.0, a cluster) it is MLflow's basic-auth app: every
# request needs a user (401 without), the admin's password comes from MLFLOW_AUTH_ADMIN_PASSWORD on the first start
# (the server refuses to start without it), users and settings live in $(RESULTS)/mlflow-auth (docs/scaling.md).
# BACKEND_URI: the local SQLite store by default, or PostgreSQL (driver in the lock):
#   MLFLOW_AUTH_ADMIN_PASSWORD=... make server BACKEND_URI=postgresql://user:pw@127.0.0.1/mlflow SERVER_HOST=0.0.0.0
# Artifacts go through the server into $(RESULTS)/mlartifacts, so workers need no shared file system for them.
SERVER_HOST    ?= 127.0.0.1
SERVER_PORT    ?= 5001
SERVER_WORKERS ?= 2
BACKEND_URI    ?= $(TRACKING_URI)
server: $(STAMP)
	$(PY) -m benchmark.tools.server --backend-store-uri "$(BACKEND_URI)" \
		--artifacts-destination "$(abspath $(RESULTS))/mlartifacts" --auth-dir "$(abspath $(RESULTS))/mlflow-auth" \
		--host $(SERVER_HOST) --port $(SERVER_PORT) --workers $(SERVER_WORKERS)

# Items 1-3 of docs/scaling.md as root: a Slurm cluster, a Ray head and a PostgreSQL-backed MLflow server, each
# installed if missing, started, exercised by tests/scale and stopped (also on failure).
test-scale: $(STAMP)
	bash tests/scale/run.sh

clean:
	rm -rf $(RESULTS)/mlflow.db $(RESULTS)/mlartifacts $(RESULTS)/cache $(RESULTS)/figures $(RESULTS)/tables $(RESULTS)/paper $(RESULTS)/hydra
