"""Finding a run directory in tests, whose name carries the run's changed settings (``-t800-ls200-...``)."""

from pathlib import Path


def only_run(parent: Path, name: str) -> Path:
    """The one run directory under ``parent`` named ``name``, with changed settings (or none) before its seed."""
    core, seed = name.rsplit("-", 1)
    (found,) = [path for path in parent.iterdir()
                if path.name == name or (path.name.startswith(f"{core}-") and path.name.endswith(f"-{seed}"))]
    return found
