"""Concept groups, the contract between the concept-group loader (samplers.py, build.py) and CXR-CoDet, defined
once for both: a record's findings, the group size rule, the batch layout, and the groups read back from a batch.

A concept group is G images that share one finding (its "concept", a contiguous class id): 1 query and G - 1
supports. A per-process batch of the concept-group loader holds whole, consecutive groups, each image tagged with
"concept_id" and carrying "image_labels", then images outside groups ("No finding" or box images, box losses
only) tagged concept_id = NO_CONCEPT. Batches from a plain loader carry no "concept_id" at all.
"""
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch

NO_CONCEPT = -1  # concept_id of an image outside concept groups


def image_labels(record: dict, num_classes: Optional[int] = None) -> List[int]:
    """Sorted contiguous class ids of the findings in a dataset record or a mapped input: its "image_labels", else
    its "annotations"' category ids, else its "instances"' classes. With `num_classes`, ids outside
    0..num_classes-1 are refused. A record with none of the three is a ValueError naming its file."""
    if "image_labels" in record:
        labels = sorted({int(label) for label in record["image_labels"]})
    elif "annotations" in record:
        labels = sorted({int(annotation["category_id"]) for annotation in record["annotations"]})
    elif "instances" in record:
        labels = sorted({int(label) for label in record["instances"].gt_classes.tolist()})
    else:
        raise ValueError(f"record {record.get('file_name', record.get('image_id', '?'))!r} has neither "
                         "'image_labels', 'annotations' nor 'instances': its findings are unknown")
    if num_classes is not None:
        bad = [label for label in labels if not 0 <= label < num_classes]
        if bad:
            raise ValueError(f"input {record.get('file_name', '?')!r} has finding ids {bad} outside "
                             f"0..{num_classes - 1}")
    return labels


def check_group_size(group_size: int) -> int:
    """`group_size` as an int; a ValueError naming the key when a group would have no support image (G < 2)."""
    if int(group_size) < 2:
        raise ValueError(
            f"DATALOADER.CONCEPT_GROUP_SIZE = {group_size} leaves no support image: a concept group is one "
            "query and G - 1 supports, so the co-occurrence loss needs G >= 2 (the paper: 2, i.e. one "
            "support image, or 4 for three). Set it to 2 or more, or turn the branch off with "
            "MODEL.CO_OCCURRENCE.ENABLED False."
        )
    return int(group_size)


def groups_per_batch(
    ims_per_batch: int,
    world_size: int,
    group_size: int,
    no_finding_per_batch: int = 0,
    box_images_per_batch: int = 0,
) -> int:
    """Number of concept groups in each per-process batch; raises ValueError when the sizes don't fit."""
    check_group_size(group_size)
    if no_finding_per_batch < 0:
        raise ValueError(f"DATALOADER.NO_FINDING_PER_BATCH = {no_finding_per_batch} must be >= 0")
    if box_images_per_batch < 0:
        raise ValueError(f"DATALOADER.BOX_IMAGES_PER_BATCH = {box_images_per_batch} must be >= 0")
    if ims_per_batch <= 0 or ims_per_batch % world_size != 0:
        raise ValueError(
            f"SOLVER.IMS_PER_BATCH = {ims_per_batch} must be a positive multiple of the number of "
            f"processes ({world_size})"
        )
    per_process = ims_per_batch // world_size
    grouped = per_process - no_finding_per_batch - box_images_per_batch
    if grouped <= 0 or grouped % group_size != 0:
        raise ValueError(
            f"per-process batch of {per_process} images (SOLVER.IMS_PER_BATCH = {ims_per_batch} / "
            f"{world_size} processes) minus DATALOADER.NO_FINDING_PER_BATCH = {no_finding_per_batch} "
            f"and DATALOADER.BOX_IMAGES_PER_BATCH = {box_images_per_batch} leaves {grouped} images, which is not a positive multiple of "
            f"DATALOADER.CONCEPT_GROUP_SIZE = {group_size}: each process must get whole groups"
        )
    return grouped // group_size

