#!/usr/bin/env bash
# One-GPU check of configs/gpu_1x.py: train a few minutes per encoding (NoPE, RoPE, p-RoPE) on
# synthetic data (offline), then print tokens/s, MFU against the GPU's bfloat16 peak and the
# losses, read from each run's metrics.jsonl.
#
# Usage: scripts/gpu_check.sh [--size full|tiny] [--steps N] [--workdir DIR] [--peak FLOP/s]
#   --size     full: the gpu_1x model at 8192 tokens (default); tiny: its runlocal form, a CPU
#              run of seconds (what the test runs)
#   --steps    train steps per encoding (default 150 full, 20 tiny)
#   --workdir  where the three runs go (default /tmp/ropex-gpu-check; emptied first)
#   --peak     dense bfloat16 FLOP/s of one GPU (default 989e12, H100/H200 SXM)
# Environment: PYTHON (default python3).
set -euo pipefail

SIZE=full
STEPS=""
WORKDIR=/tmp/ropex-gpu-check
PEAK=989e12
PYTHON="${PYTHON:-python3}"

die() { echo "gpu_check.sh: $*" >&2; exit 2; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --size) SIZE="${2:?--size needs a value}"; shift 2 ;;
    --steps) STEPS="${2:?--steps needs a value}"; shift 2 ;;
    --workdir) WORKDIR="${2:?--workdir needs a value}"; shift 2 ;;
    --peak) PEAK="${2:?--peak needs a value}"; shift 2 ;;
    *) die "unknown argument $1; allowed: --size, --steps, --workdir, --peak" ;;
  esac
done

case "$SIZE" in
  full) EXTRA=""; STEPS="${STEPS:-150}"; LOG_EVERY=10 ;;
  tiny) EXTRA=",runlocal"; STEPS="${STEPS:-20}"; LOG_EVERY=2 ;;
  *) die "--size $SIZE is not allowed; allowed: full, tiny" ;;
esac
[[ "$STEPS" =~ ^[0-9]+$ && "$STEPS" -gt "$LOG_EVERY" ]] \
  || die "--steps $STEPS must be an integer above $LOG_EVERY"

rm -rf "$WORKDIR"
mkdir -p "$WORKDIR"
for pe in nope rope prope; do
  echo "== $pe: $STEPS steps" >&2
  "$PYTHON" -m ropex.train --config "configs/gpu_1x.py:pe=$pe,data=synthetic$EXTRA" \
    --workdir "$WORKDIR/$pe" --config.train.steps="$STEPS" \
    --config.train.log_every_steps="$LOG_EVERY" --config.checkpoint.every_steps="$STEPS" \
    --config.eval.every_steps="$STEPS" >"$WORKDIR/$pe.log" 2>&1 \
    || { tail -n 20 "$WORKDIR/$pe.log" >&2; die "training $pe failed (log: $WORKDIR/$pe.log)"; }
done

"$PYTHON" -m ropex.tools.gpu_check_report --workdir "$WORKDIR" --peak "$PEAK"
