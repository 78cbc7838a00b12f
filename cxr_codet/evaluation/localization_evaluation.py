"""`LocalizationEvaluator`: scores a model's prompt heat maps against ground-truth boxes, per finding.

It reads, for each image, the model output's "localization" entry ({"findings", "prompts", "heatmaps"
[P, H, W] on the original image}, as the side heads return it) and the dataset's boxes, and scores every
(image, finding) pair that has boxes, the ground truth being the union of that finding's boxes (for a
record with a "phrase", as MS-CXR gives, the pair is (image, phrase) with all the record's boxes).
Metrics are LocalizationAccumulator's: mean IoU over thresholds, CNR, two-class mIoU, pointing game, per
finding and macro-averaged, with bootstrap CIs; and Wang et al.'s localization accuracy by IoBB per
ground-truth box (iobb.py, "IoBB_acc@T"); returned as {"localization": {...}} (plain fractions, not
percent). Heat-map overlays of the first NUM_OVERLAYS images are written to `output_dir`/heatmap_overlays/.

Evaluator choice per dataset: `build_configured_evaluator` builds and combines the evaluators that
TEST.EVALUATORS_BY_DATASET lists for a dataset (the hook for `build_evaluator`), else returns None.
"""
import logging
import os
from collections import Counter, OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
from detectron2.structures import BoxMode
from detectron2.utils import comm
from tabulate import tabulate

from ..data.image_io import read_gray
from ..modeling.postprocessing import gmm_threshold_mask
from .base import CXRDatasetEvaluator, file_slug
from .build import EVALUATOR_REGISTRY
from .heatmap_overlays import save_heatmap_overlay
from .iobb import WANG_IOBB_THRESHOLDS, WANG_MAP_THRESHOLD, IoBBAccumulator
from .localization_metrics import DEFAULT_THRESHOLDS, LocalizationAccumulator

logger = logging.getLogger(__name__)

OVERLAY_FOLDER = "heatmap_overlays"
# cfg.TEST.LOCALIZATION.TWO_CLASS_MASK -> mask function for the two-class mIoU (None: mean over thresholds).
TWO_CLASS_MASKS = {"thresholds": None, "gmm": gmm_threshold_mask}
_TABLE_METRICS = ("IoU", "CNR", "mIoU_2class", "PointingGame")


def ground_truth_samples(record: dict, class_names: Sequence[str]) -> List[Tuple[str, Optional[str], np.ndarray]]:
    """(finding, phrase or None, boxes N x 4 xyxy) to score in one dataset record: one per finding with
    boxes, or one (category_name, phrase) sample with all boxes for a record that has a "phrase"."""
    by_finding: Dict[str, List[List[float]]] = {}
    for annotation in record.get("annotations", []):
        if annotation.get("iscrowd", 0):
            continue
        box = BoxMode.convert(list(annotation["bbox"]), annotation["bbox_mode"], BoxMode.XYXY_ABS)
        category = annotation["category_id"]
        if not 0 <= category < len(class_names):
            raise ValueError(f"{record.get('file_name')}: annotation category_id {category} is outside the "
                             f"dataset's {len(class_names)} classes")
        by_finding.setdefault(class_names[category], []).append(box)
    if "phrase" in record:
        boxes = [box for finding_boxes in by_finding.values() for box in finding_boxes]
        finding = record.get("category_name") or next(iter(by_finding), "")
        return [(finding, record["phrase"], np.asarray(boxes, dtype=np.float64).reshape(-1, 4))] if boxes else []
    return [(finding, None, np.asarray(boxes, dtype=np.float64)) for finding, boxes in sorted(by_finding.items())]


def _map_index(localization: dict, finding: str, phrase: Optional[str], image_id) -> int:
    """Index of the map for (finding, phrase) in a model output: the phrase's map, else the finding's."""
    if phrase is not None and phrase in localization["prompts"]:
        return localization["prompts"].index(phrase)
    if finding in localization["findings"]:
        return localization["findings"].index(finding)
    raise ValueError(
        f"image {image_id}: the model returned maps for {localization['findings']} but the ground truth has "
        f"{finding!r}: keep MODEL.TEST_VOCABULARY_FROM_DATASET on so the model maps the dataset's findings"
    )


def _scaled_boxes(boxes: np.ndarray, record: dict, map_shape: Tuple[int, int]) -> np.ndarray:
    """Boxes of the record's image rescaled to a heat map of `map_shape` (unchanged when sizes agree)."""
    height, width = record.get("height", map_shape[0]), record.get("width", map_shape[1])
    if (height, width) == tuple(map_shape):
        return boxes
    scale = np.array([map_shape[1] / width, map_shape[0] / height] * 2)
    return boxes * scale


