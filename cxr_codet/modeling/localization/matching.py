"""GLoRIA-style localized image-text matching and the symmetric contrastive loss of AFLoc.

For image i (regions q_n, n over the h x w grid) and text t (units e_w: words or sentences):
  a[n, w] = softmax over units of sim(q_n, e_w)       (GLoRIA: raw dot products; or scaled, or cosines)
  b[n, w] = softmax over regions of tau1 * a[n, w]    (the "double softmax" of the reference code)
  c_w     = sum_n b[n, w] q_n                        (the unit's attended visual context)
  score   = log sum_w exp(tau2 * cos(e_w, c_w))      (over the text's valid units; GLoRIA's "sum")
and logits = tau3 * score, trained with cross-entropy in both directions. GLoRIA's sum adds
tau3 * log(number of units) to every image's logit for a text, so in the image->text direction longer
reports win by length alone; the "mean" aggregation (log of the mean) removes that bias. Raw dot products
grow with the embeddings' norms and then saturate the softmax over units (one unit takes every region,
and no gradient says where to look); "cosine" attention keeps it soft.
"""
import torch
from torch.nn import functional as F

# How a text's unit scores tau2 * cos(e_w, c_w) are aggregated: GLoRIA's log-sum-exp, or log-mean-exp.
AGGREGATIONS = ("sum", "mean")
# Region-unit similarity inside the attention: GLoRIA's raw dot product, it divided by sqrt(dim), or the cosine.
ATTENTION_SIMILARITIES = ("dot", "scaled_dot", "cosine")


def localized_scores(region_map: torch.Tensor, units: torch.Tensor, unit_mask: torch.Tensor,
                     tau1: float, tau2: float, aggregation: str = "sum", attention: str = "dot") -> torch.Tensor:
    """[Bi, Bt] image-text scores of every image (`region_map` [Bi, D, h, w]) with every text (`units`
    [Bt, U, D], `unit_mask` [Bt, U] True on real units); see the module docstring."""
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"unit aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
    if attention not in ATTENTION_SIMILARITIES:
        raise ValueError(f"attention similarity must be one of {ATTENTION_SIMILARITIES}, got {attention!r}")
    if not unit_mask.any(dim=1).all():
        raise ValueError("every text needs at least one valid unit (word or sentence) for localized matching")
    regions = region_map.flatten(2).transpose(1, 2)  # [Bi, N, D]
    padding = ~unit_mask[None, :, None, :]  # broadcast over images and regions
    if attention == "cosine":
        similarity = torch.einsum("ind,tud->itnu", F.normalize(regions, dim=-1), F.normalize(units, dim=-1))
    else:
        similarity = torch.einsum("ind,tud->itnu", regions, units)
        if attention == "scaled_dot":
            similarity = similarity / regions.shape[-1] ** 0.5
    dots = similarity.masked_fill(padding, float("-inf"))
    over_units = dots.softmax(dim=-1)
    over_regions = (tau1 * over_units).softmax(dim=2)
    context = torch.einsum("itnu,ind->itud", over_regions, regions)  # [Bi, Bt, U, D]
    cosines = F.cosine_similarity(context, units.unsqueeze(0), dim=-1)  # [Bi, Bt, U]
    scores = torch.logsumexp((tau2 * cosines).masked_fill(~unit_mask[None], float("-inf")), dim=-1)
    if aggregation == "mean":
        scores = scores - unit_mask.sum(dim=1).float().log()[None]
    return scores


def global_scores(image_vectors: torch.Tensor, text_vectors: torch.Tensor) -> torch.Tensor:
    """[Bi, Bt] cosine similarities of global image vectors [Bi, D] and report vectors [Bt, D]."""
    return F.normalize(image_vectors, dim=-1) @ F.normalize(text_vectors, dim=-1).t()


def symmetric_contrastive_loss(logits: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """Mean of the image->text and text->image cross-entropies of square `logits` [B, B].

    `positives` [B, B] (bool, True on the diagonal) marks pairs that match, e.g. two images whose reports
    are composed from the same findings; each row's target spreads evenly over its positives, so such
    duplicates are not pushed apart as negatives.
    """
    if logits.shape[0] != logits.shape[1] or positives.shape != logits.shape:
        raise ValueError(f"need square logits and positives of one shape; got {tuple(logits.shape)}, "
                         f"{tuple(positives.shape)}")
    if not positives.diagonal().all():
        raise ValueError("every image must be a positive of its own text (the diagonal of `positives`)")
    targets = positives.float()
    image_to_text = F.cross_entropy(logits, targets / targets.sum(dim=1, keepdim=True))
    text_to_image = F.cross_entropy(logits.t(), targets.t() / targets.t().sum(dim=1, keepdim=True))
    return (image_to_text + text_to_image) / 2
