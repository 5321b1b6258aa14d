"""Wrong: reads x's packed bytes low nibble first (w's correctly). Passes the example (its bytes
read the same either way) and the all-zero functional case #0, fails the rest. (Swapping both
operands would permute k identically in both and give the right answer.)"""

import fp4mm
from fp4mm.formats import swap_nibbles


def solve(x_q, x_scales, w_q, w_scales, alpha, y, M, N, K):
    fp4mm.solve(swap_nibbles(x_q), x_scales, w_q, w_scales, alpha, y, M, N, K)
