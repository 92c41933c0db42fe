"""Scatter plot of embeddings and class centers for n_dim <= 3 (the A_n paper's Figures 3-7)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch


class EmbeddingPlot(L.Callback):
    """Every `every_n_epochs` validation epochs: PNG of up to `max_points` normalized embeddings, coloured by
    label, with the labeled centers; saved under `<run dir>/embeddings/` and logged to wandb as an image."""

    def __init__(self, every_n_epochs: int = 1, max_points: int = 2000, dirpath: str | None = None):
        super().__init__()
        self.every, self.max_points, self.dirpath = every_n_epochs, max_points, dirpath
        self.z, self.y = [], []

    def _active(self, trainer, pl_module):
        cc = getattr(pl_module, "centers", None)
        return cc is not None and cc.n_dim <= 3 and not trainer.sanity_checking

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if self._active(trainer, pl_module) and sum(len(z) for z in self.z) < self.max_points:
            self.z.append(outputs["z"].float().cpu())
            self.y.append(outputs["y"].cpu())

    def on_validation_epoch_end(self, trainer, pl_module):
        if not self._active(trainer, pl_module) or not self.z or trainer.current_epoch % self.every:
            self.z, self.y = [], []
            return
        z = torch.cat(self.z)[: self.max_points]
        y = torch.cat(self.y)[: self.max_points]
        self.z, self.y = [], []
        if trainer.is_global_zero:
            path = self.plot(pl_module.centers, z, y, trainer.current_epoch, self._dir(trainer))
            for logger in trainer.loggers:
                if hasattr(logger, "log_image"):
                    logger.log_image(key="val/embeddings", images=[str(path)])

    def _dir(self, trainer) -> Path:
        base = self.dirpath or trainer.default_root_dir
        return Path(base) / "embeddings"

    @staticmethod
    def plot(cc, z, y, epoch, out_dir: Path) -> Path:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        out_dir.mkdir(parents=True, exist_ok=True)
        z = torch.nn.functional.normalize(z, dim=1)
        n_show = min(cc.n_classes, 64)
        c = cc(torch.arange(n_show))
        fig = plt.figure(figsize=(5, 5))
        if cc.n_dim == 3:
            ax = fig.add_subplot(projection="3d")
            ax.scatter(*z.T.numpy(), c=y.numpy() % 20, cmap="tab20", s=4, alpha=0.5)
            ax.scatter(*c.T.numpy(), c="k", marker="x", s=60)
        else:
            ax = fig.add_subplot()
            zz = z if cc.n_dim == 2 else torch.cat([z, torch.zeros_like(z)], 1)
            cz = c if cc.n_dim == 2 else torch.cat([c, torch.zeros_like(c)], 1)
            ax.scatter(zz[:, 0], zz[:, 1], c=y.numpy() % 20, cmap="tab20", s=4, alpha=0.5)
            ax.scatter(cz[:, 0], cz[:, 1], c="k", marker="x", s=60)
            ax.set_aspect("equal")
        ax.set_title(f"{cc.system.display}, epoch {epoch}")
        path = out_dir / f"epoch_{epoch:04d}.png"
        fig.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(fig)
        return path
