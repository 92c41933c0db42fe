"""The README's engine example runs as written and its comments state the truth."""

from __future__ import annotations

import re

import torch
from helpers import ROOT


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
