"""Codec spec strings: parsing, validation and the canonical form.

Grammar (tokens separated by ``-``)::

    raw                                   float32 bytes, no compression
    f16-CODER | f32-CODER                 float cast + lossless byte coder
    qBITS-REPACK-CODER[-CLIP][-SCOPE]     quantize, repack, encode
    qBITS-REPACK-VIDEO[-RATE][-PRESET][-CLIP][-SCOPE]   ... with a video coder
    jpeg-input-qNN                        pseudo-codec: send the 224x224 crop as JPEG
    learned-NAME                          a trained bottleneck (artifact NAME.npz, see
                                          :mod:`edgecloud.codec.learned`)

BITS 1..16; REPACK ``ncc`` | ``ccd`` | ``ct``; CODER ``none`` | ``zlib`` | ``zstd`` | ``lz4`` |
``rans`` (per-channel tables) | ``crans`` (context-adaptive tables) | ``png`` |
``webp`` (lossless) | ``webpNN`` (lossy, quality NN) | ``jpegNN``;
VIDEO ``hevc`` | ``h264`` (RATE ``qpNN``) | ``av1`` | ``vp9`` (RATE ``crfNN``) | ``ffv1``
(lossless), PRESET ``ultrafast`` .. ``veryslow`` (see :mod:`edgecloud.codec.video`);
CLIP ``msg`` (min/max of each message) | ``minmax`` | ``pNN[.N]`` (percentile) | ``mse`` |
``sX`` (step X standard deviations, levels centred on the calibration mean) | ``rdX`` (a step per
channel chosen by rate–distortion bit allocation for X bits/element, see
:mod:`edgecloud.codec.allocation`; per channel only);
SCOPE ``pt`` (per tensor) | ``pc`` (per channel).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Optional

from edgecloud.codec.learned import NAME_RE
from edgecloud.codec.video import DEFAULT_PRESET, PRESETS, VIDEO_CODERS, check_rate
from edgecloud.errors import CodecSpecError

BYTE_CODERS = ("none", "zlib", "zstd", "lz4")
REPACKS = ("ncc", "ccd", "ct")
CLIPS_CALIBRATED = ("minmax", "mse")
SCOPES = ("pt", "pc")
RANS_MAX_BITS = 12
IMAGE_8BIT_CODERS = ("webp", "jpeg")

_CODER_RE = re.compile(
    r"^(none|zlib|zstd|lz4|rans|crans|png|webp|webp\d{1,3}|jpeg\d{1,3}|hevc|h264|av1|vp9|ffv1)$"
)
_RATE_RE = re.compile(r"^(qp|crf)\d{1,2}$")
_PERCENTILE_RE = re.compile(r"^p(\d{2}(?:\.\d+)?)$")
_STEP_RE = re.compile(r"^s(\d{1,2}(?:\.\d+)?)$")
_RD_RE = re.compile(r"^rd(\d{1,2}(?:\.\d+)?)$")
_JPEG_INPUT_RE = re.compile(r"^jpeg-input-q(\d{1,3})$")


@dataclass(frozen=True)
class CodecSpec:
    """A parsed codec spec. ``kind`` is ``raw``, ``float``, ``quant``, ``learned`` or
    ``image-input``."""

    kind: str
    float_bits: int = 32  # float kinds: 16 or 32
    bits: int = 0  # quant kind: 1..16
    repack: str = "ncc"
    coder: str = "none"
    quality: Optional[int] = None  # lossy image coders and jpeg-input
    clip: str = "msg"  # msg | minmax | pNN.N | mse | sX | rdX
    scope: str = "pt"  # pt | pc
    rate: Optional[str] = None  # lossy video coders: qpNN | crfNN
    preset: Optional[str] = None  # video coders but ffv1: encoder speed preset
    name: str = ""  # learned: the artifact's name

    @property
    def canonical(self) -> str:
        """The unambiguous spec string (defaults written out)."""
        if self.kind == "raw":
            return "raw"
        if self.kind == "float":
            return f"f{self.float_bits}-{self.coder}"
        if self.kind == "image-input":
            return f"jpeg-input-q{self.quality}"
        if self.kind == "learned":
            return f"learned-{self.name}"
        coder = self.coder if self.quality is None else f"{self.coder}{self.quality}"
        video = "".join(f"-{t}" for t in (self.rate, self.preset) if t)
        return f"q{self.bits}-{self.repack}-{coder}{video}-{self.clip}-{self.scope}"

    @property
    def lossless(self) -> bool:
        return self.kind in ("raw", "float") and self.float_bits == 32

    @property
    def needs_calibration(self) -> bool:
        """True when the codec cannot run without a CodecCalibration."""
        return (
            self.kind == "learned"
            or self.kind == "quant"
            and (self.clip != "msg" or self.repack == "ccd" or self.coder in ("rans", "crans"))
        )

    @property
    def percentile(self) -> Optional[float]:
        m = _PERCENTILE_RE.match(self.clip)
        return float(m.group(1)) if m else None

    @property
    def step_sigmas(self) -> Optional[float]:
        m = _STEP_RE.match(self.clip)
        return float(m.group(1)) if m else None

    @property
    def target_rate(self) -> Optional[float]:
        """``rdX`` clips: the bit allocation's target, bits per element."""
        m = _RD_RE.match(self.clip)
        return float(m.group(1)) if m else None

    @property
    def image_coder(self) -> bool:
        return self.coder in ("png", "webp", "jpeg")

    @property
    def video_coder(self) -> bool:
        return self.coder in VIDEO_CODERS


