"""CoDet's co-occurrence branch: text-guided region-region similarity in concept groups, an MLP, and a loss.

A concept group is G images that all contain one finding. Each image in turn is the query and the other
G - 1 are its supports. With q, s the L2-normalised text-space features of the top N proposals of the
query and of the supports (zero rows where an image has fewer than N proposals):

    S[a, b] = sum_k q[a, k] * s[b, k] * w[k]            (N x (G-1)N; w: text guidance, below)
    weights = softmax_a( fc2(relu(fc1(S[a, :]))) )       (over the query's N proposals)
    prototype = sum_a weights[a] * query_feature[a]      (unnormalised text-space features)
    loss = BCE-with-logits(classifier(prototype), one-hot(finding)) x LOSS_WEIGHT

Other findings present in the query image (its image labels) are left out of the BCE rather than pushed
to 0 (MODEL.CO_OCCURRENCE.MASK_OTHER_FINDINGS; CoDet's one-hot target treats them as negatives, wrong on
multi-finding CXRs).

Text guidance: w = |text embedding of the finding|, rescaled to mean 1 over the D dimensions; off: w = 1.

Padding (proposal shortfalls): padded support columns are zeros in S (as in CoDet); padded query rows are
masked out of the softmax, so the weights spread over real proposals only (CoDet lets them take weight,
which only shrinks the prototype). A query with no proposal at all is left out of the loss.

The BCE is summed over the C foreground classes (CoDet also sums the background logit, a constant 0
that only adds log 2) and averaged over the query images in groups. Everything is batched over groups
and queries with batched matmuls and einsum; there is no Python loop over proposals, queries or groups.
"""
import fvcore.nn.weight_init as weight_init
import torch
from torch import nn
from torch.nn import functional as F

from ...data.concept_groups import check_group_size


def text_guidance_weights(
    class_embeddings: torch.Tensor, concept_ids: torch.Tensor, enabled: bool = True
) -> torch.Tensor:
    """Per-dimension weights [B, D] for B groups: |embedding of the group's concept| with mean 1, or ones.

    `class_embeddings` is the classifier's D x C vocabulary; `concept_ids` [B] are column indices into it.
    """
    dim = class_embeddings.shape[0]
    if not enabled:
        return class_embeddings.new_ones(len(concept_ids), dim)
    weights = class_embeddings[:, concept_ids].t().abs()  # B x D
    return weights * (dim / weights.sum(dim=1, keepdim=True))


def support_indices(group_size: int, device=None) -> torch.Tensor:
    """[G, G-1] long tensor: row g lists the other images of the group in their batch order."""
    full = torch.arange(group_size, device=device).expand(group_size, group_size)
    keep = ~torch.eye(group_size, dtype=torch.bool, device=device)
    return full[keep].view(group_size, group_size - 1)


def group_similarity(features: torch.Tensor, guidance: torch.Tensor) -> torch.Tensor:
    """Query-support similarities for every query of every group.

    Args:
        features: [B, G, N, D] text-space proposal features (zero rows are padding).
        guidance: [B, D] per-dimension weights (see `text_guidance_weights`).
    Returns:
        [B, G, N, (G-1)N]: for group b and query g, row a holds S[a, :] against the supports of g,
        ordered by support image (batch order) then proposal.
    """
    num_groups, group_size, num_props, dim = features.shape
    unit = F.normalize(features, p=2, dim=-1).reshape(num_groups, group_size * num_props, dim)
    # One batched matmul; a three-operand einsum here materialised a B x G x N x G x N x D product on the CPU.
    pairwise = torch.bmm(unit * guidance[:, None, :], unit.transpose(1, 2))  # B x GN x GN
    pairwise = pairwise.view(num_groups, group_size, num_props, group_size, num_props)
    others = support_indices(group_size, features.device)  # G x (G-1)
    index = others.view(1, group_size, 1, group_size - 1, 1).expand(
        num_groups, group_size, num_props, group_size - 1, num_props
    )
    supports = torch.gather(pairwise, 3, index)  # B x G x N x (G-1) x N
    return supports.reshape(num_groups, group_size, num_props, (group_size - 1) * num_props)


