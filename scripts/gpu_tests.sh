#!/usr/bin/env bash
# The GPU test suite in seven parallel pytest processes, for one device call (10 minutes): the
# register-ring GEMV file alone needs more than 540 s in one process, so it is split in two.
# Logs under $OUT/logs; a summary of each and the first failures are printed at the end.
# tests/conftest.py turns on the launch cache with FP4MM_CHECK_LAUNCH=1 (fp4mm.kernels.launch).
# Usage on the device machine: bash scripts/gpu_tests.sh   (T=seconds per process, default 540)
set -u
export TRITON_CACHE_DIR=/tmp/tc FP4MM_CHECK_LAUNCH=1
L=$OUT/logs; mkdir -p $L
P="python -m pytest -q -p no:cacheprovider"
T=${T:-540}
ring=tests/kernels/test_fp4_gemv_sm90.py
$P --collect-only -q $ring 2>/dev/null | grep '::' > /tmp/ring.txt
n=$(wc -l < /tmp/ring.txt); h=$((n / 2))
head -n $h /tmp/ring.txt > /tmp/r1; tail -n +$((h + 1)) /tmp/ring.txt > /tmp/r2
run() { name=$1; shift; (timeout $T $P "$@" > $L/$name.log 2>&1; echo "rc=$?" >> $L/$name.log) & }
run ops tests/ops tests/nn tests/test_backend.py tests/test_library.py tests/kernels/test_launch.py
run small tests/kernels/test_fp4_gemv_fp8_sm90.py tests/kernels/test_quantize_nvfp4.py tests/kernels/test_dequant_nvfp4.py tests/kernels/test_prepack_sm90.py
run gemm tests/kernels/test_fp4_gemm_sm90.py -k "not compile"
run tma tests/kernels/test_fp4_gemv_tma_sm90.py
run plain tests/kernels/test_fp4_gemv.py tests/challenge tests/kernels/test_host.py tests/test_solve.py
run ring1 $(cat /tmp/r1)
run ring2 $(cat /tmp/r2)
wait
for f in $L/*.log; do echo "== $f"; grep -E "passed|failed|error|rc=" $f | tail -3; done
grep -h -B2 -A25 "^___\|Error" $L/*.log | head -150