def _quality(text: str, spec: str) -> int:
    q = int(text)
    if not 1 <= q <= 100:
        raise CodecSpecError(f"codec spec {spec!r}: quality {q} is not in 1..100")
    return q


@functools.lru_cache(maxsize=1024)
def parse_spec(spec: str) -> CodecSpec:
    """Parse a spec string; raises CodecSpecError naming the bad part (results are cached:
    a CodecSpec is immutable)."""
    if not isinstance(spec, str) or not spec:
        raise CodecSpecError(f"codec spec must be a non-empty string, got {spec!r}")
    text = spec.strip().lower()
    if text == "raw":
        return CodecSpec(kind="raw")
    m = _JPEG_INPUT_RE.match(text)
    if m:
        return CodecSpec(kind="image-input", coder="jpeg", quality=_quality(m.group(1), spec))
    if text.startswith("learned-"):
        name = text[len("learned-") :]
        if not NAME_RE.match(name):
            raise CodecSpecError(
                f"codec spec {spec!r}: a learned codec's name must match {NAME_RE.pattern}"
            )
        return CodecSpec(kind="learned", coder="learned", name=name)
    parts = text.split("-")
    head = parts[0]
    if head in ("f16", "f32"):
        if len(parts) != 2 or parts[1] not in BYTE_CODERS:
            raise CodecSpecError(
                f"codec spec {spec!r}: float specs are f16-CODER or f32-CODER with CODER one of "
                f"{', '.join(BYTE_CODERS)}"
            )
        return CodecSpec(kind="float", float_bits=int(head[1:]), coder=parts[1])
    if not re.match(r"^q\d{1,2}$", head):
        raise CodecSpecError(
            f"unknown codec spec {spec!r}: expected raw, f16-CODER, "
            "qBITS-REPACK-CODER[-CLIP][-SCOPE], learned-NAME or jpeg-input-qNN (see docs/codec.md)"
        )
    bits = int(head[1:])
    if not 1 <= bits <= 16:
        raise CodecSpecError(f"codec spec {spec!r}: bit depth {bits} is not in 1..16")
    if len(parts) < 3 or len(parts) > 7:
        raise CodecSpecError(f"codec spec {spec!r}: expected qBITS-REPACK-CODER[-CLIP][-SCOPE]")
    repack, coder_text = parts[1], parts[2]
    if repack not in REPACKS:
        raise CodecSpecError(f"codec spec {spec!r}: repack {repack!r} is not one of {REPACKS}")
    if not _CODER_RE.match(coder_text):
        raise CodecSpecError(
            f"codec spec {spec!r}: unknown coder {coder_text!r} (none, zlib, zstd, lz4, rans, "
            "crans, png, webp, webpNN, jpegNN, hevc, h264, av1, vp9, ffv1)"
        )
    lossy = re.match(r"^(webp|jpeg)(\d+)$", coder_text)
    coder = lossy.group(1) if lossy else coder_text
    quality = _quality(lossy.group(2), spec) if lossy else None
    if coder == "jpeg" and quality is None:
        raise CodecSpecError(f"codec spec {spec!r}: jpeg needs a quality, e.g. jpeg90")
    rate, preset, extras = _video_options(coder, parts[3:], spec)
    clip, scope = None, None
    for extra in extras:
        if extra in SCOPES and scope is None:
            scope = extra
        elif (
            (
                extra in ("msg",) + CLIPS_CALIBRATED
                or _PERCENTILE_RE.match(extra)
                or _STEP_RE.match(extra)
                or _RD_RE.match(extra)
            )
            and clip is None
            and scope is None
        ):
            clip = extra
        else:
            raise CodecSpecError(
                f"codec spec {spec!r}: bad option {extra!r} (CLIP msg|minmax|pNN|mse|sX|rdX, then "
                "SCOPE pt|pc)"
            )
    if clip is not None:
        m = _PERCENTILE_RE.match(clip)
        if m and not 50.0 < float(m.group(1)) < 100.0:
            raise CodecSpecError(f"codec spec {spec!r}: percentile must be in (50, 100)")
        m = _STEP_RE.match(clip)
        if m and not float(m.group(1)) > 0:
            raise CodecSpecError(f"codec spec {spec!r}: step must be > 0 standard deviations")
        m = _RD_RE.match(clip)
        if m and not 0 < float(m.group(1)) <= bits:
            raise CodecSpecError(
                f"codec spec {spec!r}: bit allocation target must be in (0, {bits}] bits/element"
            )
        if m and scope == "pt":
            raise CodecSpecError(f"codec spec {spec!r}: rdX allocates per channel (scope pc)")
    calibrated_anyway = repack == "ccd" or coder in ("rans", "crans")
    if clip is None:
        clip = "mse" if calibrated_anyway else "msg"
    if scope is None:
        scope = "pc" if clip != "msg" else "pt"
    if coder in ("rans", "crans") and bits > RANS_MAX_BITS:
        raise CodecSpecError(f"codec spec {spec!r}: {coder} supports at most {RANS_MAX_BITS} bits")
    if coder in IMAGE_8BIT_CODERS and bits > 8:
        raise CodecSpecError(f"codec spec {spec!r}: {coder} supports at most 8 bits")
    if coder in VIDEO_CODERS and bits > VIDEO_CODERS[coder].max_bits:
        raise CodecSpecError(
            f"codec spec {spec!r}: {coder} supports at most {VIDEO_CODERS[coder].max_bits} bits"
        )
    return CodecSpec(
        kind="quant",
        bits=bits,
        repack=repack,
        coder=coder,
        quality=quality,
        clip=clip,
        scope=scope,
        rate=rate,
        preset=preset,
    )


def _video_options(coder: str, extras: list, spec: str):
    """(rate, preset, the remaining tokens) of a video coder's spec; defaults filled in."""
    video = VIDEO_CODERS.get(coder)
    if video is None:
        return None, None, extras
    rate = preset = None
    rest = list(extras)
    if rest and _RATE_RE.match(rest[0]):
        rate = rest.pop(0)
        check_rate(video, rate, spec)
    if rest and rest[0] in PRESETS:
        preset = rest.pop(0)
        if video.lossless:
            raise CodecSpecError(f"codec spec {spec!r}: {coder} takes no speed preset")
    if video.lossless:
        return None, None, rest
    return rate or f"{video.rate}{video.default_rate}", preset or DEFAULT_PRESET, rest
