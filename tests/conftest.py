"""Test configuration: single-threaded, offline, deterministic."""

import os
import tempfile

os.environ["OMP_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"
os.environ["WANDB_MODE"] = "offline"
os.environ.setdefault("LSC_CACHE", tempfile.mkdtemp(prefix="lsc-cache-"))  # the prototype cache, never ~/.cache

import torch  # noqa: E402

torch.set_num_threads(1)
