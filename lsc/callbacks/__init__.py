from .checkpoint import LastCheckpoint
from .embedding_plot import EmbeddingPlot
from .predictor_accuracy import PredictorAccuracy

__all__ = ["EmbeddingPlot", "LastCheckpoint", "PredictorAccuracy"]
