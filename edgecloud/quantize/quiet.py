"""Quiet third-party loggers (the ONNX exporter and quantizer are chatty)."""

from __future__ import annotations

import contextlib
import logging
from typing import Iterator


@contextlib.contextmanager
def quiet_logs(level: int = logging.ERROR) -> Iterator[None]:
    """Raise the level of the chatty exporter/quantizer loggers (root included) for a while."""
    loggers = [logging.getLogger(n) for n in ("", "onnx_ir", "onnxscript", "torch.onnx")]
    saved = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(level)
    try:
        yield
    finally:
        for lg, old in zip(loggers, saved):
            lg.setLevel(old)
