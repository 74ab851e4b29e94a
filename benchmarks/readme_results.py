"""Copy committed result files into the README, so that no number there is typed by hand.

The README marks each quoted file with a pair of comments; everything between them is replaced
by the file's current text::

    <!-- BEGIN results/sparse_speed.md -->
    ...
    <!-- END results/sparse_speed.md -->

    python benchmarks/readme_results.py           # rewrite README.md
    python benchmarks/readme_results.py --check   # exit 1 if README.md quotes a stale result
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"(<!-- BEGIN (?P<path>\S+) -->\n)(?P<body>.*?)(<!-- END (?P=path) -->)", re.DOTALL)


def quoted_readme(readme: str, root: Path = ROOT) -> str:
    """``readme`` with every marked block holding its file's current text."""
    def fill(match: re.Match[str]) -> str:
        path = root / match["path"]
        if not path.is_file():
            raise SystemExit(f"readme_results: README quotes {match['path']}, which does not exist")
        return f"{match[1]}\n{path.read_text().strip()}\n\n{match[4]}"

    return BLOCK.sub(fill, readme)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that README.md is up to date")
    args = parser.parse_args()
    readme = ROOT / "README.md"
    text = readme.read_text()
    updated = quoted_readme(text)
    if args.check:
        if updated != text:
            sys.exit("readme_results: README.md quotes stale results; run python benchmarks/readme_results.py")
        return
    readme.write_text(updated)


if __name__ == "__main__":
    main()
