"""COCO-style box AP for chest X-ray findings: CXRCOCOEvaluator, registered as the "coco" evaluator type.

CXRCOCOEvaluator adds to detectron2's COCOEvaluator: per-class AP50 (and AP) for every class with
ground truth, classes and size buckets without ground truth left out (never 0 or NaN; results_io.py lists
them in eval_results.json), size buckets by absolute or image-relative box area (size_buckets.py), and a
per-class AP50 bar chart; beside them the chest X-ray metrics (VOC-style mAP at one IoU, FROC and CPM, and
the FROC chart) of chest_xray_metrics.py.
"""
import contextlib
import io
import itertools
import json
import logging
import os
from collections import OrderedDict

import numpy as np
from detectron2.data import DatasetCatalog
from detectron2.evaluation import COCOEvaluator
from detectron2.evaluation.fast_eval_api import COCOeval_opt  # needs detectron2._C to run
from detectron2.utils.logger import create_small_table
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from tabulate import tabulate

from .. import compat
from .build import EVALUATOR_REGISTRY
from .chest_xray_metrics import ChestXrayMetrics
from .detection_metrics import FROC_FP_RATES
from .loader_ground_truth import ground_truth_as_loaded
from .plots import plot_per_class_ap50
from .results_io import NO_GROUND_TRUTH, PER_CLASS_AP50_PREFIX
from .size_buckets import SIZE_BUCKET_NAMES, SIZE_BUCKETS, load_detections, with_relative_areas

logger = logging.getLogger(__name__)

COCO_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")  # the order of COCOeval.stats[:6]

_ANNOUNCED_PYCOCOTOOLS = False


def _announce_pycocotools_once():
    """Say once per process why evaluation takes the slower official COCO API."""
    global _ANNOUNCED_PYCOCOTOOLS
    if compat.HAS_C_EXTENSION or _ANNOUNCED_PYCOCOTOOLS:
        return
    _ANNOUNCED_PYCOCOTOOLS = True
    logger.info("Box AP is computed with pycocotools (the official COCO API): detectron2's fast "
                "evaluator (COCOeval_opt) needs the C++ extension detectron2._C, which this install lacks.")


