"""Accuracy under every label predictor, their agreement, the unlabeled share and time per sample."""

from __future__ import annotations

import logging
import time

import lightning as L
import torch
from torchmetrics import MeanMetric

log = logging.getLogger(__name__)

DENSE = ("cossim", "euclidean")  # predictors that score every center (topk is O(n_dim))
# multiply-adds per epoch and stage the dense predictors may spend: ~1-2 s of a CPU (V^22 at 1M classes: 1,063
# samples; at 10^8 classes, V_586^21: none). Past it they score the epoch's first samples only, and the log says so.
DENSE_BUDGET = 5e10


class PredictorAccuracy(L.Callback):
    """At every validation (and test) epoch: `{stage}/acc_{method}` for each predictor (torchmetrics means),
    `{stage}/agreement` (share of samples where all predictors agree), `{stage}/unlabeled_share` (nearest system
    vector unlabeled: the top-k paper's new-class signal) and `{stage}/time_per_sample_{method}` in seconds.

    With `train_eval: true` the same runs on the DataModule's fixed training sample (`data.train_eval_size`),
    logged as `train/acc_{method}`: the training accuracy the papers report.
    """

    def __init__(
        self,
        methods=("cossim", "topk"),
        train_eval: bool = True,
        unlabeled_share: bool = True,
        dense_budget: float | None = DENSE_BUDGET,
    ):
        super().__init__()
        self.methods, self.train_eval, self.unlabeled = tuple(methods), train_eval, unlabeled_share
        if dense_budget is not None and not dense_budget > 0:
            raise ValueError(f"callbacks.predictor_accuracy.dense_budget must be > 0 or null, got {dense_budget!r}")
        self.dense_budget = dense_budget
        self.state: dict[str, dict[str, MeanMetric]] = {}
        self.dense_done: dict[tuple[str, str], int] = {}
        self.noted: set[str] = set()

    def dense_rows(self, cc) -> int | None:
        """Samples per epoch and stage the dense predictors (a scan of every center) may score within the budget;
        None: all of them."""
        if self.dense_budget is None:
            return None
        return int(self.dense_budget // (cc.n_classes * cc.n_dim))

    def _note(self, stage: str, cc, cap: int) -> None:
        if stage in self.noted:
            return
        self.noted.add(stage)
        dense = ", ".join(m for m in self.methods if m in DENSE)
        what = f"on the first {cap:,} samples of each epoch" if cap else "skipped"
        log.info(
            f"{stage}: {dense} {what}: a dense scan of {cc.n_classes:,} centers x {cc.n_dim} dims per sample costs "
            f"more than callbacks.predictor_accuracy.dense_budget={self.dense_budget:.3g} multiply-adds per epoch "
            "allow (topk is exact and O(n_dim); set dense_budget=null to score every sample)"
        )

    def _metrics(self, stage, device):
        if stage not in self.state:
            names = [f"acc_{m}" for m in self.methods] + ["agreement", "unlabeled_share"]
            names += [f"time_per_sample_{m}" for m in self.methods]
            self.state[stage] = {n: MeanMetric().to(device) for n in names}
        return self.state[stage]

    def _update(self, pl_module, z, y, stage):
        cc = getattr(pl_module, "centers", None)
        if cc is None:  # CE baseline: nothing to compare
            return
        m = self._metrics(stage, z.device)
        z = z.float()
        preds = []
        cap = self.dense_rows(cc)
        for method in self.methods:
            rows = len(y)
            if method in DENSE and cap is not None:
                done = self.dense_done.get((stage, method), 0)
                rows = max(0, min(rows, cap - done))
                if rows < len(y):
                    self._note(stage, cc, cap)
                if rows == 0:
                    continue
                self.dense_done[(stage, method)] = done + rows
            t0 = time.perf_counter()
            p = cc.predict(z[:rows], method).to(y.device)
            if z.device.type == "cuda":
                torch.cuda.synchronize(z.device)
            m[f"time_per_sample_{method}"].update((time.perf_counter() - t0) / max(1, rows), weight=rows)
            m[f"acc_{method}"].update((p == y[:rows]).float())
            preds.append(p)
        common = min(len(p) for p in preds) if len(preds) > 1 else 0
        if common:  # the rows every predictor scored
            m["agreement"].update(torch.stack([p[:common] == preds[0][:common] for p in preds]).all(0).float())
        if self.unlabeled:
            _, lab = cc.nearest(z)
            m["unlabeled_share"].update((lab.to(y.device) < 0).float())

    def _log(self, pl_module, stage):
        for key in [k for k in self.dense_done if k[0] == stage]:
            del self.dense_done[key]  # a new epoch: the dense budget starts again
        for name, metric in self.state.pop(stage, {}).items():
            if metric.update_count:
                pl_module.log(f"{stage}/{name}", metric.compute(), sync_dist=False)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if not trainer.sanity_checking and outputs is not None:
            self._update(pl_module, outputs["z"], outputs["y"], "val")

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if outputs is not None:
            self._update(pl_module, outputs["z"], outputs["y"], "test")

    def on_validation_epoch_end(self, trainer, pl_module):
        if trainer.sanity_checking:
            return
        self._log(pl_module, "val")
        dm = trainer.datamodule
        loader = dm.train_eval_dataloader() if self.train_eval and hasattr(dm, "train_eval_dataloader") else None
        if loader is not None and getattr(pl_module, "centers", None) is not None:
            was_training = pl_module.training
            pl_module.eval()
            with torch.no_grad():
                for x, y in loader:
                    x, y = x.to(pl_module.device), y.to(pl_module.device)
                    self._update(pl_module, pl_module(x), y, "train")
            pl_module.train(was_training)
            self._log(pl_module, "train")

    def on_test_epoch_end(self, trainer, pl_module):
        self._log(pl_module, "test")
