"""Fonts as image data: faces, designs, per-glyph checks and a cached glyph renderer (printed Han characters).

A *face* is one font in a file (a .ttc holds several); a *design* is what a held-out test must keep apart: the
weights of one typeface are one design, and faces that draw the same glyphs under other names (Takao = IPA, Droid
Sans Fallback = WenQuanYi Micro Hei, Noto Sans CJK JP = SC = KR for most ideographs) are merged, checked by
rendering, never by name alone:
  - faces whose normalized family names agree (weights, regional variants and `P`/`Mono` spacings stripped) are
    one design;
  - two faces whose probe glyphs (common ideographs, rendered) correlate at >= `SAME_DESIGN` (median over the
    shared probes) are one design; at >= `DUPLICATE` they are the same glyphs and only one face is kept.
Every glyph is checked on its own before it becomes an image: a code point the cmap sends to .notdef, an empty
(inkless) rendering, a rendering equal to the face's .notdef box, and a bitmap shared by more than
`PLACEHOLDER_MAX` code points of the face (placeholders) are dropped and counted per face in the manifest.

Rendering (`render`): `em` keeps the font's em box (the glyph where the font puts it, at 1 em = the image size),
`center` keeps the em scale but centres the ink, `fit` scales the ink's bounding box to the image (aspect kept;
small glyphs grow, so a few ideographs become identical: 口 and 囗). Images are uint8, ink 255 on 0.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger("lsc.data")

# Unicode blocks of CJK ideographs (`data.blocks`)
BLOCKS = {
    "uro": (0x4E00, 0x9FFF),  # CJK Unified Ideographs (URO + its later additions)
    "ext_a": (0x3400, 0x4DBF),
    "ext_b": (0x20000, 0x2A6DF),
    "compat": (0xF900, 0xFAFF),
}
FONT_SUFFIXES = (".ttf", ".otf", ".ttc", ".otc")
# Korean font packages reserved for an independent check: never a training, validation or test design here
RESERVED_DIRS = ("alee", "baekmuk", "lexi", "nanum", "naver-d2coding", "unfonts-core", "unfonts-extra")
RENDER_MODES = ("em", "center", "fit")
RENDERER_VERSION = 1  # bump when rendering changes: cached glyphs are keyed by it

SAME_DESIGN = 0.9  # median probe correlation at or above which two faces are one design
DUPLICATE = 0.97  # ... at or above which they draw the same glyphs (one face kept)
PLACEHOLDER_MAX = 3  # a bitmap shared by more code points than this is a placeholder
MIN_INK = 3.0  # total ink (in fully inked pixels at 32 px) below which a glyph is empty
# common ideographs drawn alike in Chinese, Japanese and Korean usage: the probes that compare faces
PROBES = (
    "一人大中山水火木金土日月上下左右口田力子女手目耳心文字学生先年本天王石竹米糸虫貝車雨青音食馬魚鳥"
    "東西南北花草林森村町川空気雪電門開間聞話語読書自分名前後午今週毎何白赤黒長高安"
)

WEIGHT_WORDS = {
    "thin", "hairline", "extralight", "ultralight", "light", "demilight", "semilight", "regular", "book", "normal",
    "medium", "semibold", "demibold", "bold", "extrabold", "ultrabold", "black", "heavy", "oblique", "italic",
    "roman", "plain",
}  # fmt: skip
REGION_WORDS = {"jp", "kr", "sc", "tc", "hk", "cn", "tw", "mbe", "k", "j", "c", "t"}


@dataclass(frozen=True)
class Face:
    """One face of a font file: where it is and what its name table says."""

    path: str
    index: int
    family: str
    style: str
    version: str

    @property
    def key(self) -> str:
        return f"{self.path}#{self.index}"

    @property
    def name(self) -> str:
        return f"{self.family} {self.style}".strip()


def family_key(family: str) -> str:
    """Lower-case family name without weights, W-numbers, regional variants and spacing variants: the weights of
    one typeface share it ("Noto Sans CJK JP" / "... SC" -> "noto sans cjk"; "IPAPGothic" -> "ipagothic")."""
    s = re.sub(r"([a-z])([A-Z])", r"\1 \2", family).lower()
    words = [w for w in re.split(r"[\s_\-]+", s) if w]
    drop = WEIGHT_WORDS | REGION_WORDS
    keep = words[:1] + [w for w in words[1:] if w not in drop and not re.fullmatch(r"w\d", w)]
    # supplementary files of one family: "TW-Kai-Ext-B", "TW-Kai-Plus", "HanaMinA"/"HanaMinB", "SetoFont-ex"
    keep = keep[:1] + [w for w in keep[1:] if w not in ("ext", "ex", "plus")]
    while len(keep) > 1 and len(keep[-1]) == 1 and keep[-1].isalpha():
        keep.pop()
    key = " ".join(keep) or s
    return re.sub(r"\b(p|mono)\b", "", key).replace("  ", " ").strip()


def font_files(dirs, exclude=RESERVED_DIRS) -> list[str]:
    """Font files under `dirs` (real paths, each once, sorted); a path with a component in `exclude` is skipped."""
    out = set()
    ex = set(exclude or ())
    for d in dirs:
        d = Path(d)
        if d.is_file():
            out.add(os.path.realpath(d))
            continue
        for p in d.rglob("*"):
            if p.suffix.lower() in FONT_SUFFIXES and not ex.intersection(p.parts):
                real = os.path.realpath(p)
                if not ex.intersection(Path(real).parts):
                    out.add(real)
    return sorted(out)


def _tt(path: str, index: int):
    from fontTools.ttLib import TTFont

    return (
        TTFont(path, fontNumber=index, lazy=True)
        if path.lower().endswith((".ttc", ".otc"))
        else TTFont(path, lazy=True)
    )


def file_faces(path: str) -> list[Face]:
    """Every face of a font file, with its family, style and version from the name table."""
    from fontTools.ttLib import TTCollection

    n = len(TTCollection(path, lazy=True).fonts) if path.lower().endswith((".ttc", ".otc")) else 1
    faces = []
    for i in range(n):
        name = _tt(path, i)["name"]
        family = name.getDebugName(16) or name.getDebugName(1) or Path(path).stem
        style = name.getDebugName(17) or name.getDebugName(2) or ""
        faces.append(Face(path, i, family, style, name.getDebugName(5) or ""))
    return faces


def cmap_codepoints(face: Face, blocks) -> np.ndarray:
    """Code points of `blocks` that the face's cmap maps to a glyph other than .notdef (int64, sorted)."""
    cmap = _tt(face.path, face.index).getBestCmap() or {}
    lo_hi = [BLOCKS[b] if isinstance(b, str) else b for b in blocks]
    cps = [c for c, g in cmap.items() if g != ".notdef" and any(lo <= c <= hi for lo, hi in lo_hi)]
    return np.asarray(sorted(cps), dtype=np.int64)


