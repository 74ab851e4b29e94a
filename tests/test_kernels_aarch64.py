"""The compiled kernels' loops built for aarch64 (NEON) and run on an emulated CPU, against numpy in float64.

No ARM machine is reachable from this project, so its ARM build is checked here: zig's clang (the ``ziglang`` wheel)
cross-compiles ``sparse_rl/csrc/kernels.c`` for aarch64 Linux with setup.py's flags, behind the entry point of
``tests/aarch64/harness.c``, and unicorn (QEMU's CPU emulator as a library) runs each loop on arrays written into the
emulated memory. On aarch64 the baseline level is the only one, and GCC's vector extensions become NEON's 4-lane
instructions. Its floats differ from x86's in the last bits (the multiply-adds fuse there), so the reference is numpy
in float64 within float32 rounding, and exact where the loops promise exactness: rectified zeros and NaNs, the fused
ReLU's mask, the sums of empty rows, BatchRenorm's constant columns. Speed is not measured: an emulator says nothing
about it. Skipped where the dev extra (``ziglang``, ``unicorn``, ``pyelftools``) is not installed.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("ziglang")
unicorn = pytest.importorskip("unicorn")
elffile = pytest.importorskip("elftools.elf.elffile")
from unicorn import arm64_const  # noqa: E402  (after the skip)

ROOT = Path(__file__).resolve().parents[1]
FORWARD, VALUES_GRAD, RENORM_STATS, RENORM_GRAD_SUMS, RENORM_INPUT_GRAD, GRADS_T = range(6)  # harness.c's h_call
STACK, STOP, HEAP, HEAP_BYTES = 0x7000000, 0x9000000, 0x10000000, 64 << 20
FMLA_4S = (0xFFE0FC00, 0x4E20CC00)  # FMLA Vd.4S, Vn.4S, Vm.4S: (mask, bits)
FMLA_4S_LANE = (0xFFC0F400, 0x4F801000)  # FMLA Vd.4S, Vn.4S, Vm.S[i]


def setup_compile_args() -> list[str]:
    """setup.py's ``COMPILE_ARGS``, read from its source (importing it would run ``setup()``)."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "COMPILE_ARGS" for t in node.targets):
            return list(ast.literal_eval(node.value))
    raise AssertionError("setup.py defines no COMPILE_ARGS list")


def build(out: Path) -> Path:
    """The harness as a static aarch64 Linux executable (no C library: the harness brings memcpy and memset)."""
    env = {**os.environ, "ZIG_GLOBAL_CACHE_DIR": str(out / "zig"), "ZIG_LOCAL_CACHE_DIR": str(out / "zig")}
    zig = [sys.executable, "-m", "ziglang", "cc", "-target", "aarch64-linux-musl"]
    obj, exe = out / "harness.o", out / "harness"
    for command in ([*zig, *setup_compile_args(), "-ffunction-sections", "-fdata-sections",
                     f"-I{ROOT / 'sparse_rl' / 'csrc'}", f"-I{sysconfig.get_paths()['include']}", "-c",
                     str(ROOT / "tests" / "aarch64" / "harness.c"), "-o", str(obj)],
                    [*zig, "-nostdlib", "-static", "-Wl,--gc-sections", "-Wl,-e,h_call", str(obj), "-o", str(exe)]):
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    return exe


