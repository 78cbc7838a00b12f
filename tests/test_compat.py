"""Each detectron2 v0.6 shim in cxr_codet.compat does its job (and nothing when not needed)."""
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cxr_codet import compat


def test_detectron2_layers_import_without_c_extension():
    import detectron2._C as ext
    import detectron2.layers  # noqa: F401  (imports deform_conv, which imports detectron2._C)
    import detectron2.modeling  # noqa: F401

    if compat.HAS_C_EXTENSION:
        pytest.skip("detectron2 was built with its C++ extension; the stub is not installed")
    assert getattr(ext, "_cxr_codet_stub", False)
    with pytest.raises(compat.MissingExtensionError, match="box_iou_rotated.*without its C\\+\\+"):
        ext.box_iou_rotated
    assert not hasattr(ext, "nms_rotated")  # hasattr-based feature checks see a missing op


def test_collect_env_runs_with_stub():
    """default_setup() logs collect_env_info(), which queries the extension's compiler."""
    from detectron2.utils.collect_env import collect_env_info

    assert "detectron2" in collect_env_info()


def test_pillow_linear_alias_and_transforms_import():
    assert Image.LINEAR == Image.BILINEAR
    from detectron2.data.transforms import ExtentTransform, ResizeShortestEdge

    img = np.zeros((40, 60, 3), dtype=np.uint8)
    out = ResizeShortestEdge(20, 100).get_transform(img).apply_image(img)
    assert out.shape == (20, 30, 3)
    assert ExtentTransform((0, 0, 60, 40), (20, 30)).apply_image(img).shape == (20, 30, 3)


def test_numpy_aliases_used_by_class_histogram(caplog):
    from detectron2.data.build import print_instances_class_histogram

    dicts = [{"annotations": [{"category_id": 0, "iscrowd": 0}, {"category_id": 1, "iscrowd": 0}]}]
    print_instances_class_histogram(dicts, ["a", "b"])  # uses np.int in v0.6
    assert np.int is int


def test_pkg_resources_resource_filename():
    import pkg_resources

    path = pkg_resources.resource_filename("detectron2.model_zoo", "model_zoo.py")
    assert Path(path).is_file()
    import detectron2.model_zoo  # noqa: F401  (imports pkg_resources at module level)


@pytest.mark.parametrize("clip_type", ["value", "norm"])
def test_gradient_clipping_skips_parameters_without_gradients(clip_type):
    from detectron2.config import get_cfg
    from detectron2.solver.build import maybe_add_gradient_clipping

    cfg = get_cfg()
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = clip_type
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 0.5
    used, unused = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    optimizer = maybe_add_gradient_clipping(cfg, torch.optim.SGD)([used, unused], lr=1.0)
    (torch.tensor([10.0, -10.0]) * used).sum().backward()
    optimizer.step()  # `unused` has no gradient: v0.6 + newer torch raised here
    expected = [-0.5, 0.5] if clip_type == "value" else [-0.5 / 2 ** 0.5, 0.5 / 2 ** 0.5]
    torch.testing.assert_close(used.detach(), torch.tensor(expected))
    assert unused.grad is None and torch.equal(unused.detach(), torch.zeros(2))


def test_apply_is_idempotent():
    before = dict(sys.modules)
    compat.apply()
    assert sys.modules.keys() == before.keys()
