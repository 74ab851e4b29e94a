"""Copy committed result files into the documents that quote them, so that no number there is typed by hand.

A document (``README.md``, ``docs/*.md``, ``benchmarks/README.md``) marks each quoted file with a pair of comments,
its path relative to the repository root; everything between them is replaced by the file's current text::

    <!-- BEGIN results/sparse_speed.md -->
    ...
    <!-- END results/sparse_speed.md -->

    python benchmarks/readme_results.py           # rewrite every document that quotes a stale result
    python benchmarks/readme_results.py --check   # exit 1 if a document quotes a stale result
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"(<!-- BEGIN (?P<path>\S+) -->\n)(?P<body>.*?)(<!-- END (?P=path) -->)", re.DOTALL)


def documents(root: Path = ROOT) -> list[Path]:
    """The documents that may quote result files: the README, every page under ``docs/``, the benchmarks' README."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md")), root / "benchmarks" / "README.md"]


def quoted_paths(text: str) -> list[str]:
    """The result files ``text`` quotes, in order."""
    return [match["path"] for match in BLOCK.finditer(text)]


def quoted_readme(readme: str, root: Path = ROOT) -> str:
    """``readme`` (any document) with every marked block holding its file's current text."""
    def fill(match: re.Match[str]) -> str:
        path = root / match["path"]
        if not path.is_file():
            raise SystemExit(f"readme_results: a document quotes {match['path']}, which does not exist")
        return f"{match[1]}\n{path.read_text().strip()}\n\n{match[4]}"

    return BLOCK.sub(fill, readme)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that every document is up to date")
    args = parser.parse_args()
    stale = []
    for document in documents():
        text = document.read_text()
        updated = quoted_readme(text)
        if updated == text:
            continue
        stale.append(document.relative_to(ROOT))
        if not args.check:
            document.write_text(updated)
    if args.check and stale:
        sys.exit(f"readme_results: {', '.join(map(str, stale))} quote stale results; run "
                 "python benchmarks/readme_results.py")


if __name__ == "__main__":
    main()
