"""modeling/input_normalization.py: the normalisation a checkpoint expects, and the refusal of a config that
does not match it."""

import pytest
from conftest import CONFIGS, make_cfg

from cxr_codet.modeling.input_normalization import check_input_normalization, expected_input_normalization


def test_normalisation_that_does_not_fit_the_weights_is_refused():
    assert expected_input_normalization("detectron2://ImageNetPretrained/MSRA/R-50.pkl")[:2] == (
        [103.530, 116.280, 123.675], [1.0, 1.0, 1.0])
    assert expected_input_normalization("output/phantom/model_final.pth") is None
    cfg = make_cfg(CONFIGS / "vindr" / "cxr_codet_R50_C4_paper.yaml", tiny=False)
    cfg.merge_from_list(["MODEL.PIXEL_MEAN", [127.5] * 3, "MODEL.PIXEL_STD", [64.0] * 3])
    with pytest.raises(ValueError, match=r"MODEL.WEIGHTS = detectron2://ImageNetPretrained/MSRA/R-50.pkl expects "
                                         r"MODEL.PIXEL_MEAN \[103.53, 116.28, 123.675\] and MODEL.PIXEL_STD"):
        check_input_normalization(cfg)
    cfg.MODEL.WEIGHTS = ""
    with pytest.raises(ValueError, match=r"MODEL.INIT.WEIGHTS = models/CoDet_OVCOCO_R50_1x.pth expects .* but the "
                                         r"config sets \[127.5, 127.5, 127.5\] and \[64.0, 64.0, 64.0\]"):
        check_input_normalization(cfg)
    phantom = make_cfg(CONFIGS / "phantom" / "cxr_codet_R18_FPN_phantom.yaml", tiny=False)
    assert list(phantom.MODEL.PIXEL_STD) == [64.0] * 3  # from scratch: its own normalisation
    check_input_normalization(phantom)
