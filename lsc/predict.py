"""Predict labels for new images with a trained LSC checkpoint: `python -m lsc.predict ckpt_path=... input=...`.

    python -m lsc.predict ckpt_path=<run>/checkpoints/last.ckpt input=photos/ out=preds.csv k=5
    python -m lsc.predict ckpt_path=... input=list.txt            # one image path per line
    python -m lsc.predict ckpt_path=... input=data                # the run's own data config (its test split)

Per image, in input order, one CSV row (written as it is produced, so an interrupted run keeps its rows; also
Parquet at the end when pyarrow is installed): `path`, `label` (top-1), `class_name` (when the training data's
classes have names: image folders, Fashion-MNIST, Han glyphs), `cos` (its cosine), `nearest_unlabeled` (the
nearest vector of the whole system belongs to no class: the top-k paper's new-class signal), `open_set_score`
(1 - cos: higher = further from every known class), `label_2..label_k` (`class_name_2..k`), `cos_2..cos_k`, and with
a checkpoint trained with `loss=softmax` `prob_1..prob_k` (exact probabilities under the full-system softmax),
then `target` (data input only) and `error` (an unreadable image: its row says why, the run goes on).
The k closest labeled centers come from a best-first walk over the system, so k > 1 works at 100M classes.

Python: `Predictor.from_checkpoint(path).predict(images, k=5)` with images as paths, PIL images or tensors.
"""

from __future__ import annotations

import csv
import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from torchvision.datasets.folder import IMG_EXTENSIONS
from torchvision.transforms import v2

from lsc.centers import ClassCenters
from lsc.data.transforms import make_transform
from lsc.runconfig import ASSIGNMENT_KEY, CENTERS_KEY, CLASS_NAMES_KEY, CONFIG_KEY, INPUT_KEY, load_checkpoint
from lsc.utils import positive_int, quiet_lightning, register_resolvers

log = logging.getLogger("lsc.predict")
register_resolvers()


class Predictor:
    """A trained LSC model for inference: backbone, class centers and the run's eval transform."""

    def __init__(
        self, backbone, centers: ClassCenters, transform, size: int, channels: int, scale=None, device="cpu",
        class_names: list[str] | None = None,
    ):  # fmt: skip
        self.backbone, self.centers, self.transform = backbone.eval().to(device), centers, transform
        self.size, self.channels, self.scale, self.device = size, channels, scale, torch.device(device)
        self.class_names = class_names  # label -> name, when the training data's classes have names

    @classmethod
    def from_checkpoint(cls, path, device: str = "cpu") -> Predictor:
        from lsc.models import build_backbone

        ckpt = load_checkpoint(path)
        spec, stored = ckpt.get(CENTERS_KEY), ckpt.get(CONFIG_KEY)
        if spec is None or not stored:
            raise ValueError(
                f"ckpt_path={path} is not an LSC checkpoint (no class centers or run config): lsc.predict needs a "
                "model trained with model=lsc (evaluate CE / Partial FC checkpoints with lsc.eval)"
            )
        cfg = OmegaConf.create(stored)
        spec_in = ckpt.get(INPUT_KEY)
        if spec_in:  # the images it was trained on, as recorded: no data needed (a prepared folder may be gone)
            dm = SimpleNamespace(out_size=spec_in["size"], **{k: spec_in[k] for k in ("channels", "native_size")})
            dm.mean, dm.std, dm.large_images = tuple(spec_in["mean"]), tuple(spec_in["std"]), spec_in["large_images"]
        else:  # an older checkpoint: the data module reads its channels, size and normalization
            dm = hydra.utils.instantiate(cfg.data)
        centers = ClassCenters.from_spec(spec, ckpt.get(ASSIGNMENT_KEY))
        backbone = build_backbone(cfg, dm, centers.n_dim)
        sd = ckpt["state_dict"]
        backbone.load_state_dict({k[len("backbone.") :]: v for k, v in sd.items() if k.startswith("backbone.")})
        scale = None
        if str(cfg.get("loss", {}).get("_target_", "")).endswith("SoftmaxLoss"):
            scale = float(sd["loss_fn.log_scale"].exp()) if "loss_fn.log_scale" in sd else float(cfg.loss.scale)
        size = dm.out_size
        t = make_transform("none", False, size, dm.mean, dm.std, dm.native_size, dm.large_images)
        return cls(backbone, centers, t, size, dm.channels, scale, device, ckpt.get(CLASS_NAMES_KEY))

    def _tensor(self, image) -> torch.Tensor:
        from PIL import Image

        if isinstance(image, (str, Path)):
            with Image.open(image) as im:
                im.load()
                image = im.convert("L" if self.channels == 1 else "RGB")
        elif isinstance(image, Image.Image) and image.mode != ("L" if self.channels == 1 else "RGB"):
            image = image.convert("L" if self.channels == 1 else "RGB")  # as a path's image is
        if isinstance(image, Image.Image) and image.size != (self.size, self.size) and not self.transform_resizes:
            image = v2.CenterCrop(self.size)(v2.Resize(self.size)(image))  # any image size in, the model's out
        return self.transform(image)

    @property
    def transform_resizes(self) -> bool:
        return any(isinstance(t, (v2.Resize, v2.CenterCrop)) for t in self.transform.transforms)

    @torch.no_grad()
    def embed(self, images) -> torch.Tensor:
        """Embeddings [B, n_dim] of a batch of images (paths, PIL images, or tensors already transformed)."""
        if isinstance(images, (str, Path)) or not isinstance(images, Sequence) and not isinstance(images, torch.Tensor):
            images = [images]  # one image
        if len(images) == 0:
            raise ValueError("no images given: pass a list of paths, PIL images or transformed tensors")
        if any(isinstance(im, torch.Tensor) and not im.is_floating_point() for im in images):
            raise TypeError("a tensor image must be float, already transformed as in training; pass the path or a "
                            "PIL image to use the checkpoint's transform")  # fmt: skip
        x = torch.stack([im if isinstance(im, torch.Tensor) else self._tensor(im) for im in images])
        return self.backbone(x.to(self.device)).float()

    @torch.no_grad()
    def predict(self, images, k: int = 5) -> dict[str, torch.Tensor]:
        """labels [B, k], cos [B, k], nearest_unlabeled [B], open_set_score [B], and prob [B, k] (softmax runs)."""
        return self.predict_embeddings(self.embed(images), k)

    def predict_embeddings(self, z: torch.Tensor, k: int = 5) -> dict[str, torch.Tensor]:
        labels, cos = self.centers.top_labels(z, k)
        _, nearest = self.centers.nearest(z)
        out = {"labels": labels, "cos": cos, "nearest_unlabeled": nearest < 0, "open_set_score": 1 - cos[:, 0]}
        if self.scale is not None:
            log_z = self.centers.log_partition(z.double(), self.scale)
            out["prob"] = torch.exp(self.scale * cos - log_z[:, None])
        return out


