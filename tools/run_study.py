#!/usr/bin/env python
"""Run a study: train and evaluate every row x seed of a study file, then write its table.

    python tools/run_study.py studies/phantom_components.yaml            # rerun the same to continue
    python tools/run_study.py studies/vindr_paper.yaml --num-gpus 8 --only paper
    python tools/run_study.py studies/phantom_components.yaml --table-only

Logic and options: cxr_codet/studies/ (cli.py, runner.py).
"""
import sys
from pathlib import Path

from cxr_codet.studies.cli import run_study_main

if __name__ == "__main__":
    sys.exit(run_study_main(sys.argv[1:], Path(__file__).resolve().with_name("train_net.py")))
