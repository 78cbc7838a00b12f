"""The concept-group structure of a training batch, read from the dicts the concept-group loader yields.

Batch contract (cxr_codet/data/samplers.py): a per-process batch holds whole, consecutive groups of G
images that share finding "concept_id" (a contiguous class id that is in each image's "image_labels");
images outside groups ("No finding") carry concept_id = -1. Batches from a plain loader carry no
"concept_id" at all.
"""
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch

NO_CONCEPT = -1


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
        labels = batched_inputs[i].get("image_labels")
        if concept < 0:
            raise ValueError(f"{_describe(batched_inputs, i)}: concept ids are contiguous class ids or -1")
        if labels is not None and concept not in {int(c) for c in labels}:
            raise ValueError(f"{_describe(batched_inputs, i)}: the concept is not in its image_labels {list(labels)}")
    indices = torch.as_tensor(grouped, dtype=torch.long).view(-1, group_size)
    for row in indices.tolist():
        concepts = {int(batched_inputs[i]["concept_id"]) for i in row}
        if len(concepts) != 1 or row != list(range(row[0], row[0] + group_size)):
            raise ValueError(
                f"batch positions {row} should form one concept group: {group_size} consecutive images "
                f"with one shared concept_id; got concept_ids {[batched_inputs[i]['concept_id'] for i in row]}"
            )
    concept_ids = torch.as_tensor([int(batched_inputs[row[0]]["concept_id"]) for row in indices.tolist()])
    labels = tuple(
        tuple(tuple(sorted({int(c) for c in batched_inputs[i].get("image_labels") or ()})) for i in row)
        for row in indices.tolist()
    )
    return ConceptGroups(image_indices=indices, concept_ids=concept_ids.long(), image_labels=labels)

