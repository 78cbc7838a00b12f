"""Fast R-CNN output layers with the open-vocabulary classifier (box regression as in Faster R-CNN).

The classification layer differs from detectron2's `FastRCNNOutputLayers`: `cls_score` is an
`OpenVocabularyClassifier`, scored either with softmax cross-entropy over C findings + the fixed zero
background logit (detectron2, Detic's default) or with per-finding sigmoid cross-entropy (CoDet's OV-COCO
setting, USE_SIGMOID_CE), where background is "every finding 0". Box regression and inference stay
detectron2's; optionally the box regression is Detic/CoDet's two-layer MLP, so that their checkpoints load.
"""
import fvcore.nn.weight_init as weight_init
import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling.roi_heads.fast_rcnn import FastRCNNOutputLayers
from torch import nn
from torch.nn import functional as F

from .classifier import OpenVocabularyClassifier, normalized_class_embeddings
from ..vocabulary import training_class_embeddings


def _mlp_box_regressor(input_size: int, output_size: int) -> nn.Sequential:
    """Detic/CoDet's box regression: Linear, ReLU, Linear (Xavier first layer, std 0.001 last)."""
    regressor = nn.Sequential(
        nn.Linear(input_size, input_size), nn.ReLU(inplace=True), nn.Linear(input_size, output_size)
    )
    weight_init.c2_xavier_fill(regressor[0])
    nn.init.normal_(regressor[2].weight, std=0.001)
    nn.init.constant_(regressor[2].bias, 0)
    return regressor


def sigmoid_classification_loss(logits: torch.Tensor, gt_classes: torch.Tensor) -> torch.Tensor:
    """CoDet's sigmoid CE: BCE of the C foreground logits against one-hot targets (background = all 0),
    summed over findings and averaged over proposals. `logits` [R, C + 1], `gt_classes` [R] in 0..C."""
    if logits.numel() == 0:
        return logits.sum() * 0.0
    num_classes = logits.shape[1] - 1
    targets = F.one_hot(gt_classes, num_classes + 1)[:, :num_classes].to(logits.dtype)
    loss = F.binary_cross_entropy_with_logits(logits[:, :num_classes], targets, reduction="sum")
    return loss / logits.shape[0]


class OpenVocabularyOutputLayers(FastRCNNOutputLayers):
    """`FastRCNNOutputLayers` whose classifier scores regions against class text embeddings."""

    @configurable
    def __init__(
        self,
        input_shape: ShapeSpec,
        *,
        class_embeddings: torch.Tensor,
        norm_temperature: float = 50.0,
        mlp_bbox_pred: bool = False,
        use_sigmoid_ce: bool = False,
        mult_proposal_score: bool = False,
        **kwargs,
    ):
        """
        Args:
            class_embeddings: [C, D] text embeddings of the C training classes (C = num_classes).
            norm_temperature: scale of the cosine logits (CoDet: 50).
            mlp_bbox_pred: two-layer box regression as Detic/CoDet instead of one Linear.
            use_sigmoid_ce: per-finding sigmoid cross-entropy (and sigmoid scores) instead of softmax.
            mult_proposal_score: score = sqrt(class probability x RPN objectness probability) at inference.
            kwargs: as `FastRCNNOutputLayers`.
        """
        super().__init__(input_shape, **kwargs)
        if class_embeddings.shape[0] != self.num_classes:
            raise ValueError(
                f"MODEL.ROI_HEADS.NUM_CLASSES = {self.num_classes}, but the class text embeddings have "
                f"{class_embeddings.shape[0]} rows: they must describe the same classes"
            )
        input_size = input_shape.channels * (input_shape.width or 1) * (input_shape.height or 1)
        self.cls_score = OpenVocabularyClassifier(input_size, class_embeddings, norm_temperature)
        if mlp_bbox_pred:
            self.bbox_pred = _mlp_box_regressor(input_size, self.bbox_pred.out_features)
        self.use_sigmoid_ce = bool(use_sigmoid_ce)
        self.mult_proposal_score = bool(mult_proposal_score)

    @classmethod
    def from_config(cls, cfg, input_shape, class_embeddings=None):
        ret = super().from_config(cfg, input_shape)
        ret["class_embeddings"] = (
            training_class_embeddings(cfg) if class_embeddings is None else class_embeddings
        )
        ret["norm_temperature"] = cfg.MODEL.ROI_BOX_HEAD.NORM_TEMP
        ret["mlp_bbox_pred"] = cfg.MODEL.ROI_BOX_HEAD.MLP_BBOX_PRED
        ret["use_sigmoid_ce"] = cfg.MODEL.ROI_BOX_HEAD.USE_SIGMOID_CE
        ret["mult_proposal_score"] = cfg.MODEL.ROI_BOX_HEAD.MULT_PROPOSAL_SCORE
        return ret

    def losses(self, predictions, proposals):
        """detectron2's losses; with USE_SIGMOID_CE "loss_cls" is CoDet's sigmoid cross-entropy instead."""
        losses = super().losses(predictions, proposals)
        if self.use_sigmoid_ce:
            scores = predictions[0]
            gt_classes = torch.cat([p.gt_classes for p in proposals]) if proposals else scores.new_zeros(0).long()
            loss = sigmoid_classification_loss(scores, gt_classes)
            losses["loss_cls"] = loss * self.loss_weight.get("loss_cls", 1.0)
        return losses

    def predict_probs(self, predictions, proposals):
        """Per-proposal class scores [R_i, C + 1]: softmax, or sigmoid of each logit with USE_SIGMOID_CE
        (the background column, sigmoid(0), is ignored by detectron2's inference like softmax's); with
        MULT_PROPOSAL_SCORE the geometric mean with the proposal's objectness probability."""
        if self.use_sigmoid_ce:
            probs = predictions[0].sigmoid().split([len(p) for p in proposals], dim=0)
        else:
            probs = super().predict_probs(predictions, proposals)
        if not self.mult_proposal_score:
            return probs
        return tuple(
            (prob * p.objectness_logits.sigmoid()[:, None]).sqrt() for prob, p in zip(probs, proposals)
        )

    @property
    def class_agnostic_box_regression(self) -> bool:
        """True when one box is regressed per region, whatever the vocabulary."""
        last = self.bbox_pred[-1] if isinstance(self.bbox_pred, nn.Sequential) else self.bbox_pred
        return last.out_features == len(self.box2box_transform.weights)

    def set_vocabulary(self, embeddings: torch.Tensor) -> None:
        """Score with `embeddings` ([C', D]) at inference; class-specific box regression needs C' = C."""
        num_new = normalized_class_embeddings(embeddings, "test vocabulary embeddings").shape[0]
        if not self.class_agnostic_box_regression and num_new != self.num_classes:
            raise ValueError(
                f"cannot switch to a vocabulary of {num_new} classes: the box regression is class-specific "
                f"for the {self.num_classes} training classes; set MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG True"
            )
        self.cls_score.set_vocabulary(embeddings)

    def reset_vocabulary(self) -> None:
        """Score with the training vocabulary again."""
        self.cls_score.reset_vocabulary()
