"""Cross-dataset class mapping (datasets/metadata/class_mapping.json): coverage, choices, and a bad file."""
import json

import pytest

from cxr_codet.data.class_mapping import (
    VOCABULARIES,
    class_mapping,
    load_class_mappings,
    map_class_names,
    mapping_note,
    unmapped_class_names,
)
from cxr_codet.data.classes import NIH_CXR14_BBOX_CLASSES, VINDR_CXR_CLASSES


def test_nih_to_vindr_maps_every_nih_finding():
    mapping = class_mapping("nih_cxr14_bbox", "vindr_cxr")
    assert list(mapping) == list(NIH_CXR14_BBOX_CLASSES)
    assert mapping["Effusion"] == "Pleural effusion"
    assert mapping["Infiltrate"] == "Infiltration"
    assert mapping["Mass"] == mapping["Nodule"] == "Nodule/Mass"
    assert mapping["Pneumonia"] == "Lung Opacity"
    assert unmapped_class_names("nih_cxr14_bbox", "vindr_cxr") == []
    assert set(mapping.values()) <= set(VINDR_CXR_CLASSES)
    assert "RSNA" in mapping_note("nih_cxr14_bbox", "vindr_cxr", "Pneumonia")


def test_map_names_is_case_insensitive_and_uses_target_spelling():
    assert map_class_names(["Pleural Effusion", "EDEMA", "pneumonia"], "ms_cxr", "vindr_cxr") == [
        "Pleural effusion", None, "Lung Opacity"
    ]
    assert unmapped_class_names("ms_cxr", "vindr_cxr") == ["Edema"]
    assert unmapped_class_names("ms_cxr", "vindr_cxr", names=["Cardiomegaly", "edema"]) == ["Edema"]


def test_vindr_to_nih_leaves_ambiguous_and_missing_classes_unmapped():
    mapping = class_mapping("vindr_cxr", "nih_cxr14_bbox")
    assert list(mapping) == list(VINDR_CXR_CLASSES)
    assert mapping["Pleural effusion"] == "Effusion" and mapping["Infiltration"] == "Infiltrate"
    unmapped = unmapped_class_names("vindr_cxr", "nih_cxr14_bbox")
    assert "Nodule/Mass" in unmapped and "Aortic enlargement" in unmapped
    for name in unmapped:
        assert mapping_note("vindr_cxr", "nih_cxr14_bbox", name)  # every null says why


def test_unknown_names_and_mappings_raise():
    with pytest.raises(ValueError, match=r"'Fracture' is not a class of nih_cxr14_bbox"):
        map_class_names(["Fracture"], "nih_cxr14_bbox", "vindr_cxr")
    with pytest.raises(KeyError, match="no class mapping ms_cxr -> nih_cxr14_bbox"):
        class_mapping("ms_cxr", "nih_cxr14_bbox")


def write_mapping(path, classes, notes=None, target="vindr_cxr"):
    entry = {"source": "nih_cxr14_bbox", "target": target, "classes": classes, "notes": notes or {}}
    path.write_text(json.dumps({"mappings": [entry]}))
    return path


def test_bad_mapping_files_are_explained(tmp_path):
    full = {name: None for name in NIH_CXR14_BBOX_CLASSES}
    notes = {name: "none" for name in NIH_CXR14_BBOX_CLASSES}
    assert load_class_mappings(write_mapping(tmp_path / "ok.json", full, notes))
    partial = dict(list(full.items())[:-1])
    with pytest.raises(ValueError, match=r"source classes \['Pneumothorax'\] are not mapped"):
        load_class_mappings(write_mapping(tmp_path / "partial.json", partial, notes))
    with pytest.raises(ValueError, match=r"'Broken heart' is not a class of vindr_cxr"):
        load_class_mappings(write_mapping(tmp_path / "target.json", {**full, "Cardiomegaly": "Broken heart"}, notes))
    with pytest.raises(ValueError, match=r"map to null without a note"):
        load_class_mappings(write_mapping(tmp_path / "nonote.json", full))
    with pytest.raises(ValueError, match=r"unknown vocabulary 'chexpert'"):
        load_class_mappings(write_mapping(tmp_path / "vocab.json", full, notes, target="chexpert"))
    assert set(VOCABULARIES) == {"vindr_cxr", "nih_cxr14_bbox", "ms_cxr"}
