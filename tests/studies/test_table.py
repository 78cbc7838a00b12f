"""studies/table.py, markdown.py and runs.py: ablation tables of evaluated runs in the paper's layout, deltas
and intervals, and tools/ablation_table.py's command line."""
import json
from pathlib import Path

import pytest
from scipy import stats
from study_yaml import T_975_DOF2

from cxr_codet.evaluation.plots import plot_per_class_ap50_panels
from cxr_codet.studies.cli import ablation_table_main as main
from cxr_codet.studies.markdown import ablation_table, format_cell, format_difference, render_markdown
from cxr_codet.studies.runs import load_run, parse_run_spec
from cxr_codet.studies.statistics import paired_difference
from cxr_codet.studies.table import Row, table_data


def write_run(root: Path, name: str, results: dict) -> Path:
    """An OUTPUT_DIR holding eval_results.json with `results`."""
    output_dir = root / name
    output_dir.mkdir()
    (output_dir / "eval_results.json").write_text(json.dumps(results))
    return output_dir


def bbox(ap50, apm, apl, **extra):
    return {"bbox": {"AP": 30.0, "AP50": ap50, "APm": apm, "APl": apl, **extra}}


@pytest.fixture
def three_runs(tmp_path):
    base = write_run(tmp_path, "base", {"vindr_cxr_test": bbox(72.4, 27.5, 15.8, **{"AP50-Nodule/Mass": 40})})
    lr = write_run(tmp_path, "lr", {"vindr_cxr_test": bbox(73.66, 27.0, 15.8, **{"AP50-Nodule/Mass": 41.25})})
    detic = write_run(tmp_path, "detic", {"vindr_cxr_test": bbox(94.9, float("nan"), 20.04)})
    return [load_run("base", base), load_run("LR 0.01", lr), load_run("Detic init", detic)]


def test_table_has_one_row_per_run_with_deltas_against_the_first(three_runs):
    table = ablation_table(three_runs)
    lines = table.splitlines()
    assert lines[0].startswith("bbox results on vindr_cxr_test (%)") and "'base'" in lines[0]
    assert lines[2:] == [
        "| Setting | AP50 | APm | APl |",
        "|---|---:|---:|---:|",
        "| base (base) | 72.4 | 27.5 | 15.8 |",
        "| LR 0.01 | 73.7 (+1.3) | 27.0 (-0.5) | 15.8 (+0.0) |",
        "| Detic init | 94.9 (+22.5) | n/a | 20.0 (+4.2) |",
    ]


def test_base_can_be_any_run_and_metrics_are_selectable(three_runs):
    table = ablation_table(three_runs[:2], base_label="LR 0.01", metrics=["AP50-Nodule/Mass"], precision=2)
    assert "| base | 40.00 (-1.25) |" in table
    assert "| LR 0.01 (base) | 41.25 |" in table


def test_format_cell_rounds_before_subtracting_and_handles_nan():
    assert format_cell(72.44, 71.16) == "72.4 (+1.2)"
    assert format_cell(70.0, 72.0) == "70.0 (-2.0)"
    assert format_cell(float("nan"), 72.0) == "n/a"
    assert format_cell(50.0, float("nan")) == "50.0 (n/a)"
    assert format_cell(50.0, None) == "50.0"


def test_metrics_without_ground_truth_print_as_na(tmp_path):
    no_gt = {"AP50": None, "APl": 12.0, "size_buckets_without_ground_truth": ["APs", "APm"],
             "classes_without_ground_truth": ["Nodule/Mass"]}
    base_results = {"d": bbox(70.0, 20.0, 10.0, **{"AP50-Nodule/Mass": 5})}
    base = load_run("base", write_run(tmp_path, "base", base_results))
    run = load_run("no_gt", write_run(tmp_path, "no_gt", {"d": {"bbox": no_gt}}))
    table = ablation_table([base, run], metrics=["AP50", "APm", "APl", "AP50-Nodule/Mass"])
    assert "| no_gt | n/a | n/a | 12.0 (+2.0) | n/a |" in table


