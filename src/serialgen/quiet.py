"""Quiet logs at their source: what the libraries underneath print on every run (MediaPipe's
TensorFlow Lite and absl lines, written by C++ straight to the stderr file descriptor; a protobuf
deprecation warning MediaPipe triggers; transformers' and diffusers' load reports and progress
bars) is held back around the calls that print it, and only there. `serialgen --verbose` (or
SERIALGEN_VERBOSE=1) shows all of it."""

from __future__ import annotations

import os
import sys
import warnings
from contextlib import contextmanager


def verbose() -> bool:
    return os.environ.get("SERIALGEN_VERBOSE") == "1"


@contextmanager
def native_stderr():
    """Within the block, what native code writes to file descriptor 2 goes to /dev/null (unless
    verbose), and MediaPipe's protobuf deprecation warning is not shown. Python exceptions are
    unaffected: they propagate, they are not printed here."""
    if verbose():
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"SymbolDatabase\.GetPrototype\(\) is deprecated",
                                    category=UserWarning)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


@contextmanager
def library_logs():
    """Within the block, transformers and diffusers report errors only and draw no progress bars
    (unless verbose)."""
    if verbose():
        yield
        return
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    states = [(lib, lib.get_verbosity(), lib.is_progress_bar_enabled()) for lib in (transformers_logging,
                                                                                     diffusers_logging)]
    for lib, _, _ in states:
        lib.set_verbosity_error()
        lib.disable_progress_bar()
    try:
        yield
    finally:
        for lib, level, bars in states:
            lib.set_verbosity(level)
            if bars:
                lib.enable_progress_bar()
