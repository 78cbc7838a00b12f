"""A study's table from its run folders (finished runs only; missing seeds and rows marked): table.md, table.json
and per_class_ap50.png in <output-root>/<study>/, or table_<dataset>.* for another dataset the runs were
evaluated on."""
import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Optional, Tuple

from ..evaluation.plots import plot_per_class_ap50_panels
from .layout import run_dir, run_state
from .markdown import render_markdown
from .runs import load_run
from .spec import Study
from .table import Row, table_data

TABLE_MD, TABLE_JSON, TABLE_PNG = "table.md", "table.json", "per_class_ap50.png"


def study_table(study: Study, output_root, precision: int = 1, dataset: Optional[str] = None) -> dict:
    """The table of all finished runs (missing seeds and rows marked): JSON-ready data plus 'markdown'. With
    `dataset` (one the runs were evaluated on by --evaluate-on), that dataset's figures; runs without them are
    missing."""
    evaluated_on = "" if dataset is None or dataset == study.dataset else f" --evaluate-on {dataset}"
    study = study if dataset is None else replace(study, dataset=dataset)
    rows = []
    for row in study.rows:
        runs, seeds, missing = [], [], []
        for seed in study.seeds_of(row):
            output_dir = run_dir(output_root, study, row, seed)
            run = load_run(f"{row.label} seed {seed}", output_dir) if run_state(output_dir) == "done" else None
            if run is not None and (study.dataset is None or study.dataset in run.results):
                runs.append(run)
                seeds.append(seed)
            else:
                missing.append(f"seed {seed}" if run is None else f"seed {seed} on {study.dataset}")
        compare_to = None if row.compare_to is None else study.row(row.compare_to).label
        rows.append(Row(row.label, tuple(runs), tuple(missing), compare_to, tuple(seeds)))
    comparisons = [(study.row(first).label, study.row(second).label) for first, second in study.comparisons]
    data = table_data(rows, study.dataset, study.row(study.base).label, study.metrics, comparisons=comparisons)
    for entry, row, table_row in zip(data["rows"], study.rows, rows):
        entry.update(name=row.name, config=row.config, overrides=list(row.overrides), seeds=list(table_row.seeds))
        if row.paper:
            entry["paper"] = dict(row.paper)
    data.update(study=study.name, study_file=str(study.path), seeds=list(study.seeds),
                overrides=list(study.overrides))
    heading = [f"### Study `{study.name}`", ""]
    if study.description:
        heading += [study.description.strip(), ""]
    overrides = f"; every row with `{' '.join(study.overrides)}`" if study.overrides else ""
    own_seeds = "".join(f"; {row.label}: seeds {', '.join(map(str, row.seeds))}" for row in study.rows
                        if row.seeds is not None and row.seeds != study.seeds)
    heading += [f"Command: `python tools/run_study.py {study.path}{evaluated_on}`; seeds "
                f"{', '.join(map(str, study.seeds))}{own_seeds}{overrides}.", ""]
    data["markdown"] = "\n".join(heading) + render_markdown(data, precision)
    return data


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_safe(item) for item in value]
    return value


def table_files(study: Study, dataset: Optional[str] = None) -> Tuple[str, str, str]:
    """table.md, table.json, per_class_ap50.png; with `_<dataset>` before the suffix for a dataset other
    than the study's own (a held-out split), so both tables stand side by side."""
    if dataset is None or dataset == study.dataset:
        return TABLE_MD, TABLE_JSON, TABLE_PNG
    return tuple(f"{Path(name).stem}_{dataset}{Path(name).suffix}" for name in (TABLE_MD, TABLE_JSON, TABLE_PNG))


def write_study_table(study: Study, output_root, precision: int = 1, dataset: Optional[str] = None) -> dict:
    """Write table.md, table.json and per_class_ap50.png (of `dataset` when given, named by table_files) into
    <output-root>/<study>/; return the data with the paths written under 'files'."""
    names = table_files(study, dataset)
    data = study_table(study, output_root, precision, dataset)
    folder = Path(output_root) / study.name
    folder.mkdir(parents=True, exist_ok=True)
    table_md, table_json, table_png = (folder / name for name in names)
    table_md.write_text(data["markdown"])
    panels = [
        (entry["label"] + (" (base)" if entry["is_base"] else ""),
         {name: (item["mean"], item["half_width"]) for name, item in entry["per_class_ap50"].items()})
        for entry in data["rows"]
    ]
    plot_per_class_ap50_panels(panels, table_png,
                               f"{study.name}: per-class AP50 on {data['dataset']} (mean, 95% interval)")
    data["files"] = [str(path) for path in (table_md, table_json, table_png)]
    with open(table_json, "w") as f:
        json.dump(_json_safe(data), f, indent=2, allow_nan=False)
        f.write("\n")
    return data