def test_dataset_choice(tmp_path):
    two = {"vindr_cxr_val": bbox(1, 2, 3), "nih_cxr14_test": bbox(4, 5, 6)}
    a = load_run("a", write_run(tmp_path, "a", two))
    b = load_run("b", write_run(tmp_path, "b", {"nih_cxr14_test": bbox(7, 8, 9)}))
    assert "nih_cxr14_test" in ablation_table([a, b]).splitlines()[0]  # the only one both runs have
    with pytest.raises(ValueError, match=r"--dataset: the runs share 2 datasets .*'a': \['nih_cxr14_test', "
                                         r"'vindr_cxr_val'\]"):
        ablation_table([a])
    with pytest.raises(ValueError, match=r"b[/\\]eval_results.json \(run 'b'\) has no dataset "
                                         r"'vindr_cxr_val'; it has \['nih_cxr14_test'\]"):
        ablation_table([a, b], dataset="vindr_cxr_val")


def test_missing_file_metric_and_bad_values_name_file_and_key(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"run 'x': .*nowhere[/\\]eval_results.json does not exist"):
        load_run("x", tmp_path / "nowhere")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"run 'broken': .*broken.json: not valid JSON"):
        load_run("broken", tmp_path / "broken.json")
    with pytest.raises(ValueError, match=r"run 'text': .*metric 'AP50' of task 'bbox' of dataset 'd' must"):
        load_run("text", write_run(tmp_path, "text", {"d": bbox("72.4", 2, 3)}))
    base = load_run("base", write_run(tmp_path, "base", {"d": bbox(1, 2, 3)}))
    no_apl = load_run("no_apl", write_run(tmp_path, "no_apl", {"d": {"bbox": {"AP50": 1.0, "APm": 2.0}}}))
    with pytest.raises(ValueError, match=r"no_apl[/\\]eval_results.json \(run 'no_apl'\) has no metric "
                                         r"d/bbox/'APl'; it has \['AP50', 'APm'\]"):
        ablation_table([base, no_apl])
    no_bbox = load_run("seg", write_run(tmp_path, "seg", {"d": {"localization": {"IoU": 0.3}}}))
    with pytest.raises(ValueError, match=r"seg[/\\]eval_results.json \(run 'seg'\) has no 'bbox' results"):
        ablation_table([base, no_bbox])
    with pytest.raises(ValueError, match=r"--base 'nope' is not a run label; labels: \['base'\]"):
        ablation_table([base], base_label="nope")
    with pytest.raises(ValueError, match=r"repeated: \['base'\]"):
        ablation_table([base, base])


def test_parse_run_spec():
    assert parse_run_spec("LR 0.01=output/lr") == ("LR 0.01", Path("output/lr"))
    assert parse_run_spec("a=b=c") == ("a", Path("b=c"))
    for bad in ("output/lr", "=output/lr", "label="):
        with pytest.raises(ValueError, match="must be 'label=path'"):
            parse_run_spec(bad)


def test_command_line_prints_and_writes_markdown(three_runs, tmp_path, capsys):
    out = tmp_path / "tables" / "table.md"
    argv = [f"--run=base={three_runs[0].results_file.parent}", "--run", f"lr={three_runs[1].results_file}",
            "--output", str(out)]
    table = main(argv)
    assert out.read_text() == table == capsys.readouterr().out
    assert "| lr | 73.7 (+1.3) | 27.0 (-0.5) | 15.8 (+0.0) |" in table
    with pytest.raises(SystemExit) as exit_info:
        main(["--run", f"base={tmp_path / 'missing'}"])
    assert exit_info.value.code == 2
    assert "missing" in capsys.readouterr().err


