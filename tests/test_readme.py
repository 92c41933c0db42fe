"""The README's engine example runs as written and its comments state the truth."""

from __future__ import annotations

import itertools
import re
import shlex

import pytest
import torch
from helpers import CONF, HAN_TEST_FONTS, HAS_FMNIST, HAS_HAN_TEST_FONTS, ROOT, compose_cfg, make_cfg, make_image_folder
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import open_dict

import lsc.eval
import lsc.train
from lsc.runconfig import check_resume, load_checkpoint


def test_readme_engine_example_runs():
    torch.manual_seed(12345)  # the example seeds itself; any state before it must not matter
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks, "README has no python example"
    ns: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), ns)  # noqa: S102 - our own README
    s, cc, z, labels = ns["s"], ns["cc"], ns["z"], ns["labels"]
    assert (s.count, round(s.max_cos, 4)) == (1_070_190, 0.75)
    assert s.index(s.vectors(torch.tensor([0, 123456]))).tolist() == [0, 123456]
    assert torch.equal(cc.predict(z, "topk"), cc.predict(z, "cossim"))
    assert torch.equal(cc.predict(z, "topk"), labels)  # small noise around unit centers: all correct here


# ---- every `python -m lsc.train|eval ...` line of the README, in its smallest form ------------------------------

IMAGE_ROOT = "/data/imagenet"  # the README's stand-in for a user's image folder
PREPARED = "/data/imagenet-jpeg256"  # ... for that folder prepared by lsc.prepare (replaced first: same prefix)
RUN_DIR = "logs/train/runs/<run>"  # ... and for one of their run dirs


READMES = [ROOT / "README.md", *sorted((ROOT / "experiments").glob("*/README.md"))]


def bash_lines(path) -> list[str]:
    """The command lines of a markdown file's bash blocks (continued lines joined, comments dropped)."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", path.read_text(), re.S):
        out += [line.split(" #")[0].strip() for line in block.replace("\\\n", " ").splitlines()]
    return [line for line in out if line]


def readme_commands() -> list[tuple[str, list[str]]]:
    """(module, args) of every `python -m lsc.train|eval|predict|prepare ...` line in the bash blocks of the README
    and of every experiment's README."""
    cmds = []
    for path in READMES:
        for line in bash_lines(path):
            if line.startswith(
                ("python -m lsc.train", "python -m lsc.eval", "python -m lsc.predict", "python -m lsc.prepare")
            ):
                words = shlex.split(line)
                if (words[2], words[3:]) not in cmds:
                    cmds.append((words[2], words[3:]))
    return cmds


def expand_jobs(args: list[str]) -> list[list[str]]:
    """The jobs of a (multi)run: CLI sweeps and the sweep config's hydra.sweeper.params, as Hydra's basic sweeper."""
    parser = OverridesParser.create()
    args = [a for a in args if a != "-m"]
    parsed = parser.parse_overrides(args)
    fixed = [a for a, o in zip(args, parsed, strict=True) if not o.is_sweep_override()]
    swept = {o.key_or_group: list(o.sweep_string_iterator()) for o in parsed if o.is_sweep_override()}
    hc = compose_cfg(fixed, return_hydra_config=True).hydra
    params = {k: str(v) for k, v in (hc.sweeper.get("params") or {}).items()}
    for o in parser.parse_overrides([f"{k}={v}" for k, v in params.items()]):
        values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [str(o.value())]
        swept.setdefault(o.key_or_group, values)  # the command line wins over the sweep file
    keys = list(swept)
    return [fixed + [f"{k}={v}" for k, v in zip(keys, c, strict=True)] for c in itertools.product(*swept.values())]


GROUPS = {str(p.relative_to(CONF)) for p in CONF.rglob("*") if p.is_dir()}


@pytest.fixture(scope="module")
def user_files(tmp_path_factory):
    """A small image folder (for data.root), it prepared as JPEG chunks, and a digits checkpoint (for ckpt_path)."""
    from lsc.prepare import prepare

    tmp = tmp_path_factory.mktemp("readme")
    make_image_folder(tmp / "images", n_classes=3, per_class=4, size=16)
    prepare(compose_cfg([f"out={tmp / 'prepared'}", "data=imagefolder", f"data.root={tmp / 'images'}", "size=16",
                         "num_workers=1"], config_name="prepare"))  # fmt: skip
    run = tmp / "run"
    lsc.train.train(make_cfg(run, "data=digits", "trainer.max_epochs=1"))
    return {PREPARED: str(tmp / "prepared"), IMAGE_ROOT: str(tmp / "images"), RUN_DIR: str(run)}


def test_readme_has_the_commands():
    cmds = readme_commands()
    assert ("lsc.train", []) in cmds and any(m == "lsc.eval" for m, _ in cmds)
    assert any("+sweep=ndim_nclasses" in a for _, a in cmds) and any(a[:1] and "ckpt_path" in a[0] for _, a in cmds)


