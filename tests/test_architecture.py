"""``docs/architecture.md`` names only paths that exist, and the package keeps to its size limits."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "architecture.md").read_text()
PATH_LIKE = re.compile(r"^[\w./-]+(/|\.(py|md|yaml|c|zip|toml|json|csv|npz))$")


def module_map_paths() -> list[str]:
    """Paths of the module map (the first code block): each entry's indentation nests it in the folder above."""
    block = DOC.split("```")[1]
    stack: list[tuple[int, str]] = []
    paths = []
    for line in block.splitlines():
        match = re.match(r"^( *)(\S+)", line)
        if not match or not PATH_LIKE.match(match.group(2)):
            continue
        indent, name = len(match.group(1)), match.group(2)
        stack = [(level, folder) for level, folder in stack if level < indent]
        path = "".join(folder for _, folder in stack) + name
        paths.append(path)
        if name.endswith("/"):
            stack.append((indent, name))
    return paths


def quoted_paths() -> list[str]:
    """Every inline-code span after the map that is a path with a folder (``sparse_rl/masks.py``, ``tests/...``)."""
    spans = re.findall(r"`([^`\s]+)`", DOC.split("```", 2)[2])
    return [span for span in spans if "/" in span and PATH_LIKE.match(span) and not span.startswith("/")]


def test_the_module_map_names_only_paths_that_exist():
    paths = module_map_paths()
    assert len(paths) > 60 and "sparse_rl/methods/prune_grow.py" in paths
    assert [path for path in paths if not (ROOT / path).exists()] == []


def test_every_path_the_text_quotes_exists():
    """From the repository root, or from the package (``methods/srigl.py``)."""
    paths = quoted_paths()
    assert "tests/test_compact.py" in paths and "methods/srigl.py" in paths
    assert [path for path in paths if not (ROOT / path).exists() and not (ROOT / "sparse_rl" / path).exists()] == []


def test_every_module_of_the_package_is_on_the_map():
    mapped = set(module_map_paths())
    modules = {str(path.relative_to(ROOT)) for path in (ROOT / "sparse_rl").rglob("*.py")
               if path.name not in ("__init__.py", "__main__.py")}
    assert sorted(modules - mapped) == []


def test_modules_are_at_most_400_lines_and_functions_at_most_50():
    too_long, long_functions = [], []
    for path in (ROOT / "sparse_rl").rglob("*.py"):
        text = path.read_text()
        if text.count("\n") > 400:
            too_long.append(path.name)
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 50:
                long_functions.append(f"{path.name}:{node.name}")
    assert too_long == [] and long_functions == []
