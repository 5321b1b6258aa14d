// Does not compile: an undeclared identifier and a missing semicolon.
extern "C" void solve(const unsigned char* x_q, const unsigned char* x_scales,
                      const unsigned char* w_q, const unsigned char* w_scales, float alpha,
                      unsigned short* y, int M, int N, int K) {
    launch_my_kernel(x_q, y)
}
