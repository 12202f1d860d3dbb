"""Exception types shared across edgecloud.

Every error a user can cause (bad name, bad file, bad bitstream, bad message) is an
``EdgecloudError`` subclass with a message that names the problem.
"""

from __future__ import annotations


class EdgecloudError(Exception):
    """Base class of all edgecloud errors."""


class UnknownModelError(EdgecloudError, KeyError):
    """A model name that is not in the registry."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class WeightsError(EdgecloudError):
    """A weights file that is missing, unreadable or does not fit the architecture."""


class CutPointError(EdgecloudError, KeyError):
    """A cut name that does not exist for the model."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class DatasetError(EdgecloudError):
    """A data directory or labels file that cannot be used."""


class BitstreamError(EdgecloudError):
    """A feature bitstream that is truncated, corrupted, of a wrong version or calibration."""


class BitstreamShapeError(BitstreamError):
    """A bitstream that declares another tensor shape than the receiver expects."""


class BitstreamSizeError(BitstreamError):
    """A bitstream that declares more elements than the receiver allows."""


class CodecSpecError(EdgecloudError, ValueError):
    """A codec spec string that cannot be parsed or is not supported."""


class ArtifactError(EdgecloudError):
    """A versioned artifact (calibration, learned codec, engine, ...) that is missing,
    unreadable, of another format or whose hash does not match."""


class CalibrationError(ArtifactError):
    """Missing, mismatched or invalid calibration data."""


class ProtocolError(EdgecloudError):
    """A malformed or unsupported wire message."""


class BackendUnavailableError(EdgecloudError):
    """A head backend whose runtime (TensorRT, PyCUDA, GPU, ...) is not available."""


class TransportError(EdgecloudError):
    """A request that could not be delivered or answered (timeout, closed client)."""


class ServerError(EdgecloudError):
    """An error reply from the cloud daemon; ``code`` is the protocol error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class ConfigError(EdgecloudError, ValueError):
    """A daemon or edge configuration (file or flags) that cannot be used."""


class HeadInputError(EdgecloudError, ValueError):
    """A batch for a head runner that is not float32 NCHW of the head's input shape."""
