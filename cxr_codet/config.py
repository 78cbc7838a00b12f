"""Every config key cxr-codet adds to detectron2's defaults, each with a one-line comment.

Call `add_cxr_codet_config(cfg)` on a fresh `get_cfg()` before merging a YAML file. Sections are
grouped by the part of the package that reads them.
"""
from detectron2.config import CfgNode as CN


def add_cxr_codet_config(cfg):
    """Declare cxr-codet's keys on `cfg` (in place) with their defaults."""
    _add_input_and_data_config(cfg)
    _add_evaluation_config(cfg)
    _add_solver_config(cfg)


def _add_input_and_data_config(cfg):
    # Chest X-rays are grayscale; images are read as one channel and repeated to 3 so ImageNet stems work.
    cfg.INPUT.GRAYSCALE = True
    # "No finding" images have no boxes; they stay in training as background-only images.
    cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS = False


def _add_evaluation_config(cfg):
    # COCO size buckets: "absolute" (COCO's 32^2 / 96^2 pixel areas) or "relative" (fractions of image area).
    cfg.TEST.SIZE_BUCKETS = "absolute"
    # Upper bounds of the small and medium buckets as fractions of image area, for SIZE_BUCKETS "relative".
    cfg.TEST.RELATIVE_AREA_RANGES = [0.01, 0.1]
    # Write a bar chart of per-class AP50 next to eval_results.json.
    cfg.TEST.PLOT_PER_CLASS_AP = True


def _add_solver_config(cfg):
    # Learning-rate multipliers by parameter-name substring, e.g. [["sim_mlp", 0.1]] (paper: 0.1 on the MLP).
    cfg.SOLVER.LR_MULTIPLIERS = []
    # Stop with an error naming the iteration and losses when a loss becomes NaN or infinite.
    cfg.SOLVER.STOP_ON_NONFINITE_LOSS = True
