"""Rate–accuracy sweeps: every (cut, codec) on real images, one flat result row each.

Each image's feature is encoded as its own message (as the edge sends it), decoded and run
through the tail. Calibration images are taken from the *end* of the sorted image list and are
disjoint from the evaluation images taken from the start. ``jpeg-input-qNN`` rows send the
preprocessed crop as JPEG through the whole model instead (cut ``input``).
"""

from __future__ import annotations

import csv
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from edgecloud.codec import (
    CodecCalibration,
    FeatureCodec,
    ImageInputCodec,
    LearnedCodec,
    parse_spec,
)
from edgecloud.datasets import ImageFolder, make_loader
from edgecloud.errors import DatasetError
from edgecloud.experiments.stats import accuracy_intervals
from edgecloud.models import ModelSpec
from edgecloud.partition import split
from edgecloud.partition.sensitivity import channel_sensitivity

INPUT_CUT = "input"
COLUMNS = [
    "model",
    "cut",
    "codec",
    "codec_canonical",
    "bits",
    "images",
    "calib_images",
    "top1",
    "top1_lo",
    "top1_hi",
    "top5",
    "top5_lo",
    "top5_hi",
    "ref_top1",
    "top1_drop",
    "top1_drop_lo",
    "top1_drop_hi",
    "mcnemar_p",
    "fidelity",
    "fidelity_lo",
    "fidelity_hi",
    "bytes_per_image",
    "bits_per_element",
    "elements",
    "encode_ms",
    "decode_ms",
    "head_ms",
    "tail_ms",
    "calibration",
]


def learned_codec(
    learned: Mapping[str, LearnedCodec], name: str, model: str, cut: str
) -> LearnedCodec:
    """The learned codec ``name`` from ``learned`` (the ``--codec-calibration`` files), checked
    for this model and cut; DatasetError naming the file to pass or the mismatch."""
    codec = learned.get(name)
    if codec is None:
        raise DatasetError(
            f"codec learned-{name} needs its file: --codec-calibration {name}.npz "
            "(made by `edgecloud train-codec`)"
        )
    meta = codec.meta
    if (meta.get("model"), meta.get("cut")) != (model, cut):
        raise DatasetError(
            f"learned codec {name} was trained for {meta.get('model')} at cut "
            f"{meta.get('cut')!r}, not {model} at {cut!r}"
        )
    return codec


@dataclass
class SweepData:
    """Evaluation and (disjoint) calibration images of one folder."""

    evaluation: ImageFolder
    calibration: Optional[ImageFolder]

    @classmethod
    def split(
        cls,
        root: str,
        model: ModelSpec,
        limit: Optional[int],
        calib_images: int,
        offset: int = 0,
    ) -> SweepData:
        """Calibration: the last ``calib_images`` files; evaluation: ``limit`` files (all
        that are left by default) after the first ``offset``."""
        total = len(ImageFolder(root, model.preprocessing).files)
        if calib_images < 0 or offset < 0 or calib_images + offset >= total:
            raise DatasetError(
                f"--calib-images {calib_images} and --offset {offset} leave no evaluation images "
                f"({total} in {root})"
            )
        available = total - calib_images
        n_eval = available - offset if limit is None else min(limit, available - offset)
        evaluation = ImageFolder(root, model.preprocessing, limit=n_eval, offset=offset)
        calibration = None
        if calib_images:
            calibration = ImageFolder(
                root, model.preprocessing, limit=calib_images, offset=available
            )
        return cls(evaluation, calibration)

    def describe(self) -> str:
        ev = self.evaluation.files
        text = f"evaluation: {len(ev)} images ({ev[0].name} .. {ev[-1].name})"
        if self.calibration is not None:
            cal = self.calibration.files
            text += f"; calibration: {len(cal)} disjoint images ({cal[0].name} .. {cal[-1].name})"
        return text


def expand_codecs(codecs: Sequence[str], bits: Optional[Sequence[int]]) -> List[str]:
    """Substitute every bit depth of ``bits`` into each ``qN-...`` spec; keep the rest as is."""
    out: List[str] = []
    for codec in codecs:
        parse_spec(codec)  # fail early with a clear CodecSpecError
        if bits and re.match(r"^q\d+-", codec):
            variants = [re.sub(r"^q\d+", f"q{b}", codec) for b in bits]
        else:
            variants = [codec]
        for v in variants:
            parse_spec(v)
            if v not in out:
                out.append(v)
    return out


@dataclass
class _CutFeatures:
    """Head outputs of all evaluation images at one cut (disk-backed) and their timing."""

    features: np.ndarray  # (N, C, H, W) memmap
    labels: np.ndarray
    head_ms: float
    calibration: Optional[np.ndarray]
    sensitivity: Optional[np.ndarray] = None  # per channel, for rdX specs (computed once)


