#!/usr/bin/env python
"""Collect eval_results.json of several runs into the paper's ablation table (markdown, deltas to a base).

    python tools/ablation_table.py --run base=output/cxr_codet_base --run lr0.01=output/cxr_codet_lr0.01 \\
        --dataset vindr_cxr_test --output table.md

Runs given the same label are one row's seeds (mean ± 95% t-interval). For a whole study (configs x seeds,
trained and tabulated by one command) use tools/run_study.py. Logic and options:
cxr_codet/studies/ (cli.py, table.py, markdown.py).
"""
import sys

from cxr_codet.studies.cli import ablation_table_main

if __name__ == "__main__":
    ablation_table_main(sys.argv[1:])
