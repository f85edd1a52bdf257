#!/usr/bin/env bash
# Create a Cloud TPU VM / pod slice (or several slices), install ropex on every worker, run the
# same command on all workers, copy the logs back, delete. Built on
# `gcloud compute tpus tpu-vm ... --worker=all`.
#
# Usage: scripts/tpu_pod.sh [--dry-run] COMMAND [options] [-- command to run on every worker]
#
# Commands:
#   create   create the TPU (with --num-slices N > 1: N slices NAME-0 .. NAME-{N-1}, multislice)
#   setup    on every worker: clone --repo at --ref into ~/ropex, make a Python 3.11 venv with uv,
#            install '.[tpu]' into it
#   run      run the command after `--` on every worker of every slice, in ~/ropex with its venv;
#            output is tee'd to ~/ropex/logs/<host>.log on each worker
#   logs     copy ~/ropex/logs/ of every worker to --logs-dir (default tpu_logs/NAME)
#   delete   delete the TPU (all slices)
#   all      create, setup, run, logs, delete (delete also runs if the training command fails)
#
# Options (environment variables in brackets):
#   --name NAME          TPU name [TPU_NAME]                       (required)
#   --zone ZONE          zone, e.g. us-east5-a [TPU_ZONE]          (required)
#   --project PROJECT    GCP project [TPU_PROJECT] (default: gcloud's configured project)
#   --type TYPE          accelerator type [TPU_TYPE] (default v5litepod-256 = v5e 16x16)
#   --version VERSION    TPU runtime [TPU_VERSION] (default v2-alpha-tpuv5-lite)
#   --num-slices N       multislice: N identical slices joined over the data-centre network
#   --spot               create spot (preemptible) capacity
#   --repo URL           git repository to clone on the workers [ROPEX_REPO]
#   --ref REF            branch / tag / commit to check out [ROPEX_REF] (default main)
#   --python VERSION     Python for the workers' venv (default 3.11; installed by uv if needed)
#   --setup-cmd CMD      extra shell command run in ~/ropex after installing, e.g. fetch the
#                        tokenizer: 'gcloud storage cp gs://B/gemma_tokenizer.model tokenizer/'
#   --logs-dir DIR       local directory for `logs` (default tpu_logs/NAME)
#   --dry-run            print every gcloud command instead of running it
#
# Example (see README, "Run on a TPU pod"):
#   scripts/tpu_pod.sh all --name ropex-pod --zone us-east5-a --repo https://github.com/you/ropex \
#     -- python -m ropex.train --config configs/prope_2b.py --workdir gs://bucket/prope_wiki
set -euo pipefail

DRY_RUN=0
NAME="${TPU_NAME:-}"
ZONE="${TPU_ZONE:-}"
PROJECT="${TPU_PROJECT:-}"
TYPE="${TPU_TYPE:-v5litepod-256}"
VERSION="${TPU_VERSION:-v2-alpha-tpuv5-lite}"
NUM_SLICES=1
SPOT=0
REPO="${ROPEX_REPO:-}"
REF="${ROPEX_REF:-main}"
PYTHON_VERSION=3.11
SETUP_CMD=""
LOGS_DIR=""
REMOTE_DIR='ropex'
MEGASCALE_PORT=8081
COORDINATOR=""
COMMAND=""
TRAIN_CMD=()

die() { echo "tpu_pod.sh: $*" >&2; exit 2; }

usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }

# Runs "$@", or prints it (shell-quoted, copy-pasteable) with --dry-run.
run() {
  if (( DRY_RUN )); then
    printf '%q' "$1"
    shift
    if (( $# )); then printf ' %q' "$@"; fi
    printf '\n'
  else
    "$@"
  fi
}

parse_args() {
  while (( $# )); do
    case "$1" in
      --dry-run) DRY_RUN=1 ;;
      --name) NAME="$2"; shift ;;
      --zone) ZONE="$2"; shift ;;
      --project) PROJECT="$2"; shift ;;
      --type) TYPE="$2"; shift ;;
      --version) VERSION="$2"; shift ;;
      --num-slices) NUM_SLICES="$2"; shift ;;
      --spot) SPOT=1 ;;
      --repo) REPO="$2"; shift ;;
      --ref) REF="$2"; shift ;;
      --python) PYTHON_VERSION="$2"; shift ;;
      --setup-cmd) SETUP_CMD="$2"; shift ;;
      --logs-dir) LOGS_DIR="$2"; shift ;;
      -h|--help) usage; exit 0 ;;
      --) shift; TRAIN_CMD=("$@"); break ;;
      create|setup|run|logs|delete|all)
        [[ -z "$COMMAND" ]] || die "two commands given: $COMMAND and $1"
        COMMAND="$1" ;;
      *) die "unknown argument '$1' (see --help)" ;;
    esac
    shift
  done
  [[ -n "$COMMAND" ]] || die "no command given; allowed: create, setup, run, logs, delete, all"
  [[ -n "$NAME" ]] || die "--name (or TPU_NAME) is required"
  [[ -n "$ZONE" ]] || die "--zone (or TPU_ZONE) is required"
  [[ "$NUM_SLICES" =~ ^[1-9][0-9]*$ ]] || die "--num-slices=$NUM_SLICES must be a positive integer"
  LOGS_DIR="${LOGS_DIR:-tpu_logs/$NAME}"
}

# gcloud flags shared by every call.
common_flags() {
  FLAGS=(--zone="$ZONE")
  if [[ -n "$PROJECT" ]]; then FLAGS+=(--project="$PROJECT"); fi
}