Progress = Callable[[int], None]


def _no_progress(_images: int) -> None:
    pass


def _run_head(
    head: Callable, loader: Iterable, count: int, path: Path, progress: Progress
) -> Tuple[np.ndarray, np.ndarray, float]:
    feats: Optional[np.ndarray] = None
    labels: List[np.ndarray] = []
    pos, seconds = 0, 0.0
    with torch.inference_mode():
        for images, batch_labels, _ in loader:
            progress(len(images))
            start = time.perf_counter()
            out = head(images).numpy()
            seconds += time.perf_counter() - start
            if feats is None:
                feats = np.lib.format.open_memmap(
                    path, mode="w+", dtype=np.float32, shape=(count,) + out.shape[1:]
                )
            feats[pos : pos + len(out)] = out
            labels.append(batch_labels.numpy())
            pos += len(out)
    if feats is None:
        raise DatasetError("no readable images")
    return feats[:pos], np.concatenate(labels), 1e3 * seconds / max(pos, 1)


def _scores(logits: torch.Tensor, labels: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    top5 = logits.topk(5, dim=1).indices.numpy()
    return top5[:, 0], (top5 == labels[:, None]).any(axis=1)


@dataclass
class Sweep:
    """Runs a sweep; :meth:`rows` yields one result dict per (cut, codec).

    ``codecs`` are spec strings as the user typed them (rows carry them as ``codec`` and the
    canonical form as ``codec_canonical``); ``progress`` is called with the number of images
    each step has processed (:meth:`total_images` is the sum over the whole sweep).
    """

    model: ModelSpec
    data: SweepData
    cuts: Sequence[str]
    codecs: Sequence[str]
    batch_size: int = 32
    workers: int = 2
    calibration_dir: Optional[Path] = None
    learned: Dict[str, LearnedCodec] = field(default_factory=dict)  # learned-NAME codecs by name
    on_bad_image: str = "skip"
    progress: Progress = _no_progress
    skip: Callable[[str, str], bool] = lambda cut, codec: False
    _ref: Optional[Dict[str, np.ndarray]] = field(default=None, init=False)

    def _loader(self, dataset: ImageFolder):
        return make_loader(dataset, self.batch_size, self.workers, self.on_bad_image)

    def total_images(self) -> int:
        """Images processed by the rows still to run (reference, head passes, codec rows)."""
        n = len(self.data.evaluation)
        n_cal = len(self.data.calibration) if self.data.calibration is not None else 0
        feature = [c for c in self.codecs if parse_spec(c).kind != "image-input"]
        inputs = [c for c in self.codecs if parse_spec(c).kind == "image-input"]
        rows = [(cut, c) for cut in self.cuts for c in feature if not self.skip(cut, c)]
        rows += [(INPUT_CUT, c) for c in inputs if not self.skip(INPUT_CUT, c)]
        cuts = {cut for cut, _ in rows if cut != INPUT_CUT}
        return (n if rows else 0) + len(cuts) * (n + n_cal) + len(rows) * n

    def reference(self) -> Dict[str, np.ndarray]:
        """Uncompressed full-model predictions on the evaluation images."""
        if self._ref is None:
            preds, hits5, labels = [], [], []
            with torch.inference_mode():
                for images, batch_labels, _ in self._loader(self.data.evaluation):
                    self.progress(len(images))
                    p, h = _scores(self.model.module(images), batch_labels.numpy())
                    preds.append(p)
                    hits5.append(h)
                    labels.append(batch_labels.numpy())
            self._ref = {
                "pred": np.concatenate(preds),
                "hit5": np.concatenate(hits5),
                "labels": np.concatenate(labels),
            }
        return self._ref

    def rows(self) -> Iterator[Dict[str, object]]:
        feature_codecs = [c for c in self.codecs if parse_spec(c).kind != "image-input"]
        input_codecs = [c for c in self.codecs if parse_spec(c).kind == "image-input"]
        for cut in self.cuts:  # before any image is read: a missing or unusable learned codec
            for codec in feature_codecs:
                if parse_spec(codec).kind == "learned" and not self.skip(cut, codec):
                    self._learned(parse_spec(codec).name, cut)
        for codec in input_codecs:
            if not self.skip(INPUT_CUT, codec):
                yield self._input_row(codec, self.reference())
        for cut in self.cuts:
            todo = [c for c in feature_codecs if not self.skip(cut, c)]
            if not todo:
                continue
            head, tail = split(self.model, cut)
            with tempfile.TemporaryDirectory(prefix="edgecloud-sweep-") as tmp:
                cf = self._cut_features(head, cut, Path(tmp))
                tail_ms = self._tail_ms(tail, cf.features)
                for codec in todo:
                    yield self._feature_row(cut, codec, tail, cf, tail_ms, self.reference())

    def _cut_features(self, head, cut: str, tmp: Path) -> _CutFeatures:
        n = len(self.data.evaluation)
        feats, labels, head_ms = _run_head(
            head, self._loader(self.data.evaluation), n, tmp / "eval.npy", self.progress
        )
        cal = None
        if self.data.calibration is not None:
            cal, _, _ = _run_head(
                head,
                self._loader(self.data.calibration),
                len(self.data.calibration),
                tmp / "calib.npy",
                self.progress,
            )
            cal = np.asarray(cal)
        return _CutFeatures(feats, labels, head_ms, cal)

    def _tail_ms(self, tail, feats: np.ndarray) -> float:
        batch = torch.from_numpy(np.array(feats[: self.batch_size]))
        with torch.inference_mode():
            tail(batch)  # warm-up
            start = time.perf_counter()
            tail(batch)
        return 1e3 * (time.perf_counter() - start) / len(batch)

    def _make_codec(self, cut: str, codec: str, tail, cf: _CutFeatures) -> FeatureCodec:
        spec = parse_spec(codec)
        if spec.kind == "learned":
            return FeatureCodec(spec, self._learned(spec.name, cut))
        if not spec.needs_calibration:
            return FeatureCodec(spec)
        if cf.calibration is None:
            raise DatasetError(f"codec {codec!r} needs calibration images (--calib-images > 0)")
        if spec.target_rate is not None and cf.sensitivity is None:
            cf.sensitivity = channel_sensitivity(tail, cf.calibration)
        cal = CodecCalibration.fit(
            cf.calibration,
            spec,
            sensitivity=cf.sensitivity if spec.target_rate is not None else None,
            model=self.model.name,
            weights=self.model.weights_id,
            cut=cut,
            calibration_files=f"{self.data.calibration.files[0].name}.."
            f"{self.data.calibration.files[-1].name}",
        )
        if self.calibration_dir is not None:
            cal.save(self.calibration_dir)
        return FeatureCodec(spec, cal)

    def _learned(self, name: str, cut: str) -> LearnedCodec:
        """The learned codec ``name``, checked for this model and cut and for training images
        that would be evaluated on."""
        codec = learned_codec(self.learned, name, self.model.name, cut)
        meta = codec.meta
        overlap = set(meta.get("train_files", ())) & {p.name for p in self.data.evaluation.files}
        if overlap:
            raise DatasetError(
                f"learned codec {name} was trained on {len(overlap)} of the evaluation images "
                f"(e.g. {sorted(overlap)[0]}): evaluate on images it has not seen (--limit)"
            )
        return codec

    def _feature_row(self, cut, codec_name, tail, cf: _CutFeatures, tail_ms, ref):
        codec = self._make_codec(cut, codec_name, tail, cf)
        n = len(cf.features)
        total_bytes, enc_s, dec_s = 0, 0.0, 0.0
        preds, hits5 = [], []
        with torch.inference_mode():
            for start in range(0, n, self.batch_size):
                batch = np.asarray(cf.features[start : start + self.batch_size])
                self.progress(len(batch))
                decoded = []
                for feature in batch:
                    t0 = time.perf_counter()
                    data = codec.encode(feature)
                    t1 = time.perf_counter()
                    decoded.append(codec.decode(data))
                    dec_s += time.perf_counter() - t1
                    enc_s += t1 - t0
                    total_bytes += len(data)
                logits = tail(torch.from_numpy(np.stack(decoded)))
                p, h = _scores(logits, cf.labels[start : start + len(batch)])
                preds.append(p)
                hits5.append(h)
        elements = int(np.prod(cf.features.shape[1:]))
        spec = codec.spec
        bits = spec.bits if spec.kind in ("quant", "learned") else spec.float_bits
        row = self._row(
            cut, codec_name, codec.name, bits, np.concatenate(preds), np.concatenate(hits5),
            ref, total_bytes, elements, enc_s, dec_s, cf.head_ms, tail_ms,
            codec.calibration.id if codec.calibration else "",
        )  # fmt: skip
        if spec.kind == "learned":  # its "calibration" images are the training images
            row["calib_images"] = len(codec.calibration.meta.get("train_files", ()))
        return row

    def _input_row(self, codec_name: str, ref) -> Dict[str, object]:
        codec = ImageInputCodec.from_spec(codec_name)
        pre = self.model.preprocessing
        ds = self.data.evaluation
        total_bytes, enc_s, dec_s = 0, 0.0, 0.0
        preds, hits5 = [], []
        model_s = 0.0
        # the images the reference pass could read (an unreadable one is skipped everywhere)
        indices = [i for i, path in enumerate(ds.files) if path.name not in ds.skipped]
        with torch.inference_mode():
            for start in range(0, len(indices), self.batch_size):
                tensors, labels = [], []
                for i in indices[start : start + self.batch_size]:
                    crop = pre.crop_image(ds.load_image(i))
                    labels.append(ds.labels[i])
                    t0 = time.perf_counter()
                    data = codec.encode(crop)
                    t1 = time.perf_counter()
                    tensors.append(pre.normalize(np.asarray(codec.decode(data))))
                    dec_s += time.perf_counter() - t1
                    enc_s += t1 - t0
                    total_bytes += len(data)
                self.progress(len(tensors))
                t2 = time.perf_counter()
                logits = self.model.module(torch.stack(tensors))
                model_s += time.perf_counter() - t2
                p, h = _scores(logits, np.asarray(labels))
                preds.append(p)
                hits5.append(h)
        elements = int(np.prod(self.model.input_shape))
        return self._row(
            INPUT_CUT, codec_name, codec.name, 8, np.concatenate(preds), np.concatenate(hits5),
            ref, total_bytes, elements, enc_s, dec_s, 0.0, 1e3 * model_s / len(indices), "",
        )  # fmt: skip

    def _row(
        self, cut, codec, canonical, bits, preds, hits5, ref, total_bytes, elements, enc_s,
        dec_s, head_ms, tail_ms, calibration,
    ) -> Dict[str, object]:  # fmt: skip
        n = len(preds)
        known = ref["labels"] >= 0
        labels = ref["labels"][known]

        def accuracy(hits: np.ndarray) -> float:  # NaN on an unlabelled folder
            return float(np.mean(hits)) if len(hits) else float("nan")

        ref_hits, hits = ref["pred"][known] == labels, preds[known] == labels
        agree = preds == ref["pred"]
        ref_top1, top1 = accuracy(ref_hits), accuracy(hits)
        ci = accuracy_intervals(hits, ref_hits, agree, hits5[known])
        cal_images = len(self.data.calibration or ()) if calibration else 0
        return {
            "model": self.model.name,
            "cut": cut,
            "codec": codec,
            "codec_canonical": canonical,
            "bits": bits,
            "images": n,
            "calib_images": cal_images,
            "top1": top1,
            "top1_lo": ci["top1_lo"],
            "top1_hi": ci["top1_hi"],
            "top5": accuracy(hits5[known]),
            "top5_lo": ci["top5_lo"],
            "top5_hi": ci["top5_hi"],
            "ref_top1": ref_top1,
            "top1_drop": ref_top1 - top1,
            "top1_drop_lo": ci["top1_drop_lo"],
            "top1_drop_hi": ci["top1_drop_hi"],
            "mcnemar_p": ci["mcnemar_p"],
            "fidelity": float(np.mean(agree)),
            "fidelity_lo": ci["fidelity_lo"],
            "fidelity_hi": ci["fidelity_hi"],
            "bytes_per_image": total_bytes / n,
            "bits_per_element": 8.0 * total_bytes / (n * elements),
            "elements": elements,
            "encode_ms": 1e3 * enc_s / n,
            "decode_ms": 1e3 * dec_s / n,
            "head_ms": head_ms,
            "tail_ms": tail_ms,
            "calibration": calibration,
        }


class CsvLog:
    """Appends rows to a CSV as they finish; can tell which (cut, codec) rows already exist."""

    def __init__(self, path: Path, resume: bool) -> None:
        self.path = path
        self.columns = list(COLUMNS)
        self.done: Dict[Tuple[str, str], Dict[str, str]] = {}
        if resume and path.is_file():
            with path.open(newline="") as fh:
                reader = csv.DictReader(fh)
                old = list(reader)
                header = list(reader.fieldnames or [])
            for row in old:
                canonical = row.get("codec_canonical") or parse_spec(row["codec"]).canonical
                self.done[(row["cut"], canonical)] = row
            self.columns += [c for c in header if c not in self.columns]
            if header != self.columns:  # an older CSV: rewrite it under the current header
                self._write(old)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._write([])

    def _write(self, rows: List[Dict[str, str]]) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        with tmp.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, self.columns, restval="")
            writer.writeheader()
            writer.writerows(rows)
        tmp.replace(self.path)

    def has(self, cut: str, codec: str) -> bool:
        return (cut, parse_spec(codec).canonical) in self.done

    def append(self, row: Dict[str, object]) -> None:
        with self.path.open("a", newline="") as fh:
            csv.DictWriter(fh, self.columns, restval="").writerow(row)
