"""``python -m sparse_rl.report``: see :mod:`sparse_rl.report`."""

from sparse_rl.report import main

main()