# The TPU node names: NAME for one slice; NAME-0 .. NAME-{N-1} for a multislice.
slice_names() {
  if (( NUM_SLICES == 1 )); then
    echo "$NAME"
  else
    for ((i = 0; i < NUM_SLICES; i++)); do echo "$NAME-$i"; done
  fi
}

create() {
  local extra=()
  if (( SPOT )); then extra+=(--spot); fi
  if (( NUM_SLICES == 1 )); then
    run gcloud compute tpus tpu-vm create "$NAME" "${FLAGS[@]}" \
      --accelerator-type="$TYPE" --version="$VERSION" "${extra[@]}"
  else
    # Queued resources create all slices together (NAME-0, NAME-1, ...).
    run gcloud compute tpus queued-resources create "$NAME" "${FLAGS[@]}" \
      --accelerator-type="$TYPE" --runtime-version="$VERSION" \
      --node-count="$NUM_SLICES" --node-prefix="$NAME" "${extra[@]}"
    wait_active
  fi
}

# Polls the queued resource until its slices are ACTIVE (they are created asynchronously).
wait_active() {
  local describe=(gcloud compute tpus queued-resources describe "$NAME" "${FLAGS[@]}"
                  --format='value(state.state)')
  if (( DRY_RUN )); then run "${describe[@]}"; return; fi
  local state=""
  until [[ "$state" == ACTIVE ]]; do
    state="$("${describe[@]}")"
    case "$state" in
      FAILED|SUSPENDED) die "queued resource $NAME is $state" ;;
      ACTIVE) ;;
      *) echo "queued resource $NAME: ${state:-unknown}; waiting" >&2; sleep 30 ;;
    esac
  done
}

ssh_all() {  # ssh_all NODE SCRIPT: runs SCRIPT on every worker of NODE.
  run gcloud compute tpus tpu-vm ssh "$1" "${FLAGS[@]}" --worker=all --command="$2"
}

setup() {
  [[ -n "$REPO" ]] || die "setup needs --repo (or ROPEX_REPO): the git URL of your ropex"
  local script repo ref
  repo="$(printf '%q' "$REPO")"
  ref="$(printf '%q' "$REF")"
  # jax needs Python >= 3.11; TPU VM images ship 3.10, so uv provides the interpreter.
  script="set -euo pipefail
if [ ! -d $REMOTE_DIR/.git ]; then git clone $repo $REMOTE_DIR; fi
cd $REMOTE_DIR && git fetch --all --tags && git checkout $ref
if git rev-parse -q --verify origin/$ref >/dev/null; then git reset --hard origin/$ref; fi
export PATH=\$HOME/.local/bin:\$PATH
command -v uv >/dev/null || python3 -m pip install -q --user uv
[ -x .venv/bin/python ] || uv venv -q --python $PYTHON_VERSION .venv
uv pip install -q --python .venv/bin/python -e '.[tpu]'"
  if [[ -n "$SETUP_CMD" ]]; then script+=$'\n'"$SETUP_CMD"; fi
  local node
  while read -r node; do ssh_all "$node" "$script"; done < <(slice_names)
}

# Sets COORDINATOR to the internal IP of worker 0 of the first slice (multislice coordinator).
find_coordinator() {
  local describe=(gcloud compute tpus tpu-vm describe "$NAME-0" "${FLAGS[@]}"
                  --format='value(networkEndpoints[0].ipAddress)')
  if (( DRY_RUN )); then
    run "${describe[@]}"
    COORDINATOR='<coordinator-ip>'
  else
    COORDINATOR="$("${describe[@]}")"
  fi
}

run_command() {
  (( ${#TRAIN_CMD[@]} )) || die "run needs the command to run after '--'"
  local quoted env="" pids=() slice=0 node status=0
  quoted="$(printf '%q ' "${TRAIN_CMD[@]}")"
  if (( NUM_SLICES > 1 )); then find_coordinator; fi
  while read -r node; do
    if (( NUM_SLICES > 1 )); then
      env="MEGASCALE_COORDINATOR_ADDRESS=$COORDINATOR MEGASCALE_PORT=$MEGASCALE_PORT"
      env+=" MEGASCALE_NUM_SLICES=$NUM_SLICES MEGASCALE_SLICE_ID=$slice "
    fi
    local script="set -o pipefail; cd $REMOTE_DIR && mkdir -p logs && . .venv/bin/activate"
    script+=" && ${env}${quoted}2>&1 | tee logs/\$(hostname).log"
    if (( DRY_RUN || NUM_SLICES == 1 )); then
      ssh_all "$node" "$script" || status=$?
    else
      ssh_all "$node" "$script" & pids+=($!)
    fi
    slice=$((slice + 1))
  done < <(slice_names)
  for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
  return "$status"
}

logs() {
  local node
  run mkdir -p "$LOGS_DIR"
  while read -r node; do
    run gcloud compute tpus tpu-vm scp --recurse "$node:$REMOTE_DIR/logs" "$LOGS_DIR/$node" \
      "${FLAGS[@]}" --worker=all
  done < <(slice_names)
}

delete() {
  if (( NUM_SLICES == 1 )); then
    run gcloud compute tpus tpu-vm delete "$NAME" "${FLAGS[@]}" --quiet
  else
    run gcloud compute tpus queued-resources delete "$NAME" "${FLAGS[@]}" --force --quiet
  fi
}

main() {
  parse_args "$@"
  common_flags
  case "$COMMAND" in
    create) create ;;
    setup) setup ;;
    run) run_command ;;
    logs) logs ;;
    delete) delete ;;
    all)
      create
      local status=0
      setup && run_command || status=$?
      logs || true
      delete
      return "$status" ;;
  esac
}

main "$@"
