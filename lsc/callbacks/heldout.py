"""Held-out accuracy per epoch: top-1 and top-k on the test split after every validation, for learning curves.

Model selection stays on the validation split (checkpoints, `val/acc`); this only records how accuracy on the
held-out test images (e.g. type designs never trained on) develops, as `heldout/acc1` and `heldout/acc{k}`.
"""

from __future__ import annotations

import lightning as L
import torch


class HeldOutAccuracy(L.Callback):
    """After each validation epoch (not the sanity check): top-1 and top-k accuracy on `datamodule.test_set`.

    Args:
        k: the second rank reported (top-k), e.g. 5.
        every_n_epochs: run on every n-th validation epoch only.
    """

    def __init__(self, k: int = 5, every_n_epochs: int = 1):
        super().__init__()
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"HeldOutAccuracy k must be a positive integer, got {k!r}")
        self.k, self.every = k, max(1, int(every_n_epochs))

    @torch.no_grad()
    def on_validation_epoch_end(self, trainer, pl_module):
        if trainer.sanity_checking or (trainer.current_epoch + 1) % self.every:
            return
        dm = trainer.datamodule
        if dm is None or getattr(dm, "test_set", None) is None:
            dm.setup("test")
        if getattr(dm, "test_set", None) is None:
            return
        was_training = pl_module.training
        pl_module.eval()
        hit1 = hitk = n = 0
        for batch in dm.test_dataloader():
            if batch is None:
                continue
            x, y = (t.to(pl_module.device) for t in batch)
            with trainer.precision_plugin.forward_context():
                out = pl_module(x)
            top = pl_module.top_labels(out.float(), min(self.k, dm.num_classes))
            hit1 += int((top[:, 0] == y).sum())
            hitk += int((top == y[:, None]).any(1).sum())
            n += len(y)
        pl_module.train(was_training)
        if n:
            pl_module.log("heldout/acc1", hit1 / n, sync_dist=False)
            pl_module.log(f"heldout/acc{self.k}", hitk / n, sync_dist=False)
