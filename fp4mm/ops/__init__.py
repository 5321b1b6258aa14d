"""Public matmuls: validate, pick a backend (see ``fp4mm.backend``) and a kernel, run."""

from fp4mm.ops.nvfp4_mm import nvfp4_mm
from fp4mm.ops.nvfp4_w4a16_mm import nvfp4_w4a16_mm, nvfp4_w4a16_mm_alpha
from fp4mm.ops.prepack import (
    PrepackedNVFP4Weight,
    PrepackedW4A16Weight,
    prepack_nvfp4_weight,
    prepack_w4a16_weight,
)
from fp4mm.ops.w4a16_mm import w4a16_mm

__all__ = ["PrepackedNVFP4Weight", "PrepackedW4A16Weight", "nvfp4_mm", "nvfp4_w4a16_mm",
           "nvfp4_w4a16_mm_alpha", "prepack_nvfp4_weight", "prepack_w4a16_weight", "w4a16_mm"]