@dataclass
class ConceptGroups:
    """Groups of one batch: `image_indices` [num_groups, G] (batch positions), `concept_ids` [num_groups],
    and `image_labels[b][g]`, the findings present in image g of group b (empty when the batch has none)."""

    image_indices: torch.Tensor
    concept_ids: torch.Tensor
    image_labels: Tuple[Tuple[Tuple[int, ...], ...], ...] = ()

    @property
    def num_groups(self) -> int:
        return int(self.concept_ids.numel())

    @property
    def group_size(self) -> int:
        return int(self.image_indices.shape[1])

    def other_findings_mask(self, num_classes: int) -> torch.Tensor:
        """[num_groups, G, num_classes] bool: True where a finding other than the group's concept is present
        in the image (from its image_labels), i.e. where a one-hot co-occurrence target would be wrong."""
        mask = torch.zeros(self.num_groups, self.group_size, num_classes, dtype=torch.bool)
        for b, group in enumerate(self.image_labels):
            for g, labels in enumerate(group):
                present = [c for c in labels if 0 <= c < num_classes]
                mask[b, g, present] = True
        mask[torch.arange(self.num_groups), :, self.concept_ids] = False
        return mask


def _describe(batched_inputs: Sequence[dict], index: int) -> str:
    item = batched_inputs[index]
    name = item.get("file_name", item.get("image_id", "?"))
    return f"batch position {index} ({name!r}, concept_id {item.get('concept_id')})"


def concept_groups_from_batch(batched_inputs: Sequence[dict], group_size: int) -> Optional[ConceptGroups]:
    """The batch's ConceptGroups, or None when no dict has "concept_id" (a plain, group-less loader).

    Raises ValueError naming the offending batch position when the batch breaks the contract: some dicts
    without "concept_id", grouped images not in whole consecutive runs of `group_size` sharing one
    concept, or a concept missing from an image's "image_labels".
    """
    tagged = ["concept_id" in x for x in batched_inputs]
    if not any(tagged):
        return None
    if not all(tagged):
        missing = tagged.index(False)
        raise ValueError(f"{_describe(batched_inputs, missing)} has no 'concept_id' while others in its batch do")
    grouped: List[int] = [i for i, x in enumerate(batched_inputs) if int(x["concept_id"]) != NO_CONCEPT]
    if len(grouped) % group_size != 0:
        raise ValueError(
            f"the batch holds {len(grouped)} images with a concept_id, not whole groups of "
            f"DATALOADER.CONCEPT_GROUP_SIZE = {group_size}"
        )
    for i in grouped:
        concept = int(batched_inputs[i]["concept_id"])
        labels = image_labels(batched_inputs[i])
        if concept < 0:
            raise ValueError(f"{_describe(batched_inputs, i)}: concept ids are contiguous class ids or -1")
        if concept not in labels:
            raise ValueError(f"{_describe(batched_inputs, i)}: the concept is not in its image_labels {labels}")
    indices = torch.as_tensor(grouped, dtype=torch.long).view(-1, group_size)
    for row in indices.tolist():
        concepts = {int(batched_inputs[i]["concept_id"]) for i in row}
        if len(concepts) != 1 or row != list(range(row[0], row[0] + group_size)):
            raise ValueError(
                f"batch positions {row} should form one concept group: {group_size} consecutive images "
                f"with one shared concept_id; got concept_ids {[batched_inputs[i]['concept_id'] for i in row]}"
            )
    concept_ids = torch.as_tensor([int(batched_inputs[row[0]]["concept_id"]) for row in indices.tolist()])
    labels = tuple(tuple(tuple(image_labels(batched_inputs[i])) for i in row) for row in indices.tolist())
    return ConceptGroups(image_indices=indices, concept_ids=concept_ids.long(), image_labels=labels)

