"""Video inner codecs (HEVC, H.264, AV1, VP9, FFV1) through PyAV's FFmpeg: the literature's
Quantization -> Repack -> VideoEncoder pipeline for intermediate features.

Frames: with NCC/CCD every channel is a frame of one sequence (so the encoder predicts one
channel from the previous ones, which is where CCD's order matters); with CT each image is one
tiled frame. Frames are padded (edge replication) to the encoder's minimum size and to even
dimensions, and symbols are scaled to the frame's bit depth (``q4`` in an 8-bit frame: levels
0, 17, ..., 255), so that coding noise of a lossy coder rounds away.

Payload::

    u32 extradata length + extradata (codec configuration, if the encoder has one)
    u32 packet count, then per packet: u32 length + bytes

Decoding never trusts the packets: the decoder is limited to the expected frame size
(FFmpeg's ``max_pixels``), must produce exactly the expected frames of exactly the expected
size, and every FFmpeg error becomes a :class:`BitstreamError`.
"""

from __future__ import annotations

import fractions
import os
import struct
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from edgecloud.errors import BitstreamError, CodecSpecError

#: encoder speed presets, fastest first (x264/x265 names; mapped for AV1 and VP9)
PRESETS = (
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
)
DEFAULT_PRESET = "medium"
MIN_SIDE = 16  # smallest frame side the encoders are given
#: decoders allocate the coded size (rounded up to their block size): allowed above the frame
CODED_MARGIN = 128
MAX_PACKETS_OVER_FRAMES = 8  # a stream may carry a few packets more than frames (headers)


@dataclass(frozen=True)
class VideoCoder:
    """One video coder of the spec grammar and the FFmpeg codecs behind it."""

    name: str
    encoder: str  # FFmpeg encoder (software; see docs/jetson.md for hardware ones)
    decoders: Tuple[str, ...]  # FFmpeg decoders, first available wins
    formats: Dict[int, str]  # frame bit depth -> pixel format
    rate: Optional[str]  # "qp" or "crf" (None: lossless)
    default_rate: int = 0
    max_rate: int = 0

    @property
    def lossless(self) -> bool:
        return self.rate is None

    @property
    def max_bits(self) -> int:
        return max(self.formats)

    def depth(self, bits: int) -> int:
        """The frame bit depth that holds ``bits``-bit symbols."""
        return min(d for d in self.formats if d >= bits)


VIDEO_CODERS: Dict[str, VideoCoder] = {
    c.name: c
    for c in (
        VideoCoder(
            "hevc", "libx265", ("hevc",), {8: "gray", 10: "gray10le", 12: "gray12le"}, "qp", 28, 51
        ),
        VideoCoder("h264", "libx264", ("h264",), {8: "gray", 10: "gray10le"}, "qp", 28, 51),
        VideoCoder(
            "av1",
            "libsvtav1",
            ("libdav1d", "av1"),
            {8: "yuv420p", 10: "yuv420p10le"},
            "crf",
            40,
            63,
        ),
        VideoCoder("vp9", "libvpx-vp9", ("vp9",), {8: "yuv420p"}, "crf", 40, 63),
        VideoCoder(
            "ffv1",
            "ffv1",
            ("ffv1",),
            {8: "gray", 10: "gray10le", 12: "gray12le", 16: "gray16le"},
            None,
        ),
    )
}


def video_coder(name: str) -> VideoCoder:
    return VIDEO_CODERS[name]


def check_rate(coder: VideoCoder, rate: str, spec: str) -> None:
    """CodecSpecError unless ``rate`` (``qpNN``/``crfNN``) suits ``coder``."""
    if coder.lossless:
        raise CodecSpecError(f"codec spec {spec!r}: {coder.name} is lossless and takes no rate")
    kind = rate.rstrip("0123456789")
    if kind != coder.rate:
        raise CodecSpecError(
            f"codec spec {spec!r}: {coder.name}'s rate is {coder.rate}NN, not {rate!r}"
        )
    value = int(rate[len(kind) :])
    if not 0 <= value <= coder.max_rate:
        raise CodecSpecError(
            f"codec spec {spec!r}: {coder.rate} {value} is not in 0..{coder.max_rate}"
        )


