"""Device-side decoding shared by the Triton kernels: the device half of ``fp4mm.formats``.

Both helpers work through the E4M3 type, whose hardware conversion to fp16 is exact:

- an E2M1 code ``c`` re-read as the E4M3 byte ``(c & 7) << 2 | (c & 8) << 4`` is ``e2m1(c) * 2^-6``;
- an E4M3 scale times ``2^6`` is exact in fp16 (at most 448 * 64 = 28672),

so ``e2m1_to_f16_x64(c) * e4m3_to_f16_x64(s)`` is ``e2m1(c) * e4m3(s)``, exactly, in fp16.
"""

import triton
import triton.language as tl


@triton.jit
def e2m1_to_f16_x64(codes):
    """uint8 E2M1 codes (0..15) -> fp16 ``value * 2^-6``, exactly."""
    e4m3 = ((codes & 7) << 2) | ((codes & 8) << 4)
    return e4m3.to(tl.float8e4nv, bitcast=True).to(tl.float16)


@triton.jit
def e4m3_to_f16_x64(scale_bytes):
    """uint8 E4M3 bytes -> fp16 ``scale * 2^6``, exactly. The NaN bytes 0x7F/0xFF are mapped to
    NaN explicitly: the hardware conversion does so, Triton's CPU interpreter does not (it
    decodes 0x7F as 480)."""
    s = scale_bytes.to(tl.float8e4nv, bitcast=True).to(tl.float16) * 64.0
    return tl.where((scale_bytes & 0x7F) == 0x7F, float("nan"), s)
