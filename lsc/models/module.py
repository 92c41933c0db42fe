"""LightningModules: LSC (no classification layer) and the cross-entropy baseline with the same hooks.

LSC (arXiv 2510.04090, Algorithm 1): z = backbone(x) is pulled to its class center, gathered per batch from
`ClassCenters`; no parameter or buffer depends on n_classes. The CE baseline is the same backbone whose last
layer outputs n_classes logits. Both log `{stage}/loss` and `{stage}/acc` (the configured predictor; the
`PredictorAccuracy` callback adds every predictor), and return embeddings from eval steps for callbacks.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MaxMetric, MeanMetric, MetricCollection

from lsc.centers import METHODS, ClassCenters
from lsc.centers.assignment import Assignment
from lsc.models.partial_fc import PartialFCHead, _gather_padded, shard_range
from lsc.runconfig import ASSIGNMENT_KEY, CENTERS_KEY, CLASS_NAMES_KEY, CONFIG_KEY, INPUT_KEY

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def _metrics():
    # O(1) state at any n_classes (a per-class torchmetrics Accuracy would allocate n_classes^2 bins)
    return MetricCollection({"acc": MeanMetric(), "loss": MeanMetric()})


class _Base(L.LightningModule):
    def __init__(
        self,
        backbone: nn.Module,
        optimizer: Callable,
        scheduler: dict | None = None,
        compile: bool | str = False,
        channels_last: bool = False,
    ):
        super().__init__()
        self.channels_last = bool(channels_last)
        if self.channels_last:  # NHWC convolutions: ~1.5x faster on CPUs with oneDNN (and with bf16 on AMX)
            backbone = backbone.to(memory_format=torch.channels_last)
        # model.compile: the backbone and the loss (LSC's center lookup and log Z are custom ops: no graph break);
        # true, or a torch.compile mode (reduce-overhead: CUDA graphs where shapes are static)
        if compile not in (True, False) and compile not in COMPILE_MODES:
            raise ValueError(f"model.compile must be true, false or one of {', '.join(COMPILE_MODES)}, got {compile!r}")
        self.compile_mode = None if compile in (True, False) else str(compile)
        self.backbone = torch.compile(backbone, mode=self.compile_mode) if compile else backbone
        self.compile_loss = bool(compile)
        self.optimizer_factory, self.scheduler_cfg = optimizer, scheduler or {}
        self.train_metrics, self.val_metrics, self.test_metrics = (
            _metrics().clone(prefix=f"{s}/") for s in ("train", "val", "test")
        )
        self.val_acc_best = MaxMetric()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.backbone(x)

    def _loss(self, out, y):
        if not self.compile_loss:
            return self.compute_loss(out, y)
        fn = self.__dict__.get("_compiled_loss")
        if fn is None:  # built on first use, kept out of the module's attributes (state dict, pickling)
            fn = self.__dict__["_compiled_loss"] = torch.compile(self.compute_loss, mode=self.compile_mode)
        return fn(out, y)

    def class_rows(self) -> list[str]:
        """Parameters with one row per class (they grow with the label space); none for LSC."""
        return []

    def on_save_checkpoint(self, checkpoint):
        # the resolved run config (plain dict): `python -m lsc.eval ckpt_path=...` rebuilds the run from it
        checkpoint[CONFIG_KEY] = getattr(self, "run_config", None)
        spec = getattr(self, "input_spec", None)
        if spec is not None:  # lsc.predict rebuilds the eval transform from it, without the data
            checkpoint[INPUT_KEY] = spec
        names = getattr(self, "class_names", None)
        if names is not None:  # lsc.predict names its labels; lsc.eval on other data keeps this label space
            checkpoint[CLASS_NAMES_KEY] = list(names)

    def _step(self, batch, stage: str):
        if batch is None:  # every image of the batch was unreadable (data.on_bad_image=skip): nothing to learn
            return None, None, None
        x, y = batch
        out = self(x)  # (B, n_dim) embeddings, or (B, n_classes) logits for CE
        loss = self._loss(out, y)
        with torch.no_grad():
            pred = self.predict_labels(out.detach())
        metrics = getattr(self, f"{stage}_metrics")
        metrics[f"{stage}/acc"].update((pred == y).float())
        metrics[f"{stage}/loss"].update(loss.detach())
        self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=stage != "test", sync_dist=True)
        return loss, out, y

    def training_step(self, batch, batch_idx):
        loss, _, _ = self._step(batch, "train")
        if loss is None:
            return None  # Lightning skips the optimizer step
        self.log("train/loss_step", loss, on_step=True, on_epoch=False, prog_bar=False)
        return loss

    def validation_step(self, batch, batch_idx):
        _, out, y = self._step(batch, "val")
        return None if out is None else {"z": out.detach(), "y": y}

    def test_step(self, batch, batch_idx):
        _, out, y = self._step(batch, "test")
        return None if out is None else {"z": out.detach(), "y": y}

    def on_train_start(self):
        self.val_acc_best.reset()  # sanity-check batches do not count

    def on_train_epoch_start(self):
        self._epoch_t0 = time.perf_counter()

    def on_train_epoch_end(self):
        # wall time of the epoch (its training steps and validation): what the many-class study compares. An
        # epoch resumed mid-way has no start time and logs none.
        t0 = self.__dict__.pop("_epoch_t0", None)
        if t0 is not None:
            self.log("train/epoch_s", time.perf_counter() - t0, on_epoch=True, sync_dist=True)

    def on_validation_epoch_end(self):
        if self.trainer.sanity_checking:
            return
        self.val_acc_best.update(self.val_metrics["val/acc"].compute())
        self.log("val/acc_best", self.val_acc_best.compute(), sync_dist=True)

    def configure_optimizers(self):
        opt = self.optimizer_factory(params=self.parameters())
        cfg = self.scheduler_cfg
        warmup, cosine = int(cfg.get("warmup_epochs", 0) or 0), bool(cfg.get("cosine", False))
        if not warmup and not cosine:
            return opt
        total = max(1, int(self.trainer.estimated_stepping_batches))
        steps_per_epoch = max(1, total // max(1, self.trainer.max_epochs or 1))
        warm, floor = warmup * steps_per_epoch, float(cfg.get("min_lr_ratio", 0.0))

        def lr_lambda(step):  # linear warmup, then cosine to min_lr_ratio (or flat)
            if step < warm:
                return (step + 1) / warm
            if not cosine:
                return 1.0
            t = (step - warm) / max(1, total - warm)
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class LSCModule(_Base):
    """Backbone + cosine/distance loss to predefined class centers; predicts with `predictor`."""

    def __init__(
        self,
        backbone: nn.Module,
        centers: ClassCenters,
        loss: nn.Module,
        optimizer: Callable,
        scheduler: dict | None = None,
        predictor: str = "topk",
        compile: bool | str = False,
        channels_last: bool = False,
    ):
        if predictor not in METHODS:
            raise ValueError(f"model.predictor={predictor!r} is not a predictor; choose one of {', '.join(METHODS)}")
        super().__init__(backbone, optimizer, scheduler, compile, channels_last)
        self.save_hyperparameters(ignore=["backbone", "centers", "loss", "optimizer"])
        self.centers, self.loss_fn, self.predictor = centers, loss, predictor

    def setup(self, stage: str) -> None:
        # a data-aware table is computed by every rank from the same data and seed; rank 0's is the one all use
        # (float reductions may differ across machines: a single flipped near-tie would silently disagree)
        if self.centers.assignment is None or self._trainer is None or self.trainer.world_size < 2:
            return
        table = self.trainer.strategy.broadcast(self.centers.assignment.index_of_label, src=0)
        if not torch.equal(table, self.centers.assignment.index_of_label):
            c = self.centers
            self.centers = ClassCenters(
                c.system, c.n_classes, seed=c.seed, shuffle=c.shuffle, assignment=Assignment(table, c.system.count)
            )

    def compute_loss(self, z, y):
        return self.loss_fn(z, y, self.centers)

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        p = getattr(self.loss_fn, "last_target_prob", None)
        if p is not None:  # the full-system softmax's mean p(y | z), and its scale when learned
            self.log("train/target_prob", p, on_step=False, on_epoch=True)
            if getattr(self.loss_fn, "learn_scale", False):
                self.log("train/scale", self.loss_fn.scale.detach(), on_step=False, on_epoch=True)
        return loss

    def predict_labels(self, z):
        return self.centers.predict(z.float(), self.predictor).to(z.device)

    def top_labels(self, z, k: int) -> torch.Tensor:
        """The k most likely labels [B, k], best first (the k nearest labeled centers)."""
        return self.centers.top_labels(z.float(), k)[0].to(z.device)

    def on_save_checkpoint(self, checkpoint):
        super().on_save_checkpoint(checkpoint)
        checkpoint[CENTERS_KEY] = self.centers.spec
        if self.centers.assignment is not None:  # 8 bytes per class; verified by the spec's digest on load
            checkpoint[ASSIGNMENT_KEY] = self.centers.assignment.index_of_label

    def on_load_checkpoint(self, checkpoint):
        check_centers(checkpoint, self.centers)


class CEModule(_Base):
    """Cross-entropy baseline: the backbone's last layer outputs n_classes logits (the classification layer)."""

    def __init__(
        self,
        backbone: nn.Module,
        optimizer: Callable,
        scheduler: dict | None = None,
        compile: bool | str = False,
        channels_last=False,
    ):
        super().__init__(backbone, optimizer, scheduler, compile, channels_last)
        self.save_hyperparameters(ignore=["backbone", "optimizer"])
        self.centers = None

    def compute_loss(self, logits, y):
        return F.cross_entropy(logits.float(), y)

    def class_rows(self) -> list[str]:
        last = [n for n, m in self.named_modules() if isinstance(m, nn.Linear)][-1]
        return [f"{last}.weight", f"{last}.bias"]

    def predict_labels(self, logits):
        return logits.argmax(1)

    def top_labels(self, logits, k: int) -> torch.Tensor:
        return logits.float().topk(k, dim=1).indices