def file_id(path: str) -> str:
    st = os.stat(path)
    return f"{path}:{st.st_size}:{int(st.st_mtime)}"


# ---- rendering ---------------------------------------------------------------------------------------------------


class Renderer:
    """Renders single characters of one face to size x size uint8 images (ink 255 on 0)."""

    def __init__(self, face: Face, size: int = 32, mode: str = "center"):
        from PIL import ImageFont

        if mode not in RENDER_MODES:
            raise ValueError(f"glyph rendering must be one of {', '.join(RENDER_MODES)}, got {mode!r}")
        if isinstance(size, bool) or not isinstance(size, int) or size < 8:
            raise ValueError(f"glyph image size must be an integer >= 8, got {size!r}")
        self.face, self.size, self.mode = face, size, mode
        big = 2 * size if mode == "fit" else size  # fit: draw at 2x, then scale the ink box down (antialiased)
        self.font = ImageFont.truetype(face.path, size=big, index=face.index, layout_engine=ImageFont.Layout.BASIC)
        self.canvas = 2 * big  # room for glyphs that overflow their em box

    def _draw(self, ch: str) -> np.ndarray:
        from PIL import Image, ImageDraw

        im = Image.new("L", (self.canvas, self.canvas), 0)
        ImageDraw.Draw(im).text((self.canvas / 2, self.canvas / 2), ch, font=self.font, fill=255, anchor="mm")
        return np.asarray(im)

    def __call__(self, ch: str) -> np.ndarray:
        """The glyph's image; OSError when FreeType cannot draw it (broken hinting code in some fonts)."""
        from PIL import Image

        a, s = self._draw(ch), self.size
        if self.mode == "em":  # the em box around the canvas centre (anchor mm: advance and ascender/descender)
            o = (self.canvas - s) // 2
            return np.ascontiguousarray(a[o : o + s, o : o + s])
        rows, cols = np.flatnonzero(a.any(1)), np.flatnonzero(a.any(0))
        out = np.zeros((s, s), np.uint8)
        if not len(rows):
            return out
        ink = a[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        h, w = ink.shape
        if self.mode == "fit":
            inner = s - 2 * max(1, s // 32)  # a pixel of margin at 32 px
            k = inner / max(h, w)
            h, w = max(1, round(h * k)), max(1, round(w * k))
            ink = np.asarray(Image.fromarray(ink).resize((w, h), Image.Resampling.LANCZOS))
        elif h > s or w > s:  # center: the em scale is kept; a glyph larger than the image is cropped around its middle
            y0, x0 = max(0, (h - s) // 2), max(0, (w - s) // 2)
            ink = ink[y0 : y0 + s, x0 : x0 + s]
            h, w = ink.shape
        y, x = (s - h) // 2, (s - w) // 2
        out[y : y + h, x : x + w] = ink
        return out


def _try(r: Renderer, ch: str) -> np.ndarray | None:
    try:
        return r(ch)
    except OSError:
        return None


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    a, b = a - a.mean(), b - b.mean()
    d = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / d) if d > 0 else 0.0


@dataclass
class GlyphSet:
    """The checked glyphs of one face: code points [n] and images [n, size, size], and what was dropped."""

    codepoints: np.ndarray
    images: np.ndarray
    dropped: dict


def render_face(face: Face, codepoints, size: int = 32, mode: str = "center") -> GlyphSet:
    """Render and check every code point (the cmap's, see `cmap_codepoints`): empty, .notdef-like and placeholder
    glyphs are dropped and counted."""
    r = Renderer(face, size, mode)
    nd = _try(r, chr(0x10FFFD))
    nd = np.zeros((size, size), np.uint8) if nd is None else nd
    nd_ink = nd.sum() / 255.0
    min_ink = MIN_INK * (size / 32) ** 2
    imgs, keep, dropped = [], [], Counter()
    for c in codepoints:
        a = _try(r, chr(int(c)))
        if a is None:
            dropped["render_error"] += 1
            continue
        ink = a.sum() / 255.0
        if ink < min_ink:
            dropped["empty"] += 1
            continue
        if nd_ink >= min_ink and _corr(a, nd) > 0.95:
            dropped["notdef_like"] += 1
            continue
        imgs.append(a)
        keep.append(int(c))
    images = np.stack(imgs) if imgs else np.zeros((0, size, size), np.uint8)
    cps = np.asarray(keep, dtype=np.int64)
    if len(cps):  # placeholders: one bitmap drawn for many code points
        digests = [hashlib.blake2b(im.tobytes(), digest_size=8).digest() for im in images]
        counts = Counter(digests)
        ok = np.asarray([counts[d] <= PLACEHOLDER_MAX for d in digests])
        dropped["placeholder"] += int((~ok).sum())
        cps, images = cps[ok], images[ok]
    return GlyphSet(cps, np.ascontiguousarray(images), dict(dropped))


# ---- designs -----------------------------------------------------------------------------------------------------


def probe_images(face: Face, size: int = 32) -> dict[str, np.ndarray]:
    """The face's renderings of the probe ideographs it draws (fit mode: comparable across em layouts)."""
    cps = set(cmap_codepoints(face, [(0x3400, 0x9FFF)]).tolist())
    r = Renderer(face, size, "fit")
    out = {}
    for ch in PROBES:
        if ord(ch) in cps:
            a = _try(r, ch)
            if a is not None and a.sum() / 255.0 >= MIN_INK:
                out[ch] = a
    return out


def probe_similarity(a: dict, b: dict, min_shared: int = 12) -> float | None:
    """Median correlation of two faces' shared probe glyphs (None: fewer than `min_shared` shared)."""
    shared = sorted(set(a) & set(b))
    if len(shared) < min_shared:
        return None
    return float(np.median([_corr(a[ch], b[ch]) for ch in shared]))


@dataclass
class Design:
    """A typeface: its faces (the weights kept after merging duplicates) and its name."""

    name: str
    faces: list[Face]
    merged: list[str]  # names of the faces dropped as duplicates of a kept one, or merged into this design

    def to_json(self) -> dict:
        return {"name": self.name, "faces": [asdict(f) for f in self.faces], "merged": self.merged}

    @classmethod
    def from_json(cls, d: dict) -> Design:
        return cls(d["name"], [Face(**f) for f in d["faces"]], d["merged"])


def group_designs(faces: list[Face], probes: dict[str, dict], coverage: dict[str, int]) -> list[Design]:
    """Designs from faces: union of same family key and probe similarity >= SAME_DESIGN; within a design, faces
    whose probes are >= DUPLICATE alike keep one (the one drawing the most ideographs, then the shortest name)."""
    keys = [f.key for f in faces]
    parent = {k: k for k in keys}

    def find(k):
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    def union(a, b):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    by_family: dict[str, str] = {}
    for f in faces:
        fk = family_key(f.family)
        if fk in by_family:
            union(f.key, by_family[fk])
        else:
            by_family[fk] = f.key
    sims: dict[tuple[str, str], float] = {}
    for i, a in enumerate(faces):
        for b in faces[i + 1 :]:
            s = probe_similarity(probes[a.key], probes[b.key])
            if s is None:
                continue
            sims[(a.key, b.key)] = sims[(b.key, a.key)] = s
            if s >= SAME_DESIGN:
                union(a.key, b.key)
    groups: dict[str, list[Face]] = {}
    for f in faces:
        groups.setdefault(find(f.key), []).append(f)
    designs = []
    for members in groups.values():
        order = sorted(members, key=lambda f: (-coverage.get(f.key, 0), len(f.name), f.key))
        kept, merged = [], []
        for f in order:
            if any(sims.get((f.key, k.key), 0.0) >= DUPLICATE for k in kept):
                merged.append(f.name)
            else:
                kept.append(f)
        name = order[0].family
        designs.append(Design(name, sorted(kept, key=lambda f: f.key), sorted(merged)))
    designs.sort(key=lambda d: d.name)
    names = Counter(d.name for d in designs)
    for d in designs:  # distinct names: a family split across designs by rendering gets its first face's style
        if names[d.name] > 1:
            d.name = f"{d.name} ({d.faces[0].style or Path(d.faces[0].path).stem})"
    return designs


# ---- the catalog: every design of some font folders, checked and rendered once, cached -----------------------


def _atomic_save(path: Path, **arrays) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def _atomic_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1, ensure_ascii=False))
    os.replace(tmp, path)


