"""Tiny TrueType fonts written with fontTools' FontBuilder: glyphs made of rectangles, for tests of the font
catalog, the per-glyph checks and the Han glyph DataModule that need no installed font."""

from __future__ import annotations

import random
from pathlib import Path

from fontTools.fontBuilder import FontBuilder
from fontTools.pens.ttGlyphPen import TTGlyphPen

NOTDEF_RECTS = [(100, 0, 900, 80), (100, 720, 900, 800), (100, 0, 180, 800), (820, 0, 900, 800)]  # a hollow box


def rect_glyph(rects):
    pen = TTGlyphPen(None)
    for x0, y0, x1, y1 in rects:  # clockwise contours (TrueType fills them)
        pen.moveTo((x0, y0))
        pen.lineTo((x0, y1))
        pen.lineTo((x1, y1))
        pen.lineTo((x1, y0))
        pen.closePath()
    return pen.glyph()


def random_rects(rng: random.Random, n: int = 4, bold: int = 0):
    out = []
    for _ in range(n):
        x0, y0 = rng.randrange(50, 700), rng.randrange(-100, 600)
        w, h = rng.randrange(60, 250), rng.randrange(60, 250)
        out.append((x0 - bold, y0 - bold, x0 + w + bold, y0 + h + bold))
    return out


def write_font(path: Path | str, family: str, shapes: dict[int, list | str | None], style: str = "Regular") -> Path:
    """A font mapping each code point to rectangles (a list), to another code point's glyph (`"U+XXXX"`: a shared
    glyph), to an empty glyph (None), or to `".notdef"` (cmap entry pointing at .notdef)."""
    glyphs = {".notdef": rect_glyph(NOTDEF_RECTS), "empty": TTGlyphPen(None).glyph()}
    cmap = {}
    for cp, shape in shapes.items():
        if shape is None:
            cmap[cp] = "empty"
        elif shape == ".notdef":
            cmap[cp] = ".notdef"
        elif isinstance(shape, str):
            cmap[cp] = f"g{int(shape[2:], 16):X}"
        else:
            name = f"g{cp:X}"
            glyphs[name] = rect_glyph(shape)
            cmap[cp] = name
    fb = FontBuilder(1000, isTTF=True)
    order = [".notdef", *sorted(g for g in glyphs if g != ".notdef")]
    fb.setupGlyphOrder(order)
    fb.setupCharacterMap(cmap)
    fb.setupGlyf(glyphs)
    fb.setupHorizontalMetrics({g: (1000, 0) for g in order})
    fb.setupHorizontalHeader(ascent=880, descent=-120)
    fb.setupNameTable({"familyName": family, "styleName": style})
    fb.setupOS2(sTypoAscender=880, sTypoDescender=-120, usWinAscent=880, usWinDescent=120)
    fb.setupPost()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fb.save(str(path))
    return path


def design_font(path, family: str, codepoints, seed: int, style: str = "Regular", bold: int = 0) -> Path:
    """Every code point a few random rectangles drawn from `seed`: two fonts with one seed draw the same glyphs."""
    shapes = {}
    for cp in codepoints:
        rng = random.Random(seed * 1_000_003 + cp)
        shapes[cp] = random_rects(rng, bold=bold)
    return write_font(path, family, shapes, style)