# ---- the CLI ---------------------------------------------------------------------------------------------------


def list_inputs(spec: str) -> list[str]:
    """An image folder (recursively, sorted), or a text file with one image path per line."""
    p = Path(spec)
    if p.is_dir():
        files = sorted(str(f) for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMG_EXTENSIONS)
        if not files:
            raise FileNotFoundError(f"input={p} holds no images ({', '.join(IMG_EXTENSIONS)})")
        return files
    if p.is_file() and p.suffix.lower() == ".csv" and p.read_text().startswith("path,"):  # lsc.predict's own rows
        with open(p, newline="") as f:
            files = [
                r["path"] for r in csv.DictReader(f) if r.get("path") and not r["path"].startswith(("test:", "val:"))
            ]
        if not files:
            raise ValueError(f"input={p} is a predictions CSV without image paths")
        return files
    if p.is_file() and p.suffix.lower() in (".txt", ".lst", ".csv"):
        files = [ln.strip() for ln in p.read_text().splitlines() if ln.strip()]
        if not files:
            raise ValueError(f"input={p} lists no image paths (one per line)")
        return files
    if p.is_file() and p.suffix.lower() in IMG_EXTENSIONS:
        return [str(p)]
    raise FileNotFoundError(f"input={p} is neither an image folder, an image, nor a file listing image paths")


def columns(k: int, probs: bool, target: bool, names: bool = False) -> list[str]:
    cols = ["path", "label", *(["class_name"] if names else []), "cos", "nearest_unlabeled", "open_set_score"]
    cols += [f"label_{j}" for j in range(2, k + 1)]
    cols += [f"class_name_{j}" for j in range(2, k + 1)] if names else []
    cols += [f"cos_{j}" for j in range(2, k + 1)]
    cols += [f"prob_{j}" for j in range(1, k + 1)] if probs else []
    return cols + (["target"] if target else []) + ["error"]


def check_out(out: Path, overwrite: bool, inputs=()) -> Path:
    """The CSV the rows go to (out itself, or out with .csv for out=*.parquet), refused before any work if writing it
    would destroy something: an existing file (unless overwrite=true), one of the input images or lists, a folder."""
    if out.suffix.lower() not in (".csv", ".parquet"):
        raise ValueError(f"out={out} must end in .csv or .parquet")
    targets = {out, out.with_suffix(".csv"), out.with_suffix(".parquet")}
    for t in targets:
        if t.is_dir():
            raise ValueError(f"out={out}: {t} is a folder; name a file, e.g. out={t / 'preds.csv'}")
    given = {Path(i).resolve() for i in inputs}
    if any(t.resolve() in given for t in targets):
        raise ValueError(f"out={out} is one of the inputs; choose another out=")
    if not overwrite and (clash := [t for t in sorted(targets) if t.exists()]):
        raise FileExistsError(f"out={out}: {', '.join(map(str, clash))} exists; pass overwrite=true or another out=")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir() or not os.access(parent, os.W_OK):
                why = "not a folder" if not parent.is_dir() else "not writable"
                raise PermissionError(f"out={out}: cannot write under {parent} ({why})")
            break
    if out.suffix.lower() == ".parquet":
        try:
            import pyarrow.parquet  # noqa: F401
        except ImportError:
            raise ValueError(
                f"out={out}: writing parquet needs pyarrow (pip install pyarrow), or use out=*.csv"
            ) from None
    return out.with_suffix(".csv")