# -- frames ----------------------------------------------------------------------------------


def padded_size(height: int, width: int) -> Tuple[int, int]:
    """Frame size given to the encoder: at least MIN_SIDE, even."""

    def side(n: int) -> int:
        n = max(n, MIN_SIDE)
        return n + (n % 2)

    return side(height), side(width)


def _to_pixels(frames: np.ndarray, bits: int, depth: int) -> np.ndarray:
    levels, top = (1 << bits) - 1, (1 << depth) - 1
    pixels = frames if levels == top else np.rint(frames.astype(np.float64) * (top / levels))
    return pixels.astype(np.uint8 if depth == 8 else np.uint16)


def _to_symbols(pixels: np.ndarray, bits: int, depth: int, lossless: bool) -> np.ndarray:
    levels, top = (1 << bits) - 1, (1 << depth) - 1
    if levels != top:
        pixels = np.rint(pixels.astype(np.float64) * (levels / top))
    if pixels.max(initial=0) > levels:
        if lossless:
            raise BitstreamError(f"video frame holds values above {levels}")
        pixels = np.minimum(pixels, levels)
    return pixels.astype(np.uint8 if bits <= 8 else np.uint16)


# -- encoding ----------------------------------------------------------------------------------


def encode(
    coder: VideoCoder, rate: Optional[str], preset: Optional[str], frames: np.ndarray, bits: int
) -> bytes:
    """Symbol frames (F, H, W) of ``bits`` bits -> payload (one intra frame, the rest
    predicted from it)."""
    encoder = _Encoder(coder, rate, preset, bits, frames.shape[1:], gop=max(1, len(frames)))
    return encoder.payload(encoder.encode(frames) + encoder.flush())


class _Encoder:
    """An FFmpeg encoder context for symbol frames of one size."""

    def __init__(
        self,
        coder: VideoCoder,
        rate: Optional[str],
        preset: Optional[str],
        bits: int,
        size: Tuple[int, int],
        gop: int,
        low_delay: bool = False,
    ) -> None:
        self.av = _av()
        self.coder, self.bits, self.size = coder, bits, tuple(size)
        name = encoder_for(coder)
        hardware = name != coder.encoder
        if hardware and bits > 8:
            raise CodecSpecError(f"{name}: 8-bit frames only here (use q8 or lower, or unset "
                                 f"{ENCODERS_ENV})")  # fmt: skip
        self.depth = 8 if hardware else coder.depth(bits)
        self.fmt = "yuv420p" if hardware else coder.formats[self.depth]
        ph, pw = padded_size(*self.size)
        ctx = self.av.CodecContext.create(name, "w")
        ctx.width, ctx.height, ctx.pix_fmt = pw, ph, self.fmt
        ctx.time_base = fractions.Fraction(1, 25)
        ctx.framerate = fractions.Fraction(25, 1)
        ctx.gop_size = gop
        ctx.max_b_frames = 0
        if hardware:
            options = _hardware_options(name, rate, low_delay)
        else:
            options = _encoder_options(coder, rate, preset or DEFAULT_PRESET)
            if low_delay:
                options.update(_LOW_DELAY.get(coder.name, {}))
        ctx.options = options
        try:
            ctx.open()
        except self.av.FFmpegError as exc:
            raise CodecSpecError(f"encoder {name} cannot start here: {exc}") from exc
        self.ctx, self.pts, self.sent_header = ctx, 0, False

    def encode(self, frames: np.ndarray) -> List[bytes]:
        if tuple(frames.shape[1:]) != self.size:
            raise CodecSpecError(f"frames of {frames.shape[1:]}, this video is {self.size}")
        height, width = self.size
        ph, pw = padded_size(height, width)
        pixels = _to_pixels(frames, self.bits, self.depth)
        pixels = np.pad(pixels, ((0, 0), (0, ph - height), (0, pw - width)), mode="edge")
        packets: List[bytes] = []
        try:
            for plane in pixels:
                frame = _video_frame(self.av, plane, self.fmt, self.depth)
                frame.pts = self.pts
                self.pts += 1
                packets += [bytes(p) for p in self.ctx.encode(frame)]
        except self.av.FFmpegError as exc:
            raise CodecSpecError(f"{self.coder.encoder} cannot encode these frames: {exc}") from exc
        return packets

    def flush(self) -> List[bytes]:
        return [bytes(p) for p in self.ctx.encode(None)]

    def payload(self, packets: Sequence[bytes]) -> bytes:
        """The payload of ``packets``, with the codec configuration in the first one."""
        extradata = b"" if self.sent_header else bytes(self.ctx.extradata or b"")
        self.sent_header = True
        parts = [struct.pack("<I", len(extradata)), extradata, struct.pack("<I", len(packets))]
        for packet in packets:
            parts += [struct.pack("<I", len(packet)), packet]
        return b"".join(parts)


