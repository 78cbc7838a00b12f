"""What the image-level evaluators (classification, localization, progression) share: the dataset's records and
class names, gathering every process's samples on the main process, and finding names as file-name parts."""
import re
from typing import List, Optional

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm


def file_slug(text: str, fallback: str) -> str:
    """`text` as a file-name part (letters, digits, '-' and '_'); `fallback` when nothing of it is left."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_") or fallback


class CXRDatasetEvaluator(DatasetEvaluator):
    """A DatasetEvaluator of one registered dataset that writes to `output_dir` (nothing when None) and, when
    `distributed`, scores the samples of every process on the main one."""

    def __init__(self, dataset_name: str, output_dir: Optional[str] = None, *, distributed: bool = True):
        self._dataset_name = dataset_name
        self._output_dir = output_dir
        self._distributed = distributed

    def _read_records_and_classes(self) -> None:
        """The dataset's records by image_id (`_records`) and its thing_classes (`_class_names`, required)."""
        self._records = {record["image_id"]: record for record in DatasetCatalog.get(self._dataset_name)}
        self._class_names = list(MetadataCatalog.get(self._dataset_name).get("thing_classes", []))
        if not self._class_names:
            raise ValueError(f"dataset {self._dataset_name!r} has no thing_classes in its metadata")

    def _gathered(self, items: List) -> Optional[List]:
        """`items` of every process concatenated on the main process, None on the others; this process's
        items when not distributed."""
        if not self._distributed or comm.get_world_size() == 1:
            return items
        comm.synchronize()
        gathered = comm.gather(items, dst=0)
        return [item for process_items in gathered for item in process_items] if comm.is_main_process() else None
