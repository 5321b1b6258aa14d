# Session 19: the decode and challenge suites of `fp4mm bench` (graph timer) compiled by three ptxas
# versions in turn: Triton 3.6's bundled 12.8, the image's CUDA 13.0, and 13.5 carried from the
# nvidia-cuda-nvcc 13.5.37 wheel as .whl/ptxas135/ptxas (run with carry [".whl/ptxas135"]).
# Results: bench/results/2026-11-27-ptxas-versions-h100/. Each run gets a fresh Triton cache.
set -u
chmod +x .whl/ptxas135/ptxas
SYS=$(command -v ptxas || echo /usr/local/cuda/bin/ptxas)
echo "system ptxas: $SYS"; $SYS --version | tail -1; .whl/ptxas135/ptxas --version | tail -1
for V in bundled sys135 sys130; do
  case $V in bundled) P="";; sys130) P=$SYS;; sys135) P=$PWD/.whl/ptxas135/ptxas;; esac
  echo "=== $V $P"
  export TRITON_CACHE_DIR=$(mktemp -d)
  if [ -n "$P" ]; then export TRITON_PTXAS_PATH=$P; else unset TRITON_PTXAS_PATH; fi
  mkdir -p $OUT/$V
  FP4MM_GIT_COMMIT=$(git rev-parse HEAD 2>/dev/null) timeout 170 python -m fp4mm bench --suite decode --suite challenge --impls fp4mm --timer graph --no-plot --out $OUT/$V 2>&1 | grep -v -i warn | tail -22
done
