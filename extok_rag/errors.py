"""Exception families. The CLI renders each as one clear line (no traceback)."""


class ExtokError(Exception):
    """Base of every error this package raises on purpose."""


class ModelNotFoundError(ExtokError):
    """A model (default or given by path) cannot be found locally."""


class IncompatibleModelError(ExtokError):
    """A checkpoint or index was made for another LLM than the one loaded."""


class CheckpointError(ExtokError):
    """A tokenizer checkpoint is missing, unreadable or malformed."""


class InputTooLongError(ExtokError):
    """A mixed input does not fit the LLM's context window."""


class IndexStoreError(ExtokError):
    """An index on disk (manifest, chunk table or vector index) is missing, corrupt or misused."""


class IndexBusyError(IndexStoreError):
    """Another process is writing the index (it holds the index's writer lock)."""


class IndexEngineError(ExtokError):
    """A distributed indexing engine cannot run or failed: its package is missing, its cluster
    is unreachable, or a worker died (the last committed index is intact)."""