@pytest.mark.parametrize(("module", "args"), readme_commands(), ids=lambda a: a if isinstance(a, str) else " ".join(a))
def test_readme_command_builds(module, args, user_files, tmp_path):
    """Every job of the command composed and its data, centers and model built (what fails first in a real run: a
    bad override, n_dim below n_min, an unknown option); resume lines rebuild the stored run; eval lines run."""
    for placeholder, path in user_files.items():  # dict order: PREPARED before IMAGE_ROOT, its prefix
        args = [a.replace(placeholder, path) for a in args]
    if module == "lsc.prepare":  # composed; run when its source is the small folder (the others read real data)
        from lsc.prepare import prepare

        args = [a if not a.startswith("out=") else f"out={tmp_path / 'out'}" for a in args]
        cfg = compose_cfg([*args, "num_workers=1"], config_name="prepare")
        if cfg.data.get("root") == user_files[IMAGE_ROOT]:
            with open_dict(cfg):
                cfg.size = min(int(cfg.size or 16), 16)
            m = prepare(cfg)
            assert m["splits"]["train"]["count"] == 12, m
        return
    if module == "lsc.predict":
        from lsc.predict import Predictor, data_items, list_inputs, predict_to_csv
        from lsc.runconfig import CONFIG_KEY

        kw = dict(a.split("=", 1) for a in args)
        pred = Predictor.from_checkpoint(kw["ckpt_path"])
        ckpt = load_checkpoint(kw["ckpt_path"])
        items, targets = (
            data_items(ckpt[CONFIG_KEY], "test") if kw["input"] == "data" else (list_inputs(kw["input"]), None)
        )
        n = predict_to_csv(pred, items[:50], tmp_path / "p.csv", int(kw.get("k", 5)), 32, targets, progress=False)
        assert n == min(50, len(items))
        return
    if module == "lsc.eval":
        cfg = make_cfg(tmp_path, *args, tiny=False, config_name="eval")
        metrics = lsc.eval.evaluate(cfg, cfg.ckpt_path, args, GROUPS)
        # split=val (or data without a test split, e.g. digits) scores the run's validation split
        stage = "test" if any(k.startswith("test/") for k in metrics) else "val"
        assert 0 <= metrics[f"{stage}/acc_topk"] <= 1
        assert stage == "val" or cfg.get("split") != "val"
        return
    jobs = expand_jobs(args)
    for i, job in enumerate(jobs):
        cfg = make_cfg(tmp_path / str(i), *job, tiny=False)
        if cfg.get("ckpt_path"):
            cfg = lsc.train.resume_config(cfg, job, GROUPS)
            check_resume(load_checkpoint(cfg.ckpt_path), cfg, cfg.ckpt_path)
        lsc.train.check_run(cfg)
        if "fashion" in str(cfg.data._target_).lower() and not HAS_FMNIST:
            continue
        if "HanGlyphs" in str(cfg.data._target_):  # the three small CJK fonts `make install` installs, 4 characters
            if not HAS_HAN_TEST_FONTS:
                continue
            with open_dict(cfg):
                cfg.data.update(font_dirs=list(HAN_TEST_FONTS), test_designs=["WenQuanYi Micro Hei"], val_designs=[],
                                min_designs=2, codepoints=["U+4E00", "U+4E8C", "U+4E09", "U+5927"], n_classes=None,
                                cache_dir=str(tmp_path / "glyphs"))  # fmt: skip
        elif cfg.centers.get("assign") == "data" and cfg.data.get("limit") is None:
            # the data-aware assignment of every Fashion-MNIST image as a class takes minutes on this CPU: build on
            # 2,000 of them (the rule itself is tested against brute force in test_assignment)
            with open_dict(cfg):
                cfg.data.limit = 2000
        dm, _, centers = lsc.train.build(cfg)
        assert dm.num_classes >= 2 and (centers is None or centers.n_classes == dm.num_classes)


# ---- the experiments' READMEs: linked, written from their results, their scripts exist -------------------------


def experiment_readme_text(exp_dir):
    """The README.md an experiment's code writes now (its template with its committed tables filled in)."""
    import importlib
    import importlib.util

    from lsc.study.report import fill_results

    if (exp_dir / "run.py").is_file():
        spec = importlib.util.spec_from_file_location(f"exp_{exp_dir.name}", exp_dir / "run.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    else:
        mod = importlib.import_module(f"lsc.bench.{exp_dir.name.removeprefix('bench_')}")
    return fill_results(mod.README.strip() + "\n", exp_dir)


EXPERIMENTS = sorted(p.parent.name for p in (ROOT / "experiments").glob("*/results"))


def test_every_experiment_has_a_readme_linked_from_the_top():
    top = (ROOT / "README.md").read_text()
    for name in EXPERIMENTS:
        assert (ROOT / "experiments" / name / "README.md").is_file(), name
        assert f"(experiments/{name}/README.md)" in top, f"README.md does not link experiments/{name}/README.md"
    assert "<!-- RESULT" not in top  # results tables live with their experiments
    assert len(top) < 84_000 / 3, f"README.md is {len(top):,} characters; keep it to what a newcomer needs"


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_readme_is_what_its_code_writes(name):
    exp_dir = ROOT / "experiments" / name
    got = (exp_dir / "README.md").read_text()
    assert got == experiment_readme_text(exp_dir), f"run `python experiments/update_readme.py` ({name})"
    assert "(missing:" not in got
    for link in re.findall(r"\]\(([^)#]+)\)", got):  # relative links resolve
        if not link.startswith(("http://", "https://")):
            assert (exp_dir / link).exists(), f"{name}/README.md links {link}, which does not exist"


def test_experiment_readme_scripts_exist():
    for path in READMES:
        for line in bash_lines(path):
            words = shlex.split(line)
            if words[:1] == ["python"] and words[1:2] and words[1].endswith(".py"):
                script = ROOT / words[1]
                assert script.is_file(), f"{path.name}: {line}"
                src = script.read_text()
                for flag in (w.split("=")[0] for w in words[2:] if w.startswith("--")):
                    assert f'"{flag}"' in src, f"{path.relative_to(ROOT)}: {script.name} has no {flag}"
            elif words[:2] == ["python", "-m"] and words[2].startswith("lsc.bench."):
                mod = ROOT / (words[2].replace(".", "/") + ".py")
                assert mod.is_file(), f"{path.name}: {line}"
                for flag in (w.split("=")[0] for w in words[3:] if w.startswith("--")):
                    assert f'"{flag}"' in mod.read_text(), f"{path.relative_to(ROOT)}: {words[2]} has no {flag}"