class Aarch64:
    """The harness loaded into an emulated aarch64 CPU; :meth:`run` calls one loop."""

    def __init__(self, exe: Path) -> None:
        elf = elffile.ELFFile(exe.open("rb"))
        assert elf["e_machine"] == "EM_AARCH64"
        self.uc = unicorn.Uc(unicorn.UC_ARCH_ARM64, unicorn.UC_MODE_ARM)
        self.uc.reg_write(arm64_const.UC_ARM64_REG_CPACR_EL1, 3 << 20)  # floating point and SIMD enabled
        for segment in elf.iter_segments():
            if segment["p_type"] == "PT_LOAD":
                low = segment["p_vaddr"] & ~0xFFF
                high = (segment["p_vaddr"] + segment["p_memsz"] + 0xFFF) & ~0xFFF
                self.uc.mem_map(low, high - low)
                self.uc.mem_write(segment["p_vaddr"], segment.data())
        for start, size in ((STACK, 1 << 20), (STOP, 0x1000), (HEAP, HEAP_BYTES)):
            self.uc.mem_map(start, size)
        self.symbols = {symbol.name: (symbol["st_value"], symbol["st_size"])
                        for symbol in elf.get_section_by_name(".symtab").iter_symbols()}
        text = elf.get_section_by_name(".text")
        self.text, self.text_address = text.data(), text["sh_addr"]

    def instructions(self, function: str) -> np.ndarray:
        """The 32-bit instruction words of ``function``."""
        address, size = self.symbols[function]
        start = address - self.text_address
        return np.frombuffer(self.text[start:start + size], dtype="<u4")

    def run(self, loop: int, *args: np.ndarray | int | None) -> None:
        """``h_call`` on ``args``: an array goes into the emulated memory and is passed as its address (``None`` as
        NULL), an int as it is. Every array is read back afterwards, so outputs land in the arrays passed."""
        top, placed, words = HEAP, [], [loop]
        for arg in args:
            if isinstance(arg, np.ndarray):
                assert arg.flags.c_contiguous
                top = (top + 63) & ~63  # 64-byte aligned, as torch's tensors
                self.uc.mem_write(top, arg.tobytes())
                placed.append((top, arg))
                words.append(top)
                top += max(arg.nbytes, 1)
            else:
                words.append(0 if arg is None else int(arg))
        block = (top + 63) & ~63
        assert block + 8 * len(words) <= HEAP + HEAP_BYTES
        self.uc.mem_write(block, np.array(words, dtype=np.int64).tobytes())
        self.uc.reg_write(arm64_const.UC_ARM64_REG_X0, block)
        self.uc.reg_write(arm64_const.UC_ARM64_REG_SP, STACK + (1 << 20) - 64)
        self.uc.reg_write(arm64_const.UC_ARM64_REG_X30, STOP)  # return address: where emulation stops
        self.uc.emu_start(self.symbols["h_call"][0], STOP)
        for address, arg in placed:
            arg[...] = np.frombuffer(bytes(self.uc.mem_read(address, arg.nbytes)), arg.dtype).reshape(arg.shape)


@pytest.fixture(scope="module")
def arm(tmp_path_factory) -> Aarch64:
    if not (Path(sysconfig.get_paths()["include"]) / "Python.h").exists():
        pytest.skip("no Python.h: kernels.c does not build here for any target")
    return Aarch64(build(tmp_path_factory.mktemp("aarch64")))


def assert_close(got: np.ndarray, want: np.ndarray, scale: np.ndarray, tolerance: float = 1e-5) -> None:
    """``got`` within ``tolerance`` × ``scale`` (the sum of the terms' magnitudes) of ``want``, NaN where it is."""
    same_nan = np.isnan(got) == np.isnan(want)
    assert same_nan.all()
    close = np.abs(got.astype(np.float64) - want) <= tolerance * scale
    assert (close | np.isnan(want)).all(), np.nanmax(np.abs(got - want) / (scale + 1e-30))


@st.composite
def layers(draw):
    """A CSR weight (rows = outputs) with its dense float64 copy: empty and full rows included."""
    rows, cols = draw(st.integers(1, 40)), draw(st.integers(1, 70))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    mask = rng.random((rows, cols)) < draw(st.sampled_from([0.02, 0.1, 0.3, 0.7, 1.0]))
    mask[rng.integers(rows)] = draw(st.booleans())  # a row empty or full
    crow = np.concatenate([[0], np.cumsum(mask.sum(1))]).astype(np.int32)
    col = np.nonzero(mask)[1].astype(np.int32)
    values = rng.standard_normal(int(crow[-1])).astype(np.float32)
    dense = np.zeros(mask.shape)
    dense[mask] = values
    return crow, col, values, dense, rng


BATCHES = st.one_of(st.integers(1, 40), st.sampled_from([63, 64, 65, 127, 128, 129, 256, 300]))
"""Every block of the baseline's loops: 8, 4, 2 and 1 vectors of 4 columns, and the scalar rest."""


