"""The one exception of :mod:`sparse_rl.export`."""


class ExportError(Exception):
    """A model or file that cannot be exported; its message is one line."""
