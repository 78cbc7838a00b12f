"""The co-occurrence branch: text guidance, query-support similarity, MLP weighting, prototype loss, padding."""
import math

import pytest
import torch
from torch.nn import functional as F

from cxr_codet.data.concept_groups import check_group_size
from cxr_codet.modeling.roi_heads.classifier import OpenVocabularyClassifier
from cxr_codet.modeling.roi_heads.co_occurrence_head import (
    CoOccurrenceHead,
    SimilarityMLP,
    group_similarity,
    support_indices,
    text_guidance_weights,
)

# Hand-made example: G = 2 images, N = 2 proposals, D = 2; image 1's second proposal is padding.
QUERY_IMAGE = [[3.0, 4.0], [1.0, 0.0]]


SUPPORT_IMAGE = [[0.0, 2.0], [0.0, 0.0]]


# Class 1 = [3, 1]: |e| rescaled to mean 1 over D = 2 gives guidance w = [1.5, 0.5].
CLASS_EMBEDDINGS = [[1.0, 0.0], [3.0, 1.0]]


def _example():
    features = torch.tensor([[QUERY_IMAGE, SUPPORT_IMAGE]])  # B=1 x G=2 x N=2 x D=2
    valid = torch.tensor([[[True, True], [True, False]]])
    return features, valid


def _classifier(temperature=1.0):
    return OpenVocabularyClassifier(4, torch.tensor(CLASS_EMBEDDINGS), norm_temperature=temperature)


def _identity_mlp_head(loss_weight=1.0, group_size=2, num_props=2, guidance=True):
    """fc1 = identity, fc2 = sum: each proposal's score is the sum of its positive similarities."""
    head = CoOccurrenceHead(
        num_proposals=num_props, group_size=group_size, use_text_guidance=guidance, loss_weight=loss_weight
    )
    with torch.no_grad():
        head.sim_mlp.fc1.weight.copy_(torch.eye(num_props, (group_size - 1) * num_props))
        head.sim_mlp.fc1.bias.zero_()
        head.sim_mlp.fc2.weight.fill_(1.0)
        head.sim_mlp.fc2.bias.zero_()
    return head


def test_text_guidance_weights_are_absolute_embedding_rescaled_to_mean_one():
    vocabulary = torch.tensor([[1.0, 0.5], [-3.0, 0.5], [0.0, 0.5], [4.0, 0.5]])  # D=4 x C=2
    weights = text_guidance_weights(vocabulary, torch.tensor([0, 1]), enabled=True)
    assert torch.allclose(weights[0], torch.tensor([0.5, 1.5, 0.0, 2.0]))
    assert torch.allclose(weights[1], torch.ones(4))
    assert torch.allclose(weights.mean(dim=1), torch.ones(2))


def test_text_guidance_off_gives_one_weight_per_feature_dimension():
    # CoDet's reference builds C + 1 weights here (a shape error); ours has D.
    vocabulary = torch.randn(6, 3)  # D=6 x C=3
    weights = text_guidance_weights(vocabulary, torch.tensor([2]), enabled=False)
    assert weights.shape == (1, 6)
    assert torch.equal(weights, torch.ones(1, 6))


def test_support_indices_list_the_other_images_in_batch_order():
    assert support_indices(2).tolist() == [[1], [0]]
    assert support_indices(4).tolist() == [[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]]


def test_group_similarity_hand_computed():
    features, _ = _example()
    similarity = group_similarity(features, torch.tensor([[1.5, 0.5]]))
    # q = [0.6, 0.8], [1, 0]; s = [0, 1], [0, 0]: S[a, b] = sum_k q[a,k] s[b,k] w[k]
    expected_query0 = [[0.8 * 1.0 * 0.5, 0.0], [0.0, 0.0]]
    expected_query1 = [[0.8 * 0.5, 0.0], [0.0, 0.0]]
    assert similarity.shape == (1, 2, 2, 2)
    assert torch.allclose(similarity[0, 0], torch.tensor(expected_query0))
    assert torch.allclose(similarity[0, 1], torch.tensor(expected_query1))


