// A simple, correct CUDA solution of "FP4 MatMul" (revision 1, fp16 activations x FP4 weights):
// one thread per output element, E2M1 decoded in device code, fp32 accumulation, half output.
// Correct, not fast (no tensor cores, no shared memory): a baseline to beat.
//
//   fp4mm check w4a16.cu --challenge w4a16 --perf
#include <cuda_fp16.h>

// E2M1 code (4 bits): sign in bit 3, exponent in bits 2..1 (bias 1), mantissa in bit 0.
__device__ __forceinline__ float e2m1(unsigned code) {
    unsigned exponent = (code >> 1) & 3u, mantissa = code & 1u;
    float magnitude = exponent == 0 ? 0.5f * mantissa
                                    : (1.0f + 0.5f * mantissa) * (float)(1u << (exponent - 1));
    return (code & 8u) ? -magnitude : magnitude;
}

__global__ void w4a16_mm_naive(const half* x, const unsigned char* w_q, const half* scales,
                               half* y, int M, int N, int K, int group_size) {
    int n = blockIdx.x * blockDim.x + threadIdx.x;
    int m = blockIdx.y * blockDim.y + threadIdx.y;
    if (m >= M || n >= N) return;
    const half* x_row = x + (size_t)m * K;
    const unsigned char* w_row = w_q + (size_t)n * (K / 2);
    const half* s_row = scales + (size_t)n * (K / group_size);
    float acc = 0.0f;
    for (int k = 0; k < K; k += 2) {
        unsigned byte = w_row[k / 2];
        float w_even = e2m1(byte >> 4) * __half2float(s_row[k / group_size]);        // high nibble
        float w_odd = e2m1(byte & 15u) * __half2float(s_row[(k + 1) / group_size]);  // low nibble
        acc += __half2float(x_row[k]) * w_even;
        acc += __half2float(x_row[k + 1]) * w_odd;
    }
    y[(size_t)m * N + n] = __float2half_rn(acc);
}

extern "C" void solve(const half* x, const unsigned char* w_q, const half* scales, half* y, int M,
                      int N, int K, int group_size) {
    dim3 block(16, 16);
    dim3 grid((N + block.x - 1) / block.x, (M + block.y - 1) / block.y);
    w4a16_mm_naive<<<grid, block>>>(x, w_q, scales, y, M, N, K, group_size);
}
