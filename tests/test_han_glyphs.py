"""data=han_glyphs: font discovery, per-glyph checks, designs merged by rendering, the class set, splits by design,
class names through lsc.predict, lsc.eval on any font file, and the batched augmentation.

Most tests build tiny fonts with fontTools (tests/fontgen.py); the end-to-end ones render the three small CJK fonts
`make install` installs (IPAex Gothic, IPAex Mincho, WenQuanYi Micro Hei)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from fontgen import design_font, write_font
from helpers import make_cfg, subprocess_env

from lsc.data import fonts
from lsc.data.han_glyphs import HanGlyphsDataModule, augment_glyphs, class_name, read_codepoints

URO = 0x4E00
PROBE_CPS = [ord(c) for c in fonts.PROBES]


# ---- per-glyph checks and rendering ---------------------------------------------------------------------------


def test_glyph_checks_drop_empty_notdef_like_and_placeholder_glyphs(tmp_path):
    from fontgen import NOTDEF_RECTS

    shapes = {
        URO: [(100, 100, 500, 700)],  # a real glyph
        URO + 1: None,  # empty outline
        URO + 2: NOTDEF_RECTS,  # drawn exactly like .notdef, under another name
        URO + 9: ".notdef",  # the cmap itself points at .notdef
        URO + 10: [(200, 50, 800, 300), (300, 400, 700, 750)],  # another real glyph
    }
    shapes[URO + 3] = [(50, 50, 950, 850), (400, 300, 600, 500)]  # a placeholder drawn for 6 code points
    for i in range(4, 9):
        shapes[URO + i] = f"U+{URO + 3:04X}"
    face = fonts.file_faces(str(write_font(tmp_path / "t.ttf", "Alpha", shapes)))[0]
    cps = fonts.cmap_codepoints(face, ["uro"])
    assert URO + 9 not in cps.tolist() and len(cps) == 10  # .notdef in the cmap never counts as drawn
    g = fonts.render_face(face, cps, 32, "center")
    assert g.codepoints.tolist() == [URO, URO + 10]
    assert g.dropped == {"empty": 1, "notdef_like": 1, "placeholder": 6}
    assert g.images.shape == (2, 32, 32) and g.images.dtype == np.uint8


def _pil_em(face, ch, size):
    """Independent em-box rendering: Pillow's own draw.text on a size x size canvas, anchored at its middle."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(face.path, size=size, index=face.index, layout_engine=ImageFont.Layout.BASIC)
    im = Image.new("L", (size, size), 0)
    ImageDraw.Draw(im).text((size / 2, size / 2), ch, font=font, fill=255, anchor="mm")
    return np.asarray(im)


