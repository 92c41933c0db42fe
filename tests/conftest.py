"""Test configuration: single-threaded, offline, deterministic."""

import os

os.environ["OMP_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"
os.environ["WANDB_MODE"] = "offline"

import torch  # noqa: E402

torch.set_num_threads(1)
