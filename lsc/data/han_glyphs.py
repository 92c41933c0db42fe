"""Printed Han characters: a class is a code point, its images are its glyphs in many type designs, and the test
images are the glyphs of designs held out of training (`data=han_glyphs`).

    python -m lsc.train data=han_glyphs                                 # URO ideographs, 32 px, 4 test designs
    python -m lsc.train data=han_glyphs data.n_classes=1000             # a seeded sample of 1,000 of them
    python -m lsc.eval ckpt_path=... data.test_designs=[/path/a.ttf]    # score any installed font after training

Designs (`lsc.data.fonts`) come from the fonts under `data.font_dirs` (`make data-han` installs Debian's CJK
font packages); the weights of one design are one design and faces that draw the same glyphs are merged, checked
by rendering. Splits are by design: `test_designs` (default: four designs of four styles that draw the whole URO
block), `val_designs` (model selection), and every other design trains (`train_designs` to choose). The class set:
code points of `blocks` drawn by every test design and by at least `min_designs` training designs (after the
per-glyph checks), optionally restricted to `codepoints` (a list, or a file with one character or U+XXXX a line)
and sampled down to `n_classes` (seeded, `class_seed`). Labels follow code point order.

Glyphs are rendered once per face and cached (uint8, `cache_dir`), with `manifest.json` naming every font file,
face, version, design, split and what the checks dropped. Training-time augmentation runs on the whole batch on
its device (`on_after_batch_transfer`): `affine` (rotation, scale, shear, shift), `stroke` (thinner or bolder
strokes: a soft grey-scale erosion/dilation), `blur` (Gaussian).
"""

from __future__ import annotations

import json
import logging
import math
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .base import LSCDataModule
from .fonts import RENDER_MODES, RESERVED_DIRS, Design, FontCatalog, GlyphSet, is_font_path, resolve_design

log = logging.getLogger("lsc.data")

DEFAULT_TEST = ("TW-Sung", "TW-Kai", "WenQuanYi Zen Hei", "HanaMinA")  # Ming, Kai, Hei, Mincho: all of URO
DEFAULT_VAL = ("cwTeXHeiBold", "Ume Mincho")
AUGMENTS = ("affine", "stroke", "blur")


def read_codepoints(spec) -> list[int]:
    """`data.codepoints`: a list of characters / U+XXXX / ints, or a file with one character or U+XXXX a line."""
    if isinstance(spec, (str, os.PathLike)):
        p = Path(spec).expanduser()
        if not p.is_file():
            raise FileNotFoundError(f"data.codepoints={spec} is not a file (one character or U+XXXX a line)")
        items = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines()]
        items = [s for s in items if s and not s.startswith("#")]
    else:
        items = list(spec)
    out = []
    for s in items:
        if isinstance(s, int) and not isinstance(s, bool):
            out.append(s)
        elif isinstance(s, str) and len(s) == 1:
            out.append(ord(s))
        elif isinstance(s, str) and s.upper().startswith("U+"):
            try:
                out.append(int(s[2:], 16))
            except ValueError:
                raise ValueError(f"data.codepoints: {s!r} is not a U+XXXX code point") from None
        else:
            raise ValueError(f"data.codepoints: {s!r} is neither one character nor U+XXXX")
    if not out:
        raise ValueError("data.codepoints is empty")
    return sorted(set(out))


def class_name(cp: int) -> str:
    return f"{chr(cp)} U+{cp:04X}"


