"""Rate-fidelity sweep on a video: every codec per frame and, where it can, as a stream.

The reference is the uncompressed model on the same frames (video has no labels): fidelity is
the top-1 agreement with it per frame, top-5 agreement says whether its top-1 is in the
decoded top 5. Calibrated codecs are fitted on still images (``calibration_images``), never on
the video itself.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence

import numpy as np
import torch

from edgecloud.codec import CodecCalibration, FeatureCodec, LearnedCodec, parse_spec
from edgecloud.codec.feature_codec import Calibration
from edgecloud.codec.stream import StreamDecoder, StreamEncoder, stream_kind
from edgecloud.errors import CodecSpecError
from edgecloud.experiments.stats import bootstrap_ci
from edgecloud.experiments.sweep import learned_codec
from edgecloud.partition import split
from edgecloud.partition.sensitivity import channel_sensitivity


def can_stream(spec: str) -> bool:
    try:
        stream_kind(parse_spec(spec))
    except CodecSpecError:
        return False
    return True


@dataclass
class VideoSweep:
    """``rows()`` yields one row per (cut, codec, mode) with mode ``frame`` or ``stream``."""

    model: Any
    frames: Sequence[Any]  # PIL images, in order
    cuts: Sequence[str]
    codecs: Sequence[str]
    calibration_images: Optional[torch.Tensor] = None  # preprocessed (N, 3, H, W)
    keyframe_interval: int = 30
    skip_levels: Sequence[int] = (0,)
    video: str = ""
    progress: Callable[[int], None] = lambda _n: None
    learned: Dict[str, LearnedCodec] = field(default_factory=dict)  # learned-NAME codecs
    _sensitivity: Dict[str, np.ndarray] = field(default_factory=dict, init=False)  # by cut

    def check_learned(self) -> None:
        """DatasetError unless every ``learned-NAME`` codec is loaded and made for this model
        and each cut (cheap: before any frame is coded)."""
        for codec in self.codecs:
            spec = parse_spec(codec)
            if spec.kind == "learned":
                for cut in self.cuts:
                    learned_codec(self.learned, spec.name, self.model.name, cut)

    def rows(self) -> Iterator[Dict[str, Any]]:
        self.check_learned()
        x = torch.stack([self.model.preprocessing(image) for image in self.frames])
        for cut in self.cuts:
            head, tail = split(self.model, cut)
            with torch.inference_mode():
                start = time.perf_counter()
                features = torch.cat([head(x[i : i + 1]) for i in range(len(x))]).numpy()
                head_ms = 1000.0 * (time.perf_counter() - start) / len(x)
                reference = tail(torch.from_numpy(features)).argmax(1).numpy()
                calib = None
                if self.calibration_images is not None:
                    calib = head(self.calibration_images).numpy()
            for codec in self.codecs:
                calibration = self._calibration(codec, cut, calib, tail)
                base = {"video": self.video, "model": self.model.name, "cut": cut,
                        "codec": codec, "frames": len(x), "head_ms": round(head_ms, 3)}  # fmt: skip
                yield {**base, **self._per_frame(codec, calibration, features, tail, reference)}
                self.progress(len(x))
                if can_stream(codec):
                    for skip in self.skip_levels:
                        row = self._stream(codec, calibration, skip, features, tail, reference)
                        yield {**base, **row}
                        self.progress(len(x))

    def _calibration(
        self,
        codec: str,
        cut: str,
        calib: Optional[np.ndarray],
        tail: torch.nn.Module,
    ) -> Optional[Calibration]:
        """What ``codec`` needs at ``cut``: a calibration fitted on the still images (for
        ``rdX`` with the channels' sensitivity through ``tail``), a learned codec, or None."""
        spec = parse_spec(codec)
        if spec.kind == "learned":
            return learned_codec(self.learned, spec.name, self.model.name, cut)
        if not spec.needs_calibration:
            return None
        if calib is None:
            raise CodecSpecError(f"{codec} needs calibration images")
        if spec.target_rate is None:
            return CodecCalibration.fit(calib, spec)
        if cut not in self._sensitivity:  # of the channels, through the tail: once per cut
            self._sensitivity[cut] = channel_sensitivity(tail, calib)
        return CodecCalibration.fit(calib, spec, sensitivity=self._sensitivity[cut])

    def _per_frame(self, codec, calibration, features, tail, reference) -> Dict[str, Any]:
        coder = FeatureCodec.from_spec(codec, calibration)
        return _measure(coder.encode, coder.decode, features, tail, reference, "frame", None,
                        self.keyframe_interval)  # fmt: skip

    def _stream(self, codec, calibration, skip, features, tail, reference) -> Dict[str, Any]:
        encoder = StreamEncoder(codec, calibration, "sweep", self.keyframe_interval, skip)
        decoder = StreamDecoder({calibration.id: calibration} if calibration else {})
        try:
            return _measure(encoder.encode, decoder.decode, features, tail, reference, "stream",
                            skip, self.keyframe_interval)  # fmt: skip
        finally:
            encoder.close()


def _measure(encode, decode, features, tail, reference, mode, skip, block) -> Dict[str, Any]:
    """One row's rate, agreement and times; intervals: circular block bootstrap, ``block``
    consecutive frames per block (neighbouring frames are far from independent)."""
    sizes: List[int] = []
    decoded = []
    encode_s = decode_s = 0.0
    for feature in features:
        t0 = time.perf_counter()
        stream = encode(feature)
        t1 = time.perf_counter()
        decoded.append(decode(stream))
        encode_s += t1 - t0
        decode_s += time.perf_counter() - t1
        sizes.append(len(stream))
    with torch.inference_mode():
        top5 = tail(torch.from_numpy(np.stack(decoded))).topk(5, dim=1).indices.numpy()
    n = len(features)
    agree = top5[:, 0] == reference
    agree5 = (top5 == reference[:, None]).any(axis=1)
    fidelity = [round(v, 4) for v in bootstrap_ci(agree, block=block)]
    top5_ci = [round(v, 4) for v in bootstrap_ci(agree5, block=block)]
    return {
        "mode": mode,
        "skip_levels": skip,
        "bytes_per_frame": round(float(np.mean(sizes)), 1),
        "bits_per_element": round(8.0 * float(np.mean(sizes)) / features[0].size, 4),
        "fidelity": round(float(np.mean(agree)), 4),
        "fidelity_lo": fidelity[0],
        "fidelity_hi": fidelity[1],
        "top5_agreement": round(float(np.mean(agree5)), 4),
        "top5_agreement_lo": top5_ci[0],
        "top5_agreement_hi": top5_ci[1],
        "encode_ms": round(1000.0 * encode_s / n, 3),
        "decode_ms": round(1000.0 * decode_s / n, 3),
    }


def best(rows: Sequence[Mapping[str, Any]], mode: str, fidelity: float) -> Optional[Mapping]:
    """The smallest row of ``mode`` with at least ``fidelity``."""
    fit = [r for r in rows if r["mode"] == mode and r["fidelity"] >= fidelity]
    return min(fit, key=lambda r: r["bytes_per_frame"]) if fit else None
