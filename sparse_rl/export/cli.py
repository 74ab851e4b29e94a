"""The command line ``python -m sparse_rl.export MODEL --format {onnx,npz,c} --out PATH``."""

from __future__ import annotations

from sparse_rl.cli import OneLineParser, missing_extra
from sparse_rl.export.errors import ExportError
from sparse_rl.export.pipeline import FORMATS, export


def main(argv: list[str] | None = None) -> None:
    """Run the command line on ``argv`` (default ``sys.argv[1:]``); an export error exits with one line."""
    try:
        import sparse_rl.export as package  # its docstring's first line describes the command
    except ImportError as error:  # onnx, onnxruntime
        missing_extra("sparse_rl.export", error, "export")
    parser = OneLineParser(prog="sparse_rl.export", description=package.__doc__.splitlines()[0])
    parser.add_argument("model", help="a sparse_rl.train run directory or an SB3 SAC/TD3 model.zip")
    parser.add_argument("--format", choices=FORMATS, required=True, help="onnx, npz (numpy runtime) or c (C99 .c/.h)")
    parser.add_argument("--out", required=True, help="output file (for c: the .c file; the .h goes next to it)")
    parser.add_argument("--vecnormalize", help="a saved SB3 VecNormalize whose observation statistics to bake in")
    parser.add_argument("--c-name", default="predict", help="name of the C function (default: predict)")
    args = parser.parse_args(argv)
    try:
        paths = export(args.model, args.format, args.out, args.vecnormalize, args.c_name)
    except ImportError as error:  # onnx or onnxruntime: the export extra
        missing_extra("sparse_rl.export", error, "export")
    except (ExportError, OSError) as error:
        raise SystemExit(f"sparse_rl.export: error: {error}") from None
    for path in paths:
        print(f"{path} ({path.stat().st_size} bytes)")

