"""engine.launcher: the run setup's early checks, launch on CPU (gloo processes and detectron2's comm set up as
with GPUs), and the DDP wrapper."""
from pathlib import Path

import pytest
import torch
from detectron2.utils import comm

from cxr_codet.engine.launcher import launch
from cxr_codet.engine.startup import StartupError, build_parser, run_config
from cxr_codet.engine.trainer import create_ddp_model


def _ddp_worker(tmp_file):
    model = torch.nn.Linear(2, 1)
    ddp = create_ddp_model(model)
    assert isinstance(ddp, torch.nn.parallel.DistributedDataParallel)
    ranks = comm.all_gather(comm.get_rank())
    assert comm.get_local_rank() == comm.get_rank()
    assert comm.get_local_size() == 2
    if comm.is_main_process():
        Path(tmp_file).write_text(",".join(map(str, ranks)))


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA present: detectron2's own launch is used")
@pytest.mark.slow
def test_launch_two_cpu_processes_with_gloo(tmp_path):
    out = tmp_path / "ranks.txt"
    launch(_ddp_worker, 2, dist_url="auto", args=(str(out),))
    assert out.read_text() == "0,1"


def test_create_ddp_model_single_process_returns_model():
    model = torch.nn.Linear(2, 1)
    assert create_ddp_model(model) is model


def test_the_run_config_refuses_a_concept_group_layout_before_writing_anything(tmp_path):
    output = tmp_path / "run"
    argv = ["--config-file", "configs/phantom/cxr_codet_R18_FPN_phantom.yaml", "SOLVER.IMS_PER_BATCH", "6",
            "OUTPUT_DIR", str(output)]
    assert run_config(build_parser().parse_args(argv)).SOLVER.IMS_PER_BATCH == 6  # 3 groups of 2 in one process
    with pytest.raises(StartupError, match=r"per-process batch of 3 images \(SOLVER.IMS_PER_BATCH = 6 / 2 processes"):
        run_config(build_parser().parse_args(["--num-gpus", "2", *argv]))
    with pytest.raises(StartupError, match="leaves 3 images, which is not a positive multiple of "
                                           "DATALOADER.CONCEPT_GROUP_SIZE = 2"):
        run_config(build_parser().parse_args([*argv[:3], "3", *argv[4:]]))
    assert not output.exists()


def test_the_run_config_resolves_seed_minus_one_once():
    args = build_parser().parse_args(["--config-file", "configs/phantom/faster_rcnn_R18_FPN_phantom.yaml"])
    first, second = run_config(args), run_config(args)
    assert first.SEED >= 0 and second.SEED >= 0 and first.SEED != second.SEED  # a fresh draw per run
    fixed = build_parser().parse_args(["--config-file", "configs/phantom/faster_rcnn_R18_FPN_phantom.yaml", "SEED", "7"])
    assert run_config(fixed).SEED == 7
