"""The package's imports run one way (issue 22): the composition root (`lsc.train`, the CLIs) builds on the
models, data and centers, never the reverse; the kernels' backends hang off one dispatch module."""

from __future__ import annotations

import ast
from pathlib import Path

from helpers import ROOT

PKG = ROOT / "lsc"
ROOTS = {"lsc.train", "lsc.eval", "lsc.predict", "lsc.prepare"}  # composition roots: nothing below imports them


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth (function-level imports count: they are still dependencies)."""
    name, out = module_name(path), set()
    pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = pkg
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            mod = (base + ("." + node.module if node.module else "")) if node.level else node.module
            out.add(mod)
            out |= {f"{mod}.{a.name}" for a in node.names}
    return {m for m in out if m and m.startswith("lsc")}


def test_nothing_below_the_composition_roots_imports_them():
    below = [p for sub in ("centers", "data", "models", "losses.py", "callbacks") for p in
             ((PKG / sub).rglob("*.py") if (PKG / sub).is_dir() else [PKG / sub])]  # fmt: skip
    bad = {module_name(p): sorted(imports(p) & ROOTS) for p in below if imports(p) & ROOTS}
    assert not bad, f"modules below lsc.train import a composition root: {bad}"


def test_kernel_backends_do_not_import_their_dispatcher():
    for backend in ("_triton.py", "_partition_numba.py"):
        assert "lsc.centers._kernels" not in imports(PKG / "centers" / backend), backend


def test_experiment_plumbing_has_its_own_home():
    # lsc.bench holds benchmarks (each a CLI, plus the FAISS baseline they share); lsc.study the experiments' plumbing
    for path in (PKG / "bench").glob("*.py"):
        if path.name not in ("__init__.py", "faiss_search.py"):
            assert '__name__ == "__main__"' in path.read_text(), f"{path.name} in lsc/bench is not a benchmark CLI"
    for path in (PKG / "study").glob("*.py"):
        assert not {m for m in imports(path) if m.startswith("lsc.bench")}, f"lsc.study.{path.stem} imports lsc.bench"


def test_the_prototype_pass_lives_with_the_assignment_it_feeds():
    assert (PKG / "centers" / "prototypes.py").is_file() and not (PKG / "data" / "prototypes.py").exists()
    assert "lsc.train" not in imports(PKG / "centers" / "prototypes.py")
