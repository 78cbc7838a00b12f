"""studies/spec.py: study files, read and checked with errors that name the file, the row and the key."""
import pytest
from conftest import BASELINE
from study_yaml import TWO_ROWS, write_study

from cxr_codet.studies.spec import StudyError, load_study


def test_load_study_reads_rows_seeds_and_overrides(tmp_path, in_repo):
    study = load_study(write_study(tmp_path, TWO_ROWS))
    assert (study.name, study.base, study.seeds) == ("demo", "base", (0, 1))
    assert study.overrides == ("SOLVER.MAX_ITER", "7", "SOLVER.STEPS", "(5, 6)")
    assert [row.name for row in study.rows] == ["base", "better"]
    assert study.rows[1].label == "LR 0.01" and study.rows[0].label == "base"
    assert study.rows[1].overrides == ("SOLVER.BASE_LR", "0.01", "INPUT.MIN_SIZE_TRAIN", "(128, 160)")


@pytest.mark.parametrize("text, message", [
    ("name: x\nseeds: [0]\nrows: [{name: a, config: %s}]\nseed: [1]\n" % BASELINE,
     r"study.yaml: unknown key\(s\) \['seed'\]; allowed: \["),
    ("name: x\nseeds: [0]\nrows: [{name: a, config: %s, override: []}]\n" % BASELINE,
     r"row 'a': unknown key\(s\) \['override'\]"),
    ("name: x\nseeds: [0]\nrows: [{name: a, config: configs/nope.yaml}]\n",
     r"row 'a': config file configs/nope.yaml does not exist"),
    ("name: x\nseeds: [0]\nrows: [{name: a, config: %s}, {name: a, config: %s}]\n" % (BASELINE, BASELINE),
     r"row 'a': duplicate row name \(rows\[0\] and rows\[1\]\)"),
    ("name: x\nbase: b\nseeds: [0]\nrows: [{name: a, config: %s}]\n" % BASELINE,
     r"base 'b' is not a row; rows: \['a'\]"),
    ("name: x\nseeds: []\nrows: [{name: a, config: %s}]\n" % BASELINE, r"seeds must be a non-empty list"),
    ("name: x\nrows: [{name: a, config: %s}]\n" % BASELINE, r"seeds must be a non-empty list"),
    ("name: x\nseeds: [0, 0]\nrows: [{name: a, config: %s}]\n" % BASELINE, r"seeds repeat: \[0, 0\]"),
    ("name: x\nseeds: [0]\nrows: []\n", r"rows must be a non-empty list"),
    ("name: x\nseeds: [0]\nrows: [{name: a, config: %s, seeds: [1, 1]}]\n" % BASELINE,
     r"study.yaml: row 'a': seeds repeat: \[1, 1\]"),
    ("name: x\nseeds: [0]\nrows: [{name: a, config: %s, seeds: 2}]\n" % BASELINE,
     r"row 'a': seeds must be a non-empty list of integers, got 2"),
    ("name: x/y\nseeds: [0]\nrows: [{name: a, config: %s}]\n" % BASELINE, r"name must be a folder name"),
    ("name: x\nseeds: [0]\noverrides: [SOLVER.MAX_ITER]\nrows: [{name: a, config: %s}]\n" % BASELINE,
     r"overrides must be a list of KEY, VALUE pairs"),
    ("name: x\nseeds: [0]\nrows: [{name: a, config: %s, overrides: [SEED, 3]}]\n" % BASELINE,
     r"row 'a': overrides set SEED, which the runner sets"),
    ("name: x\nseeds: [0\n", r"not valid YAML"),
    ("name: x\nseeds: [0]\nrows: [{name: a, config: %s, compare_to: b}]\n" % BASELINE,
     r"row 'a': compare_to 'b' is not a row; rows: \['a'\]"),
    ("name: x\nseeds: [0]\nrows: [{name: a, config: %s, compare_to: a}]\n" % BASELINE,
     r"row 'a': compare_to must name another row"),
    ("name: x\nseeds: [0]\nrows: [{name: a, config: %s}]\ncomparisons: [[a, b]]\n" % BASELINE,
     r"comparisons\[0\] = \['a', 'b'\] must be \[row, other row\]; rows: \['a'\]"),
    ("name: x\nseeds: [0]\nrows: [{name: a, config: %s}]\ncomparisons: [a, a]\n" % BASELINE,
     r"comparisons\[0\] = 'a' must be \[row, other row\]"),
])
def test_bad_study_files_name_the_key_and_row(tmp_path, in_repo, text, message):
    with pytest.raises(StudyError, match=message):
        load_study(write_study(tmp_path, text))


def test_a_rows_paper_figures_are_read_and_checked(tmp_path, in_repo):
    text = ("name: x\nseeds: [0]\nrows: [{name: a, config: %s, paper: {AP50: 72.4, APm: 27}}]\n" % BASELINE)
    (tmp_path / "study.yaml").write_text(text)
    assert load_study(tmp_path / "study.yaml").rows[0].paper == (("AP50", 72.4), ("APm", 27.0))
    (tmp_path / "study.yaml").write_text(text.replace("{AP50: 72.4, APm: 27}", "[72.4]"))
    with pytest.raises(StudyError, match=r"row 'a': paper must map metric names to the reported numbers"):
        load_study(tmp_path / "study.yaml")