def test_the_loops_are_neon_multiply_adds(arm):
    words = np.concatenate([arm.instructions("forward_generic"), arm.instructions("values_grad_generic"),
                            arm.instructions("grads_t_generic")])
    fmla = sum(int(((words & mask) == bits).sum()) for mask, bits in (FMLA_4S, FMLA_4S_LANE))
    assert fmla >= 8


@settings(max_examples=80)
@given(layer=layers(), batch=BATCHES, bias=st.booleans(), relu=st.booleans(), permuted=st.booleans())
def test_forward_on_aarch64(arm, layer, batch, bias, relu, permuted):
    """``y = W x + b``, rectified or not, with the values in order or read through a permutation (``VALUE``)."""
    crow, col, values, dense, rng = layer
    rows, cols = dense.shape
    x = rng.standard_normal((cols, batch)).astype(np.float32)
    b = rng.standard_normal(rows).astype(np.float32) if bias else None
    perm = rng.permutation(values.size).astype(np.int32) if permuted else None
    stored = values if perm is None else np.empty_like(values)
    if perm is not None:
        stored[perm] = values
    y = np.full((rows, batch), np.nan, dtype=np.float32)
    arm.run(FORWARD, stored, perm, crow, col, x, b, y, rows, batch, int(relu))
    want = dense @ x.astype(np.float64) + (0 if b is None else b[:, None])
    scale = np.abs(dense) @ np.abs(x.astype(np.float64)) + (0 if b is None else np.abs(b)[:, None])
    if relu:
        assert (y >= 0).all()
        want = np.maximum(want, 0)
    assert_close(y, want, scale)
    empty = np.diff(crow) == 0  # the bias alone, exactly
    alone = np.zeros(rows, np.float32) if b is None else np.maximum(b, 0) if relu else b
    assert (y[empty] == alone[empty, None]).all()


def test_a_rectified_nan_stays_nan_on_aarch64(arm):
    """As ``torch.relu``: NaN kept, negatives to +0."""
    crow, col = np.array([0, 1, 2], np.int32), np.array([0, 1], np.int32)
    x = np.array([[np.nan] * 8, [-1.0] * 8], np.float32)
    y = np.zeros((2, 8), np.float32)
    arm.run(FORWARD, np.ones(2, np.float32), None, crow, col, x, None, y, 2, 8, 1)
    assert np.isnan(y[0]).all() and (y[1] == 0).all() and not np.signbit(y[1]).any()


@settings(max_examples=80)
@given(layer=layers(), batch=BATCHES, fused=st.booleans(), wanted=st.sampled_from(["both", "values", "bias"]))
def test_values_and_bias_gradients_on_aarch64(arm, layer, batch, fused, wanted):
    """The active positions' gradient and the bias', from ``dy`` masked by the fused ReLU's output or not; the mask
    written out exactly as ``threshold_backward`` (``y <= 0``: 0, NaN outputs pass the gradient)."""
    crow, col, _, dense, rng = layer
    rows, cols = dense.shape
    x = rng.standard_normal((cols, batch)).astype(np.float32)
    dy = rng.standard_normal((rows, batch)).astype(np.float32)
    y = np.maximum(rng.standard_normal((rows, batch)), 0).astype(np.float32)
    y.flat[rng.integers(y.size)] = np.nan
    dym = np.zeros_like(dy)
    gv = np.zeros(col.size + 8, np.float32) if wanted != "bias" else None  # 8 spare: a padded group's last store
    gb = np.zeros(rows, np.float32) if wanted != "values" else None
    arm.run(VALUES_GRAD, crow, col, dy, y if fused else None, dym, x, gv, gb, rows, batch)
    masked = np.where(y <= 0, np.float32(0), dy) if fused else dy
    if fused:
        assert np.array_equal(dym, masked)
    d64 = masked.astype(np.float64)
    if gv is not None:
        r, c = np.nonzero(dense != 0)
        x64 = x.astype(np.float64)
        assert_close(gv[:col.size], np.einsum("kb,kb->k", d64[r], x64[c]),
                     np.einsum("kb,kb->k", np.abs(d64[r]), np.abs(x64[c])))
    if gb is not None:
        assert_close(gb, d64.sum(1), np.abs(d64).sum(1), tolerance=1e-4)


