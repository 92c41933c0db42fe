from .backbones import Backbone, encoder_backbone, timm_backbone
from .encoder import Encoder, encoder_small
from .module import CEModule, LSCModule

__all__ = ["Backbone", "CEModule", "Encoder", "LSCModule", "encoder_backbone", "encoder_small", "timm_backbone"]
