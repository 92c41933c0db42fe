# lsc -- `make help` lists the targets.
PYTHON ?= python
PYTEST = OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 WANDB_MODE=offline $(PYTHON) -m pytest
# pytest-xdist workers for `make test` (one thread each): `auto` = one per CPU core; `make test WORKERS=0` runs serially
WORKERS ?= auto

EXPERIMENTS = nmin_table predict_speed memory_vs_classes train_speed_vs_classes lsc_vs_ce systems_convergence many_classes open_world

.PHONY: help install data test test-fast test-all test-gpu test-realdata lint fmt bench bench-gpu bench-loss bench-assign \
	bench-data train clean \
	experiments experiments-smoke gpu-checks $(EXPERIMENTS)

help: ## this list
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-14s %s\n", $$1, $$2}'

EXTRAS = dev,slurm,faiss

install: ## pip install -e ".[dev,slurm,faiss]" (every extra the tests exercise) + Fashion-MNIST from Debian
	$(PYTHON) -m pip install -e ".[$(EXTRAS)]"
	@$(MAKE) --no-print-directory data

data: ## Debian's dataset-fashion-mnist (IDX files in /usr/share/datasets/fashion-mnist), if apt and root
	@if [ -d /usr/share/datasets/fashion-mnist ]; then echo "fashion-mnist: present"; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  (apt-get install -y dataset-fashion-mnist || (apt-get update && apt-get install -y dataset-fashion-mnist)) \
	  || echo "fashion-mnist: apt-get failed; the digits data still works (tests skip Fashion-MNIST runs)"; \
	else echo "fashion-mnist: skipped (needs apt-get and root); set data.root to your own IDX files"; fi

test: ## the CI suite: every CPU test (incl. subprocess sweeps, DDP, resume); no GPU, no long real-data runs
	$(PYTEST) -n $(WORKERS) -m "not gpu and not realdata" -q

test-fast: ## unit tests only (no subprocess runs)
	$(PYTEST) -m "not slow and not gpu and not realdata" -q

test-realdata: ## real-data training runs (digits >= 95%, Fashion-MNIST vs CE): minutes on a CPU
	$(PYTEST) -m realdata -q -s

test-gpu: ## CUDA tests (on a machine with a GPU)
	$(PYTHON) -m pytest -m gpu -q

test-all: ## everything that runs on this machine
	$(PYTEST) -q

lint: ## ruff lint + format check
	$(PYTHON) -m ruff check lsc tests experiments
	$(PYTHON) -m ruff format --check lsc tests experiments

fmt: ## ruff fix + format
	$(PYTHON) -m ruff check --fix lsc tests experiments
	$(PYTHON) -m ruff format lsc tests experiments

bench: ## label-prediction benchmark on CPU (table + JSON)
	$(PYTHON) -m lsc.bench.predict

bench-gpu: ## the same on CUDA
	$(PYTHON) -m lsc.bench.predict --device cuda --queries 4194304

bench-loss: ## full-system softmax vs cosine loss, step time at 1k-100M classes (table + JSON)
	$(PYTHON) -m lsc.bench.loss

bench-assign: ## data-aware class->vector assignment time and memory at 1e5-1e7 classes (table + JSON)
	$(PYTHON) -m lsc.bench.assign

bench-data: ## images/s of every data path (image folder PIL/torchvision, prepared JPEG/raw chunks), table + JSON
	$(PYTHON) -m lsc.bench.data

experiments: $(EXPERIMENTS) ## every paper table/figure on CPU (about 80 minutes), results in experiments/*/results

$(EXPERIMENTS):
	$(PYTHON) experiments/$@/run.py

experiments-smoke: ## every experiment at smoke size (seconds each)
	@for e in $(EXPERIMENTS); do $(PYTHON) experiments/$$e/run.py --smoke --out /tmp/lsc-smoke/$$e || exit 1; done

gpu-checks: ## CUDA tests + the GPU variants of the benchmarks/experiments (one command, ~6 min on an H100/H200)
	bash experiments/gpu_checks.sh gpu_results

train: ## default run: small encoder on digits, v21 at auto n_dim, CPU, < 1 minute
	$(PYTHON) -m lsc.train

clean: ## remove caches and run outputs
	rm -rf .pytest_cache .ruff_cache .hypothesis logs outputs multirun wandb lightning_logs
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
