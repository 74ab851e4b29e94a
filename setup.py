"""Builds the optional compiled kernels (sparse_rl/csrc/kernels.c); everything else is in pyproject.toml.

The extension is ``optional``: where it cannot be compiled, pip installs the package without it, and
``sparse_rl.backends.kernels`` falls back to torch's CSR kernels with a one-line warning. No ``-march=native``: the
kernels pick their SIMD level (AVX-512, AVX2, baseline) at run time. With OpenMP where the compiler has it (the
kernels then run on torch's threads, kernels.c), without it elsewhere (one thread).
"""

import os
import tempfile

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CCompilerError, CompileError, LinkError

OPENMP = "-fopenmp"
COMPILE_ARGS = ["-O3", "-std=gnu11", "-Wno-unknown-pragmas"]
"""The kernels' compiler flags (tests/test_kernels_aarch64.py reads this list to cross-compile them the same way)."""


class BuildWithOpenMP(build_ext):
    """``build_ext`` that adds OpenMP's flag where a test program compiles and links with it."""

    def build_extensions(self) -> None:
        if self._builds_with(OPENMP):
            for extension in self.extensions:
                extension.extra_compile_args.append(OPENMP)
                extension.extra_link_args.append(OPENMP)
        super().build_extensions()

    def _builds_with(self, flag: str) -> bool:
        with tempfile.TemporaryDirectory() as folder:
            source = os.path.join(folder, "openmp.c")
            with open(source, "w") as file:
                file.write("#include <omp.h>\nint main(void) { return omp_get_max_threads() < 1; }\n")
            try:
                objects = self.compiler.compile([source], output_dir=folder, extra_postargs=[flag])
                self.compiler.link_executable(objects, "openmp", output_dir=folder, extra_postargs=[flag])
            except (CCompilerError, CompileError, LinkError):
                return False
        return True


setup(ext_modules=[Extension("sparse_rl._kernels", ["sparse_rl/csrc/kernels.c"], optional=True,
                             extra_compile_args=list(COMPILE_ARGS))],
      cmdclass={"build_ext": BuildWithOpenMP})
