// The example nvfp4 solution, except that in functional case #2 (M == 3) one thread writes
// 2^40 elements past y: an illegal memory access. Correct in every other case.
#include <cuda_fp16.h>

// E2M1 code (4 bits): sign in bit 3, exponent in bits 2..1 (bias 1), mantissa in bit 0.
__device__ __forceinline__ float e2m1(unsigned code) {
    unsigned exponent = (code >> 1) & 3u, mantissa = code & 1u;
    float magnitude = exponent == 0 ? 0.5f * mantissa
                                    : (1.0f + 0.5f * mantissa) * (float)(1u << (exponent - 1));
    return (code & 8u) ? -magnitude : magnitude;
}

// E4M3 byte (float8_e4m3fn): sign, 4 exponent bits (bias 7), 3 mantissa bits; 0x7F/0xFF are NaN.
__device__ __forceinline__ float e4m3(unsigned char byte) {
    unsigned exponent = (byte >> 3) & 15u, mantissa = byte & 7u;
    float magnitude;
    if (exponent == 15u && mantissa == 7u) {
        magnitude = __int_as_float(0x7fc00000);  // NaN
    } else if (exponent == 0u) {
        magnitude = ldexpf((float)mantissa, -9);  // subnormal: mantissa / 8 * 2^-6
    } else {
        magnitude = ldexpf(1.0f + mantissa / 8.0f, (int)exponent - 7);
    }
    return (byte & 0x80u) ? -magnitude : magnitude;
}

__global__ void nvfp4_mm_naive(const unsigned char* x_q, const unsigned char* x_scales,
                               const unsigned char* w_q, const unsigned char* w_scales,
                               float alpha, half* y, int M, int N, int K) {
    int n = blockIdx.x * blockDim.x + threadIdx.x;
    int m = blockIdx.y * blockDim.y + threadIdx.y;
    if (m >= M || n >= N) return;
    const unsigned char* x_row = x_q + (size_t)m * (K / 2);
    const unsigned char* w_row = w_q + (size_t)n * (K / 2);
    const unsigned char* xs_row = x_scales + (size_t)m * (K / 16);
    const unsigned char* ws_row = w_scales + (size_t)n * (K / 16);
    float acc = 0.0f;
    for (int block = 0; block < K / 16; ++block) {
        float partial = 0.0f;  // E2M1 x E2M1 products and their sums over 16 are exact
        for (int i = 0; i < 8; ++i) {
            unsigned xb = x_row[block * 8 + i], wb = w_row[block * 8 + i];
            partial += e2m1(xb >> 4) * e2m1(wb >> 4);      // even index: high nibble
            partial += e2m1(xb & 15u) * e2m1(wb & 15u);    // odd index: low nibble
        }
        acc += partial * (e4m3(xs_row[block]) * e4m3(ws_row[block]));
    }
    y[(size_t)m * N + n] = __float2half_rn(alpha * acc);
    if (M == 3 && m == 0 && n == 0) y[(size_t)1 << 40] = __float2half_rn(acc);
}

extern "C" void solve(const unsigned char* x_q, const unsigned char* x_scales,
                      const unsigned char* w_q, const unsigned char* w_scales, float alpha,
                      half* y, int M, int N, int K) {
    dim3 block(16, 16);
    dim3 grid((N + block.x - 1) / block.x, (M + block.y - 1) / block.y);
    nvfp4_mm_naive<<<grid, block>>>(x_q, x_scales, w_q, w_scales, alpha, y, M, N, K);
}
