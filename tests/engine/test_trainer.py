"""engine/trainer.py: a non-finite loss stops training, naming the iteration and every loss (slow: trains)."""
import re

import pytest
from conftest import BASELINE, make_cfg

from cxr_codet.engine.trainer import CXRTrainer


@pytest.mark.slow  # trains through CXRTrainer
def test_non_finite_loss_stops_training_naming_the_iteration_and_the_losses(tmp_path):
    cfg = make_cfg(BASELINE, "DATASETS.TEST", (), "SOLVER.IMS_PER_BATCH", 2, "SOLVER.MAX_ITER", 6,
                   "SOLVER.CHECKPOINT_PERIOD", 100, "OUTPUT_DIR", str(tmp_path))
    trainer = CXRTrainer(cfg)
    model = trainer._trainer.model
    forward, calls = model.forward, []

    def nan_at_third_iteration(batched_inputs):
        losses = forward(batched_inputs)
        calls.append(len(batched_inputs))
        if len(calls) == 3:
            losses["loss_box_reg"] = losses["loss_box_reg"] * float("nan")
        return losses

    model.forward = nan_at_third_iteration
    with pytest.raises(FloatingPointError, match=r"Loss became infinite or NaN at iteration=2!") as error:
        trainer.train()
    assert calls == [2, 2, 2]  # stopped at the first non-finite loss
    assert re.search(r"'loss_box_reg': (np\.float64\()?nan", str(error.value))
    for name in ("loss_cls", "loss_rpn_cls", "loss_rpn_loc"):  # every loss is listed, with its value
        assert re.search(rf"'{name}': (np\.float64\()?\d", str(error.value)), name
    assert not (tmp_path / "model_final.pth").exists()  # no checkpoint of a diverged model