def predict_to_csv(pred: Predictor, items, out: Path, k: int, batch_size: int, targets=None, progress=True) -> int:
    """items: paths (or (name, tensor) pairs for data input). Rows go to out + '.partial', written and flushed batch by
    batch; the file takes its name when every row is in (an existing out is replaced only then)."""
    from tqdm import tqdm

    k, batch_size = positive_int("k", k), positive_int("batch_size", batch_size)
    if k > pred.centers.n_classes:
        raise ValueError(f"k={k} exceeds the checkpoint's {pred.centers.n_classes:,} classes")
    cnames = pred.class_names
    cols = columns(k, pred.scale is not None, targets is not None, cnames is not None)
    out.parent.mkdir(parents=True, exist_ok=True)
    n, part = 0, out.with_name(out.name + ".partial")
    with open(part, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for a in tqdm(range(0, len(items), batch_size), disable=not progress, desc="predict", unit="batch"):
            names, xs, errors = [], [], {}
            for j, item in enumerate(items[a : a + batch_size]):
                name, x = item if isinstance(item, tuple) else (item, item)
                names.append(name)
                try:
                    xs.append(x if isinstance(x, torch.Tensor) else pred._tensor(x))
                except Exception as e:  # an unreadable file: a row says so, the rest goes on
                    warnings.warn(f"skipped unreadable image {name}: {e}", stacklevel=1)
                    errors[j] = f"{type(e).__name__}: {e}"
            ok = [j for j in range(len(names)) if j not in errors]
            res = pred.predict_embeddings(pred.embed([xs[i] for i in range(len(ok))]), k) if ok else None
            pos = {j: i for i, j in enumerate(ok)}
            for j, name in enumerate(names):
                row = [name]
                if j in errors:
                    row += [""] * (len(cols) - 2 - (targets is not None))
                else:
                    i = pos[j]
                    labels, cos = res["labels"][i].tolist(), res["cos"][i].tolist()
                    row += [labels[0], *([cnames[labels[0]]] if cnames is not None else [])]
                    row += [f"{cos[0]:.6f}", str(bool(res["nearest_unlabeled"][i])).lower()]
                    row += [f"{float(res['open_set_score'][i]):.6f}", *labels[1:]]
                    row += [cnames[lab] for lab in labels[1:]] if cnames is not None else []
                    row += [f"{c:.6f}" for c in cos[1:]]
                    if pred.scale is not None:
                        row += [f"{p:.6g}" for p in res["prob"][i].tolist()]
                if targets is not None:
                    row.append(int(targets[a + j]))
                row.append(errors.get(j, ""))
                w.writerow(row)
                n += 1
            f.flush()
    os.replace(part, out)
    _parquet(out)
    return n


def _parquet(csv_path: Path) -> None:
    try:
        import pyarrow.csv as pacsv
        import pyarrow.parquet as pq
    except ImportError:
        return
    pq.write_table(pacsv.read_csv(csv_path), csv_path.with_suffix(".parquet"))


def data_items(stored: dict, split: str):
    """(name, tensor) items and targets of the run's own data config, test split (or validation)."""
    dm = hydra.utils.instantiate(OmegaConf.create(stored).data)
    dm.setup("test")
    ds = {"test": dm.test_set if dm.test_set is not None else dm.val_set, "val": dm.val_set}.get(split)
    if ds is None:
        raise ValueError(f"split must be test or val, got {split!r}")
    items, targets = [], []
    for i in range(len(ds)):
        x, y = ds[i]
        items.append((f"{split}:{i}", x))
        targets.append(y)
    return items, targets


@hydra.main(version_base="1.3", config_path="../conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    quiet_lightning()
    if not cfg.get("ckpt_path"):
        raise ValueError("lsc.predict needs ckpt_path=<an LSC checkpoint> and input=<image folder | list | data>")
    if not cfg.get("input"):
        raise ValueError("lsc.predict needs input=<image folder, an image, a file of image paths, or data>")
    positive_int("k", cfg.k), positive_int("batch_size", cfg.batch_size)
    if str(cfg.device).startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={cfg.device} but torch sees no CUDA GPU here; use device=cpu")
    out = Path(cfg.out)
    if not out.is_absolute():
        out = Path(HydraConfig.get().runtime.cwd) / out
    items, targets = (None, None) if cfg.input == "data" else (list_inputs(cfg.input), None)
    csv_out = check_out(out, bool(cfg.get("overwrite", False)), [] if items is None else [cfg.input, *items])
    pred = Predictor.from_checkpoint(cfg.ckpt_path, device=cfg.device)
    if items is None:
        items, targets = data_items(load_checkpoint(cfg.ckpt_path)[CONFIG_KEY], cfg.split)
    n = predict_to_csv(pred, items, csv_out, cfg.k, cfg.batch_size, targets)
    print(f"lsc: predicted {n:,} images -> {out}", flush=True)


if __name__ == "__main__":
    main()