def seeded_rows(tmp_path):
    def runs(name, values):
        return tuple(
            load_run(f"{name} seed {seed}", write_run(tmp_path, f"{name}{seed}", {
                "d": bbox(ap50, apm, apl, **{"mAP@0.4": ap50 / 2, "AP50-A": ap50 + 1, "AP50-B": ap50 - 1})}))
            for seed, (ap50, apm, apl) in enumerate(values)
        )
    base = Row("base", runs("base", [(70.0, 20.0, 10.0), (72.0, 22.0, 10.0), (74.0, 24.0, 10.0)]))
    better = Row("better", runs("better", [(80.0, 21.0, 11.0), (81.0, 23.0, 11.0)]), ("seed 2",))
    absent = Row("absent", (), ("seed 0", "seed 1", "seed 2"))
    return [base, better, absent]


def test_seeded_table_prints_mean_interval_deltas_and_missing_runs(tmp_path):
    data = table_data(seeded_rows(tmp_path))
    assert data["metrics"] == ["AP50", "APm", "APl", "mAP@0.4"]  # an extra metric every run reports
    half = T_975_DOF2 * 2.0 / 3 ** 0.5  # 4.97
    better_half = 12.706204736174698 * 0.5 ** 0.5 / 2 ** 0.5  # t(0.975, 1) * std / sqrt(n) = 6.35
    lines = render_markdown(data).splitlines()
    assert "mean over n seeds ± half-width of the 95% t-interval" in lines[0]
    assert lines[2:] == [
        "| Setting | n | AP50 | APm | APl | mAP@0.4 |",
        "|---|---:|---:|---:|---:|---:|",
        f"| base (base) | 3 | 72.0 ± {half:.1f} | 22.0 ± {half:.1f} | 10.0 ± 0.0 | 36.0 ± {half / 2:.1f} |",
        f"| better | 2 of 3 (missing: seed 2) | 80.5 ± {better_half:.1f} (+8.5*) | 22.0 ± {2 * better_half:.1f} "
        f"(+0.0) | 11.0 ± 0.0 (+1.0*) | 40.2 ± {better_half / 2:.1f} (+4.2*) |",
        "| absent | 0 of 3 (missing: seed 0, seed 1, seed 2) | missing | missing | missing | missing |",
    ]
    better = data["rows"][1]["metrics"]["AP50"]
    assert better["values"] == [80.0, 81.0] and better["delta"] == pytest.approx(8.5)
    expected = stats.ttest_ind([80.0, 81.0], [70.0, 72.0, 74.0], equal_var=False).confidence_interval(0.95)
    assert better["delta_ci95"] == pytest.approx([expected.low, expected.high])
    per_class = data["rows"][0]["per_class_ap50"]
    assert list(per_class) == ["A", "B"] and per_class["A"]["mean"] == pytest.approx(73.0)
    assert per_class["A"]["ci95"] == pytest.approx([73.0 - half, 73.0 + half])
    assert data["rows"][2]["per_class_ap50"] == {}


