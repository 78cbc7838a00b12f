"""Command line of tools/demo.py: run a trained model on PNG/JPEG/DICOM files, write overlays and detection JSON.

Exit status: 0 when every input was processed, 1 when some inputs were skipped (each named with its reason
in the log and in <output>/demo_summary.json), 2 when the run cannot start (config, weights, vocabulary,
no input at all, a numeric argument out of range, an --output/--dicom-out that is a file or cannot be created,
or an output that would overwrite an input). A given path that does not exist is skipped like an unreadable image.
"""
import argparse
import json
import logging
from pathlib import Path
from typing import List, Optional

from detectron2.utils.logger import setup_logger
import cv2
from tqdm import tqdm

from ..data.dicom import DEFAULT_LONG_SIDE
from ..config import build_cfg
from .dicom_out import write_secondary_capture
from ..numeric_args import long_side_problem, number_problem, problems_of
from .inputs import collect_inputs, is_dicom, read_input_image
from .outputs import detection_records, draw_overlay, folder_problem, overwritten_inputs, planned_outputs
from .outputs import unique_stems, write_prediction
from .predictor import CXRPredictor
from .vocabulary import demo_vocabulary

logger = logging.getLogger(__name__)

SUMMARY_NAME = "demo_summary"
# The score threshold of every detector head detectron2 knows, set from --confidence-threshold.
_THRESHOLD_KEYS = (
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
    "MODEL.RETINANET.SCORE_THRESH_TEST",
    "MODEL.PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH",
)


def build_parser() -> argparse.ArgumentParser:
    """Arguments of tools/demo.py (detectron2's demo, plus vocabularies and DICOM decoding)."""
    parser = argparse.ArgumentParser(
        prog="demo.py",
        description="Detect findings on chest X-ray images (PNG, JPEG or DICOM) with a trained cxr-codet model.",
        epilog="example: python tools/demo.py --config-file configs/phantom/cxr_codet_R18_FPN_phantom.yaml "
        "--input scans/ --output predictions/ --custom-vocabulary 'Nodule,Pleural effusion' "
        "--opts MODEL.WEIGHTS output/phantom/cxr_codet_R18_FPN/model_final.pth",
    )
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--input", nargs="+", required=True, help="image or DICOM files, or folders of them")
    parser.add_argument("--output", required=True, type=Path, help="folder for <name>.png overlays and <name>.json")
    parser.add_argument("--confidence-threshold", type=float, default=0.5, help="minimum score to keep (default 0.5)")
    vocabulary = parser.add_mutually_exclusive_group()
    vocabulary.add_argument(
        "--vocabulary", help="findings to detect: a registered dataset's classes, or vindr_cxr / nih_cxr14"
    )
    vocabulary.add_argument(
        "--custom-vocabulary", help='comma-separated finding names, e.g. "Nodule,Pneumothorax" (CXR-CoDet only)'
    )
    parser.add_argument("--cpu", action="store_true", help="run on CPU even when CUDA is available")
    parser.add_argument(
        "--dicom-long-side", type=int, default=DEFAULT_LONG_SIDE,
        help=f"decode DICOMs with the long side shrunk to this, as tools/prepare_vindr.py does "
        f"(default {DEFAULT_LONG_SIDE}; 0 keeps the original size); boxes are reported on the original grid",
    )
    parser.add_argument(
        "--dicom-out", type=Path, metavar="DIR",
        help="for each DICOM input, also write DIR/<name>.dcm: a DICOM Secondary Capture of the overlay in the "
        "source's study (same patient and StudyInstanceUID, new series and SOP UIDs, referencing the source)",
    )
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE config overrides")
    return parser


def argument_problems(args: argparse.Namespace) -> List[str]:
    """What is wrong with the numeric arguments and output folders (checked before anything is read or built)."""
    return problems_of([
        number_problem("--confidence-threshold", args.confidence_threshold, low=0, high=1),
        long_side_problem("--dicom-long-side", args.dicom_long_side, zero="keep the DICOM size"),
        folder_problem("--output", args.output),
        folder_problem("--dicom-out", args.dicom_out),
    ])