@settings(max_examples=80)
@given(layer=layers(), batch=BATCHES)
def test_input_and_weight_gradients_in_one_pass_on_aarch64(arm, layer, batch):
    """``grads_t``: over ``Wᵀ``'s rows, ``dx = Wᵀ dy`` and each active weight's ``dot(dy[r], x[c])``, stored at its
    place in ``W``'s order; an input feature without weights gets a gradient of exact zeros."""
    crow, col, values, dense, rng = layer
    rows, cols = dense.shape
    r, c = np.nonzero(dense != 0)  # W's CSR order
    order = np.lexsort((r, c))  # Wᵀ's: by column, then row
    perm = order.astype(np.int32)
    crow_t = np.concatenate([[0], np.cumsum(np.bincount(c, minlength=cols))]).astype(np.int32)
    col_t = r[order].astype(np.int32)
    x = rng.standard_normal((cols, batch)).astype(np.float32)
    dy = rng.standard_normal((rows, batch)).astype(np.float32)
    dx = np.full((cols, batch), np.nan, dtype=np.float32)
    gv = np.full(col.size, np.nan, dtype=np.float32)
    arm.run(GRADS_T, values, perm, crow_t, col_t, dy, x, dx, gv, cols, batch)
    d64, x64 = dy.astype(np.float64), x.astype(np.float64)
    assert_close(dx, dense.T @ d64, np.abs(dense.T) @ np.abs(d64))
    assert (dx[np.diff(crow_t) == 0] == 0).all()
    assert_close(gv, np.einsum("kb,kb->k", d64[r], x64[c]), np.einsum("kb,kb->k", np.abs(d64[r]), np.abs(x64[c])))


@settings(max_examples=40)
@given(n=st.integers(2, 300), f=st.integers(1, 70), feature_major=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_batch_renorm_loops_on_aarch64(arm, n, f, feature_major, seed):
    """CrossQ's BatchRenorm: column mean and variance (a constant column exactly), the backward's sums and the input
    gradient, on either layout."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n, f)) * 3 + 1).astype(np.float32)
    x[:, 0] = 2.5
    g = rng.standard_normal((n, f)).astype(np.float32)
    alpha, beta, gamma = (rng.standard_normal(f).astype(np.float32) for _ in range(3))
    lay = (lambda a: np.ascontiguousarray(a.T)) if feature_major else (lambda a: a)
    mean, var = np.zeros(f, np.float32), np.zeros(f, np.float32)
    arm.run(RENORM_STATS, int(feature_major), lay(x), mean, var, np.zeros(2 * f), n, f)
    x64 = x.astype(np.float64)
    assert mean[0] == np.float32(2.5) and var[0] == 0
    assert_close(mean, x64.mean(0), np.abs(x64).max(0))
    assert_close(var, x64.var(0, ddof=1), x64.var(0, ddof=1) + 1e-6, tolerance=1e-4)
    gsum, gcsum = np.zeros(f, np.float32), np.zeros(f, np.float32)
    arm.run(RENORM_GRAD_SUMS, int(feature_major), lay(g), lay(x), mean, gsum, gcsum, np.zeros(2 * f), n, f)
    centred, g64 = x64 - mean, g.astype(np.float64)
    assert_close(gsum, g64.sum(0), np.abs(g64).sum(0))
    assert_close(gcsum, (g64 * centred).sum(0), np.abs(g64 * centred).sum(0) + 1e-30)
    dx = lay(np.zeros((n, f), np.float32))
    arm.run(RENORM_INPUT_GRAD, int(feature_major), lay(g), lay(x), mean, alpha, beta, gamma, dx, n, f)
    assert_close(dx.T if feature_major else dx, alpha * g64 + beta * centred + gamma,
                 np.abs(alpha * g64) + np.abs(beta * centred) + np.abs(gamma))
