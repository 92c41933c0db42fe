"""model.compile=true: the backbone and the loss under torch.compile (inductor on the CPU here) train like eager
mode, for LSC (cosine and full-system softmax), CE and Partial FC; LSC's losses trace without a graph break."""

from __future__ import annotations

import pytest
import torch
from helpers import make_cfg

from lsc.centers import ClassCenters
from lsc.losses import CosineLoss, SoftmaxLoss
from lsc.train import build

MODELS = {
    "lsc_cos": ["model=lsc", "loss=cos"],
    "lsc_softmax": ["model=lsc", "loss=softmax", "loss.margin=0.2"],
    "ce": ["model=ce"],
    "pfc": ["model=partial_fc", "model.sample_rate=1.0"],
}


def _losses(tmp_path, overrides, compile: bool, steps: int = 3) -> list[float]:
    cfg = make_cfg(tmp_path, "data=digits", "model/backbone=encoder_small", f"model.compile={str(compile).lower()}",
                   "seed=0", *overrides)  # fmt: skip
    torch.manual_seed(0)
    dm, module, _ = build(cfg)
    dm.setup("fit")
    opt = torch.optim.SGD(module.parameters(), lr=1e-3)
    x, y = next(iter(dm.train_dataloader()))
    out = []
    for _ in range(steps):
        loss = module._loss(module(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        out.append(loss.item())
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name", list(MODELS))
def test_compiled_training_matches_eager(tmp_path, name):
    eager = _losses(tmp_path / "e", MODELS[name], False)
    compiled = _losses(tmp_path / "c", MODELS[name], True)
    # the same three SGD steps from the same weights: inductor reorders float32 sums, nothing more
    assert compiled == pytest.approx(eager, rel=1e-4, abs=1e-5), (eager, compiled)
    assert min(eager[1:]) < eager[0]  # the steps learn: a frozen graph would not


LOSSES = {"cos": CosineLoss, "softmax": lambda: SoftmaxLoss(scale=16.0, margin=0.2),
          "softmax_labeled": lambda: SoftmaxLoss(negatives="labeled")}  # fmt: skip
# the labeled softmax scans every center: a small label space
TRACED = [("cos", "v22", 1_000_000), ("softmax", "v22", 1_000_000), ("cos", "a_n", 1_000), ("softmax", "a_n", 1_000),
          ("softmax_labeled", "v21", 1_000)]  # fmt: skip


@pytest.mark.parametrize("name,system,n_classes", TRACED)
def test_lsc_losses_trace_without_a_graph_break(name, system, n_classes):
    import torch._dynamo

    loss = LOSSES[name]()
    cc = ClassCenters(system, n_classes)
    z = torch.randn(64, cc.n_dim, requires_grad=True)
    y = torch.randint(0, n_classes, (64,))

    def step(z, y):
        return loss(z, y, cc)

    step(z, y).backward()  # plans and caches are built outside any graph
    torch._dynamo.reset()
    ex = torch._dynamo.explain(step)(z, y)
    assert ex.graph_break_count == 0, [b.reason.splitlines()[0] for b in ex.break_reasons]


@pytest.mark.slow
def test_train_app_with_compile(tmp_path):
    """`python -m lsc.train model.compile=true`: the Lightning loop (train, validation, checkpoint) runs compiled."""
    import lsc.train

    cfg = make_cfg(tmp_path, "data=digits", "model/backbone=encoder_small", "model.compile=true",
                   "++trainer.fast_dev_run=true")  # fmt: skip
    metrics = lsc.train.train(cfg)
    assert 0.0 <= metrics["val/acc_topk"] <= 1.0 and metrics["train/loss"] == metrics["train/loss"]


def test_compile_modes_are_checked(tmp_path):
    cfg = make_cfg(tmp_path, "data=digits", "model/backbone=encoder_small", "model.compile=fast")
    with pytest.raises(Exception, match="model.compile must be true, false or one of default, reduce-overhead"):
        build(cfg)
    cfg = make_cfg(tmp_path, "data=digits", "model/backbone=encoder_small", "model.compile=max-autotune")
    _, module, _ = build(cfg)
    assert module.compile_mode == "max-autotune" and module.compile_loss
