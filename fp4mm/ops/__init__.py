"""Public matmuls: validate, pick a backend (see ``fp4mm.backend``), run."""

from fp4mm.ops.nvfp4_mm import nvfp4_mm
from fp4mm.ops.w4a16_mm import w4a16_mm

__all__ = ["nvfp4_mm", "w4a16_mm"]
