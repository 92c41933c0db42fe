"""Accuracy under every label predictor, their agreement, the unlabeled share and time per sample."""

from __future__ import annotations

import time

import lightning as L
import torch
from torchmetrics import MeanMetric


class PredictorAccuracy(L.Callback):
    """At every validation (and test) epoch: `{stage}/acc_{method}` for each predictor (torchmetrics means),
    `{stage}/agreement` (share of samples where all predictors agree), `{stage}/unlabeled_share` (nearest system
    vector unlabeled: the top-k paper's new-class signal) and `{stage}/time_per_sample_{method}` in seconds.

    With `train_eval: true` the same runs on the DataModule's fixed training sample (`data.train_eval_size`),
    logged as `train/acc_{method}`: the training accuracy the papers report.
    """

    def __init__(self, methods=("cossim", "topk"), train_eval: bool = True, unlabeled_share: bool = True):
        super().__init__()
        self.methods, self.train_eval, self.unlabeled = tuple(methods), train_eval, unlabeled_share
        self.state: dict[str, dict[str, MeanMetric]] = {}

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
        for method in self.methods:
            t0 = time.perf_counter()
            p = cc.predict(z, method).to(y.device)
            if z.device.type == "cuda":
                torch.cuda.synchronize(z.device)
            m[f"time_per_sample_{method}"].update((time.perf_counter() - t0) / max(1, len(y)), weight=len(y))
            m[f"acc_{method}"].update((p == y).float())
            preds.append(p)
        agree = torch.stack([p == preds[0] for p in preds]).all(0)
        m["agreement"].update(agree.float())
        if self.unlabeled:
            _, lab = cc.nearest(z)
            m["unlabeled_share"].update((lab.to(y.device) < 0).float())

    def _log(self, pl_module, stage):
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
