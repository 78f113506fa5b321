"""The fused Triton kernels compile for a GPU without one: each kernel, in each of its
specializations (bfloat16 activations, both partitions, the NCHW and channels_last
tilings), through Triton's real compiler to a cubin for sm_90 (H100/H200). The
interpreter tests (tests/torch/test_triton.py) check the kernels' results; this checks
that the code the GPU would run builds (the interpreter accepts things the compiler
does not). Skipped under the interpreter, which replaces ``triton.jit``."""

from __future__ import annotations

import inspect
import os

import pytest

pytest.importorskip("torch")
pytest.importorskip("triton", reason="triton not importable (.ci/install puts it in the "
                    "directory .ci/triton.sh names; .ci/test adds it to PYTHONPATH)")
pytestmark = pytest.mark.skipif(
    os.environ.get("TRITON_INTERPRET") == "1",
    reason="Triton's interpreter is on in this process: no compiler to check")

from localnorm.torch import _triton

ACT = "*bf16"
F32 = "*fp32"


def _specs(strided: bool, block_s: int, block_c: int):
    """(kernel name, pointer types, constexpr values, float scalars) of every launch."""
    tiles = {"BLOCK_S": block_s, "BLOCK_C": block_c}
    return [
        ("_stats_kernel", {"x_ptr": ACT, "cnt_ptr": F32, "mean_ptr": F32, "m2_ptr": F32},
         {"SPLIT": 4, "STRIDED": strided, **tiles}, ()),
        ("_merge_kernel", {p: F32 for p in ("cnt_ptr", "mean_ptr", "m2_ptr", "gmean_ptr",
                                            "gvar_ptr", "rstd_ptr")},
         {"SPLIT": 4, "BLOCK_C": block_c}, ("eps",)),
        ("_normalize_kernel", {"x_ptr": ACT, "y_ptr": ACT, "mean_ptr": F32, "rstd_ptr": F32,
                               "w_ptr": F32, "b_ptr": F32, "row_ptr": "*i64"},
         {"STAT_ROWS": 0, "PARAM_ROWS": 0, "STRIDED": strided, **tiles}, ()),
        ("_normalize_kernel", {"x_ptr": ACT, "y_ptr": ACT, "mean_ptr": F32, "rstd_ptr": F32,
                               "w_ptr": F32, "b_ptr": F32, "row_ptr": "*i64"},
         {"STAT_ROWS": 1, "PARAM_ROWS": 2, "STRIDED": strided, **tiles}, ()),
        ("_grad_sums_kernel", {"x_ptr": ACT, "dy_ptr": ACT, "mean_ptr": F32, "sdy_ptr": F32,
                               "sdyd_ptr": F32},
         {"SPLIT": 4, "STRIDED": strided, **tiles}, ()),
        ("_dx_kernel", {"x_ptr": ACT, "dy_ptr": ACT, "dx_ptr": ACT, "mean_ptr": F32,
                        "rstd_ptr": F32, "w_ptr": F32, "sdy_ptr": F32, "sdyd_ptr": F32},
         {"STRIDED": strided, **tiles}, ()),
    ]


@pytest.mark.parametrize("strided,block_s,block_c",
                         [(False, 1024, 4), (True, 64, 64)], ids=["nchw-contiguous",
                                                                  "channels_last-strided"])
def test_every_kernel_compiles_to_a_cubin(strided, block_s, block_c):
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    _triton._compile()
    for name, pointers, constexprs, floats in _specs(strided, block_s, block_c):
        kernel = getattr(_triton, name)
        params = list(inspect.signature(kernel.fn).parameters)
        signature = {p: "constexpr" if p in constexprs else pointers.get(
            p, "fp32" if p in floats else "i32") for p in params}
        source = ASTSource(fn=kernel, signature=signature,
                           constexprs={(params.index(k),): v for k, v in constexprs.items()})
        compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32))
        assert compiled.asm["cubin"], f"{name}: no cubin"
