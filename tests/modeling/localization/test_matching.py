"""modeling/localization/matching.py: GLoRIA localized matching against a loop reference and by hand, and the
symmetric contrastive loss."""
import math

import pytest
import torch
from torch.nn import functional as F

from cxr_codet.modeling.localization import localized_scores, symmetric_contrastive_loss


def reference_scores(region_map, units, unit_mask, tau1, tau2, attention="dot"):
    """GLoRIA's localized matching written loop by loop, one (image, text) pair at a time."""
    scores = torch.zeros(region_map.shape[0], units.shape[0])
    for i in range(region_map.shape[0]):
        regions = region_map[i].flatten(1).t()  # [N, D]
        for t in range(units.shape[0]):
            text_units = units[t][unit_mask[t]]  # [U, D]
            if attention == "cosine":
                similarity = F.normalize(regions, dim=1) @ F.normalize(text_units, dim=1).t()
            else:
                similarity = regions @ text_units.t() / (regions.shape[1] ** 0.5 if attention == "scaled_dot" else 1.0)
            over_units = similarity.softmax(dim=1)
            over_regions = (tau1 * over_units).softmax(dim=0)
            context = over_regions.t() @ regions
            cosines = F.cosine_similarity(text_units, context, dim=1)
            scores[i, t] = torch.log(torch.exp(tau2 * cosines).sum())
    return scores


def test_localized_scores_match_the_loop_reference_and_ignore_padding():
    torch.manual_seed(0)
    region_map, units = torch.randn(3, 8, 4, 5), torch.randn(2, 6, 8)
    mask = torch.tensor([[True] * 6, [True, True, True, False, False, False]])
    scores = localized_scores(region_map, units, mask, tau1=4.0, tau2=5.0)
    torch.testing.assert_close(scores, reference_scores(region_map, units, mask, 4.0, 5.0))
    padded_units = units.clone()
    padded_units[1, 3:] = 100.0  # padding content must not matter
    torch.testing.assert_close(localized_scores(region_map, padded_units, mask, 4.0, 5.0), scores)


@pytest.mark.parametrize("attention", ["scaled_dot", "cosine"])
def test_attention_similarities_match_the_loop_reference(attention):
    torch.manual_seed(1)
    region_map, units = 3.0 * torch.randn(2, 8, 3, 3), 3.0 * torch.randn(2, 4, 8)
    mask = torch.tensor([[True] * 4, [True, True, False, False]])
    scores = localized_scores(region_map, units, mask, 4.0, 5.0, attention=attention)
    torch.testing.assert_close(scores, reference_scores(region_map, units, mask, 4.0, 5.0, attention))
    assert not torch.allclose(scores, localized_scores(region_map, units, mask, 4.0, 5.0, attention="dot"))
    with pytest.raises(ValueError, match="attention similarity must be one of"):
        localized_scores(region_map, units, mask, 4.0, 5.0, attention="cos")


def test_localized_scores_of_a_single_region_by_hand():
    # One region: every unit attends to it, so score = log sum_w exp(tau2 * cos(e_w, q)).
    region = torch.tensor([1.0, 0.0]).view(1, 2, 1, 1)
    units = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    score = localized_scores(region, units, torch.ones(1, 2, dtype=torch.bool), tau1=4.0, tau2=5.0)
    assert score.item() == pytest.approx(math.log(math.exp(5.0) + math.exp(0.0)))


def test_localized_scores_reject_texts_without_units():
    with pytest.raises(ValueError, match="at least one valid unit"):
        localized_scores(torch.randn(1, 2, 2, 2), torch.randn(2, 3, 2), torch.tensor([[True] * 3, [False] * 3]), 4, 5)


def test_symmetric_contrastive_loss_by_hand_and_with_duplicate_pairs():
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    expected = -math.log(math.exp(2) / (math.exp(2) + 1))
    assert symmetric_contrastive_loss(logits, torch.eye(2, dtype=torch.bool)).item() == pytest.approx(expected)
    same = torch.ones(2, 2, dtype=torch.bool)  # two images of the same findings: both pairs match
    flat = torch.zeros(2, 2)
    assert symmetric_contrastive_loss(flat, same).item() == pytest.approx(math.log(2))
    assert symmetric_contrastive_loss(flat, same) < symmetric_contrastive_loss(logits.flip(1), same) + 1e-6
    with pytest.raises(ValueError, match="diagonal"):
        symmetric_contrastive_loss(flat, torch.zeros(2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="square logits"):
        symmetric_contrastive_loss(torch.zeros(2, 3), torch.ones(2, 3, dtype=torch.bool))