class FontCatalog:
    """The designs of the fonts under `dirs`, and their checked glyph images, cached under `cache_dir`.

    Discovery (faces, coverage, probes, design grouping) is cached in `designs-<hash>.json`, keyed by every font
    file's path, size and mtime; each kept face's glyphs at (size, mode, blocks) in `glyphs/<hash>.npz`, written
    atomically, so an interrupted rendering resumes face by face. `manifest()` names every file, face, version,
    design and what was dropped.
    """

    def __init__(self, dirs, cache_dir, blocks=("uro",), exclude=RESERVED_DIRS):
        self.dirs = [str(d) for d in dirs]
        self.cache_dir = Path(cache_dir)
        self.blocks = tuple(blocks)
        for b in self.blocks:
            if b not in BLOCKS:
                raise ValueError(f"unknown block {b!r}; choose from {', '.join(BLOCKS)}")
        self.exclude = tuple(exclude or ())
        self._designs = None

    def _discovery_key(self, files) -> str:
        h = hashlib.sha1(f"{RENDERER_VERSION}|{self.blocks}|{SAME_DESIGN}|{DUPLICATE}".encode())
        for f in files:
            h.update(file_id(f).encode())
        return h.hexdigest()[:12]

    def designs(self, progress: bool = True) -> list[Design]:
        if self._designs is not None:
            return self._designs
        files = font_files(self.dirs, self.exclude)
        if not files:
            raise FileNotFoundError(
                f"no font files (.ttf/.otf/.ttc) under {', '.join(self.dirs)}; install the CJK fonts with "
                "`make data-han` (Debian packages, as root) or set data.font_dirs"
            )
        path = self.cache_dir / f"designs-{self._discovery_key(files)}.json"
        if path.exists():
            d = json.loads(path.read_text())
            self._designs = [Design.from_json(x) for x in d["designs"]]
            self.coverage = d["coverage"]
            return self._designs
        from tqdm import tqdm

        faces, coverage, probes = [], {}, {}
        for f in tqdm(files, desc="fonts", unit="file", disable=None if progress else True):
            try:
                fs = file_faces(f)
            except Exception as e:  # a broken font file is skipped, and said so
                log.warning(f"skipped font file {f}: {type(e).__name__}: {e}")
                continue
            for face in fs:
                n = len(cmap_codepoints(face, self.blocks))
                if n == 0:
                    continue
                try:
                    probes[face.key] = probe_images(face)
                except OSError as e:  # e.g. a bitmap-only font: no outlines to draw at any size
                    log.warning(f"skipped font face {face.name} ({face.key}): FreeType: {e}")
                    continue
                faces.append(face)
                coverage[face.key] = n
        designs = group_designs(faces, probes, coverage)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        _atomic_json(path, {"designs": [d.to_json() for d in designs], "coverage": coverage})
        self._designs, self.coverage = designs, coverage
        return designs

    def glyph_path(self, face: Face, size: int, mode: str) -> Path:
        key = f"{RENDERER_VERSION}|{file_id(face.path)}|{face.index}|{size}|{mode}|{self.blocks}|{PLACEHOLDER_MAX}"
        return self.cache_dir / "glyphs" / f"{hashlib.sha1(key.encode()).hexdigest()[:16]}.npz"

    def glyphs(self, face: Face, size: int, mode: str) -> GlyphSet:
        """The face's checked glyphs at (size, mode): from the cache, or rendered and cached."""
        p = self.glyph_path(face, size, mode)
        if p.exists():
            z = np.load(p, allow_pickle=False)
            return GlyphSet(z["codepoints"], z["images"], json.loads(str(z["dropped"])))
        g = render_face(face, cmap_codepoints(face, self.blocks), size, mode)
        p.parent.mkdir(parents=True, exist_ok=True)
        _atomic_save(p, codepoints=g.codepoints, images=g.images, dropped=np.asarray(json.dumps(g.dropped)))
        return g


def is_font_path(spec: str) -> bool:
    return os.sep in spec or spec.lower().endswith(FONT_SUFFIXES)


def resolve_design(spec: str, designs: list[Design]) -> Design:
    """A design by name (exact, else case-insensitive, else a unique case-insensitive substring), or a font file
    path (a design of its own: every face of that file)."""
    if is_font_path(spec):
        p = Path(spec).expanduser()
        if not p.is_file():
            raise FileNotFoundError(f"font file {spec} does not exist")
        real = os.path.realpath(p)
        return Design(spec, file_faces(real), [])
    for d in designs:
        if d.name == spec:
            return d
    low = [d for d in designs if d.name.lower() == spec.lower()]
    if len(low) == 1:
        return low[0]
    sub = [d for d in designs if spec.lower() in d.name.lower()]
    if len(sub) == 1:
        return sub[0]
    names = ", ".join(d.name for d in designs)
    if not sub:
        raise ValueError(f"no font design named {spec!r}; the designs found are: {names}")
    raise ValueError(f"{spec!r} names several designs ({', '.join(d.name for d in sub)}); use the full name")
