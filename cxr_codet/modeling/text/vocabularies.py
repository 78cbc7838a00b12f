"""Class-name vocabularies by name: the built-in finding lists, or any registered dataset's thing_classes."""
import difflib
from typing import Callable, Dict, List


def _vindr_cxr() -> List[str]:
    from cxr_codet.data.classes import VINDR_CXR_CLASSES

    return list(VINDR_CXR_CLASSES)


def _nih_cxr14() -> List[str]:
    from cxr_codet.data.classes import NIH_CXR14_BBOX_CLASSES

    return list(NIH_CXR14_BBOX_CLASSES)


NAMED_VOCABULARIES: Dict[str, Callable[[], List[str]]] = {"vindr_cxr": _vindr_cxr, "nih_cxr14": _nih_cxr14}


def resolve_vocabulary(name: str) -> List[str]:
    """Class names of vocabulary `name`: "vindr_cxr" (14 findings), "nih_cxr14" (8 box findings) or the
    thing_classes of a registered detectron2 dataset such as "cxr_phantom_train"."""
    if name in NAMED_VOCABULARIES:
        return NAMED_VOCABULARIES[name]()
    from detectron2.data import DatasetCatalog, MetadataCatalog

    registered = DatasetCatalog.list()
    if name not in registered:  # suggest CXR datasets, not detectron2's own COCO/LVIS/ADE20K registrations
        cxr = [n for n in registered if not getattr(DatasetCatalog[n], "__module__", "").startswith("detectron2")]
        close = difflib.get_close_matches(name, sorted(NAMED_VOCABULARIES) + cxr, n=3, cutoff=0.6)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise KeyError(
            f"unknown vocabulary {name!r}: {hint}Use {' or '.join(sorted(NAMED_VOCABULARIES, reverse=True))} (the "
            f"built-in finding lists) or a registered CXR dataset, e.g. {', '.join(cxr[:5])}"
        )
    classes = MetadataCatalog.get(name).get("thing_classes", None)
    if not classes:
        raise ValueError(f"dataset {name!r} is registered but its metadata has no thing_classes")
    return list(classes)


def parse_class_names(text: str) -> List[str]:
    """Comma-separated class names ("Atelectasis,Cardiomegaly") as a list; empty names are an error."""
    names = [name.strip() for name in text.split(",")]
    if not names or any(not name for name in names):
        raise ValueError(f"class names {text!r}: expected comma-separated non-empty names")
    return names