class LowDelayEncoder:
    """One video of a stream, frame by frame: every ``encode`` returns the payload of the
    frames given (P-frames after the first), with no frame held back."""

    def __init__(self, coder: VideoCoder, rate: Optional[str], preset: Optional[str], bits: int):
        self.coder, self.rate, self.preset, self.bits = coder, rate, preset, bits
        self._encoder: Optional[_Encoder] = None

    def encode(self, frames: np.ndarray) -> bytes:
        if self._encoder is None:
            self._encoder = _Encoder(
                self.coder, self.rate, self.preset, self.bits, frames.shape[1:], 1 << 30, True
            )
        packets = self._encoder.encode(frames)
        if len(packets) != len(frames):
            raise CodecSpecError(
                f"{self.coder.encoder} held frames back in low-delay mode "
                f"({len(packets)} packets for {len(frames)} frames)"
            )
        return self._encoder.payload(packets)

    def close(self) -> None:
        """End the video (encoders such as SVT-AV1 want their end of stream)."""
        if self._encoder is not None:
            self._encoder.flush()
            self._encoder = None


#: hardware encoders by name, e.g. "h264=h264_nvenc,hevc=hevc_nvenc" (Jetson, NVIDIA GPUs) or
#: "hevc=hevc_v4l2m2m"; the bitstream is the same, decoded by the software decoders
ENCODERS_ENV = "EDGECLOUD_VIDEO_ENCODERS"


def encoder_for(coder: VideoCoder) -> str:
    """The FFmpeg encoder of ``coder``: its software one unless ``ENCODERS_ENV`` names
    another; CodecSpecError if that one is not in this FFmpeg."""
    choices = {}
    for item in filter(None, os.environ.get(ENCODERS_ENV, "").split(",")):
        key, _, value = item.partition("=")
        choices[key.strip()] = value.strip()
    name = choices.get(coder.name, coder.encoder)
    if name != coder.encoder:
        try:
            _av().codec.Codec(name, "w")
        except Exception as exc:
            raise CodecSpecError(
                f"{ENCODERS_ENV} names {name!r} for {coder.name}, which this FFmpeg lacks"
            ) from exc
    return name


def _hardware_options(name: str, rate: Optional[str], low_delay: bool) -> Dict[str, str]:
    value = "".join(c for c in (rate or "") if c.isdigit())
    if name.endswith("_nvenc"):  # constant QP, no B-frames
        options = {"rc": "constqp", "qp": value or "28", "bf": "0"}
        if low_delay:
            options["zerolatency"] = "1"
        return options
    return {}  # v4l2m2m and others: their defaults (no QP control through FFmpeg)


