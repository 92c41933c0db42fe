"""Data-aware class -> vector assignment: the rule against a brute-force implementation of the same rule, the
bijection, prediction through it (topk == cossim, center of c -> c, unlabeled vectors), the spec/digest, and the
training app's `centers.assign=data` (checkpoint round trip, resume, eval)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import make_cfg

import lsc.centers.assignment as assignment
import lsc.eval
import lsc.train
from lsc.centers import ClassCenters, _kernels, make_system
from lsc.centers.assignment import Assignment, assign_bounded, assign_nearest_free, brute_force_assignment
from lsc.centers.prototypes import class_prototypes
from lsc.data import SyntheticDataModule

SYSTEMS = [("v22", 8), ("v21", 7), ("v11", 9), ("v31", 7), ("a_n", 6), ("a_n_interp", 5), ("v22p", 7), ("v21p", 6)]


@pytest.mark.parametrize(("name", "n"), SYSTEMS)
@pytest.mark.parametrize("fill", [0.3, 1.0])
def test_rule_matches_brute_force(name, n, fill):
    s = make_system(name, n)
    C = max(2, int(fill * s.count))
    g = torch.Generator().manual_seed(hash((name, n, fill)) % 2**31)
    p = torch.randn(C, n, generator=g, dtype=torch.float64)
    want = brute_force_assignment(s.vectors(torch.arange(s.count)), p)
    # walk only; scan the free vectors as soon as the nearest is taken; the default budget (both, when full)
    for budget in (None, 0, 4):
        got, stats = assign_nearest_free(s, p, walk_budget=budget)
        assert torch.equal(got, want), budget
        if budget is None:
            assert stats["scans"] == 0
        if budget == 0:  # every walk ends at its first level without a free vector
            assert stats["scans"] <= stats["walks"]
    assert got.unique().numel() == C  # a bijection onto distinct vectors
    if fill == 1.0:
        assert stats["walks"] > 0 and stats["scans"] > 0  # a full system forces walks past taken vectors, and scans


@pytest.mark.parametrize(("name", "n"), SYSTEMS)
def test_compiled_walk_gives_the_reference_table(name, n, tmp_path):
    """The numba walk against this module's Python walk: spread, clustered and integer (tie-heavy) prototypes, a
    nearly full system, walk-only and budgets that force the scan fallback; pops equal too (the same best-first
    order). A float32 np.memmap of the prototypes gives the same table as the tensor."""
    s = make_system(name, n)
    g = torch.Generator().manual_seed(7)
    C = int(0.9 * s.count)
    spread = torch.randn(C, n, generator=g, dtype=torch.float64)
    clustered = torch.randn(3, n, generator=g, dtype=torch.float64)[torch.randint(0, 3, (C,), generator=g)]
    clustered += 0.05 * torch.randn(C, n, generator=g, dtype=torch.float64)
    ints = torch.randint(-2, 3, (C, n), generator=g).double()
    ints[ints.abs().sum(1) == 0, 0] = 1
    for p in (spread, clustered, ints):
        for budget in (None, 3, 0):
            want, ref = assign_nearest_free(s, p, walk_budget=budget, compiled=False)
            got, st = assign_nearest_free(s, p, walk_budget=budget, compiled=True, progress=False)
            assert torch.equal(got, want), budget
            assert (st["walks"], st["scans"]) == (ref["walks"], ref["scans"]) and (budget or st["pops"] == ref["pops"])
    mm = np.lib.format.open_memmap(tmp_path / "p.npy", mode="w+", dtype=np.float32, shape=(C, n))
    mm[:] = spread.float().numpy()
    mm.flush()
    from_file = np.load(tmp_path / "p.npy", mmap_mode="r")
    got, _ = assign_nearest_free(s, from_file, compiled=True, progress=False)
    assert torch.equal(got, assign_nearest_free(s, spread.float(), compiled=False)[0])


@pytest.mark.parametrize(("name", "n"), [("v22", 8), ("v21", 7), ("a_n", 6)])
@pytest.mark.parametrize("bounded", [False, True])
def test_float16_memmap_gives_the_table_of_its_values(name, n, bounded, tmp_path):
    """float16 prototypes from a file (numba has no float16: the walk decodes their bits) give the table of the same
    values in float64, for both rules; a copy-on-write memmap's edits are what gets assigned (the pages the
    assignment unmaps after reading are a shared mapping's only)."""
    s = make_system(name, n)
    g = torch.Generator().manual_seed(3)
    C = int(0.9 * s.count)
    p = torch.randn(4, n, generator=g)[torch.randint(0, 4, (C,), generator=g)] + 0.1 * torch.randn(C, n, generator=g)
    mm = np.lib.format.open_memmap(tmp_path / "p.npy", mode="w+", dtype=np.float16, shape=(C, n))
    mm[:] = p.numpy().astype(np.float16)
    mm.flush()
    exact = torch.from_numpy(np.asarray(mm).astype(np.float64))

    def run(x):
        return assign_bounded(s, x, 2, progress=False)[0] if bounded else assign_nearest_free(s, x, progress=False)[0]

    want = run(exact)
    assert torch.equal(run(np.load(tmp_path / "p.npy", mmap_mode="r")), want)
    assert not bounded or torch.equal(want, brute_force_bounded(s, exact, 2))
    cow = np.load(tmp_path / "p.npy", mmap_mode="c")
    cow[: C // 2] = cow[C // 2 : 2 * (C // 2)]  # edits in this process only
    assert torch.equal(run(cow), run(torch.from_numpy(np.asarray(cow).astype(np.float64))))


@pytest.mark.parametrize("rule", ["ordered", "ordered-scan", "bounded"])
def test_spilled_memmap_gives_the_in_memory_table(rule, tmp_path, monkeypatch):
    """A prototype file larger than SPILL_BYTES is copied in the rule's order, in buckets, before the walks: the
    same table (and walks, pops, scans, deferred) as the prototypes in memory, with buckets of a few rows so that
    walks, scans and deferrals cross bucket boundaries; the bucket files are gone afterwards."""
    monkeypatch.setattr(assignment, "SPILL_BYTES", 0)
    monkeypatch.setattr(assignment, "SPILL_BUCKET_BYTES", 8 * 7 * 97)  # 97 float64 rows of V_8^22 per bucket
    s = make_system("v22", 8)
    g = torch.Generator().manual_seed(5)
    C = int(0.95 * s.count)
    p = torch.randn(5, 8, generator=g, dtype=torch.float64)[torch.randint(0, 5, (C,), generator=g)]
    p += 0.2 * torch.randn(C, 8, generator=g, dtype=torch.float64)
    mm = np.lib.format.open_memmap(tmp_path / "p.npy", mode="w+", dtype=np.float64, shape=(C, 8))
    mm[:] = p.numpy()
    mm.flush()
    from_file = np.load(tmp_path / "p.npy", mmap_mode="r")

    def run(x):
        if rule == "bounded":
            return assign_bounded(s, x, 1, progress=False)
        return assign_nearest_free(s, x, walk_budget=0 if rule == "ordered-scan" else "auto", progress=False)

    want, st_mem = run(p)
    got, st = run(from_file)
    assert st["spilled"] and not st_mem["spilled"] and torch.equal(got, want)
    keys = ("walks", "pops", "scans", "deferred")
    assert [st.get(k) for k in keys] == [st_mem.get(k) for k in keys]
    assert st["walks"] > 0 and (rule != "ordered-scan" or st["scans"] > 0) and (rule != "bounded" or st["deferred"])
    assert sorted(x.name for x in tmp_path.iterdir()) == ["p.npy"]


def test_float16_bits_decode_exactly():
    """The walk's float16 decoding (uint16 bits -> float64) against numpy's, for every finite float16."""
    from lsc.centers import _assign_numba as nb

    bits = np.arange(1 << 16, dtype=np.uint16)
    bits = bits[np.isfinite(bits.view(np.float16))]
    assert np.array_equal(nb._half_bits_to_f64(bits), bits.view(np.float16).astype(np.float64))


def brute_force_bounded(system, p: torch.Tensor, walk_max: int, pool: int = 2, chunk: int = 256) -> torch.Tensor:
    """The bounded rule on a materialized system, from its description (tests): every score exact (math.fsum of
    the products times 1/|v|), a class's vectors in levels of equal score; pass 1 in the ordered rule's order, a
    walk popping a level's states and the first state of the next, deferred once it has popped more than walk_max
    with no free vector; pass 2 groups the deferred by the prototype's (argmax, argmin), in the order of their
    first member; a group's candidates are the first pool x members free vectors nearest the mean of its unit
    prototypes, in order; its members, in chunks, each take the remaining candidate of highest cosine among the
    chunk's share (pool per member) and what the chunk before left (ties: the earlier candidate)."""
    import math

    vec = system.vectors(torch.arange(system.count), dtype=torch.float64)
    inv = system.inv_norms(torch.arange(system.count), torch.float64).tolist()
    rows = [[(j, a) for j, a in enumerate(v) if a] for v in vec.tolist()]

    def scores(z):
        return [math.fsum(a * z[j] for j, a in r) * inv[i] for i, r in enumerate(rows)]

    def levels(z):
        out = {}
        for i, x in enumerate(scores(z)):
            out.setdefault(x, []).append(i)
        return [sorted(out[x]) for x in sorted(out, reverse=True)]

    cos = torch.nn.functional.normalize(p.double(), dim=1) @ torch.nn.functional.normalize(vec, dim=1).T
    best = cos.max(1).values
    order = sorted(range(p.shape[0]), key=lambda c: (-best[c].item(), c))
    free = [True] * system.count
    out = [-1] * p.shape[0]
    deferred = []
    for c in order:
        lv = levels(p[c].tolist())
        if free[lv[0][0]]:  # the nearest vector (ties: lowest index) is free
            out[c] = lv[0][0]
        else:
            pops, got = 0, None
            for i, level in enumerate(lv):
                pops += 1
                prev = [j for j in lv[i - 1] if free[j]] if i else []
                if prev:
                    got = prev[0]
                    break
                if i and pops > walk_max:
                    break
                pops += len(level) - 1
            else:
                got = [j for j in lv[-1] if free[j]][0]
            if got is None:
                deferred.append(c)
                continue
            out[c] = got
        free[out[c]] = False
    groups = {}
    for c in deferred:
        groups.setdefault((int(p[c].argmax()), int(p[c].argmin())), []).append(c)
    for members in groups.values():  # dicts keep insertion order: groups by their first member
        unit = [(p[c].double() / p[c].double().norm()).tolist() for c in members]
        z = [math.fsum(u[j] for u in unit) for j in range(p.shape[1])]
        found = [j for level in levels(z) for j in level if free[j]][: pool * len(members)]
        left, q = [], 0
        for a in range(0, len(members), chunk):
            part = range(a, min(a + chunk, len(members)))
            take = max(0, pool * len(part) - len(left))
            cand, q = left + found[q : q + take], q + take
            for i in part:
                sc = scores(unit[i])
                j = max(cand, key=lambda v: (sc[v], -cand.index(v)))
                out[members[i]] = j
                free[j] = False
                cand.remove(j)
            left = cand
    return torch.tensor(out)


@pytest.mark.parametrize(("name", "n"), [("v22", 8), ("v21", 8), ("a_n", 6), ("v31", 7)])
def test_bounded_rule_matches_its_brute_force(name, n, monkeypatch):
    """Clustered prototypes in a 90%-full system: many walks run past small bounds, so both passes are exercised;
    a bound no walk reaches gives the ordered rule's table; pass 1 pops at most max(2, walk_max + 1) per walk."""
    s = make_system(name, n)
    C = int(0.9 * s.count)
    g = torch.Generator().manual_seed(3)
    p = torch.randn(4, n, generator=g, dtype=torch.float64)[torch.randint(0, 4, (C,), generator=g)]
    p += 0.2 * torch.randn(C, n, generator=g, dtype=torch.float64)
    for walk_max, chunk in ((0, 256), (0, 3), (2, 256), (16, 256)):  # chunk 3: members choose in several pools
        monkeypatch.setattr(assignment, "BOUNDED_CHUNK", chunk)
        got, st = assign_bounded(s, p, walk_max, progress=False)
        assert torch.equal(got, brute_force_bounded(s, p, walk_max, chunk=chunk)), (walk_max, chunk)
        assert got.unique().numel() == C and st["deferred"] > 0
        assert st["pops"] <= st["walks"] * max(2, walk_max + 1)  # levels of one vector here (Gaussian rows)
    got, st = assign_bounded(s, p, s.count, progress=False)
    assert st["deferred"] == 0 and torch.equal(got, assign_nearest_free(s, p, compiled=False)[0])


def test_bounded_rule_cost_follows_the_classes_not_the_cluster():
    """K near-identical classes: the ordered rule pops ~K^2 / 10 vectors per cluster, the bounded one at most
    walk_max + 1 per class plus one shared walk per group; and its vectors stay near the data (mean cosine to the
    prototypes far above a random table's ~0), where the ordered rule's are best."""
    s = make_system("v22", 16)
    C, K = 9000, 1500
    g = torch.Generator().manual_seed(0)
    p = torch.randn(C // K, 16, generator=g)[torch.randint(0, C // K, (C,), generator=g)]
    p += 0.3 * torch.randn(C, 16, generator=g)
    exact, se = assign_nearest_free(s, p, progress=False)
    got, sb = assign_bounded(s, p, 8, progress=False)
    assert sb["pops"] + sb["group_pops"] < (se["pops"]) / 4

    def mean_cos(idx):
        v = s.vectors(idx, normalize=True, dtype=torch.float64)
        return float((torch.nn.functional.normalize(p.double(), dim=1) * v).sum(1).mean())

    assert mean_cos(exact) >= mean_cos(got) > 0.5 * mean_cos(exact) > 0.1


def test_rule_with_tied_prototypes():
    """Identical prototypes (instance copies) and prototypes with tied coordinates: ties by label, then index."""
    s = make_system("v22", 7)
    base = torch.tensor([[3.0, 3.0, 1.0, 0.0, 0.0, -2.0, -2.0], [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0]])
    p = torch.cat([base, base, base[:1] * 2, torch.randn(20, 7, dtype=torch.float64)]).double()
    want = brute_force_assignment(s.vectors(torch.arange(s.count)), p)
    for budget in (None, 0):  # exact ties are resolved the same way by the walk and by the scan
        got, _ = assign_nearest_free(s, p, walk_budget=budget)
        assert torch.equal(got, want), budget


def test_assignment_table_both_ways():
    idx = torch.tensor([17, 3, 250, 99, 0])
    a = Assignment(idx, count=300)
    assert torch.equal(a.forward(torch.arange(5)), idx) and torch.equal(a.index_of_label, idx)
    probe = torch.tensor([0, 1, 3, 17, 99, 100, 250, 299])
    assert a.inverse(probe).tolist() == [4, 5, 1, 0, 3, 5, 2, 5]  # 5 = n_classes: no class owns the vector
    assert [a.inverse_py(int(i)) for i in probe] == a.inverse(probe).tolist()
    assert [a.forward_py(c) for c in range(5)] == idx.tolist()
    assert a.nbytes == 5 * (8 + 4 + 4)  # 16 bytes per class
    with pytest.raises(ValueError, match="same vector 3"):
        Assignment(torch.tensor([3, 5, 3]), count=10)
    with pytest.raises(ValueError, match=r"must lie in \[0, 10\)"):
        Assignment(torch.tensor([3, 10]), count=10)


@pytest.mark.parametrize(("name", "n", "C"), [("v22", 10, 300), ("v21", 12, 600), ("a_n_interp", 8, 400)])
def test_prediction_through_a_data_assignment(name, n, C):
    s = make_system(name, n)
    g = torch.Generator().manual_seed(5)
    idx, _ = assign_nearest_free(s, torch.randn(C, n, generator=g, dtype=torch.float64))
    cc = ClassCenters(s, C, assignment=Assignment(idx, s.count))
    labels = torch.arange(C)
    assert torch.equal(cc.index_of(labels), idx)
    centers = cc(labels)
    for method in ("topk", "cossim"):
        assert torch.equal(cc.predict(centers, method), labels)  # predict(center of c) == c
    z = torch.randn(4000, n, generator=g)  # many land on vectors no class owns
    top, cos = cc.predict(z, "topk"), cc.predict(z, "cossim")
    assert torch.equal(top, cos)
    lt, st = _kernels.fast_labels_torch(cc, z)
    ln, sn = _kernels.fast_labels_numba(cc, z)
    assert torch.equal(lt, ln) and torch.equal(st, sn) and st.any() and not st.all()
    vi, lab = cc.nearest(z)  # unlabeled = no class owns the nearest vector
    owned = torch.isin(vi, idx)
    assert torch.equal(lab >= 0, owned)
    # brute force: the closest labeled center by float64 cosine
    bank = s.vectors(idx, normalize=True, dtype=torch.float64)
    ref = (torch.nn.functional.normalize(z.double(), dim=1) @ bank.T).argmax(1)
    assert torch.equal(top, ref)


def test_spec_round_trip_and_digest():
    s = make_system("v22", 9)
    idx, _ = assign_nearest_free(s, torch.randn(50, 9, dtype=torch.float64))
    cc = ClassCenters(s, 50, assignment=Assignment(idx, s.count))
    back = ClassCenters.from_spec(cc.spec, idx)
    assert back.spec == cc.spec and torch.equal(back(torch.arange(50)), cc(torch.arange(50)))
    other = idx.clone()
    other[[0, 1]] = other[[1, 0]]
    with pytest.raises(ValueError, match="does not match the spec"):
        ClassCenters.from_spec(cc.spec, other)
    with pytest.raises(ValueError, match="pass their table"):
        ClassCenters.from_spec(cc.spec)


def test_systems_without_enumeration_are_refused():
    with pytest.raises(ValueError, match="needs a system of permutation orbits"):
        assign_nearest_free(make_system("a_np", 6), torch.randn(5, 6))


def test_pixel_prototypes_are_projected_class_means():
    dm = SyntheticDataModule(num_samples=30, num_classes=3, image_size=4, channels=1, val_fraction=0.2)
    p = class_prototypes(dm, 5, "pixels", seed=1, size=16)
    ds = dm.prototype_set()
    xs = torch.stack([ds[i][0] for i in range(len(ds))]).double().flatten(1)
    ys = torch.tensor([ds[i][1] for i in range(len(ds))])
    g = torch.Generator().manual_seed(1_000_003 * 1 + 7)
    r = torch.randn(16, 5, generator=g, dtype=torch.float64) / 4
    want = torch.stack([xs[ys == c].mean(0) for c in range(3)]) - xs.mean(0)
    torch.testing.assert_close(p, want @ r)


def test_train_with_data_assignment_round_trip(tmp_path):
    args = [
        "data=synthetic",
        "data.instance_labels=true",
        "data.num_samples=60",
        "data.val_size=20",
        "data.image_size=8",
        "centers=v22",
        "centers.n_dim=9",
        "centers.assign=data",
        "trainer.max_epochs=1",
    ]
    metrics = lsc.train.train(make_cfg(tmp_path / "a", *args))
    ckpt = torch.load(tmp_path / "a" / "checkpoints" / "last.ckpt", weights_only=True)
    table = ckpt["lsc_assignment"]
    assert table.shape == (60,) and table.unique().numel() == 60 and ckpt["lsc_centers"]["assignment"]
    # the same run again computes the same table (deterministic); the bounded rule through the config
    _, _, cc = lsc.train.build(make_cfg(tmp_path / "b", *args))
    assert torch.equal(cc.assignment.index_of_label, table)
    dm, _, cb = lsc.train.build(
        make_cfg(tmp_path / "d", *args, "centers.assign_rule=bounded", "centers.assign_walk_max=0")
    )
    want, st = assign_bounded(cb.system, class_prototypes(dm, 9, seed=0), 0)
    assert torch.equal(cb.assignment.index_of_label, want) and st["deferred"] > 0
    # eval rebuilds the run from the checkpoint, table included, and reproduces the final validation
    got = lsc.eval.evaluate(
        make_cfg(tmp_path / "e", config_name="eval"), str(tmp_path / "a" / "checkpoints" / "last.ckpt")
    )
    assert got["val/acc_topk"] == pytest.approx(metrics["val/acc_topk"], abs=1e-6)
    # a keyed run cannot load it, and a corrupted table is refused
    _, module, _ = lsc.train.build(make_cfg(tmp_path / "k", *args[:-2], "trainer.max_epochs=1"))
    with pytest.raises(ValueError, match="other class centers"):
        module.on_load_checkpoint(ckpt)
    ckpt["lsc_assignment"] = table.flip(0)
    with pytest.raises(ValueError, match="does not match the spec"):
        lsc.train.build(make_cfg(tmp_path / "c", *args), ckpt=ckpt)


def test_checkpoint_prototypes_are_class_mean_embeddings_and_refuse_other_images(tmp_path):
    from lsc.predict import Predictor

    data = ["data=synthetic", "data.num_samples=40", "data.num_classes=4", "data.image_size=8", "data.channels=3"]
    lsc.train.train(make_cfg(tmp_path / "run", *data, "centers.n_dim=6", "trainer.max_epochs=1"))
    ckpt = str(tmp_path / "run" / "checkpoints" / "last.ckpt")
    dm = SyntheticDataModule(num_samples=40, num_classes=4, image_size=8, channels=3)
    p = class_prototypes(dm, 6, "checkpoint", ckpt=ckpt)
    ds = dm.prototype_set()
    xs = torch.stack([ds[i][0] for i in range(len(ds))])
    ys = torch.tensor([ds[i][1] for i in range(len(ds))])
    with torch.no_grad():  # the second implementation: the predictor's backbone over the same images
        e = Predictor.from_checkpoint(ckpt).backbone(xs).double()
    torch.testing.assert_close(p, torch.stack([e[ys == c].mean(0) for c in range(4)]))
    gray = SyntheticDataModule(num_samples=40, num_classes=4, image_size=8, channels=1)
    msg = r"prototype_ckpt=.* was trained on 8 px images with 3 channel\(s\), but this data gives 8 px with 1; use"
    with pytest.raises(ValueError, match=msg):
        class_prototypes(gray, 6, "checkpoint", ckpt=ckpt)
