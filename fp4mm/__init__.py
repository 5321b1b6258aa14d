"""fp4mm: exact FP4 (NVFP4) matrix multiplication on NVIDIA GPUs, with its formats, an FP32
oracle and a local judge for the FP4 matmul challenge."""

from fp4mm import formats, reference
from fp4mm.formats import (
    FP4GroupwiseTensor,
    NVFP4Tensor,
    dequantize_fp4_groupwise,
    dequantize_nvfp4,
    pack_fp4,
    quantize_fp4_groupwise,
    quantize_nvfp4,
    unpack_fp4,
)
from fp4mm.ops import (
    PrepackedNVFP4Weight,
    PrepackedW4A16Weight,
    nvfp4_mm,
    nvfp4_w4a16_mm,
    prepack_nvfp4_weight,
    prepack_w4a16_weight,
    w4a16_mm,
)
from fp4mm.solve import solve, solve_w4a16

__version__ = "0.1.0"

__all__ = [
    "FP4GroupwiseTensor",
    "NVFP4Tensor",
    "PrepackedNVFP4Weight",
    "PrepackedW4A16Weight",
    "dequantize_fp4_groupwise",
    "dequantize_nvfp4",
    "formats",
    "nvfp4_mm",
    "nvfp4_w4a16_mm",
    "pack_fp4",
    "prepack_nvfp4_weight",
    "prepack_w4a16_weight",
    "quantize_fp4_groupwise",
    "quantize_nvfp4",
    "reference",
    "solve",
    "solve_w4a16",
    "unpack_fp4",
    "w4a16_mm",
]
