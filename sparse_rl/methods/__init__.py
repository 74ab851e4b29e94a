"""DST methods: named presets of criteria, and methods that are more than a pair of scores."""

from sparse_rl.methods.presets import METHODS, MethodPreset, get_method, method_label

__all__ = ["METHODS", "MethodPreset", "get_method", "method_label"]
