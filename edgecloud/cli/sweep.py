"""``edgecloud sweep``: rate–accuracy sweep over cut points × codecs (× bit depths)."""

from __future__ import annotations

import argparse
from pathlib import Path

from edgecloud.cli.common import (
    add_data_options,
    add_model_options,
    add_output_options,
    format_table,
    write_json,
)

DEFAULT_CODECS = (
    "raw,f16-zstd,q8-ncc-zstd,q4-ncc-zstd,q4-ncc-crans-s2-pt,q4-ncc-crans-s2.5-pt,"
    "jpeg-input-q75,jpeg-input-q95"
)
TABLE = [
    "cut",
    "codec",
    "top1",
    "top1_drop",
    "fidelity",
    "bytes_per_image",
    "bits_per_element",
    "encode_ms",
    "decode_ms",
]
_NUMERIC_INT = {"bits", "images", "calib_images", "elements"}


def _csv_list(text: str):
    return [t.strip() for t in text.split(",") if t.strip()]


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "sweep",
        help="rate-accuracy sweep: cuts x codecs x bit depths -> CSV/JSON/plot",
        description="Encode every evaluation image's feature at each cut with each codec (one "
        "message per image), decode it, run the tail and report top-1/top-5, fidelity (top-1 "
        "agreement with the uncompressed model), bytes/image, bits/element and encode/decode "
        "ms/image. Calibration images (for calibrated codecs) are the LAST --calib-images files "
        "of the sorted folder; evaluation uses the first --limit of the rest, so the two sets "
        "are disjoint. jpeg-input-qNN codecs send the 224x224 crop as JPEG instead (cut "
        "'input'). Codec specs: see docs/codec.md.",
    )
    add_model_options(parser)
    parser.add_argument(
        "--cuts", default=None, help="comma-separated cut names (default: the model's default cut)"
    )
    parser.add_argument(
        "--codecs",
        default=DEFAULT_CODECS,
        help=f"comma-separated codec specs (default {DEFAULT_CODECS})",
    )
    parser.add_argument(
        "--bits",
        default=None,
        help="comma-separated bit depths substituted into every qN-... codec, e.g. 2,3,4,8",
    )
    add_data_options(parser)
    parser.add_argument(
        "--calib-images",
        type=int,
        default=64,
        help="calibration images, taken from the end of the sorted folder (default 64)",
    )
    parser.add_argument(
        "--calibration",
        default=None,
        help="directory to save the fitted codec calibrations in (e.g. calibration/)",
    )
    parser.add_argument("--csv", dest="csv_path", default=None, help="append rows to this CSV")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="with --csv: keep the rows already in the CSV and run only the missing ones",
    )
    parser.add_argument(
        "--markdown", default=None, help="also write the results as a Markdown table to PATH"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_output_options(parser, plot=True)
    parser.set_defaults(func=run)


def _typed(row):
    out = {}
    for key, value in row.items():
        if key in _NUMERIC_INT:
            out[key] = int(value)
        else:
            try:
                out[key] = float(value)
            except (TypeError, ValueError):
                out[key] = value
    return out


def run(args: argparse.Namespace) -> int:
    from edgecloud.experiments.plots import markdown_table, plot_rate_accuracy
    from edgecloud.experiments.sweep import CsvLog, Sweep, SweepData, expand_codecs
    from edgecloud.models import load_model
    from edgecloud.partition import default_cut, get_cut

    bits = [int(b) for b in _csv_list(args.bits)] if args.bits else None
    codecs = expand_codecs(_csv_list(args.codecs), bits)
    model = load_model(args.model, args.weights)
    cuts = _csv_list(args.cuts) if args.cuts else [default_cut(model)]
    for cut in cuts:
        get_cut(model, cut)  # CutPointError lists the valid names
    data = SweepData.split(args.data, model, args.limit, args.calib_images)
    print(data.describe())
    log = CsvLog(Path(args.csv_path), args.resume) if args.csv_path else None
    rows = [_typed(r) for r in log.done.values()] if log else []
    if rows:
        print(f"resuming: {len(rows)} rows already in {args.csv_path}")
    sweep = Sweep(
        model,
        data,
        cuts,
        codecs,
        batch_size=args.batch_size,
        workers=args.workers,
        calibration_dir=Path(args.calibration) if args.calibration else None,
        progress=not args.no_progress,
        skip=log.has if log else (lambda cut, codec: False),
    )
    for row in sweep.rows():
        rows.append(row)
        if log:
            log.append(row)
        print(
            f"{row['cut']} {row['codec']}: top1 {row['top1']:.4f} (drop {row['top1_drop']:+.4f}) "
            f"{row['bytes_per_image']:.0f} B/image {row['bits_per_element']:.3f} bit/element",
            flush=True,
        )
    print()
    print(format_table(rows, TABLE))
    if rows:
        print(f"uncompressed top1 {rows[0]['ref_top1']:.4f} on {rows[0]['images']} images")
    write_json(args.json_path, {"data": data.describe(), "rows": rows})
    if args.markdown:
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text(markdown_table(rows))
    if args.plot:
        print(f"plot: {plot_rate_accuracy(rows, args.plot)}")
    return 0
