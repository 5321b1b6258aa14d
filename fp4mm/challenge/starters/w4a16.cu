// Starter for "FP4 MatMul" (revision 1, fp16 activations x FP4 weights). Fill in solve, then run
//   fp4mm check my_solution.cu --challenge w4a16
//
// y = fp16(x @ (e2m1(w) * scales)^T), computed in fp32; scales[n, k / group_size] scales w[n, k].
// Packed bytes hold two E2M1 codes: the HIGH nibble is the even index k, the low nibble k + 1.
// All pointers are device pointers, row-major:
//   x (M, K) half; w_q (N, K/2) bytes; scales (N, K/group_size) half; y (M, N) half, in place.
#include <cuda_fp16.h>

extern "C" void solve(const half* x, const unsigned char* w_q, const half* scales, half* y, int M,
                      int N, int K, int group_size) {
    // TODO: launch your kernel(s) here.
}
