"""Backbones: any timm model by name (trunk with num_classes=0) or the conv encoder, plus a projection to n_dim."""

from __future__ import annotations

from torch import nn

from .encoder import Encoder, encoder_small


class Backbone(nn.Module):
    """trunk (B, C, H, W) -> (B, num_features), then a linear projection when num_features != out_dim.

    For the CE baseline out_dim = n_classes and the projection is the classification layer.
    """

    def __init__(self, trunk: nn.Module, num_features: int, out_dim: int | None):
        super().__init__()
        self.trunk = trunk
        self.num_features = num_features
        self.out_dim = out_dim or num_features
        self.proj = nn.Identity() if self.out_dim == num_features else nn.Linear(num_features, self.out_dim)

    def forward(self, x):
        return self.proj(self.trunk(x))


def timm_backbone(
    name: str,
    out_dim: int | None = None,
    pretrained: bool = False,
    in_chans: int = 3,
    img_size: int | None = None,
    patch_size: int | None = None,
    **kwargs,
) -> Backbone:
    """A timm model as an embedding network (e.g. vit_small_patch16_224 = ViT-S/16, 384 features).

    img_size / patch_size override the model's (for small images); None keeps timm's defaults.
    """
    if img_size is not None and patch_size is not None and img_size % patch_size:
        raise ValueError(
            f"ViT img_size={img_size} is not divisible by patch_size={patch_size}; "
            f"pick e.g. model.backbone.patch_size={_divisor(img_size, patch_size)}"
        )
    import timm  # noqa: PLC0415 -- ~2 s of imports that the conv encoder's users (probes, CPU runs) never need

    if name not in timm.list_models() and not timm.is_model(name):
        raise ValueError(f"unknown timm model {name!r}; see timm.list_models('*vit*') for names")
    extra = {k: v for k, v in dict(img_size=img_size, patch_size=patch_size).items() if v is not None}
    try:
        trunk = timm.create_model(name, pretrained=pretrained, num_classes=0, in_chans=in_chans, **extra, **kwargs)
    except TypeError as e:  # non-ViT models do not take img_size/patch_size
        raise ValueError(f"timm model {name!r} does not accept {sorted(extra)}: {e}") from e
    return Backbone(trunk, trunk.num_features, out_dim)


def _divisor(img: int, patch: int) -> int:
    return max(d for d in range(1, patch + 1) if img % d == 0)


def encoder_backbone(out_dim: int, in_chans: int = 3, size: str = "base", **kwargs) -> Backbone:
    """The A_n paper's conv encoder (`size=base`, ~9.7M parameters) or CPU variants (`medium` ~1.2M, `small` ~0.1M).

    Its last linear layer ("b") outputs out_dim: n_dim for LSC, n_classes for the CE baseline (where that layer
    is the classification layer), so both modes share everything else.
    """
    sizes = {"base": {}, "medium": dict(widths=(32, 64, 128, 256), hidden=256), "small": None}
    if size not in sizes:
        raise ValueError(f"encoder size must be one of {', '.join(sizes)}, got {size!r}")
    if size == "small":
        enc = encoder_small(out_dim, in_chans, **kwargs)
    else:
        enc = Encoder(out_dim, in_chans, **sizes[size], **kwargs)
    return Backbone(enc, out_dim, out_dim)


def build_backbone(cfg, dm, out_dim: int) -> nn.Module:
    """The run config's `model.backbone`, sized for the data (`dm`: channels, image size) and `out_dim` outputs.
    Model construction lives here, with the models: training, prediction and the prototype pass all call it."""
    import hydra

    bb_kw = {"out_dim": out_dim, "in_chans": dm.channels}
    if "img_size" in cfg.model.backbone and cfg.model.backbone.img_size is None:
        bb_kw["img_size"] = dm.out_size
    return hydra.utils.instantiate(cfg.model.backbone, **bb_kw)
