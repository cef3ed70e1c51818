#!/usr/bin/env bash
# Run a moe-actors job on Aurora (ALCF): 12 MPI ranks per node — one per GPU tile, as in the report's runs — with
# Aurora's documented CPU binding, started by the system mpiexec (PALS, MPICH). Use it inside a PBS job
# (scripts/aurora/job.pbs) or an interactive allocation (qsub -I -l select=1 ...).
#
#   scripts/aurora/run_aurora.sh --config CONFIG [--nodes N] [--transport mpi|ccl] [--dry-run] [--section.key value ...]
#
#   --config C   job config; its degrees must give 12 × nodes ranks (dp_replicate · dp_shard; dp_shard = -1 is
#                inferred)
#   --nodes N    nodes to use (default: the unique hosts of $PBS_NODEFILE, else 1)
#   --transport  mpi (default) or ccl: collectives on oneCCL from the frameworks module (build native/ccl after
#                `module load frameworks`: `npm run build:native ccl` finds it through $CCL_ROOT)
#   --dry-run    validate the config, print the environment and the exact command; start nothing
#   anything else  config overrides passed through, e.g. --training.steps 20 (a "--" separator is optional)
#
# What it sets up, and why:
#   module load mpich           the MPI library the native addon links (build it on Aurora after this load:
#                               `npm run build:native mpi`); the `frameworks` module (PyTorch) is not needed
#   ZE_FLAT_DEVICE_HIERARCHY=FLAT   each of the 6 GPUs × 2 tiles is its own device, rank i ↔ tile i (kept from the
#                               report's setup; moe-actors itself computes on the CPU cores bound to each rank)
#   --cpu-bind list:1-8:...     Aurora's binding for 12 ranks/node: 8 cores each, ranks 0-5 on socket 0 and
#                               6-11 on socket 1, cores 0 and 52 left to the OS
#   OMP/OPENBLAS threads = 8    BLAS threads = the 8 cores a rank is bound to (also --comm.blas_threads 8)
#   UCX_MEM_EVENTS=no           harmless on Aurora's libfabric MPICH; needed where MPICH runs over UCX
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
node_bin="${NODE:-node}"
mpiexec="${MPIEXEC:-mpiexec}"

RANKS_PER_NODE=12
THREADS_PER_RANK=8
CPU_BIND="list:1-8:9-16:17-24:25-32:33-40:41-48:53-60:61-68:69-76:77-84:85-92:93-100"

die() {
  echo "run_aurora: $*" >&2
  exit 2
}
usage() {
  sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

# shellcheck source=../launch-args.sh
source "$repo/scripts/launch-args.sh"

nodes=""
launch_option() {
  if [[ "$1" == --nodes ]]; then
    launch_need_value "a number" "$@"
    nodes="$2"
    launch_shift=2
  fi
}
launch_parse_args "$@"
launch_check_args configs/deepseek_v3_1b_ep12.toml
modules=(mpich)
[[ "$transport" == ccl ]] && modules+=(frameworks)
if [[ -z "$nodes" ]]; then
  if [[ -n "${PBS_NODEFILE:-}" && -f "${PBS_NODEFILE}" ]]; then
    nodes="$(sort -u "$PBS_NODEFILE" | grep -c .)"
  else
    nodes=1
  fi
fi
[[ "$nodes" =~ ^[1-9][0-9]*$ ]] || die "--nodes must be a positive integer (got \"$nodes\")"
total=$((nodes * RANKS_PER_NODE))

layout="$("$node_bin" "$repo/scripts/aurora/config-ranks.mjs" --config "$config" --ranks "$total" "${overrides[@]}")" || {
  echo "run_aurora: $nodes node(s) × $RANKS_PER_NODE ranks = $total ranks; the config must describe exactly that many" >&2
  exit 2
}
eval "$layout" # world dp_replicate dp_shard ep (integers only, from config-ranks.mjs)

env_vars=(
  "ZE_FLAT_DEVICE_HIERARCHY=FLAT"
  "UCX_MEM_EVENTS=no"
  "OMP_NUM_THREADS=$THREADS_PER_RANK"
  "OPENBLAS_NUM_THREADS=$THREADS_PER_RANK"
)
launch_default_run_name
cmd=(
  "$mpiexec" -n "$total" -ppn "$RANKS_PER_NODE" --cpu-bind "$CPU_BIND"
  "$node_bin" --initial-old-space-size=128 "$repo/bin/moe-actors.mjs" train --config "$config" --transport "$transport"
  --comm.ranks_per_node "$RANKS_PER_NODE" --comm.blas_threads "$THREADS_PER_RANK"
  "${overrides[@]}"
)

echo "run_aurora: $config on $nodes node(s): $total ranks = dp_replicate $dp_replicate × dp_shard $dp_shard, EP $ep" >&2
if [[ $dry_run -eq 1 ]]; then
  echo "module load ${modules[*]}"
  for v in "${env_vars[@]}"; do echo "export $v"; done
  printf '%q ' "${cmd[@]}" | sed 's/ $//'
  printf '\n'
  exit 0
fi

if ! type module >/dev/null 2>&1; then
  # `module` is a shell function; a non-login bash (exec bash run_aurora.sh) may not have inherited it.
  for init in /etc/profile.d/lmod.sh /etc/profile.d/modules.sh "${LMOD_PKG:-/nonexistent}/init/bash"; do
    # shellcheck disable=SC1090
    if [[ -f "$init" ]]; then source "$init" && break; fi
  done
fi
if type module >/dev/null 2>&1; then
  module load "${modules[@]}"
else
  die "the 'module' command is not available: run this on an Aurora compute node (or use scripts/launch-mpi.sh elsewhere)"
fi
for v in "${env_vars[@]}"; do export "${v?}"; done
command -v "$node_bin" >/dev/null || die "$node_bin not found: install Node 20+ (e.g. with nvm) and put it on PATH, or set NODE=/path/to/node"
exec "${cmd[@]}"