def test_group_similarity_matches_its_definition_for_groups_of_three():
    """S[a, b] = sum_k q[a,k] s[b,k] w[k] against each support in batch order, zero rows staying zero."""
    torch.manual_seed(0)
    features = torch.randn(2, 3, 4, 5)
    features[0, 1, 3] = 0.0  # a padded proposal
    guidance = torch.rand(2, 5) + 0.5
    similarity = group_similarity(features, guidance)
    unit = F.normalize(features, dim=-1)
    assert similarity.shape == (2, 3, 4, 8)
    for b in range(2):
        for g in range(3):
            expected = torch.cat([(unit[b, g] * guidance[b]) @ unit[b, h].t() for h in range(3) if h != g], dim=1)
            assert torch.allclose(similarity[b, g], expected, atol=1e-6)
    assert torch.equal(similarity[0, 0, :, 3], torch.zeros(4))  # query 0 against image 1's padded proposal


def test_text_guidance_on_and_off_change_the_similarity():
    features, _ = _example()
    vocabulary = F.normalize(torch.tensor(CLASS_EMBEDDINGS), dim=1).t()
    concept = torch.tensor([1])
    guided = group_similarity(features, text_guidance_weights(vocabulary, concept, True))
    plain = group_similarity(features, text_guidance_weights(vocabulary, concept, False))
    assert guided[0, 0, 0, 0].item() == pytest.approx(0.4)  # 0.8 * 1 * w[1] = 0.8 * 0.5
    assert plain[0, 0, 0, 0].item() == pytest.approx(0.8)  # plain cosine


def _naive_similarity(features, weights):
    """Reference: loops over groups, queries and supports."""
    num_groups, group_size, num_props, _ = features.shape
    unit = F.normalize(features, dim=-1)
    out = torch.zeros(num_groups, group_size, num_props, (group_size - 1) * num_props)
    for b in range(num_groups):
        for g in range(group_size):
            supports = torch.cat([unit[b, h] for h in range(group_size) if h != g])
            for a in range(num_props):
                for j in range(len(supports)):
                    out[b, g, a, j] = (unit[b, g, a] * supports[j] * weights[b]).sum()
    return out


@pytest.mark.parametrize("group_size", [2, 4])
def test_batched_similarity_matches_a_per_query_loop(group_size):
    torch.manual_seed(0)
    features = torch.randn(3, group_size, 5, 7)
    features[1, 0, 3:] = 0  # padding rows
    weights = torch.rand(3, 7) + 0.5
    similarity = group_similarity(features, weights)
    assert similarity.shape == (3, group_size, 5, (group_size - 1) * 5)
    assert torch.allclose(similarity, _naive_similarity(features, weights), atol=1e-6)


def test_g4_similarity_blocks_follow_the_support_order():
    # One proposal per image, feature [1, g]: block j of query g must be image support_indices(4)[g][j].
    features = torch.tensor([[[[1.0, float(g)]] for g in range(4)]])
    similarity = group_similarity(features, torch.ones(1, 2))
    for g, others in enumerate(support_indices(4).tolist()):
        for j, h in enumerate(others):
            expected = (1 + g * h) / math.sqrt((1 + g * g) * (1 + h * h))
            assert similarity[0, g, 0, j].item() == pytest.approx(expected)


def test_mlp_weighting_prototype_and_loss_hand_computed():
    features, valid = _example()
    head = _identity_mlp_head(loss_weight=0.5)
    classifier = _classifier(temperature=1.0)
    loss = head(features, valid, torch.tensor([1]), classifier)

    # Query 0: scores [0.4, 0] -> softmax; query 1: its second proposal is padding -> weights [1, 0].
    w0 = math.exp(0.4) / (math.exp(0.4) + 1.0)
    prototype0 = [w0 * 3.0 + (1 - w0) * 1.0, w0 * 4.0]
    prototype1 = [0.0, 2.0]

    def cosine(u, v):
        return (u[0] * v[0] + u[1] * v[1]) / math.hypot(*u) / math.hypot(*v)

    def bce(logit, target):
        probability = 1 / (1 + math.exp(-logit))
        return -(target * math.log(probability) + (1 - target) * math.log(1 - probability))

    per_query = [
        sum(bce(cosine(p, e), float(c == 1)) for c, e in enumerate(CLASS_EMBEDDINGS))
        for p in (prototype0, prototype1)
    ]
    assert loss.item() == pytest.approx(0.5 * sum(per_query) / 2, rel=1e-5)

    guidance = text_guidance_weights(classifier.class_embeddings, torch.tensor([1]))
    weights = head.proposal_weights(group_similarity(features, guidance), valid)
    assert torch.allclose(weights[0, 0], torch.tensor([w0, 1 - w0]))
    assert torch.equal(weights[0, 1], torch.tensor([1.0, 0.0]))


