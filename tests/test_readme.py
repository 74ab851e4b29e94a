"""The README quotes committed result files verbatim (``benchmarks/readme_results.py``)."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("readme_results", ROOT / "benchmarks" / "readme_results.py")
readme_results = importlib.util.module_from_spec(spec)
spec.loader.exec_module(readme_results)


def test_readme_quotes_the_committed_results_verbatim():
    readme = (ROOT / "README.md").read_text()
    assert readme_results.BLOCK.search(readme), "the README quotes no result file"
    assert readme_results.quoted_readme(readme) == readme


def test_a_block_is_replaced_by_its_file_and_a_missing_file_is_an_error(tmp_path):
    (tmp_path / "r.md").write_text("| a | 1 |\n")
    readme = "x\n<!-- BEGIN r.md -->\nold\n<!-- END r.md -->\ny\n"
    expected = "x\n<!-- BEGIN r.md -->\n\n| a | 1 |\n\n<!-- END r.md -->\ny\n"
    assert readme_results.quoted_readme(readme, tmp_path) == expected
    with pytest.raises(SystemExit, match="missing.md"):
        readme_results.quoted_readme("<!-- BEGIN missing.md -->\n<!-- END missing.md -->", tmp_path)
