"""data/concept_groups.py: the concept groups read back from a batch, and the contract a batch must keep."""
import pytest
from tiny_cxr_codet import (
    hand_made_batch,
)

from cxr_codet.data.concept_groups import concept_groups_from_batch


def test_concept_groups_from_a_concept_group_batch():
    batch = hand_made_batch(group_size=2, num_groups=3, no_finding=1)
    groups = concept_groups_from_batch(batch, 2)
    assert groups.image_indices.tolist() == [[0, 1], [2, 3], [4, 5]]
    assert groups.concept_ids.tolist() == [0, 1, 2]
    assert concept_groups_from_batch(hand_made_batch(with_concepts=False), 2) is None


def test_concept_groups_refuse_batches_that_break_the_contract():
    batch = hand_made_batch(group_size=2, num_groups=2)
    with pytest.raises(ValueError, match="not whole groups of DATALOADER.CONCEPT_GROUP_SIZE = 3"):
        concept_groups_from_batch(batch, 3)
    partial = hand_made_batch(group_size=2, num_groups=2)
    del partial[1]["concept_id"]
    with pytest.raises(ValueError, match="batch position 1 .* has no 'concept_id'"):
        concept_groups_from_batch(partial, 2)
    mixed = hand_made_batch(group_size=2, num_groups=2)
    mixed[1]["concept_id"], mixed[1]["image_labels"] = 1, [0, 1]
    with pytest.raises(ValueError, match=r"batch positions \[0, 1\] should form one concept group"):
        concept_groups_from_batch(mixed, 2)
    split = hand_made_batch(group_size=2, num_groups=2, no_finding=1)
    split.insert(1, split.pop())  # a no-finding image inside a group
    with pytest.raises(ValueError, match="should form one concept group"):
        concept_groups_from_batch(split, 2)
    unlabeled = hand_made_batch(group_size=2, num_groups=2)
    unlabeled[2]["image_labels"] = [7]
    with pytest.raises(ValueError, match="batch position 2 .* not in its image_labels"):
        concept_groups_from_batch(unlabeled, 2)
