"""The FP4 codec: one source of truth for E2M1, E4M3, NVFP4, groupwise FP4 and scale layouts.

The oracle, the quantisers, the kernels' host code, the tests and the judge all use these.
"""

from fp4mm.formats.e2m1 import (
    E2M1_MAX,
    E2M1_VALUES,
    decode_e2m1,
    e2m1_table,
    encode_e2m1,
    pack_fp4,
    swap_nibbles,
    unpack_fp4,
)
from fp4mm.formats.e4m3 import E4M3_MAX, e4m3_table, e4m3_to_float, float_to_e4m3
from fp4mm.formats.groupwise import (
    FP4GroupwiseTensor,
    dequantize_fp4_groupwise,
    quantize_fp4_groupwise,
)
from fp4mm.formats.layouts import swizzle_scales_128x4, unswizzle_scales_128x4
from fp4mm.formats.nvfp4 import (
    NVFP4_BLOCK,
    NVFP4Tensor,
    dequantize_nvfp4,
    dequantize_nvfp4_blocks,
    nvfp4_global_scale,
    quantize_nvfp4,
)

__all__ = [
    "E2M1_MAX",
    "E2M1_VALUES",
    "E4M3_MAX",
    "NVFP4_BLOCK",
    "FP4GroupwiseTensor",
    "NVFP4Tensor",
    "decode_e2m1",
    "dequantize_fp4_groupwise",
    "dequantize_nvfp4",
    "dequantize_nvfp4_blocks",
    "e2m1_table",
    "e4m3_table",
    "e4m3_to_float",
    "encode_e2m1",
    "float_to_e4m3",
    "nvfp4_global_scale",
    "pack_fp4",
    "quantize_fp4_groupwise",
    "quantize_nvfp4",
    "swap_nibbles",
    "swizzle_scales_128x4",
    "unpack_fp4",
    "unswizzle_scales_128x4",
]
