#!/usr/bin/env python
"""Train or evaluate a cxr-codet model with detectron2's usual command line (`--help` for the details).

    python tools/train_net.py --config-file configs/phantom/faster_rcnn_R18_FPN_phantom.yaml
    python tools/train_net.py --config-file X.yaml --num-gpus 8
    python tools/train_net.py --config-file X.yaml --eval-only MODEL.WEIGHTS output/model_final.pth
    python tools/train_net.py --config-file X.yaml --resume

Without a GPU it trains on CPU; `--num-gpus N` then starts N CPU processes joined by gloo. Start-up errors
print one line and exit with status 2 (`--debug` for the traceback).
"""
import sys

from cxr_codet.engine.launcher import run_train_net

if __name__ == "__main__":
    sys.exit(run_train_net(sys.argv[1:]))