class CXRCOCOEvaluator(COCOEvaluator):
    """COCO box AP in percent with per-class AP50/AP; classes and size buckets without ground truth
    are left out of the results (logged as missing), so they are never averaged in as 0 or NaN."""

    def __init__(self, dataset_name, output_dir=None, size_buckets="absolute",
                 relative_area_ranges=(0.01, 0.1), plot_per_class_ap=True, distributed=True,
                 plot_dir=None, voc_iou_threshold=0.4, froc_hit="iou", froc_iou_threshold=0.4,
                 froc_fp_rates=FROC_FP_RATES, plot_froc=True):
        """`size_buckets`: "absolute" (COCO's pixel areas) or "relative" (fractions of image area,
        split at `relative_area_ranges`); `plot_per_class_ap` writes
        `plot_dir` (default `output_dir`)/per_class_ap50_<dataset_name>.png on each evaluation, `plot_froc`
        froc_<dataset_name>.png. `voc_iou_threshold`: IoU of "mAP@<iou>"; `froc_*`: the FROC's hit rule
        ("iou" at `froc_iou_threshold`, or "center") and operating points (false positives per image)."""
        if size_buckets not in SIZE_BUCKETS:
            raise ValueError(f"size_buckets (TEST.SIZE_BUCKETS) must be one of {sorted(SIZE_BUCKETS)}, "
                             f"got {size_buckets!r}")
        self._chest_xray_metrics = ChestXrayMetrics(voc_iou_threshold, froc_hit, froc_iou_threshold, froc_fp_rates,
                                                    plot_froc)
        self._buckets = SIZE_BUCKETS[size_buckets](tuple(relative_area_ranges))
        _announce_pycocotools_once()
        super().__init__(dataset_name, tasks=("bbox",), distributed=distributed, output_dir=output_dir,
                         use_fast_impl=compat.HAS_C_EXTENSION)
        self._dataset_name = dataset_name
        self._plot_per_class_ap = plot_per_class_ap
        self._plot_dir = plot_dir or output_dir
        self._class_names = _thing_classes(dataset_name, self._metadata)
        self._dataset_id_of = _contiguous_to_dataset_ids(self._metadata, len(self._class_names))
        self._json_file = self._metadata.json_file
        if self._do_evaluation:
            self._check_ground_truth()
            self._coco_api = ground_truth_as_loaded(self._dataset_name, self._coco_api, self._dataset_id_of,
                                                    self._json_file)  # not the raw file (loader_ground_truth.py)
            self._eval_gt = (with_relative_areas(self._coco_api) if self._buckets.relative
                             else self._coco_api)

    def _check_ground_truth(self):
        """Fail early, naming the file and record, on ground truth pycocotools cannot evaluate;
        give box-only annotations without "area" their box area."""
        known = set(self._dataset_id_of.values())
        for cat_id in self._coco_api.getCatIds():
            if cat_id not in known:
                raise ValueError(f"{self._json_file}: category id {cat_id} is not among the dataset's "
                                 f"thing_dataset_id_to_contiguous_id keys {sorted(known)}")
        without_area = 0
        for ann in self._coco_api.dataset["annotations"]:
            for key in ("bbox", "category_id", "image_id"):
                if key not in ann:
                    raise ValueError(f"{self._json_file}: annotation {ann.get('id')} has no '{key}'")
            if "area" not in ann:  # pycocotools buckets ground truth by this field
                ann["area"] = float(ann["bbox"][2]) * float(ann["bbox"][3])
                without_area += 1
        if without_area:
            logger.info(f"{self._json_file}: {without_area} annotations have no 'area'; using box "
                        "width x height for the size buckets.")
        for img in self._coco_api.dataset["images"]:
            if self._buckets.relative and not (img.get("width", 0) > 0 and img.get("height", 0) > 0):
                raise ValueError(f"{self._json_file}: image {img.get('id')} needs a positive width and "
                                 "height for relative size buckets (TEST.SIZE_BUCKETS relative)")

    def _eval_predictions(self, predictions, img_ids=None):
        """Evaluate box predictions; fill self._results["bbox"] and write the chart and COCO json."""
        coco_results = list(itertools.chain(*[p["instances"] for p in predictions]))
        for result in coco_results:
            result["category_id"] = self._to_dataset_id(result["category_id"])
        if self._output_dir:
            os.makedirs(self._output_dir, exist_ok=True)
            path = os.path.join(self._output_dir, "coco_instances_results.json")
            logger.info(f"Saving {len(coco_results)} detections to {path}")
            with open(path, "w") as f:
                json.dump(coco_results, f)
        if not self._do_evaluation:
            logger.info(f"{self._json_file} has no annotations: nothing to evaluate.")
            return
        coco_eval = self._run_coco_eval(coco_results, img_ids)
        results = self._derive_results(coco_eval)
        image_ids = list(coco_eval.params.imgIds)
        name_of = {self._dataset_id_of[c]: name for c, name in enumerate(self._class_names)}
        results.update(self._chest_xray_metrics.compute(
            self._evaluated_annotations(self._coco_api, image_ids), coco_results, image_ids, name_of,
            self._dataset_name, self._plot_dir))
        self._results["bbox"] = results
        if self._plot_per_class_ap and self._plot_dir:
            path = os.path.join(self._plot_dir, f"per_class_ap50_{self._dataset_name}.png")
            plot_per_class_ap50(self._results["bbox"], path,
                                title=f"Per-class AP50, {self._dataset_name}",
                                class_names=self._class_names)
            logger.info(f"Wrote per-class AP50 chart to {path}")

    def _to_dataset_id(self, contiguous_id):
        if contiguous_id not in self._dataset_id_of:
            raise ValueError(f"A prediction has class {contiguous_id}, but '{self._dataset_name}' has "
                             f"{len(self._class_names)} classes (ids 0..{len(self._class_names) - 1})")
        return self._dataset_id_of[contiguous_id]

    def _run_coco_eval(self, coco_results, img_ids):
        """COCOeval (or the fast one where detectron2._C exists) over our size buckets, evaluated."""
        unknown = {r["image_id"] for r in coco_results} - set(self._eval_gt.getImgIds())
        if unknown:
            raise ValueError(f"Predictions for image ids {sorted(unknown)[:5]} (of {len(unknown)}) that "
                             f"are not in {self._json_file}")
        logger.info(f"Evaluating {len(coco_results)} detections on '{self._dataset_name}' with "
                    f"{'detectron2 COCOeval_opt' if self._use_fast_impl else 'pycocotools COCOeval'} ...")
        coco_dt = self._detections(coco_results)
        coco_eval = (COCOeval_opt if self._use_fast_impl else COCOeval)(self._eval_gt, coco_dt, "bbox")
        coco_eval.params.areaRng = [list(r) for r in self._buckets.area_ranges]
        if img_ids is not None:
            coco_eval.params.imgIds = list(img_ids)
        with contextlib.redirect_stdout(io.StringIO()):
            coco_eval.evaluate()
            coco_eval.accumulate()
        summary = io.StringIO()
        with contextlib.redirect_stdout(summary):
            coco_eval.summarize()
        logger.info(f"COCO API summary (size buckets: {self._buckets.description}):\n"
                    + summary.getvalue())
        return coco_eval

    def _detections(self, coco_results):
        """Detections as a COCO object (an empty one when there are none, which pycocotools' loadRes
        rejects), with areas normalised by image area for relative buckets."""
        if not coco_results:
            coco_dt = COCO()
            coco_dt.dataset = {"images": self._eval_gt.dataset["images"],
                               "categories": self._eval_gt.dataset["categories"], "annotations": []}
            with contextlib.redirect_stdout(io.StringIO()):
                coco_dt.createIndex()
            return coco_dt
        return load_detections(self._eval_gt, coco_results, relative_areas=self._buckets.relative)

    def _derive_results(self, coco_eval):
        """Percent metrics from an evaluated COCOeval, without entries that have no ground truth."""
        image_ids = list(coco_eval.params.imgIds)
        results = OrderedDict()
        for index, metric in enumerate(COCO_METRICS):
            if coco_eval.stats[index] >= 0:  # -1: no ground-truth box in this size bucket
                results[metric] = float(coco_eval.stats[index] * 100)
        if "AP" not in results:
            logger.warning(f"'{self._dataset_name}' has no ground-truth box in the evaluated images: "
                           "no AP can be computed.")
        per_class = self._per_class_ap(coco_eval)
        for name, ap50, _ in per_class:
            if ap50 is not None:
                results[PER_CLASS_AP50_PREFIX + name] = ap50
        for name, _, ap in per_class:
            if ap is not None:
                results["AP-" + name] = ap
        self._log_results(results, per_class, image_ids)
        return results

    def _per_class_ap(self, coco_eval):
        """[(class name, AP50, AP)] in thing_classes order, None for a class without ground truth."""
        precision = coco_eval.eval["precision"]  # [IoU threshold, recall, class, area range, max dets]
        iou50 = int(np.argmin(np.abs(np.asarray(coco_eval.params.iouThrs) - 0.5)))
        index_of_cat = {cat_id: k for k, cat_id in enumerate(coco_eval.params.catIds)}
        rows = []
        for contiguous_id, name in enumerate(self._class_names):
            k = index_of_cat.get(self._dataset_id_of[contiguous_id])
            p = precision[:, :, k, 0, -1] if k is not None else np.full((1, 1), -1.0)
            if not (p > -1).any():  # pycocotools leaves -1 where a class has no ground truth
                rows.append((name, None, None))
                continue
            p50 = p[iou50]
            rows.append((name, float(p50[p50 > -1].mean() * 100), float(p[p > -1].mean() * 100)))
        return rows

    def _log_results(self, results, per_class, image_ids):
        """Log the COCO metrics (with the evaluation resolution) and a per-class AP50/AP table."""
        standard = {m: (f"{results[m]:.3f}" if m in results else NO_GROUND_TRUTH) for m in COCO_METRICS}
        logger.info(f"Box AP of '{self._dataset_name}' in percent; {self._resolution_note(image_ids)}:\n"
                    + create_small_table(standard))
        gt_counts = self._ground_truth_counts(image_ids)
        rows = [
            (name, gt_counts.get(name, 0), NO_GROUND_TRUTH if ap50 is None else f"{ap50:.3f}",
             "" if ap is None else f"{ap:.3f}")
            for name, ap50, ap in per_class
        ]
        logger.info(f"Per-class box AP of '{self._dataset_name}':\n"
                    + tabulate(rows, headers=["category", "GT boxes", "AP50", "AP"], tablefmt="pipe",
                             disable_numparse=True, colalign=("left", "right", "right", "right")))

    def _resolution_note(self, image_ids):
        """Where boxes are measured: stored image coordinates, their median size, boxes per bucket."""
        images = [self._coco_api.imgs[i] for i in image_ids]
        sizes = [(img["width"], img["height"]) for img in images if "width" in img and "height" in img]
        size = (f"median {np.median([w for w, _ in sizes]):.0f} x {np.median([h for _, h in sizes]):.0f} px"
                f" (width x height) over {len(sizes)} images" if sizes else "image sizes unknown")
        areas = [ann["area"] for ann in self._evaluated_annotations(self._eval_gt, image_ids)]
        counts = ", ".join(
            f"{name} {sum(lo <= a <= hi for a in areas)}"
            for name, (lo, hi) in zip(SIZE_BUCKET_NAMES, self._buckets.area_ranges[1:])
        )
        return (f"boxes are evaluated in the stored image coordinates, {size}; APs/APm/APl use "
                f"{self._buckets.description}; ground-truth boxes per bucket: {counts}")

    def _ground_truth_counts(self, image_ids):
        """Non-crowd ground-truth boxes per class name in the evaluated images."""
        name_of_cat = {self._dataset_id_of[c]: n for c, n in enumerate(self._class_names)}
        counts = {}
        for ann in self._evaluated_annotations(self._coco_api, image_ids):
            name = name_of_cat[ann["category_id"]]
            counts[name] = counts.get(name, 0) + 1
        return counts

    @staticmethod
    def _evaluated_annotations(coco, image_ids):
        """The annotations pycocotools counts as ground truth (not crowd, not ignored) in `image_ids`."""
        return [
            ann
            for ann in coco.loadAnns(coco.getAnnIds(imgIds=image_ids))
            if not ann.get("iscrowd", 0) and not ann.get("ignore", 0)
        ]