#: options that make an encoder emit each frame's packet at once
_LOW_DELAY: Dict[str, Dict[str, str]] = {
    "h264": {"tune": "zerolatency"},
    "hevc": {"tune": "zerolatency"},
    "vp9": {"lag-in-frames": "0"},
    "av1": {"svtav1-params": "pred-struct=1"},
}


def _encoder_options(coder: VideoCoder, rate: Optional[str], preset: str) -> Dict[str, str]:
    speed = PRESETS.index(preset)  # 0 fastest .. 8 slowest
    value = rate[len(coder.rate) :] if rate and coder.rate else ""
    if coder.name == "hevc":
        return {"preset": preset, "x265-params": f"qp={value}:log-level=error"}
    if coder.name == "h264":
        return {"preset": preset, "qp": value}
    if coder.name == "av1":  # SVT-AV1 presets: 13 fastest .. 0 slowest
        return {"preset": str(12 - speed), "crf": value}
    if coder.name == "vp9":  # libvpx cpu-used: 8 fastest .. 0 slowest; constant quality
        return {"crf": value, "b": "0", "cpu-used": str(8 - speed), "deadline": "good"}
    return {"level": "3", "slicecrc": "0"}  # ffv1


def _video_frame(av, pixels: np.ndarray, fmt: str, depth: int):
    if fmt.startswith("gray"):
        return av.VideoFrame.from_ndarray(pixels, format=fmt)
    # 4:2:0 for encoders without a grey format: neutral chroma, the symbols in luma
    h, w = pixels.shape
    dtype = pixels.dtype
    chroma = np.full((h // 2, w // 2), 1 << (depth - 1), dtype=dtype)
    frame = av.VideoFrame(w, h, fmt)
    for plane, data in zip(frame.planes, (pixels, chroma, chroma)):
        _write_plane(plane, data)
    return frame


def _write_plane(plane, data: np.ndarray) -> None:
    row_bytes = data.shape[1] * data.itemsize
    view = np.frombuffer(plane, dtype=np.uint8).reshape(-1, plane.line_size)
    view[: data.shape[0], :row_bytes] = data.view(np.uint8).reshape(data.shape[0], row_bytes)


# -- decoding ----------------------------------------------------------------------------------


def decode(
    coder: VideoCoder, payload: bytes, count: int, height: int, width: int, bits: int
) -> np.ndarray:
    """Payload -> symbol frames (count, height, width); BitstreamError on anything wrong."""
    decoder = LowDelayDecoder(coder, bits)
    return decoder.decode(payload, count, height, width, flush=True)


class LowDelayDecoder:
    """Decodes one video, payload after payload; each must give exactly its frames."""

    def __init__(self, coder: VideoCoder, bits: int) -> None:
        self.coder, self.bits = coder, bits
        self.depth = coder.depth(bits)
        self._ctx: Any = None
        self._size: Optional[Tuple[int, int]] = None

    def decode(
        self, payload: bytes, count: int, height: int, width: int, flush: bool = False
    ) -> np.ndarray:
        av = _av()
        extradata, packets = _split(payload, count)
        ph, pw = padded_size(height, width)
        if self._ctx is None:
            self._ctx = _decoder(av, self.coder, (ph + CODED_MARGIN) * (pw + CODED_MARGIN))
            self._ctx.width, self._ctx.height = pw, ph  # FFV1 needs them; others read the stream
            if extradata:
                self._ctx.extradata = extradata
            self._size = (height, width)
        elif self._size != (height, width) or extradata:
            raise BitstreamError(f"{self.coder.name} frame size or configuration changed mid-video")
        name = self.coder.name
        out = np.empty((count, height, width), dtype=np.uint8 if self.depth == 8 else np.uint16)
        got = 0
        try:
            for packet in [*packets, None] if flush else packets:
                for frame in self._ctx.decode(None if packet is None else av.Packet(packet)):
                    if got == count:
                        raise BitstreamError(f"{name} payload decodes to more than {count} frames")
                    if (frame.height, frame.width) != (ph, pw):
                        raise BitstreamError(
                            f"{name} frame is {frame.width}x{frame.height}, expected {pw}x{ph}"
                        )
                    out[got] = _read_luma(frame, self.depth)[:height, :width]
                    got += 1
        except BitstreamError:
            raise
        except (av.FFmpegError, ValueError, TypeError) as exc:
            raise BitstreamError(f"{name} payload cannot be decoded: {exc}") from exc
        if got != count:
            raise BitstreamError(f"{name} payload decodes to {got} frames, expected {count}")
        return _to_symbols(out, self.bits, self.depth, self.coder.lossless)


def _decoder(av, coder: VideoCoder, max_pixels: int):
    for name in coder.decoders:
        try:
            ctx = av.CodecContext.create(name, "r")
        except av.codec.codec.UnknownCodecError:
            continue
        ctx.thread_count = 1  # one decode worker per core already; no frame delay
        # a forged size is refused, not allocated
        ctx.options = {"max_pixels": str(max_pixels), **_DECODER_OPTIONS.get(name, {})}
        return ctx
    raise BitstreamError(f"no {coder.name} decoder in this FFmpeg ({', '.join(coder.decoders)})")


_DECODER_OPTIONS: Dict[str, Dict[str, str]] = {"libdav1d": {"max_frame_delay": "1"}}


def _read_luma(frame, depth: int) -> np.ndarray:
    high = frame.format.name.endswith(("10le", "12le", "16le"))
    if high != (depth > 8):
        raise BitstreamError(f"video frame format {frame.format.name} is not {depth}-bit")
    dtype = np.dtype("<u2") if high else np.dtype(np.uint8)
    plane = frame.planes[0]
    rows = np.frombuffer(plane, dtype=np.uint8).reshape(-1, plane.line_size)[: frame.height]
    return rows[:, : frame.width * dtype.itemsize].view(dtype)


def _split(payload: bytes, count: int) -> Tuple[bytes, List[bytes]]:
    view = memoryview(payload)
    pos = 0

    def take(n: int, what: str) -> memoryview:
        nonlocal pos
        if pos + n > len(view):
            raise BitstreamError(f"truncated video payload: {what}")
        out = view[pos : pos + n]
        pos += n
        return out

    (size,) = struct.unpack("<I", take(4, "extradata length"))
    extradata = bytes(take(size, "extradata"))
    (packets,) = struct.unpack("<I", take(4, "packet count"))
    if packets > count + MAX_PACKETS_OVER_FRAMES:
        raise BitstreamError(f"video payload has {packets} packets for {count} frames")
    out = []
    for _ in range(packets):
        (size,) = struct.unpack("<I", take(4, "packet length"))
        out.append(bytes(take(size, "packet")))
    if pos != len(view):
        raise BitstreamError(f"video payload has {len(view) - pos} trailing bytes")
    return extradata, out


def available(names: Sequence[str] = tuple(VIDEO_CODERS)) -> Dict[str, bool]:
    """Which video coders this FFmpeg can encode (for ``edgecloud codecs`` and tests)."""
    try:
        av = _av()
    except CodecSpecError:
        return {name: False for name in names}
    out = {}
    for name in names:
        try:
            av.codec.Codec(VIDEO_CODERS[name].encoder, "w")
            out[name] = True
        except Exception:
            out[name] = False
    return out


def _av():
    os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its banner at info level otherwise
    try:
        import av
    except ImportError as exc:
        raise CodecSpecError(
            "video coders need PyAV: pip install 'edgecloud[video]' (or pip install av)"
        ) from exc
    # a damaged payload is a BitstreamError; libav's own line per bad frame would reach the
    # daemon's log unthrottled (a flood of garbage video = a flood of log lines)
    av.logging.set_level(av.logging.FATAL)
    return av