class SimilarityMLP(nn.Module):
    """Maps each query proposal's similarity row ((G-1)N values) to one score: Linear, ReLU, Linear."""

    def __init__(self, num_supports: int, num_proposals: int):
        super().__init__()
        self.fc1 = nn.Linear(num_supports * num_proposals, num_proposals)
        self.fc2 = nn.Linear(num_proposals, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """CoDet's initialisation: fc1 Caffe2-Xavier with zero bias; fc2 normal(std 0.001), zero bias."""
        weight_init.c2_xavier_fill(self.fc1)
        nn.init.normal_(self.fc2.weight, mean=0.0, std=0.001)
        nn.init.constant_(self.fc2.bias, 0.0)

    def forward(self, similarity: torch.Tensor) -> torch.Tensor:
        """[..., (G-1)N] -> [...] scores."""
        return self.fc2(F.relu(self.fc1(similarity))).squeeze(-1)


class CoOccurrenceHead(nn.Module):
    """The co-occurrence loss over concept groups; its only parameters are `sim_mlp.fc1` and `sim_mlp.fc2`."""

    def __init__(
        self,
        *,
        num_proposals: int,
        group_size: int,
        use_text_guidance: bool = True,
        loss_weight: float = 0.1,
        mask_other_findings: bool = True,
        lr_multiplier: float = 1.0,
    ):
        """
        Args:
            num_proposals: N, the top proposals per image (MODEL.CO_OCCURRENCE.NUM_PROPOSALS).
            group_size: G, images per concept group (>= 2).
            use_text_guidance: weight feature dimensions by the finding's text embedding.
            loss_weight: MODEL.CO_OCCURRENCE.LOSS_WEIGHT.
            mask_other_findings: leave the query's other findings out of the BCE (else one-hot negatives).
            lr_multiplier: factor on the learning rate of the MLP (MODEL.CO_OCCURRENCE.LR_MULTIPLIER), which the
                optimizer reads from this attribute.
        """
        super().__init__()
        check_group_size(group_size)
        if lr_multiplier <= 0:
            raise ValueError(f"MODEL.CO_OCCURRENCE.LR_MULTIPLIER = {lr_multiplier} must be > 0")
        if num_proposals < 1:
            raise ValueError(f"MODEL.CO_OCCURRENCE.NUM_PROPOSALS = {num_proposals} must be >= 1")
        self.num_proposals = int(num_proposals)
        self.group_size = int(group_size)
        self.use_text_guidance = bool(use_text_guidance)
        self.loss_weight = float(loss_weight)
        self.mask_other_findings = bool(mask_other_findings)
        self.lr_multiplier = float(lr_multiplier)
        self.sim_mlp = SimilarityMLP(self.group_size - 1, self.num_proposals)

    def reset_parameters(self) -> None:
        """Re-initialise the MLP (used when starting from a checkpoint whose MLP should not be kept)."""
        self.sim_mlp.reset_parameters()

    def proposal_weights(self, similarity: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Softmax over each query's proposals of the MLP scores; padded proposals get weight 0.

        `similarity` [B, G, N, (G-1)N], `valid` [B, G, N] bool -> weights [B, G, N] (all 0 for a query
        without proposals).
        """
        scores = self.sim_mlp(similarity)
        scores = scores.masked_fill(~valid, torch.finfo(scores.dtype).min)
        weights = torch.softmax(scores, dim=-1)
        return torch.where(valid.any(dim=-1, keepdim=True), weights, torch.zeros_like(weights))

    @torch.autocast("cuda", enabled=False)
    @torch.autocast("cpu", enabled=False)
    def per_query_losses(self, features, valid, concept_ids, classifier, other_findings=None):
        """BCE of each query's prototype [B, G] (unweighted; 0 for a query without proposals), computed in
        float32 even under autocast: float16 similarities and softmax lose the small differences the MLP learns from.

        Args:
            features: [B, G, N, D] unnormalised text-space features of the top N proposals of each image
                of B groups (zero rows = padding), from `classifier.project`.
            valid: [B, G, N] bool, False on padding.
            concept_ids: [B] long, the finding each group shares (a training-class index).
            classifier: the `OpenVocabularyClassifier` (its training vocabulary scores the prototypes).
            other_findings: optional [B, G, C] bool, findings besides the concept present in each image;
                left out of the BCE when the head masks other findings.
        """
        expected = (self.group_size, self.num_proposals)
        if tuple(features.shape[1:3]) != expected:
            raise ValueError(
                f"co-occurrence features have groups of {features.shape[1]} images x {features.shape[2]} "
                f"proposals, but the head was built for G x N = {expected[0]} x {expected[1]}"
            )
        features = features.float()
        vocabulary = classifier.class_embeddings  # D x C, always the training vocabulary
        guidance = text_guidance_weights(vocabulary, concept_ids, self.use_text_guidance)
        similarity = group_similarity(features, guidance)
        weights = self.proposal_weights(similarity, valid)
        prototypes = torch.einsum("bgn,bgnd->bgd", weights, features)
        logits = classifier.score(prototypes, vocabulary)[..., :-1]  # B x G x C (background dropped)
        targets = F.one_hot(concept_ids, logits.shape[-1]).to(logits.dtype)[:, None, :].expand_as(logits)
        per_class = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        if self.mask_other_findings and other_findings is not None:
            per_class = per_class.masked_fill(other_findings.to(per_class.device), 0.0)
        return per_class.sum(dim=-1) * valid.any(dim=-1).to(per_class.dtype)

    def forward(self, features, valid, concept_ids, classifier, other_findings=None):
        """The co-occurrence loss (a scalar, already x the loss weight): `per_query_losses` averaged over
        the queries that have proposals (arguments as there)."""
        per_query = self.per_query_losses(features, valid, concept_ids, classifier, other_findings)
        has_proposals = valid.any(dim=-1).to(per_query.dtype)  # B x G
        return per_query.sum() / has_proposals.sum().clamp(min=1.0) * self.loss_weight