class GlyphImages(Dataset):
    """uint8 glyph images [N, S, S] with labels [N]: items are (normalized float [1, S, S], label)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean: float, std: float):
        self.images, self.labels, self.mean, self.std = images, labels, mean, std

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        x = (self.images[i].float()[None] / 255 - self.mean) / self.std
        return x, int(self.labels[i])

    def __getitems__(self, idx):  # the DataLoader's batched fetch: one vectorized normalization per batch
        idx = torch.as_tensor(idx)
        x = (self.images[idx].float()[:, None] / 255 - self.mean) / self.std
        return list(zip(x, self.labels[idx].tolist(), strict=True))


def _render_job(args):
    catalog, face, size, mode = args
    catalog.glyphs(face, size, mode)
    return face.key


class HanGlyphsDataModule(LSCDataModule):
    """Glyphs of CJK ideographs in many type designs; train, validate and test on disjoint designs."""

    channels = 1
    mean, std = (0.2,), (0.35,)

    def __init__(
        self,
        font_dirs=("/usr/share/fonts",),
        cache_dir: str = "data/han_glyphs",
        exclude_fonts=RESERVED_DIRS,
        test_designs=DEFAULT_TEST,
        val_designs=DEFAULT_VAL,
        train_designs=None,
        blocks=("uro",),
        min_designs: int = 5,
        codepoints=None,
        n_classes: int | None = None,
        class_seed: int = 0,
        img_size: int = 32,
        render: str = "center",
        augment=(),
        max_faces: int | None = None,
        render_workers: int = 0,
        **kw,
    ):
        if kw.get("instance_labels") or kw.get("classes") or kw.get("keep_classes") or kw.get("limit"):
            raise ValueError(
                "data=han_glyphs labels by code point: restrict its classes with data.n_classes / data.codepoints "
                "(instance_labels, classes, keep_classes and limit do not apply)"
            )
        if render not in RENDER_MODES:
            raise ValueError(f"data.render must be one of {', '.join(RENDER_MODES)}, got {render!r}")
        if isinstance(img_size, bool) or not isinstance(img_size, int) or img_size < 8:
            raise ValueError(f"data.img_size must be an integer >= 8 (32 or 64), got {img_size!r}")
        if isinstance(min_designs, bool) or not isinstance(min_designs, int) or min_designs < 1:
            raise ValueError(f"data.min_designs must be an integer >= 1, got {min_designs!r}")
        if n_classes is not None and (isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 2):
            raise ValueError(f"data.n_classes must be an integer >= 2 or null (every class), got {n_classes!r}")
        augment = [augment] if isinstance(augment, str) else list(augment or [])
        bad = [a for a in augment if a not in AUGMENTS]
        if bad:
            raise ValueError(f"data.augment: unknown {bad}; choose from {', '.join(AUGMENTS)} (a list)")
        if not test_designs:
            raise ValueError("data.test_designs is empty: name at least one design (or font file) to test on")
        super().__init__(img_size=img_size, **kw)
        self.native_size = img_size
        self.font_dirs, self.cache_dir, self.exclude = list(font_dirs), Path(cache_dir), tuple(exclude_fonts or ())
        self.test_names, self.val_names = [str(d) for d in test_designs], [str(d) for d in (val_designs or [])]
        self.train_names = None if train_designs is None else [str(d) for d in train_designs]
        self.blocks, self.min_designs, self.render = tuple(blocks), min_designs, render
        self.codepoints = None if codepoints is None else read_codepoints(codepoints)
        self.n_classes, self.class_seed, self.augment = n_classes, class_seed, augment
        if max_faces is not None and (isinstance(max_faces, bool) or not isinstance(max_faces, int) or max_faces < 1):
            raise ValueError(f"data.max_faces must be an integer >= 1 or null (every face), got {max_faces!r}")
        self.render_workers, self.max_faces = render_workers, max_faces
        self._classes = None  # sorted code points, label = position
        self._pinned = None
        self.stats: dict = {}

    # ---- designs and classes -----------------------------------------------------------------------------------

    @property
    def catalog(self) -> FontCatalog:
        if getattr(self, "_catalog", None) is None:
            self._catalog = FontCatalog(self.font_dirs, self.cache_dir, self.blocks, self.exclude)
        return self._catalog

    def splits(self) -> dict[str, list[Design]]:
        """{'train', 'val', 'test'}: the designs of each split (a design belongs to one split only); training
        designs thinned to `max_faces` faces."""
        sp = dict(self._raw_splits())
        if self.max_faces is not None:
            if getattr(self, "_thinned", None) is None:
                self._thinned = [self._thin(d) for d in sp["train"]]
            sp["train"] = self._thinned
        return sp

    def _raw_splits(self) -> dict[str, list[Design]]:
        """The splits' designs, every face (the test split never depends on the training fonts' glyphs)."""
        if getattr(self, "_raw_split", None) is not None:
            return self._raw_split
        designs = self.catalog.designs()
        test = self._test_designs()
        val = [resolve_design(s, designs) for s in self.val_names]
        held = {d.name for d in test + val}
        if self.train_names is None:
            train = [d for d in designs if d.name not in held]
        else:
            train = [resolve_design(s, designs) for s in self.train_names]
        for a, b, what in ((test, val, "test and val"), (train, test, "train and test"), (train, val, "train and val")):
            both = {d.name for d in a} & {d.name for d in b}
            if both:
                raise ValueError(f"design(s) {sorted(both)} are in both {what}: a design belongs to one split")
        if not train:
            raise ValueError("no training designs left: name fewer val/test designs, or install more fonts")
        self._raw_split = {"train": train, "val": val, "test": test}
        return self._raw_split

    def _test_designs(self) -> list[Design]:
        """Test designs by name (the catalog) or font file path (no catalog needed: a font to score after training)."""
        if getattr(self, "_test", None) is None:
            named = [s for s in self.test_names if not is_font_path(s)]
            designs = self.catalog.designs() if named else []
            self._test = [resolve_design(s, designs) for s in self.test_names]
        return self._test

    def _thin(self, d: Design) -> Design:
        """At most `max_faces` faces of a design, spread over its weights (lightest to heaviest by mean ink)."""
        if len(d.faces) <= self.max_faces:
            return d
        ink = []
        for f in d.faces:
            g = self.catalog.glyphs(f, self.img_size, self.render)
            ink.append(float(g.images.mean()) if len(g.codepoints) else -1.0)
        order = [f for _, f in sorted(zip(ink, d.faces, strict=True), key=lambda t: (t[0], t[1].key))]
        pick = sorted({round(i * (len(order) - 1) / max(1, self.max_faces - 1)) for i in range(self.max_faces)})
        return Design(d.name, [order[i] for i in pick], d.merged)

    def _face_glyphs(self, design: Design) -> list[GlyphSet]:
        return [self.catalog.glyphs(f, self.img_size, self.render) for f in design.faces]

    def prepare_data(self):
        """Render (and cache) every face of every split, in `render_workers` processes."""
        faces = [f for ds in self._raw_splits().values() for d in ds for f in d.faces]
        todo = [f for f in faces if not self.catalog.glyph_path(f, self.img_size, self.render).exists()]
        if not todo:
            return
        log.info(f"han_glyphs: rendering {len(todo)} face(s) at {self.img_size} px ({self.render}), cached")
        from tqdm import tqdm

        jobs = [(self.catalog, f, self.img_size, self.render) for f in todo]
        if self.render_workers > 1 and len(todo) > 1:
            with ProcessPoolExecutor(self.render_workers) as ex:
                list(tqdm(ex.map(_render_job, jobs), total=len(jobs), desc="render", unit="face", disable=None))
        else:
            for j in tqdm(jobs, desc="render", unit="face", disable=None):
                _render_job(j)

    def pin_classes(self, names: list[str]) -> None:
        """Use exactly these classes (class names "字 U+5B57" as a checkpoint stores them), label = position: a
        checkpoint evaluated on other designs keeps its own label space."""
        self._pinned = [int(n.rsplit("U+", 1)[1], 16) for n in names]
        self._classes = None

    def class_codepoints(self) -> list[int]:
        """The class set: sorted code points (label = position)."""
        if self._classes is not None:
            return self._classes
        if self._pinned is not None:
            self._classes = list(self._pinned)
            return self._classes
        self.prepare_data()
        sp = self.splits()
        count: dict[int, int] = {}
        for d in sp["train"]:
            cps = set()
            for g in self._face_glyphs(d):
                cps.update(g.codepoints.tolist())
            for c in cps:
                count[c] = count.get(c, 0) + 1
        keep = {c for c, n in count.items() if n >= self.min_designs}
        for d in sp["test"]:
            drawn = set()
            for g in self._face_glyphs(d):
                drawn.update(g.codepoints.tolist())
            keep &= drawn
        if self.codepoints is not None:
            keep &= set(self.codepoints)
        classes = sorted(keep)
        if self.n_classes is not None and self.n_classes < len(classes):
            g = torch.Generator().manual_seed(self.class_seed)
            pick = torch.randperm(len(classes), generator=g)[: self.n_classes]
            classes = sorted(classes[i] for i in pick.tolist())
        if len(classes) < 2:
            raise ValueError(
                f"the class set has {len(classes)} code point(s): lower data.min_designs ({self.min_designs}), "
                "choose test designs that draw more ideographs, or widen data.codepoints / data.blocks"
            )
        self._classes = classes
        return classes

    @property
    def num_classes(self) -> int:
        return len(self.class_codepoints())

    @property
    def class_names(self) -> list[str]:
        return [class_name(c) for c in self.class_codepoints()]

    # ---- splits as tensors ---------------------------------------------------------------------------------------

    def _split_tensors(self, designs: list[Design], split: str):
        """uint8 images [N, S, S], labels [N], and per design: its images and the classes it lacks."""
        classes = np.asarray(self.class_codepoints(), dtype=np.int64)
        imgs, labels, per_design = [], [], {}
        for d in designs:
            n_img, drawn = 0, set()
            for g in self._face_glyphs(d):
                pos = np.searchsorted(classes, g.codepoints)
                ok = (pos < len(classes)) & (classes[np.minimum(pos, len(classes) - 1)] == g.codepoints)
                imgs.append(g.images[ok])
                labels.append(pos[ok])
                n_img += int(ok.sum())
                drawn.update(g.codepoints[ok].tolist())
            per_design[d.name] = {"images": n_img, "classes_missing": len(classes) - len(drawn)}
        if not imgs or sum(len(x) for x in imgs) == 0:
            raise ValueError(f"the {split} designs draw none of the {len(classes):,} classes")
        x = torch.from_numpy(np.concatenate(imgs))
        y = torch.from_numpy(np.concatenate(labels).astype(np.int64))
        self.stats[split] = per_design
        return x, y

    def _dataset(self, designs, split):
        x, y = self._split_tensors(designs, split)
        return GlyphImages(x, y, self.mean[0], self.std[0])

    def setup(self, stage: str | None = None):
        if stage in (None, "fit", "validate") and self.train_set is None:
            sp = self.splits()
            self.train_set = self._dataset(sp["train"], "train")
            n = len(self.train_set)
            g = torch.Generator().manual_seed(self.seed + 1)
            from .base import Subset

            if self.train_eval_size:
                self.train_eval_set = Subset(self.train_set, torch.randperm(n, generator=g)[: self.train_eval_size])
            self._prototype_view = self.train_set
            if sp["val"]:
                self.val_set = self._dataset(sp["val"], "val")
            else:  # no validation designs: validate on a fixed sample of training glyphs (training accuracy)
                self.val_set = Subset(self.train_set, torch.randperm(n, generator=g)[: min(self.val_size, n)])
            if self.val_limit is not None:
                self.val_set = _first(self.val_set, self.val_limit)
            self._log_split()
        if stage in (None, "fit", "test") and self.test_set is None:
            self.test_set = self._dataset(self._test_designs(), "test")
            if self.val_limit is not None:
                self.test_set = _first(self.test_set, self.val_limit)
            missing = {k: v["classes_missing"] for k, v in self.stats["test"].items() if v["classes_missing"]}
            if missing:
                log.warning(
                    "han_glyphs: test design(s) lack some classes, skipped and counted: "
                    + ", ".join(f"{k}: {v:,}" for k, v in missing.items())
                )

    def eval_info(self, split: str) -> dict:
        """What `lsc.eval` reports besides accuracy: per split, its designs' glyphs and the classes they lack."""
        st = self.stats.get(split, {})
        out = {f"{split}/classes_skipped": sum(v["classes_missing"] for v in st.values())}
        for name, v in st.items():
            out[f"{split}/{name}/glyphs"] = v["images"]
            out[f"{split}/{name}/classes_skipped"] = v["classes_missing"]
        return out

    def _log_split(self):
        sp = self.splits()
        log.info(
            f"han_glyphs: {self.num_classes:,} classes; train {len(self.train_set):,} glyphs of "
            f"{len(sp['train'])} designs; val {len(self.val_set) if self.val_set is not None else 0:,} glyphs of "
            f"{', '.join(d.name for d in sp['val']) or '(training sample)'}; test designs "
            f"{', '.join(d.name for d in sp['test'])}"
        )

    def prototype_set(self):
        self.setup("fit")
        return self._prototype_view

    # ---- augmentation on the batch's device ---------------------------------------------------------------------

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        if not self.augment or batch is None or self.trainer is None or not self.trainer.training:
            return batch
        x, y = batch
        return augment_glyphs(x, self.augment, self.mean[0], self.std[0]), y

    # ---- the manifest --------------------------------------------------------------------------------------------

    def manifest(self) -> dict:
        """Every font file, face, version and design of each split, what the checks dropped, and the classes."""
        sp = self.splits()
        out = {"classes": len(self.class_codepoints()), "blocks": list(self.blocks), "img_size": self.img_size,
               "render": self.render, "min_designs": self.min_designs, "splits": {}}  # fmt: skip
        for split, designs in sp.items():
            rows = []
            for d in designs:
                faces = []
                for f in d.faces:
                    g = self.catalog.glyphs(f, self.img_size, self.render)
                    faces.append({"file": f.path, "index": f.index, "face": f.name, "version": f.version,
                                  "glyphs": len(g.codepoints), "dropped": g.dropped})  # fmt: skip
                rows.append({"design": d.name, "faces": faces, "merged_duplicates": d.merged,
                             **self.stats.get(split, {}).get(d.name, {})})  # fmt: skip
            out["splits"][split] = rows
        return out

    def write_manifest(self, path) -> None:
        Path(path).write_text(json.dumps(self.manifest(), indent=1, ensure_ascii=False))