def test_rows_with_seeds_get_a_paired_interval_that_sees_a_shift_welch_misses(tmp_path):
    """Seeds that differ a lot but move both rows together (e.g. the same boxed subset per seed): Welch's
    interval spans 0, the interval of the per-seed differences (+2, +2.5, +1.5; seed 3 only in one row) does not."""
    def row(name, values, **kwargs):
        runs = tuple(load_run(f"{name} seed {seed}", write_run(tmp_path, f"{name}{seed}", {"d": bbox(v, 20.0, 10.0)}))
                     for seed, v in values.items())
        return Row(name, runs, seeds=tuple(values), **kwargs)
    base = row("base", {0: 50.0, 1: 60.0, 2: 70.0})
    new = row("new", {0: 52.0, 1: 62.5, 2: 71.5, 3: 99.0})
    data = table_data([base, new])
    entry = data["rows"][1]["metrics"]["AP50"]
    welch = stats.ttest_ind([52.0, 62.5, 71.5, 99.0], [50.0, 60.0, 70.0], equal_var=False).confidence_interval()
    assert entry["delta_ci95"] == pytest.approx([welch.low, welch.high]) and welch.low < 0
    paired = stats.ttest_rel([52.0, 62.5, 71.5], [50.0, 60.0, 70.0]).confidence_interval()
    assert entry["paired"]["seeds"] == [0, 1, 2] and entry["paired"]["mean"] == pytest.approx(2.0)
    assert entry["paired"]["ci95"] == pytest.approx([paired.low, paired.high]) and paired.low > 0
    assert data["rows"][1]["metrics"]["APm"]["paired"]["ci95"] == [0.0, 0.0]  # no shift: not marked
    table = render_markdown(data)
    assert "\u2020 where the 95% t-interval of the per-seed differences (paired by seed) does." in table
    half = stats.t.ppf(0.975, 3) * stats.tstd([52.0, 62.5, 71.5, 99.0]) / 2
    assert f"| new | 4 | 71.2 ± {half:.1f} (+11.2\u2020) | 20.0 ± 0.0 (+0.0) | 10.0 ± 0.0 (+0.0) |" in table
    summary, seeds = paired_difference({0: 1.0, 1: float("nan")}, {0: 0.5, 1: 2.0})
    assert seeds == [0] and (summary.n, summary.mean, summary.half_width) == (1, 0.5, None)
    # Rows without seeds (tools/ablation_table.py) have no paired entry and no dagger in the caption.
    plain = table_data([Row("base", base.runs), Row("new", new.runs)])
    assert "paired" not in plain["rows"][1]["metrics"]["AP50"] and "\u2020" not in render_markdown(plain)
    with pytest.raises(ValueError, match=r"row 'x': 1 seeds for 3 runs"):
        Row("x", base.runs, seeds=(0,))


def test_extra_metric_only_when_every_run_has_it_and_rows_without_runs_cannot_make_a_table(tmp_path):
    a = load_run("a", write_run(tmp_path, "a", {"d": bbox(1, 2, 3, **{"FROC": 0.5})}))
    b = load_run("b", write_run(tmp_path, "b", {"d": bbox(1, 2, 3)}))
    assert table_data([Row("a", (a,)), Row("b", (b,))])["metrics"] == ["AP50", "APm", "APl"]
    assert table_data([Row("a", (a,))])["metrics"] == ["AP50", "APm", "APl", "FROC"]
    chest = load_run("c", write_run(tmp_path, "c", {"d": bbox(1, 2, 3, **{
        "mAP@0.4": 1.0, "AP@0.4-Mass": 2.0, "FROC-CPM": 3.0, "FROC-CPM-Mass": 4.0, "FROC-sens@1": 5.0,
        "FROC-sens@1-Mass": 6.0})}))
    assert table_data([Row("c", (chest,))])["metrics"] == ["AP50", "APm", "APl", "mAP@0.4", "FROC-CPM"]
    with pytest.raises(ValueError, match=r"none of the rows \['x'\] has an evaluated run"):
        table_data([Row("x", (), ("seed 0",))])


def test_side_by_side_chart_is_one_png(tmp_path):
    path = plot_per_class_ap50_panels(
        [("base", {"A": (70.0, 3.0), "B": (None, None)}), ("other", {"A": (60.0, None)}), ("absent", {})],
        tmp_path / "charts.png", "per-class AP50")
    assert Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and Path(path).stat().st_size > 5000
    with pytest.raises(ValueError, match="no rows to plot"):
        plot_per_class_ap50_panels([], tmp_path / "none.png", "t")


def test_command_line_averages_runs_that_share_a_label(tmp_path, capsys):
    paths = [write_run(tmp_path, f"r{k}", {"d": bbox(ap50, 20.0, 10.0)})
             for k, ap50 in enumerate([70.0, 74.0, 80.0])]
    table = main(["--run", f"base={paths[0]}", "--run", f"base={paths[1]}", "--run", f"new={paths[2]}"])
    half = 12.706204736174698 * 2.0  # t(0.975, 1) * std (2 sqrt 2) / sqrt(2 runs)
    assert f"| base (base) | 2 | 72.0 ± {half:.1f} | 20.0 ± 0.0 | 10.0 ± 0.0 |" in table
    assert "| new | 1 | 80.0 (+8.0) | 20.0 (+0.0) | 10.0 (+0.0) |" in table


