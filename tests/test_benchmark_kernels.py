"""The kernel benchmark (``benchmarks/sparse_kernels.py``) times, beside each compact kernel, an MKL product that
computes the same numbers: a ratio of their rates compares like with like."""

import sys
import warnings
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from sparse_kernels import kernel_tables, product_ops  # noqa: E402

from sparse_rl.masks import random_mask  # noqa: E402


@pytest.mark.parametrize("batch", [4, 96])  # the input gradient reads W's values through perm_t, or gathers first
def test_each_mkl_product_computes_what_its_compact_kernel_computes(batch):
    generator = torch.Generator().manual_seed(3)
    mask = random_mask((40, 48), 500, generator)
    ops, nnz = product_ops(mask, batch, generator)
    assert nnz == 500
    with warnings.catch_warnings():  # torch warns that CSR support is in beta; the fallback warns once
        warnings.simplefilter("ignore", UserWarning)
        results = {name: op() for name, op in ops.items()}
    torch.testing.assert_close(results["mkl fwd"], results["fwd"])
    torch.testing.assert_close(results["mkl in built"], results["in"])
    torch.testing.assert_close(results["mkl in"], results["in"])
    torch.testing.assert_close(results["mkl w"].to_dense().flatten()[mask.flatten()], results["w"])
    torch.testing.assert_close(results["dense"], results["fwd"])
    input_grad, values_grad, _ = results["both"]
    torch.testing.assert_close(input_grad, results["in"])
    torch.testing.assert_close(values_grad, results["w"])


def test_the_table_has_a_row_per_point_and_reads_mkls_input_gradient_both_ways():
    lines = kernel_tables([(32, 24)], [0.25], [8, 64], repeats=1)
    rows = [line for line in lines if line.startswith("| 32×24 |")]
    assert len(rows) == 2
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert len(cells) == 11
        built, gathered = cells[5].split(" / ")[0].replace("(", "").replace(")", "").split()
        assert float(built) > 0 and float(gathered) > 0
