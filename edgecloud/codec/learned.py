"""Learned bottleneck codecs: a small encoder at the cut, a CompressAI entropy model, a decoder.

Spec ``learned-NAME`` names an artifact (``NAME.npz``, made by ``edgecloud train-codec``):

    feature (C, H, W) --normalise--> encoder (conv 3x3 [stride], GELU, conv 1x1 -> L channels)
      --> EntropyBottleneck (factorised prior, range-coded) ~~ bitstream ~~>
    decoder (conv 1x1, GELU, conv 3x3 [transposed]) --> feature (C, H, W) --> the frozen tail

Trained by distillation (:mod:`edgecloud.experiments.train_codec`). The artifact holds the
configuration, every weight and the entropy model's integer CDF tables (so edge and cloud code
with the very same tables), hashed like a codec calibration and referenced from each bitstream
by name and hash prefix. Payload: for each image of the batch a u32 length and CompressAI's
string. Needs the ``learned`` extra (``pip install 'edgecloud[learned]'``: compressai).
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
import warnings
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Dict, Optional, Union

import numpy as np

from edgecloud.artifacts import load_arrays, save_arrays
from edgecloud.errors import ArtifactError, BitstreamError, CalibrationError

KIND = "learned-codec"
VERSION = 1
NAME_RE = re.compile(r"^[a-z0-9_.]{1,60}$")
_CDF_BUFFERS = ("_quantized_cdf", "_offset", "_cdf_length")


def _compressai():
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # compressai's torch.jit.script
            from compressai.entropy_models import EntropyBottleneck
    except ImportError as exc:
        raise CalibrationError(
            "learned codecs need compressai: pip install 'edgecloud[learned]'"
        ) from exc
    return EntropyBottleneck


@dataclass(frozen=True)
class BottleneckConfig:
    """Shape of a learned bottleneck for a cut feature (channels, height, width)."""

    channels: int
    height: int
    width: int
    latent: int = 24  # channels coded
    hidden: int = 192
    stride: int = 1  # 1, or 2 to halve the latent map's height and width

    def __post_init__(self) -> None:
        if self.stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {self.stride}")
        if min(self.channels, self.height, self.width, self.latent, self.hidden) < 1:
            raise ValueError(f"bottleneck sizes must be positive: {self}")

    @property
    def latent_shape(self):
        return (self.latent, -(-self.height // self.stride), -(-self.width // self.stride))


def build_module(config: BottleneckConfig):
    """The torch module: ``forward(x) -> (x_hat, likelihoods)``; ``encoder``/``entropy``/
    ``decoder`` attributes."""
    import torch
    from torch import nn

    entropy_bottleneck = _compressai()
    c, m, k = config.channels, config.hidden, config.latent

    class Bottleneck(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("mean", torch.zeros(1, c, 1, 1))
            self.register_buffer("scale", torch.ones(1, c, 1, 1))
            s = config.stride
            self.encoder = nn.Sequential(
                nn.Conv2d(c, m, 3, stride=s, padding=1), nn.GELU(), nn.Conv2d(m, k, 1)
            )
            if s == 1:
                last = nn.Conv2d(m, c, 3, padding=1)
            else:
                last = nn.ConvTranspose2d(
                    m,
                    c,
                    3,
                    stride=2,
                    padding=1,
                    output_padding=(1 - config.height % 2, 1 - config.width % 2),
                )
            self.decoder = nn.Sequential(nn.Conv2d(k, m, 1), nn.GELU(), last)
            self.entropy = entropy_bottleneck(k)

        def encode_latent(self, x):
            return self.encoder((x - self.mean) / self.scale)

        def decode_latent(self, y_hat):
            return self.decoder(y_hat) * self.scale + self.mean

        def forward(self, x):
            y_hat, likelihoods = self.entropy(self.encode_latent(x))
            return self.decode_latent(y_hat), likelihoods

    return Bottleneck()


@dataclass
class LearnedCodec:
    """A trained bottleneck as a versioned artifact: ``spec`` ``learned-<name>``."""

    name: str
    config: BottleneckConfig
    state: Dict[str, np.ndarray]  # the module's state_dict as arrays (CDF tables included)
    meta: Dict[str, Any] = field(default_factory=dict)
    version: int = VERSION

    def __post_init__(self) -> None:
        if not NAME_RE.match(self.name):
            raise CalibrationError(
                f"learned codec name {self.name!r} must match {NAME_RE.pattern} (it is part of "
                "the spec learned-NAME)"
            )

    @property
    def spec(self) -> str:
        return f"learned-{self.name}"

    @property
    def id(self) -> str:
        return self.name

    @property
    def channels(self) -> int:
        return self.config.channels

    @cached_property
    def hash(self) -> str:
        """sha256 (hex) over the version, name, configuration and every array."""
        h = hashlib.sha256()
        h.update(json.dumps([KIND, self.version, self.name, self.config.__dict__]).encode())
        for key in sorted(self.state):
            arr = np.ascontiguousarray(self.state[key])
            h.update(f"{key}{arr.dtype.str}{arr.shape}".encode())
            h.update(arr.tobytes())
        return h.hexdigest()

    @classmethod
    def from_module(
        cls, name: str, config: BottleneckConfig, module: Any, **meta: Any
    ) -> LearnedCodec:
        """Freeze a trained module (its entropy model's CDF tables are computed here)."""
        module.entropy.update(force=True)
        state = {k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}
        return cls(name, config, state, meta)

    def save(self, directory: Union[str, Path]) -> Path:
        header = {
            "kind": KIND,
            "version": self.version,
            "name": self.name,
            "config": self.config.__dict__,
            "hash": self.hash,
            "keys": sorted(self.state),
            "meta": self.meta,
        }
        return save_arrays(Path(directory) / f"{self.name}.npz", header, self.state)

    @classmethod
    def load(cls, path: Union[str, Path]) -> LearnedCodec:
        """Read a file written by :meth:`save`; CalibrationError names what is wrong."""
        path = Path(path)
        try:
            header, _ = load_arrays(path, ())
            if header.get("kind") != KIND:
                raise CalibrationError(f"{path} is not a learned codec")
            if header.get("version") != VERSION:
                raise CalibrationError(
                    f"learned codec {path} has version {header.get('version')}, this build "
                    f"reads {VERSION}"
                )
            _, state = load_arrays(path, tuple(header["keys"]))
            codec = cls(header["name"], BottleneckConfig(**header["config"]), state, header["meta"])
        except (ArtifactError, KeyError, TypeError, ValueError) as exc:
            raise CalibrationError(f"learned codec file {path} is unusable: {exc}") from exc
        if codec.hash != header.get("hash"):
            raise CalibrationError(f"learned codec file {path} is corrupted (hash mismatch)")
        codec.module  # noqa: B018  (shapes checked against the configuration now)
        return codec

    @cached_property
    def module(self):
        """The module in eval mode, weights and CDF tables loaded (checked against config)."""
        import torch

        module = build_module(self.config)
        tensors = {k: torch.from_numpy(np.array(v)) for k, v in self.state.items()}
        for buffer in _CDF_BUFFERS:  # sized by update(), not by the constructor
            key = f"entropy.{buffer}"
            if key in tensors:
                getattr(module.entropy, buffer).resize_(tensors[key].shape)
        try:
            module.load_state_dict(tensors)
        except RuntimeError as exc:
            raise CalibrationError(
                f"learned codec {self.name}: weights do not fit its configuration: {exc}"
            ) from exc
        return module.eval()

    def encoder_module(self):
        """The encoder alone as a torch module, feature -> latents: the edge's part (for
        :func:`edgecloud.quantize.export.append_encoder` and head runners)."""
        import torch

        bottleneck = self.module

        class Encoder(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.bottleneck = bottleneck

            def forward(self, x):
                return self.bottleneck.encode_latent(x)

        return Encoder().eval()

    def check(self, spec: Any, channels: Optional[int] = None) -> None:
        if spec.canonical != self.spec:
            raise CalibrationError(
                f"learned codec {self.name} is {self.spec!r}, not {spec.canonical!r}"
            )
        if channels is not None and channels != self.channels:
            raise CalibrationError(
                f"learned codec {self.name} is for {self.channels} channels, feature has {channels}"
            )

    def _check_shape(self, shape) -> None:
        cfg = self.config
        if len(shape) != 4 or tuple(shape[1:]) != (cfg.channels, cfg.height, cfg.width):
            raise BitstreamError(
                f"learned codec {self.name} codes (N, {cfg.channels}, {cfg.height}, {cfg.width}) "
                f"features, not {tuple(shape)}"
            )

    def encode(self, feature: np.ndarray) -> bytes:
        """(N, C, H, W) float32 -> payload."""
        import torch

        self._check_shape(feature.shape)
        with torch.inference_mode():
            y = self.module.encode_latent(torch.from_numpy(np.ascontiguousarray(feature)))
        return self.encode_latents(y.numpy())

    def encode_latents(self, latents: np.ndarray) -> bytes:
        """Latents (N, L, h, w) of the encoder (e.g. from the edge's head + encoder graph,
        :func:`edgecloud.quantize.export.append_encoder`) -> payload."""
        import torch

        expected = self.config.latent_shape
        if latents.ndim != 4 or tuple(latents.shape[1:]) != expected:
            raise BitstreamError(f"latents of shape {latents.shape}, expected (N, *{expected})")
        with torch.inference_mode():
            strings = self.module.entropy.compress(torch.from_numpy(np.asarray(latents)))
        return b"".join(struct.pack("<I", len(s)) + s for s in strings)

    def decode(self, payload: bytes, shape) -> np.ndarray:
        """Payload of ``shape`` (N, C, H, W) -> float32 feature; BitstreamError if malformed."""
        import torch

        self._check_shape(shape)
        strings, pos = [], 0
        view = memoryview(payload)
        for _ in range(shape[0]):
            if pos + 4 > len(view):
                raise BitstreamError("learned payload is cut short")
            (size,) = struct.unpack_from("<I", view, pos)
            if pos + 4 + size > len(view):
                raise BitstreamError(f"learned payload string of {size} bytes is cut short")
            strings.append(bytes(view[pos + 4 : pos + 4 + size]))
            pos += 4 + size
        if pos != len(view):
            raise BitstreamError(f"learned payload has {len(view) - pos} trailing bytes")
        _, h, w = self.config.latent_shape
        try:
            with torch.inference_mode():
                y_hat = self.module.entropy.decompress(strings, (h, w))
                out = self.module.decode_latent(y_hat).numpy()
        except (RuntimeError, ValueError) as exc:
            raise BitstreamError(f"learned payload does not decode: {exc}") from exc
        if not np.isfinite(out).all():
            raise BitstreamError("learned payload decodes to non-finite values")
        return out.astype(np.float32, copy=False)


def is_learned_file(header: Dict[str, Any]) -> bool:
    return header.get("kind") == KIND
