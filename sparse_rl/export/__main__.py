"""``python -m sparse_rl.export``: see :mod:`sparse_rl.export.cli`."""

from sparse_rl.export.cli import main

main()
