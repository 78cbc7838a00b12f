"""Evaluate a closed-vocabulary detector on a dataset that names its classes differently (TEST.CLASS_MAPPING).

A Faster R-CNN trained on VinDr-CXR findings predicts VinDr class indices; NIH boxes are labelled with NIH's
8 findings. Each dataset class takes the predictions of the model class that datasets/metadata/class_mapping.json
maps it to, so one model class can stand for several dataset classes (VinDr Nodule/Mass counts as NIH Nodule
and as NIH Mass) and predictions of model classes no dataset class maps to are left out (and counted).
"""
import logging
from collections import Counter
from typing import List, Optional, Sequence, Tuple

import torch
from detectron2.evaluation import DatasetEvaluator
from detectron2.structures import Instances

from ..data.class_mapping import VOCABULARIES, map_class_names

logger = logging.getLogger(__name__)

SEPARATOR = "->"


def parse_class_mapping(value: str) -> Tuple[str, str]:
    """'<dataset vocabulary>-><model vocabulary>' (e.g. 'nih_cxr14_bbox->vindr_cxr') -> the two names."""
    parts = [part.strip() for part in str(value).split(SEPARATOR)]
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"TEST.CLASS_MAPPING {value!r} must read '<dataset vocabulary>{SEPARATOR}<model vocabulary>', "
                         f"e.g. 'nih_cxr14_bbox{SEPARATOR}vindr_cxr'; vocabularies: {sorted(VOCABULARIES)}")
    return parts[0], parts[1]


def prediction_index_map(dataset_classes: Sequence[str], model_classes: Sequence[str], mapping: str
                         ) -> List[Optional[int]]:
    """For each dataset class (in thing_classes order), the index of the model class whose predictions count
    as that class, or None when the mapping gives it no equivalent."""
    source, target = parse_class_mapping(mapping)
    mapped = map_class_names(list(dataset_classes), source, target)
    model_index = {name.lower(): index for index, name in enumerate(model_classes)}
    index_map = []
    for dataset_class, model_class in zip(dataset_classes, mapped):
        if model_class is not None and model_class.lower() not in model_index:
            raise ValueError(f"TEST.CLASS_MAPPING {mapping!r} maps {dataset_class!r} to {model_class!r}, which is not "
                             f"a class of the model (its training classes: {list(model_classes)})")
        index_map.append(None if model_class is None else model_index[model_class.lower()])
    return index_map


def rename_predictions(instances: Instances, index_map: Sequence[Optional[int]]) -> Instances:
    """The predictions of `instances` re-labelled with dataset classes: each dataset class j gets a copy of
    the predictions of model class index_map[j]; predictions of other model classes are dropped."""
    classes = instances.pred_classes
    pieces = []
    for dataset_class, model_class in enumerate(index_map):
        if model_class is None:
            continue
        piece = instances[classes == model_class]
        piece.pred_classes = torch.full_like(piece.pred_classes, dataset_class)
        pieces.append(piece)
    if not pieces:
        return instances[torch.zeros_like(classes, dtype=torch.bool)]
    return Instances.cat(pieces)


class ClassMappedEvaluator(DatasetEvaluator):
    """Wraps a dataset's evaluator: predictions are renamed to the dataset's classes before it sees them."""

    def __init__(self, evaluator: DatasetEvaluator, dataset_classes: Sequence[str], model_classes: Sequence[str],
                 mapping: str):
        self._evaluator = evaluator
        self._mapping = mapping
        self._model_classes = list(model_classes)
        self._index_map = prediction_index_map(dataset_classes, model_classes, mapping)
        unmapped = [name for name, index in zip(dataset_classes, self._index_map) if index is None]
        if unmapped:
            logger.warning("%s: dataset classes %s have no model class; they get no predictions", mapping, unmapped)
        self._left_out = Counter()

    def reset(self):
        self._left_out = Counter()
        self._evaluator.reset()

    def process(self, inputs, outputs):
        renamed = []
        used = {index for index in self._index_map if index is not None}
        for output in outputs:
            if "instances" not in output:
                renamed.append(output)
                continue
            instances = output["instances"]
            for model_class in instances.pred_classes.tolist():
                if model_class not in used:
                    self._left_out[self._model_classes[model_class]] += 1
            renamed.append({**output, "instances": rename_predictions(instances, self._index_map)})
        self._evaluator.process(inputs, renamed)

    def evaluate(self):
        if self._left_out:
            counts = ", ".join(f"{name} {count}" for name, count in self._left_out.most_common())
            logger.info("%s: %d predictions of model classes without a dataset equivalent were left out (%s)",
                        self._mapping, sum(self._left_out.values()), counts)
        return self._evaluator.evaluate()
