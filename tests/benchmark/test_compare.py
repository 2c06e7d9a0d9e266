"""clip-agiqa compare: benchmark folders side by side with their protocols, and their cross-dataset matrices joined."""

import json

import pytest
from experiment_helpers import composed_args
from helpers import run_cli

from clip_agiqa.benchmark import results
from clip_agiqa.benchmark.compare import comparison
from clip_agiqa.errors import InputError


@pytest.mark.slow
def test_compare_puts_the_paper_protocol_beside_the_prompt_disjoint_one(tmp_path, capsys, benchmark_here):  # noqa: F811
    from layouts import agiqa3k_prompted_root

    root = agiqa3k_prompted_root(tmp_path / "AGIQA-3K")
    model, data = "model/clip_agiqa.yaml", "data/agiqa3k_quality.yaml"
    paper, honest = tmp_path / "paper", tmp_path / "prompt_disjoint"
    run_cli(composed_args([data, model, "protocol/paper.yaml"], root, paper) + ["--splits", "1"])
    run_cli(composed_args([data, model, "protocol/prompt_disjoint.yaml"], root, honest) + ["--splits", "2"])
    capsys.readouterr()
    run_cli(["compare", str(paper), str(honest), "--output", str(tmp_path / "compare.md")])
    printed = capsys.readouterr().out
    table = (tmp_path / "compare.md").read_text()
    assert table in printed and f"wrote {tmp_path / 'compare.md'}" in printed
    lines = table.splitlines()
    assert lines[0].startswith("| benchmark | data | split | selected on | splits | SRCC | PLCC | KRCC |")
    assert lines[2].startswith("| paper | agiqa3k_quality | paper | test | 1 of 1 |")
    assert lines[3].startswith("| prompt_disjoint | agiqa3k_quality | prompt | val | 2 of 2 |")
    srcc = [float(r["srcc"]) for r in results.read_results(honest)]
    assert f"{sum(srcc) / 2:.4f} ± " in lines[3]
    assert lines[2].endswith("+0.0000 |")


def fake_benchmark(folder, data: str, tested: dict[str, list[float]]):
    """A benchmark folder as `clip-agiqa benchmark` writes it: settings and one row per split and tested data."""
    folder.mkdir()
    (folder / results.SETTINGS_FILE).write_text(json.dumps(
        {"splits": 2, "protocol": {"data": data, "split": "prompt", "selection": "val"}}))
    rows = [{"split": str(k), "seed": str(k), "tested_on": name, "images": "test split" if name == data else "all",
             "srcc": str(values[k]), "plcc_logistic": str(values[k] + 0.01)}
            for name, values in tested.items() for k in range(2)]
    results.write_results(folder, rows)


def test_compare_joins_the_cross_dataset_matrices(tmp_path):
    fake_benchmark(tmp_path / "a", "agiqa3k_quality", {"agiqa3k_quality": [0.8, 0.7],
                                                       "aigciqa2023_quality": [0.5, 0.6]})
    fake_benchmark(tmp_path / "b", "aigciqa2023_quality", {"aigciqa2023_quality": [0.9, 0.8],
                                                           "agiqa3k_quality": [0.4, 0.4]})
    table = comparison([tmp_path / "a", tmp_path / "b"])
    assert "| trained on \\ tested on | agiqa3k_quality | aigciqa2023_quality |" in table
    assert "| agiqa3k_quality (a) | 0.7500 ± 0.0707 (test split) | 0.5500 ± 0.0707 |" in table
    assert "| aigciqa2023_quality (b) | 0.4000 ± 0.0000 | 0.8500 ± 0.0707 (test split) |" in table
    assert "| a | agiqa3k_quality | prompt | val | 2 of 2 | 0.7500 ± 0.0707 |" in table
    assert "| b | aigciqa2023_quality | prompt | val | 2 of 2 | 0.8500 ± 0.0707 |" in table
    assert table.count("PLCC (4-parameter logistic fit), mean ± std over the splits") == 1


def test_compare_refuses_a_folder_without_results(tmp_path):
    with pytest.raises(InputError, match=r"nothing: no results\.csv; give folders written by `clip-agiqa benchmark`"):
        run_cli(["compare", str(tmp_path / "nothing")])


def write_split_groups(folder, split: int, rows: list[tuple[str, int, float, float]]):
    """A split's test_groups.csv as a test run writes it: per generator (value, n, srcc, plcc)."""
    from clip_agiqa.groups import GroupResult, write_group_table

    (folder / f"split_{split}").mkdir()
    write_group_table(folder / f"split_{split}" / "test_groups.csv",
                      [GroupResult("quality", "generator", value, n, srcc, plcc) for value, n, srcc, plcc in rows])


def test_compare_breaks_results_down_per_group_with_counts_and_the_too_small_flag(tmp_path):
    fake_benchmark(tmp_path / "a", "agiqa3k_quality", {"agiqa3k_quality": [0.8, 0.7]})
    fake_benchmark(tmp_path / "b", "agiqa3k_quality", {"agiqa3k_quality": [0.6, 0.6]})
    write_split_groups(tmp_path / "a", 0, [("sd", 30, 0.8, 0.7), ("glide", 10, 0.5, float("nan"))])
    write_split_groups(tmp_path / "a", 1, [("sd", 40, 0.6, 0.5), ("glide", 25, 0.3, 0.2)])
    write_split_groups(tmp_path / "b", 0, [("sd", 36, 0.4, 0.4)])
    table = comparison([tmp_path / "a", tmp_path / "b"])
    section = table.split("## Per group\n", 1)[1]
    assert "| generator | a: n | a: SRCC | a: PLCC | b: n | b: SRCC | b: PLCC |" in section
    # glide: 10 images in split 0 (too small there), an undefined PLCC left out of the mean
    assert "| glide | 18 * | 0.4000 ± 0.1414 | 0.2000 | - | - | - |" in section
    assert "| sd | 35 | 0.7000 ± 0.1414 | 0.6000 ± 0.1414 | 36 | 0.4000 | 0.4000 |" in section
    assert "### generator (quality)" in section


def test_compare_has_no_group_section_without_group_files(tmp_path):
    fake_benchmark(tmp_path / "a", "agiqa3k_quality", {"agiqa3k_quality": [0.8, 0.7]})
    assert "Per group" not in comparison([tmp_path / "a"])


def test_compare_names_a_damaged_group_file(tmp_path):
    fake_benchmark(tmp_path / "a", "agiqa3k_quality", {"agiqa3k_quality": [0.8, 0.7]})
    (tmp_path / "a" / "split_0").mkdir()
    (tmp_path / "a" / "split_0" / "test_groups.csv").write_text("target,group\nquality\n")
    with pytest.raises(InputError, match=r"split_0/test_groups\.csv: not a test_groups\.csv"):
        comparison([tmp_path / "a"])