def check_centers(checkpoint: dict, centers: ClassCenters) -> None:
    """A checkpoint trained against other centers would silently predict garbage: refuse it."""
    saved = checkpoint.get(CENTERS_KEY)
    if saved is None:
        raise ValueError("checkpoint has no class-center spec (not an LSC checkpoint?); train with model=lsc")
    if saved != centers.spec:
        diff = {k: (saved.get(k), centers.spec.get(k)) for k in centers.spec if saved.get(k) != centers.spec.get(k)}
        raise ValueError(
            f"checkpoint was trained with other class centers: {diff} (checkpoint, config). Use the run's own "
            "centers config, or ClassCenters.from_spec(checkpoint['lsc_centers'])"
        )


def init_weights_from(module: _Base, ckpt: dict, path) -> dict:
    """Initialize `module` with a checkpoint's weights (no optimizer or loop state): fine-tuning, or a label space
    grown since that run. Rows of per-class parameters (CE's last layer, Partial FC's class weights) are copied
    for the old classes and the new rows keep their fresh init; LSC centers must be the checkpoint's with at most
    more classes (every old class keeps its center). Returns {"old_classes", "new_classes"}."""
    centers = getattr(module, "centers", None)
    if centers is not None:
        spec = ckpt.get(CENTERS_KEY)
        if spec is None:
            raise ValueError(f"init_from={path} is not an LSC checkpoint (no class-center spec)")
        if not centers.grows_from(spec, ckpt.get(ASSIGNMENT_KEY)):
            raise ValueError(
                f"init_from={path} was trained with other class centers ({spec}); a run initialized from it must use "
                "the same centers config (system, n_dim, seed, shuffle, assignment), with the same or more classes"
            )
    own, theirs = module.state_dict(), ckpt["state_dict"]
    rows, old_n = set(module.class_rows()), None
    missing = sorted(set(own) - set(theirs))
    if missing:
        raise ValueError(f"init_from={path} lacks {len(missing)} weight(s) of this model, e.g. {missing[0]}")
    out = {}
    for k, v in own.items():
        w = theirs[k]
        if w.shape == v.shape:
            out[k] = w
        elif k in rows and w.shape[1:] == v.shape[1:] and w.shape[0] <= v.shape[0]:
            out[k] = v.clone()
            out[k][: w.shape[0]] = w  # the old classes' rows; new classes keep their fresh init
            old_n = w.shape[0]
        else:
            raise ValueError(
                f"init_from={path}: {k} has shape {tuple(w.shape)} there and {tuple(v.shape)} here; use the same "
                "backbone and centers (a larger class count is fine)"
            )
    module.load_state_dict(out)
    n = centers.n_classes if centers is not None else None
    old = spec["n_classes"] if centers is not None else old_n
    return {"old_classes": old, "new_classes": (n - old) if (n is not None and old is not None) else None}


