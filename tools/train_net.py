#!/usr/bin/env python
"""Train or evaluate a cxr-codet model with detectron2's usual command line.

    python tools/train_net.py --config-file configs/phantom/faster_rcnn_R18_FPN_phantom.yaml
    python tools/train_net.py --config-file X.yaml --num-gpus 8
    python tools/train_net.py --config-file X.yaml --eval-only MODEL.WEIGHTS output/model_final.pth
    python tools/train_net.py --config-file X.yaml --resume

Without a GPU it trains on CPU; `--num-gpus N` then starts N CPU processes joined by gloo.
"""
import sys

from cxr_codet.engine.launcher import launch, main, parse_args

if __name__ == "__main__":
    args = parse_args(sys.argv[1:])
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
