"""Feature codec: quantize -> repack -> encode, with a self-describing bitstream.

>>> codec = FeatureCodec.from_spec("q8-ncc-zstd")
>>> data = codec.encode(feature)          # bytes
>>> restored = codec.decode(data)         # float32 numpy array, same shape

Spec grammar: see :mod:`edgecloud.codec.spec` and docs/codec.md.
"""

from __future__ import annotations

from edgecloud.codec.bitstream import FORMAT_VERSION, BitstreamHeader, peek_header
from edgecloud.codec.calibration import (
    CodecCalibration,
    load_calibration_file,
    load_calibrations,
)
from edgecloud.codec.feature_codec import FeatureCodec, decode_bitstream
from edgecloud.codec.image_input import ImageInputCodec
from edgecloud.codec.learned import LearnedCodec
from edgecloud.codec.spec import CodecSpec, parse_spec
from edgecloud.errors import BitstreamError, CalibrationError, CodecSpecError

__all__ = [
    "FORMAT_VERSION",
    "BitstreamError",
    "BitstreamHeader",
    "CalibrationError",
    "CodecCalibration",
    "CodecSpec",
    "CodecSpecError",
    "FeatureCodec",
    "ImageInputCodec",
    "LearnedCodec",
    "decode_bitstream",
    "load_calibration_file",
    "load_calibrations",
    "parse_spec",
    "peek_header",
]
