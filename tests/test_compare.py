"""clip-agiqa compare: benchmark folders side by side with their protocols, and their cross-dataset matrices joined."""

import json

import pytest
from experiment_helpers import composed_args
from helpers import run_cli

from clip_agiqa.benchmark import results
from clip_agiqa.benchmark.compare import comparison
from clip_agiqa.errors import InputError


@pytest.mark.slow
def test_compare_puts_the_paper_protocol_beside_the_prompt_disjoint_one(tmp_path, capsys, benchmark_here):
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