class PartialFCModule(_Base):
    """Backbone -> embed_dim embedding -> PartialFCHead: the learned-weight peer of LSC (same hooks and metrics).

    Under DDP the head is sharded by class range in `setup` (DDP ignores its weight: every rank owns another
    shard); checkpoints hold the full weight, gathered on save and sliced again on load.
    """

    def __init__(
        self,
        backbone: nn.Module,
        n_classes: int,
        optimizer,
        embed_dim: int = 128,
        scale: float = 32.0,
        margin: float = 0.2,
        margin_type: str = "cosface",
        sample_rate: float = 1.0,
        scheduler: dict | None = None,
        compile: bool | str = False,
        seed: int = 0,
        channels_last: bool = False,
    ):
        super().__init__(backbone, optimizer, scheduler, compile, channels_last)
        self.save_hyperparameters(ignore=["backbone", "optimizer"])
        self.head = PartialFCHead(n_classes, embed_dim, scale, margin, margin_type, sample_rate, seed)
        self.centers = None
        # DDP must not average the head: each rank holds another shard (names are relative to this module)
        self._ddp_params_and_buffers_to_ignore = ["head.weight"]

    def setup(self, stage: str) -> None:
        world = self.trainer.world_size if self._trainer is not None else 1
        if world > 1 and not self.head.distributed:
            self.head.shard(self.trainer.global_rank, world)

    def compute_loss(self, z, y):
        return self.head(z, y)

    def class_rows(self) -> list[str]:
        return ["head.weight"]

    def predict_labels(self, z):
        return self.head.predict(z)

    def top_labels(self, z, k: int) -> torch.Tensor:
        """The k classes whose weights are nearest in cosine [B, k], best first (single process)."""
        if self.head.distributed:
            raise NotImplementedError("top_labels of a sharded Partial FC head: evaluate in a single process")
        w = F.normalize(self.head.weight.float(), dim=1)
        return (F.normalize(z.float(), dim=1) @ w.T).topk(k, dim=1).indices

    def on_save_checkpoint(self, checkpoint):
        super().on_save_checkpoint(checkpoint)
        if self.head.distributed:  # every rank's shard, in class order
            full, world = _gather_padded(self.head.weight.detach()), self.head.world
            sizes = [b - a for a, b in (shard_range(self.head.n_classes, r, world) for r in range(world))]
            m = max(sizes)
            full = torch.cat([full[r * m : r * m + sizes[r]] for r in range(world)])
            checkpoint["state_dict"]["head.weight"] = full.cpu()

    def on_load_checkpoint(self, checkpoint):
        w = checkpoint["state_dict"].get("head.weight")
        if w is not None and w.shape[0] != self.head.n_classes:
            raise ValueError(f"checkpoint has {w.shape[0]:,} class weights, this run {self.head.n_classes:,} classes")
        if w is not None and self.head.distributed:
            checkpoint["state_dict"]["head.weight"] = w[self.head.start : self.head.stop]
