// Starter for "NVFP4 Matrix Multiplication" (revision 2). Fill in solve, then run
//   fp4mm check my_solution.cu --challenge nvfp4
//
// y = fp16(alpha * dequant(x) @ dequant(w)^T), computed in fp32, where
// dequant(v)[r, k] = e2m1(nibble(v, r, k)) * e4m3(scales[r, k / 16]).
// Packed bytes hold two E2M1 codes: the HIGH nibble is the even index k, the low nibble k + 1.
// All pointers are device pointers, row-major:
//   x_q (M, K/2), x_scales (M, K/16), w_q (N, K/2), w_scales (N, K/16): raw bytes;
//   y (M, N): half, written in place.
#include <cuda_fp16.h>

extern "C" void solve(const unsigned char* x_q, const unsigned char* x_scales,
                      const unsigned char* w_q, const unsigned char* w_scales, float alpha,
                      half* y, int M, int N, int K) {
    // TODO: launch your kernel(s) here.
}
