"""The README and the pages under ``docs/`` quote committed result files verbatim (``benchmarks/readme_results.py``),
and their relative links lead somewhere."""

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("readme_results", ROOT / "benchmarks" / "readme_results.py")
readme_results = importlib.util.module_from_spec(spec)
spec.loader.exec_module(readme_results)

QUOTED = {  # every result file the README quoted before its tables moved to docs/ (issue 23): still quoted somewhere
    "results/export.md", "results/mujoco_100k/results.md", "results/mujoco_100k_wide/results.md",
    "results/methods_100k/results.md", "results/halfcheetah_density_short/results.md",
    "results/methods_short/results.md", "results/dst_ee_c_pendulum/results.md", "results/core_overhead.md",
    "results/sparse_speed.md"}
DOCUMENTS = readme_results.documents()
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^()\s]+)\)")


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_document_quotes_the_committed_results_verbatim(document):
    text = document.read_text()
    assert readme_results.quoted_readme(text) == text, "run python benchmarks/readme_results.py"


def test_every_result_file_the_readme_quoted_is_still_quoted():
    quoted = {path for document in DOCUMENTS for path in readme_results.quoted_paths(document.read_text())}
    assert QUOTED <= quoted, f"no longer quoted anywhere: {sorted(QUOTED - quoted)}"
    assert readme_results.quoted_paths((ROOT / "docs" / "results.md").read_text()), "docs/results.md quotes nothing"


def numbers(text):
    return set(re.findall(r"\d+(?:[.,]\d+)*", text))


def test_the_readme_results_summary_quotes_figures_of_docs_results():
    """The README's summary types its figures by hand: each must be one of the moved tables' or their prose's."""
    readme = (ROOT / "README.md").read_text()
    summary = readme[readme.index("\n## Results\n"):].split("\n## ", 2)[1]
    summary = re.sub(r"\]\([^)]*\)", "]", summary)  # not the links' anchors
    quoted = (ROOT / "docs" / "results.md").read_text() + (ROOT / "docs" / "export.md").read_text()
    assert numbers(summary) - {"0", "1", "2", "3", "4", "5", "95", "100"} <= numbers(quoted), summary


def test_a_block_is_replaced_by_its_file_and_a_missing_file_is_an_error(tmp_path):
    (tmp_path / "r.md").write_text("| a | 1 |\n")
    readme = "x\n<!-- BEGIN r.md -->\nold\n<!-- END r.md -->\ny\n"
    expected = "x\n<!-- BEGIN r.md -->\n\n| a | 1 |\n\n<!-- END r.md -->\ny\n"
    assert readme_results.quoted_readme(readme, tmp_path) == expected
    assert readme_results.quoted_paths(readme) == ["r.md"]
    with pytest.raises(SystemExit, match="missing.md"):
        readme_results.quoted_readme("<!-- BEGIN missing.md -->\n<!-- END missing.md -->", tmp_path)


def anchors(markdown):
    """GitHub's anchors of ``markdown``'s headings (code blocks skipped; a repeated heading gets ``-1``, ...)."""
    found, seen, code = set(), {}, False
    for line in markdown.splitlines():
        if line.startswith("```"):
            code = not code
        elif not code and (heading := re.match(r"#{1,6} (.+)", line)):
            slug = re.sub(r"[^\w\- ]", "", heading[1].strip().lower()).replace(" ", "-")
            found.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
            seen[slug] = seen.get(slug, 0) + 1
    return found


def links(markdown):
    """The link targets of ``markdown``, outside code blocks and code spans."""
    prose = re.sub(r"```.*?```", "", markdown, flags=re.DOTALL)
    prose = re.sub(r"`[^`\n]*`", "``", prose)
    return LINK.findall(prose)


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_relative_link_leads_to_a_file_and_heading_that_exist(document):
    broken = []
    for target in links(document.read_text()):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (document.parent / path).resolve() if path else document
        if not file.exists():
            broken.append(f"{target}: no file {file.relative_to(ROOT) if file.is_relative_to(ROOT) else file}")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file.read_text()):
            broken.append(f"{target}: no heading #{anchor} in {file.relative_to(ROOT)}")
    assert not broken, broken


def test_links_and_anchors_are_read_as_github_does():
    assert anchors("# A\n## DST-EE's c (Pendulum-v1)\n```\n# not\n```\n## `x`: y–z\n## A\n") == {
        "a", "dst-ees-c-pendulum-v1", "x-yz", "a-1"}
    assert links("[a](b.md) `[c](d.md)` ![e](f.png)\n```\n[g](h.md)\n```\n[`i`](j.md#k)") == [
        "b.md", "f.png", "j.md#k"]