@pytest.mark.parametrize("size", [32, 64])
def test_render_modes_place_the_ink_as_documented(tmp_path, size):
    rect = (100, 100, 500, 700)  # 0.4 x 0.6 em, off-centre
    face = fonts.file_faces(str(write_font(tmp_path / "t.ttf", "Alpha", {URO: [rect]})))[0]
    ch = chr(URO)
    em = fonts.Renderer(face, size, "em")(ch)
    assert np.array_equal(em, _pil_em(face, ch, size))

    def box(a):
        r, c = np.flatnonzero(a.max(1) > 127), np.flatnonzero(a.max(0) > 127)
        return r[0], size - 1 - r[-1], c[0], size - 1 - c[-1], r[-1] - r[0] + 1, c[-1] - c[0] + 1

    top, bottom, left, right, h, w = box(fonts.Renderer(face, size, "center")(ch))
    px = size // 32  # a pixel at 32 px (antialiased edges: the box of any ink vs of dark ink)
    assert abs(top - bottom) <= px and abs(left - right) <= px  # ink centred
    assert abs(h - 0.6 * size) <= 1.5 and abs(w - 0.4 * size) <= 1.5  # at the em scale
    top, bottom, left, right, h, w = box(fonts.Renderer(face, size, "fit")(ch))
    margin = max(1, size // 32)
    assert abs(h - (size - 2 * margin)) <= 1 and abs(w - round((size - 2 * margin) * 4 / 6)) <= 1  # fitted, aspect kept
    assert abs(left - right) <= px


def test_renderer_rejects_bad_settings(tmp_path):
    face = fonts.file_faces(str(write_font(tmp_path / "t.ttf", "Alpha", {URO: [(100, 100, 500, 700)]})))[0]
    with pytest.raises(ValueError, match="em, center, fit"):
        fonts.Renderer(face, 32, "stretch")
    with pytest.raises(ValueError, match="integer >= 8"):
        fonts.Renderer(face, 4, "em")


# ---- designs ------------------------------------------------------------------------------------------------------


def test_family_key_strips_weights_regions_and_supplements():
    k = fonts.family_key
    assert k("Noto Sans CJK JP") == k("Noto Sans CJK SC") == "noto sans cjk"
    assert k("TW-Kai") == k("TW-Kai-Ext-B") == k("TW-Kai-Plus") != k("TW-Sung")
    assert k("HanaMinA") == k("HanaMinB")
    assert k("AR PL UKai TW MBE") == k("AR PL UKai CN")


def test_designs_are_merged_by_rendering_not_by_name(tmp_path):
    d = tmp_path / "fonts"
    design_font(d / "alpha.ttf", "Alpha", PROBE_CPS, seed=1)
    design_font(d / "beta.ttf", "Beta Sans", PROBE_CPS, seed=1)  # Alpha's glyphs under another name
    design_font(d / "alpha-bold.ttf", "Alpha", PROBE_CPS, seed=1, style="Bold", bold=40)  # a weight of Alpha
    design_font(d / "gamma.ttf", "Gamma", PROBE_CPS, seed=2)  # another design
    write_font(d / "nanum" / "korean.ttf", "Reserved", {URO: [(100, 100, 500, 700)]})  # a reserved package's dir
    cat = fonts.FontCatalog([d], tmp_path / "cache")
    designs = {x.name: x for x in cat.designs(progress=False)}
    assert len(designs) == 2, designs
    alpha = next(x for x in designs.values() if "Gamma" not in x.name)
    assert sorted(Path(f.path).name for f in alpha.faces) in (["alpha-bold.ttf", "alpha.ttf"],
                                                            ["alpha-bold.ttf", "beta.ttf"])  # fmt: skip
    assert len(alpha.merged) == 1  # the duplicate face is merged, not kept twice
    assert [Path(f.path).name for f in designs["Gamma"].faces] == ["gamma.ttf"]
    assert all("nanum" not in f.path for x in designs.values() for f in x.faces)
    again = fonts.FontCatalog([d], tmp_path / "cache")  # cached discovery: the same designs
    assert [x.to_json() for x in again.designs(progress=False)] == [x.to_json() for x in cat.designs()]


def test_resolve_design_by_name_or_font_file(tmp_path):
    d = tmp_path / "fonts"
    design_font(d / "alpha.ttf", "Alpha", PROBE_CPS, seed=1)
    design_font(d / "gamma.ttf", "Gamma", PROBE_CPS, seed=2)
    designs = fonts.FontCatalog([d], tmp_path / "c").designs(progress=False)
    assert fonts.resolve_design("gamma", designs).name == "Gamma"
    byfile = fonts.resolve_design(str(d / "alpha.ttf"), designs)
    assert [f.path for f in byfile.faces] == [str((d / "alpha.ttf").resolve())]
    with pytest.raises(ValueError, match="no font design named 'Delta'.*Alpha, Gamma"):
        fonts.resolve_design("Delta", designs)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        fonts.resolve_design(str(d / "missing.ttf"), designs)


# ---- the DataModule: class set and splits ------------------------------------------------------------------------


def _fonts(root: Path) -> dict[str, set[int]]:
    """Five designs with overlapping coverage of 40 code points (+ the probes, so designs can be told apart)."""
    rng = np.random.default_rng(0)
    cover = {}
    for i, name in enumerate(["Alpha", "Beta", "Gamma", "Delta", "Omega"]):
        cps = {URO + 100 + j for j in range(40) if rng.random() < 0.8}
        design_font(root / f"{name.lower()}.ttf", name, sorted(cps | set(PROBE_CPS)), seed=10 + i)
        cover[name] = cps | set(PROBE_CPS)
    return cover


def _dm(tmp_path, **kw):
    args = dict(font_dirs=[tmp_path / "fonts"], cache_dir=tmp_path / "cache", test_designs=["Omega"],
                val_designs=["Delta"], min_designs=2, render_workers=0, batch_size=16)  # fmt: skip
    args.update(kw)
    return HanGlyphsDataModule(**args)


def test_class_set_is_drawn_by_every_test_design_and_enough_training_designs(tmp_path):
    cover = _fonts(tmp_path / "fonts")
    dm = _dm(tmp_path, min_designs=3)
    train = ["Alpha", "Beta", "Gamma"]
    want = sorted(c for c in cover["Omega"] if sum(c in cover[t] for t in train) >= 3)  # brute force
    assert dm.class_codepoints() == want
    assert dm.num_classes == len(want)
    assert dm.class_names[0] == class_name(want[0]) == f"{chr(want[0])} U+{want[0]:04X}"
    dm.setup("fit")
    sp = {k: [d.name for d in v] for k, v in dm.splits().items()}
    assert sp == {"train": train, "val": ["Delta"], "test": ["Omega"]}
    # every training glyph of a kept class, labelled by code point order
    assert len(dm.train_set) == sum(len(set(want) & cover[t]) for t in train)
    assert len(dm.test_set) == len(want) and sorted(dm.test_set.labels.tolist()) == list(range(len(want)))
    assert len(dm.val_set) == len(set(want) & cover["Delta"])
    m = dm.manifest()
    files = {f["file"] for rows in m["splits"].values() for r in rows for f in r["faces"]}
    assert {Path(f).name for f in files} == {"alpha.ttf", "beta.ttf", "gamma.ttf", "delta.ttf", "omega.ttf"}
    assert m["classes"] == len(want)


def test_class_sample_codepoints_and_errors(tmp_path):
    cover = _fonts(tmp_path / "fonts")
    full = _dm(tmp_path).class_codepoints()
    a, b = _dm(tmp_path, n_classes=10).class_codepoints(), _dm(tmp_path, n_classes=10).class_codepoints()
    assert a == b and len(a) == 10 and set(a) <= set(full) and a == sorted(a)
    assert _dm(tmp_path, n_classes=10, class_seed=1).class_codepoints() != a
    f = tmp_path / "cps.txt"
    f.write_text(f"# a comment\n{chr(full[0])}\nU+{full[1]:04X}\n", encoding="utf-8")
    assert _dm(tmp_path, codepoints=str(f)).class_codepoints() == full[:2]
    assert read_codepoints([chr(full[2]), f"u+{full[3]:x}", full[4]]) == sorted(full[2:5])
    with pytest.raises(ValueError, match="neither one character nor U\\+XXXX"):
        read_codepoints(["ab"])
    with pytest.raises(ValueError, match="in both test and val"):
        _dm(tmp_path, val_designs=["Omega"]).splits()
    with pytest.raises(ValueError, match="class set has 0"):
        _dm(tmp_path, min_designs=9).class_codepoints()
    with pytest.raises(ValueError, match="data.render"):
        _dm(tmp_path, render="stretch")
    with pytest.raises(ValueError, match="data.augment"):
        _dm(tmp_path, augment=["rotate"])
    with pytest.raises(FileNotFoundError, match="make data-han"):
        HanGlyphsDataModule(font_dirs=[tmp_path / "none"], cache_dir=tmp_path / "c2").class_codepoints()
    assert cover


def test_glyphs_are_cached_per_face_and_reused(tmp_path):
    _fonts(tmp_path / "fonts")
    dm = _dm(tmp_path)
    dm.setup("fit")
    cached = sorted((tmp_path / "cache" / "glyphs").glob("*.npz"))
    assert len(cached) == 5
    stamps = [p.stat().st_mtime_ns for p in cached]
    dm2 = _dm(tmp_path)
    dm2.setup("fit")
    assert [p.stat().st_mtime_ns for p in cached] == stamps  # read back, not rendered again
    assert torch.equal(dm2.train_set.images, dm.train_set.images)


def test_max_faces_keeps_the_lightest_and_heaviest_weights(tmp_path):
    d = tmp_path / "fonts"
    cps = sorted(set(PROBE_CPS) | {URO + 100 + j for j in range(10)})
    for bold in (0, 15, 30, 45):
        design_font(d / f"alpha-{bold}.ttf", "Alpha", cps, seed=1, style=f"W{bold}", bold=bold)
    design_font(d / "omega.ttf", "Omega", cps, seed=2)
    dm = HanGlyphsDataModule(font_dirs=[d], cache_dir=tmp_path / "c", test_designs=["Omega"], val_designs=[],
                             min_designs=1, max_faces=2)  # fmt: skip
    (alpha,) = dm.splits()["train"]
    assert sorted(Path(f.path).name for f in alpha.faces) == ["alpha-0.ttf", "alpha-45.ttf"]


# ---- augmentation -------------------------------------------------------------------------------------------------


def _batch(n=16, size=32):
    g = torch.Generator().manual_seed(0)
    ink = torch.zeros(n, 1, size, size)
    for i in range(n):  # a few strokes per image, away from the border
        r = torch.randint(8, size - 12, (2,), generator=g)
        ink[i, 0, r[0] : r[0] + 4, 6 : size - 6] = 1
        ink[i, 0, 6 : size - 6, r[1] : r[1] + 3] = 1
    return ink


def test_augmentations_do_what_they_say():
    mean, std = 0.2, 0.35
    ink = _batch()
    x = (ink - mean) / std
    back = lambda y: y * std + mean  # noqa: E731
    g = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    blurred = back(augment_glyphs(x, ["blur"], mean, std, generator=g()))
    assert torch.allclose(blurred.sum((1, 2, 3)), ink.sum((1, 2, 3)), rtol=1e-3)  # blur moves ink, keeps it
    assert (blurred > 1e-3).sum() > (ink > 0).sum()
    stroked = back(augment_glyphs(x, ["stroke"], mean, std, generator=g()))
    t = torch.rand(16, generator=g()) * 2 - 1  # the same draws: thicker where t > 0, thinner where t < 0
    d = stroked.sum((1, 2, 3)) - ink.sum((1, 2, 3))
    assert ((d > 0) == (t > 0)).all()
    moved = augment_glyphs(x, ["affine"], mean, std, generator=g())
    corners = back(moved)[:, 0, [0, 0, -1, -1], [0, -1, 0, -1]]
    assert torch.allclose(corners, torch.zeros_like(corners), atol=1e-5)  # the background stays background
    assert not torch.allclose(moved, x)
    same = augment_glyphs(x, ["affine", "stroke", "blur"], mean, std, generator=g())
    assert torch.equal(same, augment_glyphs(x, ["affine", "stroke", "blur"], mean, std, generator=g()))
    assert augment_glyphs(x, [], mean, std).equal(x)


# ---- end to end on real CJK fonts (make install: IPAex Gothic, IPAex Mincho, WenQuanYi Micro Hei) ---------------

GOTHIC = Path("/usr/share/fonts/opentype/ipaexfont-gothic/ipaexg.ttf")
MINCHO = Path("/usr/share/fonts/opentype/ipaexfont-mincho/ipaexm.ttf")
HEI = Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc")
HAS_CJK = GOTHIC.exists() and MINCHO.exists() and HEI.exists()
needs_cjk = pytest.mark.skipif(not HAS_CJK, reason="`make install` installs the CJK test fonts (apt, as root)")
CHARS = "一二三四五六七八九十人大中小山川水火木金土日月上下左右口目耳手足心文字学生先年本天王石竹米糸"


def _cjk_overrides(tmp_path, *extra):
    return [
        "+experiment=han_glyphs",
        f"data.font_dirs=[{GOTHIC},{MINCHO},{HEI}]",
        f"data.cache_dir={tmp_path / 'glyphs'}",
        "data.test_designs=[WenQuanYi Micro Hei]",
        "data.val_designs=[]",
        "data.min_designs=2",
        f"data.codepoints=[{','.join(f'U+{ord(c):04X}' for c in CHARS)}]",  # Hydra's lexer takes no CJK
        "data.batch_size=16",
        "data.val_size=64",
        "trainer.precision=32-true",
        *extra,
    ]


def _nearest_neighbour_accuracy(dm, images: np.ndarray, labels: np.ndarray) -> float:
    """Raw-pixel 1-NN (cosine) against every training glyph: the baseline a model has to beat."""
    tr = dm.train_set.images.reshape(len(dm.train_set), -1).double()
    te = torch.from_numpy(images.reshape(len(images), -1)).double()
    s = torch.nn.functional.normalize(te, dim=1) @ torch.nn.functional.normalize(tr, dim=1).T
    return float((dm.train_set.labels[s.argmax(1)].numpy() == labels).mean())


@needs_cjk
@pytest.mark.slow
def test_recipe_names_held_out_glyphs_through_predict_better_than_nearest_neighbour(tmp_path):
    """Trained by +experiment=han_glyphs on 50 characters in two designs (IPAex Gothic and Mincho), asked through
    `lsc.predict` about PNGs of a held-out design (WenQuanYi Micro Hei), the model names more of them (class_name
    column) than raw-pixel 1-NN against the training glyphs does."""
    from PIL import Image

    from lsc.data.han_glyphs import write_glyph_pngs
    from lsc.train import train

    cfg = make_cfg(tmp_path / "run", *_cjk_overrides(tmp_path, "trainer.max_epochs=30", "logger=csv"), tiny=False)
    train(cfg)
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    pngs = write_glyph_pngs(str(HEI), CHARS, tmp_path / "held_out")
    assert len(pngs) == len(CHARS)
    out = tmp_path / "preds.csv"
    p = subprocess.run([sys.executable, "-m", "lsc.predict", f"ckpt_path={ckpt}", f"input={tmp_path / 'held_out'}",
                        f"out={out}", "k=3", f"hydra.run.dir={tmp_path / 'predict'}"],
                       env=subprocess_env(), capture_output=True, text=True, timeout=300)  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    rows = list(csv.DictReader(open(out, encoding="utf-8")))
    truth = {f"U+{ord(c):04X}": c for c in CHARS}
    named = [r["class_name"].split(" ")[0] == truth[Path(r["path"]).stem] for r in rows]
    assert len(rows) == len(CHARS) and {"class_name", "class_name_2", "class_name_3"} <= set(rows[0])
    dm = HanGlyphsDataModule(font_dirs=[GOTHIC, MINCHO, HEI], cache_dir=tmp_path / "glyphs",
                             test_designs=["WenQuanYi Micro Hei"], val_designs=[], min_designs=2,
                             codepoints=list(CHARS))  # fmt: skip
    dm.setup("fit")
    names = dm.class_names
    images = np.stack([np.asarray(Image.open(pth)) for pth in pngs])
    labels = np.asarray([names.index(class_name(ord(truth[pth.stem]))) for pth in pngs])
    nn = _nearest_neighbour_accuracy(dm, images, labels)
    acc = float(np.mean(named))
    assert acc > nn, f"model {acc:.3f} vs 1-NN {nn:.3f}"


@pytest.mark.slow
def test_eval_scores_a_checkpoint_on_any_font_file_keeping_its_classes(tmp_path):
    """`lsc.eval ckpt_path=... data.test_designs=[<font file>]`: the checkpoint's own classes (its label space, not
    one recomputed from the new fonts), rendered by the project's renderer; classes the font lacks are skipped and
    counted. The font here draws Omega's glyphs (a design the run tested on) for all but 5 of the classes."""
    from lsc.train import train

    cover = _fonts(tmp_path / "fonts")
    data = [f"data.font_dirs=[{tmp_path / 'fonts'}]", f"data.cache_dir={tmp_path / 'cache'}",
            "data.test_designs=[Omega]", "data.val_designs=[Delta]", "data.min_designs=2", "data.batch_size=16",
            "trainer.precision=32-true", "trainer.max_epochs=2", "model.channels_last=false"]  # fmt: skip
    cfg = make_cfg(tmp_path / "run", "+experiment=han_glyphs", *data, tiny=False)
    metrics = train(cfg)
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    dm = HanGlyphsDataModule(font_dirs=[tmp_path / "fonts"], cache_dir=tmp_path / "cache", test_designs=["Omega"],
                             val_designs=["Delta"], min_designs=2)  # fmt: skip
    classes = dm.class_codepoints()
    lacking = classes[:5]
    other = tmp_path / "elsewhere" / "omega-copy.ttf"  # Omega's glyphs, without 5 classes, outside font_dirs
    design_font(other, "Omega Copy", [c for c in sorted(cover["Omega"]) if c not in lacking], seed=10 + 4)
    p = subprocess.run([sys.executable, "-m", "lsc.eval", f"ckpt_path={ckpt}", f"data.test_designs=[{other}]",
                        f"hydra.run.dir={tmp_path / 'eval'}"], env=subprocess_env(), capture_output=True, text=True,
                       timeout=300)  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    assert "classes_skipped=5" in p.stdout
    out = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert out["test/classes_skipped"] == 5 and out[f"test/{other}/glyphs"] == len(classes) - 5
    # the same glyphs as the run's own test design, minus 5 classes: the same predictions on the rest
    assert out["test/acc_topk"] == pytest.approx(
        (metrics["heldout/acc1"] * len(classes) - _hits(ckpt, tmp_path, lacking)) / (len(classes) - 5), abs=1e-6
    )


def _hits(ckpt, tmp_path, cps) -> int:
    """How many of `cps`' Omega glyphs the checkpoint names right."""
    from lsc.predict import Predictor

    pred = Predictor.from_checkpoint(ckpt)
    dm = HanGlyphsDataModule(font_dirs=[tmp_path / "fonts"], cache_dir=tmp_path / "cache", test_designs=["Omega"],
                             val_designs=["Delta"], min_designs=2)  # fmt: skip
    dm.setup("test")
    labels = dm.test_set.labels
    names = dm.class_names
    idx = [i for i in range(len(labels)) if int(names[int(labels[i])].rsplit("U+", 1)[1], 16) in cps]
    x = torch.stack([dm.test_set[i][0] for i in idx])
    got = pred.predict_embeddings(pred.backbone(x).float(), 1)["labels"][:, 0]
    return int((got == labels[idx]).sum())