def test_a_row_can_be_compared_with_another_row_than_the_base(tmp_path):
    rows = seeded_rows(tmp_path)[:2]
    third = Row("third", (load_run("third", write_run(tmp_path, "third", {"d": bbox(85.0, 30.0, 12.0)})),),
                compare_to="better")
    data = table_data(rows + [third])
    assert data["rows"][2]["compared_to"] == "better" and data["rows"][1]["compared_to"] == "base"
    assert data["rows"][2]["metrics"]["AP50"]["delta"] == pytest.approx(85.0 - 80.5)
    table = render_markdown(data)
    assert "base row 'base' (or the row after 'vs')" in table.splitlines()[0]
    assert "| third (vs better) | 1 | 85.0 (+4.5) | 30.0 (+8.0) | 12.0 (+1.0) |" in table
    with pytest.raises(ValueError, match=r"row 'third' is compared with 'nope', which is not another row"):
        table_data(rows + [Row("third", third.runs, compare_to="nope")])


def test_comparisons_print_differences_between_rows_that_are_not_a_row_and_its_reference(tmp_path):
    """A study's extra pairs (e.g. the method against a control): difference of the printed means, Welch's
    interval and the paired one, checked against scipy; a pair with a row without runs prints 'missing'."""
    def row(name, values):
        runs = tuple(load_run(f"{name} seed {seed}", write_run(tmp_path, f"{name}{seed}", {"d": bbox(v, 20.0, 10.0)}))
                     for seed, v in values.items())
        return Row(name, runs, seeds=tuple(values))
    control, method = row("control", {0: 50.0, 1: 60.0, 2: 70.0}), row("method", {0: 52.0, 1: 62.5, 2: 71.5})
    rows = [row("base", {0: 40.0, 1: 41.0, 2: 42.0}), control, method, Row("absent", (), ("seed 0",))]
    data = table_data(rows, comparisons=[("method", "control"), ("method", "absent")])
    entry = data["comparisons"][0]
    assert (entry["row"], entry["minus"]) == ("method", "control")
    welch = stats.ttest_ind([52.0, 62.5, 71.5], [50.0, 60.0, 70.0], equal_var=False).confidence_interval()
    paired = stats.ttest_rel([52.0, 62.5, 71.5], [50.0, 60.0, 70.0]).confidence_interval()
    assert entry["metrics"]["AP50"]["delta"] == pytest.approx(2.0)
    assert entry["metrics"]["AP50"]["delta_ci95"] == pytest.approx([welch.low, welch.high])
    assert entry["metrics"]["AP50"]["paired"]["ci95"] == pytest.approx([paired.low, paired.high])
    lines = render_markdown(data).splitlines()
    start = lines.index("| Difference | AP50 | APm | APl |")
    assert lines[start - 2].startswith("Differences between rows (points): first row minus second")
    assert lines[start + 2] == (
        f"| method - control | +2.0 [{welch.low:+.1f}, {welch.high:+.1f}]; paired [{paired.low:+.1f}, "
        f"{paired.high:+.1f}] | +0.0 [+0.0, +0.0]; paired [+0.0, +0.0] | +0.0 [+0.0, +0.0]; paired [+0.0, +0.0] |")
    assert lines[start + 3] == "| method - absent | missing | missing | missing |"
    assert "Difference" not in render_markdown(table_data(rows))  # no pairs, no second table
    # Seeds only partly shared: the paired interval says how many it pairs; no mean: n/a.
    assert format_difference(61.99, 60.0, {"delta_ci95": [-1.0, 5.0], "paired": {"n": 2, "ci95": [0.5, 3.5]}},
                             runs=3) == "+2.0 [-1.0, +5.0]; paired [+0.5, +3.5] (n=2)"
    assert format_difference(None, 60.0, {}, runs=3) == "n/a"
    with pytest.raises(ValueError, match=r"comparison \['method', 'nope'\] must name two different rows"):
        table_data(rows, comparisons=[("method", "nope")])
