"""DST methods: each method kind in a file of its own, registered in :mod:`sparse_rl.methods.registry`."""

from sparse_rl.methods.kind import MethodKind, MethodPreset
from sparse_rl.methods.registry import KINDS, METHODS, get_method, method_label

__all__ = ["KINDS", "METHODS", "MethodKind", "MethodPreset", "get_method", "method_label"]
