"""Builds the optional compiled kernels (sparse_rl/csrc/kernels.c); everything else is in pyproject.toml.

The extension is ``optional``: where it cannot be compiled, pip installs the package without it, and
``sparse_rl.backends.kernels`` falls back to torch's CSR kernels with a one-line warning. No ``-march=native``: the
kernels pick their SIMD level (AVX-512, AVX2, baseline) at run time.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("sparse_rl._kernels", ["sparse_rl/csrc/kernels.c"], optional=True,
                             extra_compile_args=["-O3", "-std=gnu11", "-Wno-unknown-pragmas"])])