def write_glyph_pngs(font: str, chars, out_dir, size: int = 32, render: str = "center", index: int = 0) -> list[Path]:
    """PNG files `<out_dir>/U+XXXX.png` of `chars` drawn by a font file with the project's renderer (what
    `lsc.predict` reads: the glyphs a model trained on data=han_glyphs sees); characters the font lacks are skipped.
    Returns the paths written."""
    from PIL import Image

    from .fonts import Renderer, cmap_codepoints, file_faces

    face = file_faces(os.path.realpath(font))[index]
    have = set(cmap_codepoints(face, [(0, 0x10FFFF)]).tolist())
    r, out = Renderer(face, size, render), []
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    for ch in chars:
        if ord(ch) in have:
            p = Path(out_dir) / f"U+{ord(ch):04X}.png"
            Image.fromarray(r(ch)).save(p)
            out.append(p)
    return out


def _first(ds, n):
    from .base import Subset

    return ds if len(ds) <= n else Subset(ds, torch.arange(n))


# ---- batched augmentation ----------------------------------------------------------------------------------------


def augment_glyphs(x: torch.Tensor, kinds, mean: float, std: float, generator=None) -> torch.Tensor:
    """Random per-image affine / stroke width / blur on a normalized batch [B, 1, S, S] (background = -mean/std)."""
    b, dev = x.shape[0], x.device

    def u(lo, hi, n=b):
        return torch.rand(n, device=dev, generator=generator) * (hi - lo) + lo

    ink = (x * std + mean).clamp(0, 1)  # [B, 1, S, S] in [0, 1], background 0
    if "stroke" in kinds:  # t > 0 thickens toward a 3x3 dilation, t < 0 thins toward an erosion
        t = u(-1.0, 1.0).view(b, 1, 1, 1)
        dil = F.max_pool2d(ink, 3, 1, 1)
        ero = -F.max_pool2d(-ink, 3, 1, 1)
        ink = torch.where(t > 0, ink + t * (dil - ink), ink + (-t) * (ero - ink))
    if "affine" in kinds:  # rotation +-8 deg, scale 0.85-1.1 (aspect +-8%), shear +-0.15, shift +-8%
        ang = u(-8, 8) * math.pi / 180
        s = u(0.85, 1.1)
        ax = s * u(0.92, 1.08)
        ay = s / (ax / s)
        sh = u(-0.15, 0.15)
        cos, sin = torch.cos(ang), torch.sin(ang)
        # output -> input sampling grid: inverse of (rotate . shear . scale)
        m = torch.stack(
            [torch.stack([cos / ax, (sin + sh * cos) / ax, u(-0.16, 0.16)], 1),
             torch.stack([-sin / ay, (cos - sh * sin) / ay, u(-0.16, 0.16)], 1)], 1,
        )  # fmt: skip
        grid = F.affine_grid(m, list(ink.shape), align_corners=False)
        ink = F.grid_sample(ink, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if "blur" in kinds:  # Gaussian, sigma 0-1 px at 32 px (scaled with the size), per image
        size = x.shape[-1]
        sig = u(0.01, 1.0) * size / 32
        r = max(1, int(math.ceil(2 * sig.max().item())))
        k = torch.arange(-r, r + 1, device=dev, dtype=ink.dtype)
        w = torch.exp(-(k[None] ** 2) / (2 * sig[:, None] ** 2))
        w = w / w.sum(1, keepdim=True)  # [B, 2r+1]
        z = ink.transpose(0, 1)  # [1, B, S, S]: one group per image
        z = F.conv2d(z, w[:, None, None, :], padding=(0, r), groups=b)
        z = F.conv2d(z, w[:, None, :, None], padding=(r, 0), groups=b)
        ink = z.transpose(0, 1)
    return (ink - mean) / std