def overwrite_problem(args: argparse.Namespace, inputs: List[Path], stems: List[str]) -> Optional[str]:
    """Why the outputs would overwrite inputs (naming them), or None."""
    planned = planned_outputs(args.output, args.dicom_out, inputs, stems, [is_dicom(p) for p in inputs],
                              SUMMARY_NAME)
    hit = overwritten_inputs(planned, inputs)
    if not hit:
        return None
    folders = {"--output": args.output, "--dicom-out": args.dicom_out}
    listed = ", ".join(f"{path} ({flag} {folders[flag]})" for path, flag in hit[:5])
    more = f" and {len(hit) - 5} more" if len(hit) > 5 else ""
    return (f"writing the outputs would overwrite {len(hit)} input{'s' if len(hit) > 1 else ''}: {listed}{more}; "
            "choose an --output and --dicom-out folder that holds none of the inputs")


def demo_cfg(args: argparse.Namespace):
    """The config file with --opts and the confidence threshold applied."""
    thresholds = [item for key in _THRESHOLD_KEYS for item in (key, args.confidence_threshold)]
    return build_cfg(args.config_file, list(args.opts) + thresholds, cpu=args.cpu)


def run_demo(args: argparse.Namespace) -> int:
    """Predict every input; returns the exit status (see the module docstring)."""
    problems = []
    try:
        refused = argument_problems(args)
        if refused:
            raise ValueError("; ".join(refused))
        cfg = demo_cfg(args)
        inputs = collect_inputs(args.input, problems)
        if not inputs:
            raise FileNotFoundError("; ".join(reason for _, reason in problems))
        stems = unique_stems(inputs, reserved=[SUMMARY_NAME])
        overwrite = overwrite_problem(args, inputs, stems)
        if overwrite:
            raise ValueError(overwrite)
        names = demo_vocabulary(args.vocabulary, args.custom_vocabulary)
        predictor = CXRPredictor(cfg)
        if names is not None:
            predictor.use_vocabulary(names)
    except (ValueError, KeyError, FileNotFoundError, AssertionError) as e:  # yacs: AssertionError on unknown keys
        logger.error("demo cannot start: %s", e.args[0] if isinstance(e, KeyError) and e.args else e)
        return 2
    args.output.mkdir(parents=True, exist_ok=True)
    written, skipped = [], []
    for path, reason in problems:  # inputs that do not exist (or empty folders) are skipped like unreadable ones
        logger.error("skipped %s: %s", path, reason)
        skipped.append({"input": path, "reason": reason})
    for path, stem in zip(tqdm(inputs, desc="demo", unit="image"), stems):
        try:
            image = read_input_image(path, args.dicom_long_side)
            tensor = predictor.prepare(image.pixels)
        except (ValueError, OSError) as e:
            logger.error("skipped %s: %s", path, e)
            skipped.append({"input": str(path), "reason": str(e)})
            continue
        instances = predictor.predict(tensor, (image.original_height, image.original_width))
        detections = detection_records(instances, predictor.class_names)
        files = write_prediction(args.output, stem, image, detections, predictor.class_names, args.confidence_threshold)
        if args.dicom_out and image.kind == "dicom":
            overlay_rgb = cv2.cvtColor(draw_overlay(image, detections), cv2.COLOR_BGR2RGB)
            try:
                files["dicom"] = str(write_secondary_capture(path, overlay_rgb, args.dicom_out / f"{stem}.dcm",
                                                             detections))
            except (ValueError, OSError) as e:
                logger.error("no DICOM overlay for %s: %s", path, e)
                skipped.append({"input": str(path), "reason": f"--dicom-out: {e}"})
        elif args.dicom_out:
            logger.info("--dicom-out: %s is not a DICOM (no study to file an overlay under); PNG only", path)
        written.append({"input": str(path), "detections": len(detections), **files})
    summary = {"processed": written, "skipped": skipped}
    (args.output / f"{SUMMARY_NAME}.json").write_text(json.dumps(summary, indent=1))
    logger.info("Processed %d of %d inputs into %s; skipped %d", len(written), len(inputs) + len(problems),
                args.output, len(skipped))
    return 1 if skipped else 0


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of tools/demo.py."""
    setup_logger(name="cxr_codet")
    return run_demo(build_parser().parse_args(argv))
