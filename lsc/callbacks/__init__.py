from .checkpoint import LastCheckpoint
from .data_wait import DataWaitMonitor
from .embedding_plot import EmbeddingPlot
from .heldout import HeldOutAccuracy
from .predictor_accuracy import PredictorAccuracy

__all__ = ["DataWaitMonitor", "EmbeddingPlot", "HeldOutAccuracy", "LastCheckpoint", "PredictorAccuracy"]
