"""transformers draws a "Loading weights" progress bar (and logs info lines) whenever it loads
a model; a user of this tool sees our progress, not theirs. `quiet_loading()` hides both for
the duration of one load and then restores what the caller had set."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def quiet_loading() -> Iterator[None]:
    from transformers.utils import logging

    bars, verbosity = logging.is_progress_bar_enabled(), logging.get_verbosity()
    logging.disable_progress_bar()
    logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        if bars:
            logging.enable_progress_bar()
