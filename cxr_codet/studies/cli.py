"""The command lines of the study tools: tools/run_study.py (`run_study_main`: train, evaluate and tabulate a
study file) and tools/ablation_table.py (`ablation_table_main`: tabulate the eval_results.json of given runs)."""
import argparse
import signal
import sys
from pathlib import Path
from typing import Sequence

from ..numeric_args import number_problem, refuse
from .markdown import render_markdown
from .runner import evaluate_on, run_study
from .runs import DEFAULT_METRICS, RESULTS_FILE, load_run, parse_run_spec
from .spec import StudyError, load_study
from .study_table import write_study_table
from .table import rows_by_label, table_data


def run_study_parser() -> argparse.ArgumentParser:
    """The command line of tools/run_study.py."""
    parser = argparse.ArgumentParser(
        description="Train and evaluate every row x seed of a study file (skipping finished runs, resuming "
        "interrupted ones), then write its table: table.md, table.json, per_class_ap50.png.",
        epilog="example: tools/run_study.py studies/phantom_components.yaml; rerun the same command after "
        "an interruption to continue.",
    )
    parser.add_argument("study", type=Path, help="study file (YAML: name, base, seeds, overrides, rows)")
    parser.add_argument("--output-root", type=Path, default=Path("output/studies"),
                        help="runs go to OUTPUT_ROOT/<study name>/<row>/seed<S>/ (default: output/studies)")
    parser.add_argument("--only", action="append", metavar="ROW", help="run only this row (repeatable)")
    parser.add_argument("--seed", action="append", type=int, metavar="S", dest="seeds",
                        help="run only this seed of the study's seeds (repeatable); the table still shows all")
    parser.add_argument("--dry-run", action="store_true",
                        help="check the study and print each run's state and command; train nothing")
    parser.add_argument("--table-only", action="store_true", help="train nothing, only write the table")
    parser.add_argument("--evaluate-on", metavar="DATASET",
                        help="train nothing: evaluate every finished run's model_final.pth on this registered "
                        "dataset (e.g. the held-out cxr_phantom_test), add it to the run's eval_results.json, "
                        "tabulate it into table_DATASET.md")
    parser.add_argument("--dataset", help="tabulate this dataset of the runs' results, not the study's "
                        "(files table_DATASET.*)")
    parser.add_argument("--num-gpus", type=int, help="passed to tools/train_net.py (GPUs, or CPU processes)")
    parser.add_argument("--torch-threads", type=_positive_int, metavar="N",
                        help="torch CPU threads of every run (OMP_NUM_THREADS; default: torch's choice). On CPU "
                        "a seed repeats a run exactly only at the same thread count (MODEL_ZOO.md says which)")
    parser.add_argument("--precision", type=int, default=1, help="decimals in table.md (default: 1)")
    return parser


def _positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


def run_study_main(argv: Sequence[str], train_script) -> int:
    """Run the command line; returns the exit status (1 when a run failed, 2 for a bad study file, 130 when
    interrupted by Ctrl-C or SIGTERM)."""
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)  # `kill <runner>` acts as Ctrl-C
    try:
        return _run_study(run_study_parser().parse_args(argv), train_script)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run_study(args: argparse.Namespace, train_script) -> int:
    try:
        study = load_study(args.study)
        if args.evaluate_on and (args.dry_run or args.table_only):
            raise StudyError("--evaluate-on evaluates, so it cannot go with --dry-run or --table-only")
        if args.evaluate_on:
            failures = evaluate_on(study, args.output_root, train_script, args.evaluate_on, args.only, args.seeds,
                                   torch_threads=args.torch_threads)
        elif args.table_only:
            failures = []
        else:
            failures = run_study(
                study, args.output_root, train_script, args.only, args.num_gpus, args.dry_run, seeds=args.seeds,
                torch_threads=args.torch_threads)
    except StudyError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\n[{args.study}] interrupted; rerun the same command to continue", file=sys.stderr)
        return 130
    if args.dry_run:
        return 0
    try:
        data = write_study_table(study, args.output_root, args.precision, args.dataset or args.evaluate_on)
    except (ValueError, FileNotFoundError) as error:
        print(f"[{study.name}] no table: {error}", file=sys.stderr)
        return 1
    print(data["markdown"], end="")
    print(f"[{study.name}] table written: {', '.join(data['files'])}")
    if failures:
        print(f"[{study.name}] {len(failures)} run(s) failed:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    return 0


def ablation_table_parser() -> argparse.ArgumentParser:
    """The command line of tools/ablation_table.py."""
    parser = argparse.ArgumentParser(
        description="Tabulate eval_results.json of several runs in the paper's ablation layout (markdown).",
        epilog="example: tools/ablation_table.py --run base=output/base --run lr0.01=output/lr0.01 "
        "--dataset vindr_cxr_test --output table.md",
    )
    parser.add_argument(
        "--run", action="append", required=True, metavar="LABEL=PATH",
        help=f"a run: its row label and OUTPUT_DIR (or {RESULTS_FILE}); repeat, base first; runs with the "
        "same label are the seeds of one row (mean and 95%% t-interval)",
    )
    parser.add_argument("--base", help="label of the base run (default: the first --run)")
    parser.add_argument("--dataset", help="test dataset to tabulate (default: the only one all runs have)")
    parser.add_argument(
        "--metrics", nargs="+", default=list(DEFAULT_METRICS), help="columns (default: AP50 APm APl)"
    )
    parser.add_argument("--task", default="bbox", help="task key inside eval_results.json (default: bbox)")
    parser.add_argument("--precision", type=int, default=1, help="decimals (default: 1)")
    parser.add_argument("--output", type=Path, help="also write the table to this markdown file")
    return parser


def ablation_table_main(argv: Sequence[str]) -> str:
    """Run the command line: print the table (and write --output); errors exit with a one-line message."""
    parser = ablation_table_parser()
    args = parser.parse_args(argv)
    refuse("ablation_table.py", [number_problem("--precision", args.precision, low=0, high=10)])
    try:
        rows = rows_by_label([load_run(*parse_run_spec(spec)) for spec in args.run])
        data = table_data(rows, args.dataset, args.base, args.metrics, args.task)
        table = render_markdown(data, args.precision)
    except (ValueError, FileNotFoundError) as error:
        parser.error(str(error))
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(table)
    print(table, end="")
    return table
