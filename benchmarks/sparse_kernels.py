"""The kernel-level parts of ``benchmarks/sparse_speed.py``: the compact kernels' throughput against MKL and
dense GEMM (``--part kernels``) and the cost of gathering a weight's active values (``--part traffic``)."""

from __future__ import annotations

import itertools
import warnings
from typing import Any

import torch

from sparse_rl.calibrate import alternating_medians
from sparse_rl.masks import random_mask


def median_us(ops: dict, repeats: int) -> dict[str, float]:
    """Median wall-clock µs of each operation, the operations timed alternately after 3 warm-up rounds."""
    return {name: seconds * 1e6 for name, seconds in alternating_medians(ops, repeats).items()}


def product_ops(mask: torch.Tensor, batch: int, generator: torch.Generator) -> tuple[dict[str, Any], int]:
    """The products :func:`kernel_tables` times for a random weight of ``mask``'s pattern and feature-major
    activations of ``batch`` columns, by name (``mkl fwd``/``fwd`` and so on, each MKL product beside the compact
    kernel that computes the same numbers, ``dense`` GEMM on the whole weight), and the weight's active count.
    Our input gradient reads ``W``'s values, which change at every optimizer step, in ``Wᵀ``'s order (gathered
    first at wide batches); MKL's is timed on a ``Wᵀ`` CSR built beforehand (``mkl in built``) and, like for like,
    with that CSR's values gathered from ``W``'s in the call (``mkl in``), as the ``sparse`` backend gathers them in
    every backward."""
    from sparse_rl.backends import kernels
    from sparse_rl.backends.compact import CompactStructure

    out_features, in_features = mask.shape
    weight = torch.randn(out_features, in_features, generator=generator) * mask
    x, dy = (torch.randn(n, batch, generator=generator) for n in (in_features, out_features))
    structure = CompactStructure.from_mask(mask)
    values = weight.flatten()[structure.positions].contiguous()
    with warnings.catch_warnings():  # torch warns that CSR support is in beta
        warnings.simplefilter("ignore", UserWarning)
        csr, csr_t = weight.to_sparse_csr(), weight.t().contiguous().to_sparse_csr()
    pattern = csr.clone()
    perm_t = structure.perm_t.long()

    def mkl_input_grad_gathered() -> torch.Tensor:
        w_t = torch.sparse_csr_tensor(csr_t.crow_indices(), csr_t.col_indices(), values.index_select(0, perm_t),
                                      csr_t.shape, check_invariants=False)
        return torch.sparse.mm(w_t, dy)

    ops = {"dense": lambda: weight @ x, "mkl fwd": lambda: torch.sparse.mm(csr, x),
           "mkl in built": lambda: torch.sparse.mm(csr_t, dy), "mkl in": mkl_input_grad_gathered,
           "mkl w": lambda: torch.sparse.sampled_addmm(pattern, dy, x.t(), beta=0.0),
           "fwd": lambda: kernels.layer_forward(values, structure, x, None),
           "in": lambda: kernels.input_grad(values, structure.perm_t, structure.crow_t, structure.col_t, dy,
                                            out_features),
           "w": lambda: kernels.values_grad(structure.crow, structure.col, dy, x),
           "both": lambda: kernels.layer_backward(values, structure, dy, x, None, (True, True, False))}
    return ops, structure.nnz


def kernel_tables(shapes: list[tuple[int, int]], densities: list[float], batches: list[int],
                  repeats: int) -> list[str]:
    """GFLOP/s of active multiply-adds: the compact kernels (forward, input gradient, weight gradient at the active
    positions) against torch's MKL products for the same three (CSR ``W X``, CSR ``Wᵀ dY``, ``sampled_addmm``; see
    :func:`product_ops`, whose like-for-like input gradient the ratios to MKL use), and dense GEMM's rate on the
    whole weight; and the input and weight gradient of a layer's backward in one call (one pass over ``Wᵀ`` for
    both) against MKL's two products."""
    from sparse_rl.backends import kernels

    rows = []
    for (in_features, out_features), batch, density in itertools.product(shapes, batches, densities):
        generator = torch.Generator().manual_seed(0)
        mask = random_mask((out_features, in_features), round(density * in_features * out_features), generator)
        ops, nnz = product_ops(mask, batch, generator)
        us = median_us(ops, repeats)
        active = 2 * nnz * batch / 1e3
        rate = {name: active / us[name] for name in ops if name != "dense"}
        both, mkl_both = 2 * rate["both"], 2 * active / (us["mkl in"] + us["mkl w"])
        dense = 2 * in_features * out_features * batch / 1e3 / us["dense"]
        ours = [rate["fwd"], rate["in"], rate["w"]]
        vs_mkl = min(rate[k] / rate["mkl " + k] for k in ("fwd", "in", "w"))
        mkl = {k: f"{rate['mkl ' + k]:.1f}" for k in ("fwd", "in", "w")}
        mkl["in"] = f"{rate['mkl in built']:.1f} ({mkl['in']})"
        rows.append(f"| {in_features}×{out_features} | {batch} | {density:g} | {dense:.1f} | "
                    + " | ".join(f"{mkl[k]} / {rate[k]:.1f}" for k in ("fwd", "in", "w"))
                    + f" | {vs_mkl:.2f} | {min(ours) / dense:.2f} | {mkl_both:.1f} / {both:.1f} "
                    f"| {both / mkl_both:.2f} |")
        print(rows[-1], flush=True)
    levels = ", ".join(kernels.simd_levels()) or "none"
    return [f"SIMD level of the compact kernels: {kernels.simd_level()} (of {levels}).", "",
            "| weight (in×out) | batch | density | dense GEMM GFLOP/s | forward MKL / ours "
            "| input grad MKL (values gathered) / ours "
            "| weight grad MKL / ours | ours ÷ MKL (lowest) | ours ÷ dense GEMM (lowest) "
            "| input + weight grad MKL / ours in one call | one call ÷ MKL |",
            "|---|---|---|---|---|---|---|---|---|---|---|", *rows]


def traffic_tables(shapes: list[tuple[int, int]], densities: list[float], repeats: int) -> list[str]:
    """Median µs of a gather of the active values, a dense pass and a contiguous copy, timed alternately."""
    from sparse_rl.backends.csr import CsrStructure

    rows = []
    for in_features, out_features in shapes:
        for density in densities:
            generator = torch.Generator().manual_seed(0)
            mask = random_mask((out_features, in_features), round(density * in_features * out_features), generator)
            weight = torch.randn(out_features, in_features, generator=generator)
            index = CsrStructure.from_mask(mask).index
            values = weight.reshape(-1).index_select(0, index)
            us = median_us({"gather": lambda: weight.reshape(-1).index_select(0, index),
                            "dense": lambda: weight.zero_(), "contiguous": lambda: values.clone()}, repeats)
            rows.append(f"| {in_features}×{out_features} | {density:g} | {index.numel()} | {us['gather']:.1f} "
                        f"| {us['dense']:.1f} | {us['contiguous']:.1f} | {us['gather'] / us['dense']:.2f} |")
            print(rows[-1], flush=True)
    return ["| weight (in×out) | density | active values | gather µs | dense pass µs | contiguous copy µs "
            "| gather ÷ dense pass |", "|---|---|---|---|---|---|---|", *rows]
