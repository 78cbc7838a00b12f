"""Study files (studies/*.yaml): their schema, loading with errors that name the file, row and key, and the
selection of rows and seeds a command runs.

A study file names rows (a config plus overrides) and seeds; STUDY_KEYS and ROW_KEYS list what it may say.
"""
import re
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import yaml

STUDY_KEYS = {
    "name": "the study's folder under the output root (required)",
    "base": "the row deltas are computed against (default: the first row)",
    "seeds": "list of SEED values, every row runs each unless it lists its own (required)",
    "overrides": "KEY VALUE pairs appended to every row's command line",
    "rows": "list of rows (required)",
    "description": "free text, printed above the table",
    "dataset": "test dataset to tabulate (default: the only one all runs have)",
    "metrics": "table columns (default: AP50 APm APl and any other summary metric all runs report)",
    "comparisons": "list of [row, other row] pairs whose differences print under the table (e.g. against a control)",
}
ROW_KEYS = {
    "name": "the row's folder and table label (required)",
    "config": "config file, relative to the working directory (required)",
    "overrides": "this row's own KEY VALUE pairs",
    "label": "text shown in the table instead of the name",
    "compare_to": "the row this row's deltas are against, when not the study's base (e.g. same budget pairs)",
    "seeds": "this row's SEED values when not the study's (e.g. more seeds where three leave the interval wide)",
    "paper": "figures a paper reports for this setting, {metric: value in %}, printed beside the measured cells",
}
RUNNER_KEYS = ("OUTPUT_DIR", "SEED")  # set per run by the runner; a study may not override them
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


class StudyError(ValueError):
    """A study file that cannot run: the message names the file, the row and the key."""


@dataclass(frozen=True)
class StudyRow:
    """One row of a study: folder name, config file, its own overrides (as command-line strings), label."""

    name: str
    config: str
    overrides: Tuple[str, ...] = ()
    label: str = ""
    compare_to: Optional[str] = None
    seeds: Optional[Tuple[int, ...]] = None
    paper: Tuple[Tuple[str, float], ...] = ()


@dataclass(frozen=True)
class Study:
    """A checked study file: its rows, seeds, shared overrides and table options."""

    path: Path
    name: str
    base: str
    seeds: Tuple[int, ...]
    rows: Tuple[StudyRow, ...]
    overrides: Tuple[str, ...] = ()
    description: str = ""
    dataset: Optional[str] = None
    metrics: Optional[Tuple[str, ...]] = None
    comparisons: Tuple[Tuple[str, str], ...] = ()

    def row(self, name: str) -> StudyRow:
        return next(row for row in self.rows if row.name == name)

    def seeds_of(self, row: StudyRow) -> Tuple[int, ...]:
        """The row's own seeds when it lists them, else the study's."""
        return self.seeds if row.seeds is None else row.seeds

    @property
    def all_seeds(self) -> Tuple[int, ...]:
        """Every seed some row runs: the study's, then the rows' extra ones in ascending order."""
        extra = {seed for row in self.rows for seed in self.seeds_of(row)} - set(self.seeds)
        return self.seeds + tuple(sorted(extra))


def _override_value(value) -> str:
    """A YAML value as detectron2's command line wants it (lists become tuples, literal_eval reads them)."""
    if isinstance(value, (list, tuple)):
        return repr(tuple(value))
    return str(value)


def _overrides(where: str, value) -> Tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) % 2:
        raise StudyError(f"{where}: overrides must be a list of KEY, VALUE pairs (even length), got {value!r}")
    keys = value[0::2]
    for key in keys:
        if not isinstance(key, str) or not key:
            raise StudyError(f"{where}: override key {key!r} is not a config key such as SOLVER.MAX_ITER")
        if key in RUNNER_KEYS:
            raise StudyError(f"{where}: overrides set {key}, which the runner sets for every run")
    return tuple(_override_value(item) for item in value)


def _name(where: str, key: str, value) -> str:
    if not isinstance(value, str) or not _SAFE_NAME.match(value):
        raise StudyError(f"{where}: {key} must be a folder name (letters, digits, . _ + -), got {value!r}")
    return value


def _seeds(where: str, seeds) -> Tuple[int, ...]:
    if not isinstance(seeds, list) or not seeds:
        raise StudyError(f"{where}: seeds must be a non-empty list of integers, got {seeds!r}")
    for seed in seeds:
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise StudyError(f"{where}: seed {seed!r} is not an integer")
    if len(set(seeds)) != len(seeds):
        raise StudyError(f"{where}: seeds repeat: {seeds}")
    return tuple(seeds)


def _unknown_keys(where: str, mapping: dict, allowed: dict) -> None:
    unknown = sorted(set(mapping) - set(allowed))
    if unknown:
        raise StudyError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")