def test_query_without_proposals_is_left_out_and_padding_keeps_everything_finite():
    features, valid = _example()
    features[0, 1] = 0
    valid[0, 1] = False  # image 1 has no proposal at all
    head = _identity_mlp_head()
    features.requires_grad_(True)
    loss = head(features, valid, torch.tensor([1]), _classifier())
    assert torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(features.grad).all()
    weights = head.proposal_weights(torch.zeros(1, 2, 2, 2), valid)
    assert torch.equal(weights[0, 1], torch.zeros(2))
    # Query 0's support is all padding: its similarities are 0, so its weights are uniform, and the loss
    # is query 0's alone (query 1 is not counted).
    prototype = features[0, 0].detach().mean(dim=0)  # uniform weights over the two real proposals
    logits = _classifier().score(prototype[None], _classifier().class_embeddings)[0, :-1]
    expected = F.binary_cross_entropy_with_logits(logits, torch.tensor([0.0, 1.0]), reduction="sum")
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_co_occurrence_loss_is_batched_over_groups():
    torch.manual_seed(1)
    head = CoOccurrenceHead(num_proposals=4, group_size=4, use_text_guidance=True, loss_weight=0.1)
    classifier = OpenVocabularyClassifier(8, torch.randn(5, 6))
    features = torch.randn(3, 4, 4, 6)
    valid = torch.ones(3, 4, 4, dtype=torch.bool)
    concepts = torch.tensor([0, 3, 4])
    together = head(features, valid, concepts, classifier)
    separately = torch.stack(
        [head(features[b:b + 1], valid[b:b + 1], concepts[b:b + 1], classifier) for b in range(3)]
    )
    assert together.item() == pytest.approx(separately.mean().item(), rel=1e-5)


def test_similarity_mlp_initialisation_follows_codet():
    torch.manual_seed(0)
    mlp = SimilarityMLP(num_supports=3, num_proposals=32)
    assert mlp.fc1.in_features == 96 and mlp.fc1.out_features == 32 and mlp.fc2.out_features == 1
    assert torch.count_nonzero(mlp.fc1.bias) == 0 and torch.count_nonzero(mlp.fc2.bias) == 0
    assert 0.0005 < mlp.fc2.weight.std().item() < 0.002
    assert mlp.fc1.weight.abs().max().item() > 0.05  # Xavier-scale, not the tiny fc2 scale
    with torch.no_grad():
        mlp.fc2.weight.fill_(5.0)
    mlp.reset_parameters()
    assert mlp.fc2.weight.abs().max().item() < 0.01


@pytest.mark.parametrize("group_size", [0, 1])
def test_group_without_support_image_is_refused(group_size):
    with pytest.raises(ValueError, match="CONCEPT_GROUP_SIZE = .* leaves no support image"):
        check_group_size(group_size)
    with pytest.raises(ValueError, match="leaves no support image"):
        CoOccurrenceHead(num_proposals=32, group_size=group_size)


def test_head_refuses_features_of_another_group_shape():
    head = CoOccurrenceHead(num_proposals=2, group_size=2)
    with pytest.raises(ValueError, match="built for G x N = 2 x 2"):
        head(torch.randn(1, 4, 2, 2), torch.ones(1, 4, 2, dtype=torch.bool), torch.tensor([0]), _classifier())


def test_cooccurrence_loss_stays_float32_under_autocast():
    """Under bfloat16 autocast the loss equals the float32 loss: similarity, softmax and BCE run in float32."""
    torch.manual_seed(0)
    head = CoOccurrenceHead(num_proposals=8, group_size=2, use_text_guidance=True, loss_weight=1.0)
    with torch.no_grad():
        head.sim_mlp.fc2.weight.normal_(std=1.0)  # scores that spread the softmax, unlike the 0.001 init
    classifier = OpenVocabularyClassifier(16, F.normalize(torch.randn(5, 16), dim=1), norm_temperature=50.0)
    # bfloat16-representable inputs, so that only the arithmetic's precision can differ.
    features = torch.randn(3, 2, 8, 16).to(torch.bfloat16)
    valid = torch.ones(3, 2, 8, dtype=torch.bool)
    concepts = torch.tensor([0, 2, 4])
    reference = head(features.float(), valid, concepts, classifier)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = head(features, valid, concepts, classifier)
    assert mixed.dtype == torch.float32
    assert mixed.item() == pytest.approx(reference.item(), rel=1e-6)
