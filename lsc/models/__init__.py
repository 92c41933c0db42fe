"""Networks and LightningModules. Names load on first use (PEP 562): the conv encoder and the Partial FC head do
not pull in Lightning and timm (seconds of imports that a memory probe or a CPU benchmark subprocess never needs)."""

from __future__ import annotations

import importlib

_WHERE = {
    "Backbone": "backbones",
    "build_backbone": "backbones",
    "encoder_backbone": "backbones",
    "timm_backbone": "backbones",
    "Encoder": "encoder",
    "encoder_small": "encoder",
    "CEModule": "module",
    "LSCModule": "module",
    "PartialFCHead": "partial_fc",
    "PartialFCModule": "module",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