def _row(path: Path, index: int, entry, seen: dict) -> StudyRow:
    where = f"{path}: rows[{index}]"
    if not isinstance(entry, dict):
        raise StudyError(f"{where} must be a mapping with name and config, got {entry!r}")
    name = _name(where, "name", entry.get("name"))
    where = f"{path}: row {name!r}"
    if name in seen:
        raise StudyError(f"{where}: duplicate row name (rows[{seen[name]}] and rows[{index}])")
    seen[name] = index
    _unknown_keys(where, entry, ROW_KEYS)
    config = entry.get("config")
    if not isinstance(config, str) or not config:
        raise StudyError(f"{where}: config must be a config file path, got {config!r}")
    if not Path(config).is_file():
        raise StudyError(f"{where}: config file {config} does not exist (relative to {Path.cwd()})")
    label = entry.get("label", name)
    if not isinstance(label, str) or not label:
        raise StudyError(f"{where}: label must be text, got {label!r}")
    compare_to = entry.get("compare_to")
    if compare_to is not None and (not isinstance(compare_to, str) or compare_to == name):
        raise StudyError(f"{where}: compare_to must name another row, got {compare_to!r}")
    seeds = None if "seeds" not in entry else _seeds(where, entry["seeds"])
    return StudyRow(name, config, _overrides(where, entry.get("overrides")), label, compare_to, seeds,
                    _paper(where, entry.get("paper")))


def _paper(where: str, value) -> Tuple[Tuple[str, float], ...]:
    """A row's `paper:` mapping {metric: number} as sorted pairs; anything else is a StudyError naming the row."""
    if value is None:
        return ()
    if not isinstance(value, dict) or not value or not all(
            isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool) for k, v in value.items()):
        raise StudyError(f"{where}: paper must map metric names to the reported numbers (in %), e.g. "
                         f"{{AP50: 72.4}}, got {value!r}")
    return tuple(sorted((k, float(v)) for k, v in value.items()))


def load_study(path) -> Study:
    """Read and check a study file; a StudyError names the file, row and key of the first problem."""
    path = Path(path)
    if not path.is_file():
        raise StudyError(f"{path}: no such study file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise StudyError(f"{path}: not valid YAML ({error})") from None
    if not isinstance(data, dict):
        raise StudyError(f"{path}: expected a mapping with keys {sorted(STUDY_KEYS)}, got {type(data).__name__}")
    _unknown_keys(str(path), data, STUDY_KEYS)
    name = _name(str(path), "name", data.get("name"))
    seeds = _seeds(str(path), data.get("seeds"))
    entries = data.get("rows")
    if not isinstance(entries, list) or not entries:
        raise StudyError(f"{path}: rows must be a non-empty list, got {entries!r}")
    seen: dict = {}
    rows = tuple(_row(path, index, entry, seen) for index, entry in enumerate(entries))
    for row in rows:
        if row.compare_to is not None and row.compare_to not in seen:
            raise StudyError(f"{path}: row {row.name!r}: compare_to {row.compare_to!r} is not a row; rows: "
                             f"{list(seen)}")
    base = data.get("base", rows[0].name)
    if base not in seen:
        raise StudyError(f"{path}: base {base!r} is not a row; rows: {list(seen)}")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise StudyError(f"{path}: description must be text, got {description!r}")
    dataset = data.get("dataset")
    if dataset is not None and not isinstance(dataset, str):
        raise StudyError(f"{path}: dataset must be a dataset name, got {dataset!r}")
    metrics = data.get("metrics")
    if metrics is not None:
        if not isinstance(metrics, list) or not metrics or not all(isinstance(m, str) for m in metrics):
            raise StudyError(f"{path}: metrics must be a non-empty list of metric names, got {metrics!r}")
        metrics = tuple(metrics)
    return Study(path, name, base, seeds, rows, _overrides(str(path), data.get("overrides")),
                 description, dataset, metrics, _comparisons(path, data.get("comparisons"), list(seen)))


def _comparisons(path: Path, value, rows: List[str]) -> Tuple[Tuple[str, str], ...]:
    """The study's `comparisons`: pairs of two different row names."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise StudyError(f"{path}: comparisons must be a list of [row, other row] pairs, got {value!r}")
    for index, pair in enumerate(value):
        if not (isinstance(pair, list) and len(pair) == 2 and pair[0] != pair[1] and all(p in rows for p in pair)):
            raise StudyError(f"{path}: comparisons[{index}] = {pair!r} must be [row, other row]; rows: {rows}")
    return tuple(tuple(pair) for pair in value)


def select_rows(study: Study, only: Optional[Sequence[str]]) -> Tuple[StudyRow, ...]:
    """The rows named by --only (all when None), in the study's order."""
    if not only:
        return study.rows
    unknown = [name for name in only if name not in {row.name for row in study.rows}]
    if unknown:
        raise StudyError(f"--only {unknown}: not rows of {study.path}; rows: {[r.name for r in study.rows]}")
    return tuple(row for row in study.rows if row.name in only)


def select_seeds(study: Study, seeds: Optional[Sequence[int]]) -> Tuple[int, ...]:
    """The seeds named by --seed (all when None), in the study's order: splits one study over machines."""
    if not seeds:
        return study.all_seeds
    unknown = sorted(set(seeds) - set(study.all_seeds))
    if unknown:
        raise StudyError(f"--seed {unknown}: not seeds of {study.path}; seeds: {list(study.all_seeds)}")
    return tuple(seed for seed in study.all_seeds if seed in seeds)


def selected_runs(study: Study, rows: Sequence[StudyRow],
                  seeds: Optional[Sequence[int]]) -> List[Tuple[StudyRow, int]]:
    """(row, seed) of each run of `rows` that the --seed selection names, row-major, each row over its own seeds."""
    selected = select_seeds(study, seeds)
    return [(row, seed) for row in rows for seed in study.seeds_of(row) if seed in selected]
