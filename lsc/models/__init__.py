from .backbones import Backbone, build_backbone, encoder_backbone, timm_backbone
from .encoder import Encoder, encoder_small
from .module import CEModule, LSCModule
from .partial_fc import PartialFCHead, PartialFCModule

__all__ = [
    "Backbone",
    "CEModule",
    "Encoder",
    "LSCModule",
    "PartialFCHead",
    "PartialFCModule",
    "build_backbone",
    "encoder_backbone",
    "encoder_small",
    "timm_backbone",
]
