"""Training: data preparation (source packages -> token shards and JSON-lines files) and the
loop.

Only names re-exported here are the public API; heavy imports (transformers) happen inside
the functions that need them.
"""

from extok_rag.training.data import (
    DataSettings,
    prepare_training_data,
    training_data_dir,
)
from extok_rag.training.shards import PackedSequences
from extok_rag.training.sources import DEFAULT_SOURCES, EVALUATION_PACKAGES, TrainingSource

__all__ = [
    "DEFAULT_SOURCES",
    "EVALUATION_PACKAGES",
    "DataSettings",
    "PackedSequences",
    "TrainingSource",
    "prepare_training_data",
    "training_data_dir",
]