def _thing_classes(dataset_name, metadata):
    """The dataset's class names. detectron2-style loaders set thing_classes and the category id map
    on first load, so the dataset is loaded once if either is still missing."""
    incomplete = not metadata.get("thing_classes") or not metadata.get("thing_dataset_id_to_contiguous_id")
    if incomplete and dataset_name in DatasetCatalog.list():
        DatasetCatalog.get(dataset_name)
    class_names = metadata.get("thing_classes")
    if not class_names:
        raise ValueError(f"Dataset '{dataset_name}' has no thing_classes in its metadata: register it "
                         "with its class names before evaluating it.")
    return list(class_names)


def _contiguous_to_dataset_ids(metadata, num_classes):
    """Model class index -> COCO category id, from thing_dataset_id_to_contiguous_id (else identity)."""
    mapping = metadata.get("thing_dataset_id_to_contiguous_id")
    if not mapping:
        return {c: c for c in range(num_classes)}
    return {contiguous: dataset_id for dataset_id, contiguous in mapping.items()}


@EVALUATOR_REGISTRY.register()
def coco(cfg, dataset_name, output_folder):
    """CXRCOCOEvaluator set up from TEST.SIZE_BUCKETS, TEST.RELATIVE_AREA_RANGES, TEST.PLOT_PER_CLASS_AP,
    TEST.VOC_IOU_THRESHOLD and TEST.FROC; the charts go to OUTPUT_DIR, next to eval_results.json."""
    return CXRCOCOEvaluator(
        dataset_name,
        output_dir=output_folder,
        size_buckets=cfg.TEST.SIZE_BUCKETS,
        relative_area_ranges=tuple(cfg.TEST.RELATIVE_AREA_RANGES),
        plot_per_class_ap=cfg.TEST.PLOT_PER_CLASS_AP,
        plot_dir=cfg.OUTPUT_DIR,
        voc_iou_threshold=cfg.TEST.VOC_IOU_THRESHOLD,
        froc_hit=cfg.TEST.FROC.HIT_CRITERION,
        froc_iou_threshold=cfg.TEST.FROC.IOU_THRESHOLD,
        froc_fp_rates=tuple(cfg.TEST.FROC.FP_RATES),
        plot_froc=cfg.TEST.FROC.PLOT,
    )