class LocalizationEvaluator(CXRDatasetEvaluator):
    """Localization metrics of prompt heat maps against the union of each finding's boxes (see module doc)."""

    def __init__(self, dataset_name: str, output_dir: Optional[str] = None, *,
                 thresholds: Sequence[float] = DEFAULT_THRESHOLDS, two_class_mask: str = "thresholds",
                 n_bootstrap: int = 1000, num_overlays: int = 8, distributed: bool = True,
                 iobb_thresholds: Sequence[float] = WANG_IOBB_THRESHOLDS, iobb_map_threshold: float = WANG_MAP_THRESHOLD):
        """
        Args:
            dataset_name: a registered dataset with boxes and thing_classes.
            output_dir: where heat-map overlays go (none written when None).
            thresholds: thresholds on the [-1, 1] normalised maps for IoU.
            two_class_mask: "thresholds" or "gmm" (see TWO_CLASS_MASKS), the mask of the two-class mIoU.
            n_bootstrap: bootstrap resamples of the confidence intervals.
            num_overlays: images whose overlays are written (per process).
            distributed: gather samples from every process before summarising.
            iobb_thresholds, iobb_map_threshold: Wang et al.'s IoBB thresholds and the map threshold of their boxes.
        """
        if two_class_mask not in TWO_CLASS_MASKS:
            raise ValueError(f"TEST.LOCALIZATION.TWO_CLASS_MASK must be one of {sorted(TWO_CLASS_MASKS)}, "
                             f"got {two_class_mask!r}")
        if num_overlays < 0:
            raise ValueError(f"TEST.LOCALIZATION.NUM_OVERLAYS must be >= 0, got {num_overlays}")
        super().__init__(dataset_name, output_dir, distributed=distributed)
        self._num_overlays = int(num_overlays)
        self._settings = dict(thresholds=tuple(thresholds), mask_fn=TWO_CLASS_MASKS[two_class_mask],
                              n_bootstrap=int(n_bootstrap))
        self._iobb_settings = dict(thresholds=tuple(iobb_thresholds), map_threshold=float(iobb_map_threshold))
        IoBBAccumulator(**self._iobb_settings)  # refuse bad settings now, not after inference
        self._read_records_and_classes()
        self.reset()

    def reset(self):
        self._accumulator = LocalizationAccumulator(**self._settings)
        self._iobb = IoBBAccumulator(**self._iobb_settings)
        self._rows: List[Tuple[str, Dict[str, float]]] = []
        self._skipped: Counter = Counter()
        self._overlay_images = 0

    def process(self, inputs, outputs):
        """Score every (image, finding) sample with boxes; write overlays for the first images."""
        for record_input, output in zip(inputs, outputs):
            image_id = record_input["image_id"]
            if image_id not in self._records:
                raise KeyError(f"image_id {image_id!r} is not in dataset {self._dataset_name!r}")
            if "localization" not in output:
                raise ValueError(
                    f"the model output for image {image_id} has no 'localization' entry: the localization "
                    "evaluator needs a model that returns prompt heat maps (AFLoc, PhraseGrounding)"
                )
            record = self._records[image_id]
            localization = output["localization"]
            scored = []
            for finding, phrase, boxes in ground_truth_samples(record, self._class_names):
                heatmap = localization["heatmaps"][_map_index(localization, finding, phrase, image_id)]
                heatmap = heatmap.detach().cpu().numpy() if hasattr(heatmap, "detach") else np.asarray(heatmap)
                boxes = _scaled_boxes(boxes, record, heatmap.shape)
                metrics = self._accumulator.add(finding, heatmap, boxes=boxes)
                self._iobb.add(finding, heatmap, boxes)
                if metrics:
                    self._rows.append((finding, metrics))
                else:
                    self._skipped[finding] += 1
                scored.append((finding, phrase, heatmap, boxes, metrics))
            if scored and self._output_dir and self._overlay_images < self._num_overlays:
                self._write_overlays(record, scored)
                self._overlay_images += 1

    def _write_overlays(self, record: dict, scored) -> None:
        """One PNG per scored sample of `record`: its heat map over the image, its boxes drawn."""
        try:
            image = read_gray(record["file_name"])
        except (OSError, ValueError) as e:
            raise FileNotFoundError(f"cannot read image {record['file_name']} for its heat-map overlay: {e}") from e
        stem = os.path.splitext(os.path.basename(record["file_name"]))[0]
        for number, (finding, phrase, heatmap, boxes, metrics) in enumerate(scored):
            if image.shape != heatmap.shape:
                image = cv2.resize(image, (heatmap.shape[1], heatmap.shape[0]), interpolation=cv2.INTER_AREA)
            title = finding + (f"  IoU {metrics['IoU']:.2f}" if metrics else "")
            suffix = f"_phrase{number}" if phrase is not None else ""
            name = f"{stem}_{file_slug(finding, 'finding')}{suffix}.png"
            save_heatmap_overlay(os.path.join(self._output_dir, OVERLAY_FOLDER, name), image, heatmap, boxes, title)

    def _all_samples(self) -> Optional[Tuple[LocalizationAccumulator, IoBBAccumulator]]:
        """The accumulators with every process's samples (None on non-main processes)."""
        if not self._distributed or comm.get_world_size() == 1:
            return self._accumulator, self._iobb
        rows, skipped = self._gathered(self._rows), self._gathered([self._skipped])
        iobb_parts = self._gathered([self._iobb.best_by_finding()])
        if rows is None:
            return None
        merged_iobb = IoBBAccumulator(**self._iobb_settings)
        for part in iobb_parts:
            merged_iobb.merge(part)
        merged = LocalizationAccumulator(**self._settings)
        # LocalizationAccumulator has no public merge; fill its per-finding lists with the gathered samples.
        for finding, metrics in rows:
            for name, value in metrics.items():
                merged._values[finding][name].append(value)
        for counts in skipped:
            for finding, count in counts.items():
                merged._skipped[finding] += count
        return merged, merged_iobb

    def evaluate(self):
        """{"localization": flat metrics} (see LocalizationAccumulator.summarize); {} on non-main processes."""
        gathered = self._all_samples()
        if gathered is None:
            return {}
        accumulator, iobb_accumulator = gathered
        if len(accumulator) == 0:
            logger.warning(f"{self._dataset_name}: no (image, finding) sample with boxes was scored; "
                           "no localization metrics")
            return {}
        results = accumulator.summarize()
        results.update(iobb_accumulator.summarize())
        self._log_table(results)
        if self._output_dir and self._overlay_images:
            logger.info(f"Wrote heat-map overlays of {self._overlay_images} image(s) to "
                        f"{os.path.join(self._output_dir, OVERLAY_FOLDER)}")
        return OrderedDict({"localization": results})

    def _log_table(self, results: Dict[str, float]) -> None:
        """Log the per-finding and overall metrics as a table."""
        findings = sorted({key.split("-", 1)[1] for key in results if key.startswith("num_samples-")})
        rows = [[finding, int(results[f"num_samples-{finding}"])]
                + [results.get(f"{metric}-{finding}", float("nan")) for metric in _TABLE_METRICS]
                for finding in findings]
        rows.append(["(macro average)", int(results["num_samples"])] + [results[m] for m in _TABLE_METRICS])
        logger.info(f"Localization of '{self._dataset_name}' (IoU: mean over thresholds "
                    f"{list(self._settings['thresholds'])}; mIoU_2class: foreground/background mean):\n"
                    + tabulate(rows, headers=["finding", "samples", *_TABLE_METRICS], tablefmt="pipe",
                               floatfmt=".3f"))
        thresholds = self._iobb_settings["thresholds"]
        rows = [[finding, int(results.get(f"num_boxes-IoBB-{finding}", 0))]
                + [results.get(f"IoBB_acc@{t:g}-{finding}", float("nan")) for t in thresholds] for finding in findings]
        rows.append(["(mean over findings)", ""] + [results.get(f"IoBB_acc@{t:g}", float("nan")) for t in thresholds])
        logger.info(f"Localization accuracy by IoBB (Wang et al. 2017; boxes from the map above "
                    f"{self._iobb_settings['map_threshold']:.2f}) of '{self._dataset_name}':\n"
                    + tabulate(rows, headers=["finding", "boxes", *(f"IoBB > {t:g}" for t in thresholds)],
                               tablefmt="pipe", floatfmt=".3f"))


@EVALUATOR_REGISTRY.register()
def localization(cfg, dataset_name, output_folder):
    """LocalizationEvaluator set up from cfg.TEST.LOCALIZATION."""
    section = cfg.TEST.LOCALIZATION
    return LocalizationEvaluator(
        dataset_name,
        output_folder,
        thresholds=tuple(section.THRESHOLDS),
        two_class_mask=section.TWO_CLASS_MASK,
        n_bootstrap=section.BOOTSTRAP_SAMPLES,
        num_overlays=section.NUM_OVERLAYS,
        iobb_thresholds=tuple(section.IOBB_THRESHOLDS),
        iobb_map_threshold=section.IOBB_MAP_THRESHOLD,
    )
