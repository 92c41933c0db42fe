from .checkpoint import LastCheckpoint
from .data_wait import DataWaitMonitor
from .embedding_plot import EmbeddingPlot
from .predictor_accuracy import PredictorAccuracy

__all__ = ["DataWaitMonitor", "EmbeddingPlot", "LastCheckpoint", "PredictorAccuracy"]
