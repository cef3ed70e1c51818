#!/usr/bin/env bash
# Launch a moe-actors training job as N MPI processes (one rank each) with MPICH's mpiexec:
#
#   scripts/launch-mpi.sh [-n N] --config CONFIG [--transport mpi|ccl] [--mpiexec CMD] [--dry-run] [--section.key value ...]
#
#   -n N           number of ranks (default: dp_replicate · dp_shard of the config); must match the config's degrees
#   --transport T  mpi (default): collectives on MPICH; ccl: on oneCCL (needs native/ccl, built where oneCCL is found)
#   --mpiexec CMD  MPICH launcher (default: $MPIEXEC or mpiexec.mpich)
#   MOE_ACTORS_RANK_LINGER_S  how long a rank killed by a signal keeps its slot so the others can report (60)
#   --dry-run      validate the config and print the exact command; start no ranks
#   anything else  passed through as config overrides, e.g. --training.steps 20 (a "--" separator is optional)
#
# Runs:  UCX_MEM_EVENTS=no mpiexec.mpich -n N sh scripts/mpi-rank.sh LINGER node --initial-old-space-size=128 bin/moe-actors.mjs train --config CONFIG --transport T [overrides]
#
# Why mpiexec.mpich and never plain mpiexec/mpirun: on Debian/Ubuntu the "mpiexec" alternative is OpenMPI's; it
# refuses root, or starts N unrelated MPICH singletons (every rank sees world size 1) because the native MPI addon
# is built against MPICH. Why UCX_MEM_EVENTS=no: with UCX's memory hooks MPICH+UCX crashes Node processes now and
# then (SIGSEGV inside V8 in 2-5 % of 4-rank runs); without them none was seen in 75 runs.
# On Aurora use scripts/aurora/run_aurora.sh (PALS mpiexec, CPU binding, 12 ranks per node).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
node_bin="${NODE:-node}"

die() {
  echo "launch-mpi: $*" >&2
  exit 2
}
usage() {
  sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

# shellcheck source=launch-args.sh
source "$here/launch-args.sh"

n=""
mpiexec="${MPIEXEC:-mpiexec.mpich}"
launch_option() {
  case "$1" in
    -n | --np | -np)
      launch_need_value "a number" "$@"
      n="$2"
      launch_shift=2
      ;;
    --mpiexec)
      launch_need_value "a command" "$@"
      mpiexec="$2"
      launch_shift=2
      ;;
  esac
}
launch_parse_args "$@"
launch_check_args configs/debug_ep4.toml
if [[ "$transport" == ccl && ! -f "$repo/native/ccl/build/Release/ccl.node" ]]; then
  why="$(cat "$repo/native/ccl/UNAVAILABLE" 2>/dev/null || echo "native/ccl is not built")"
  die "--transport ccl needs the oneCCL binding: ${why//$'\n'/ }${why:+ }(build it with \`npm run build:native ccl\` once CCL_ROOT points at oneCCL)"
fi
if [[ -n "$n" && ! "$n" =~ ^[1-9][0-9]*$ ]]; then die "-n must be a positive integer (got \"$n\")"; fi

case "$(basename "$mpiexec")" in
  mpiexec | mpirun | orterun | mpiexec.openmpi | mpirun.openmpi)
    die "refusing \"$mpiexec\": plain mpiexec/mpirun is OpenMPI on Debian (it starts N unrelated MPICH singletons, or refuses root); moe-actors' MPI addon is built against MPICH — use mpiexec.mpich (the default), or scripts/aurora/run_aurora.sh on Aurora"
    ;;
esac

ranks_args=(--config "$config")
[[ -n "$n" ]] && ranks_args+=(--ranks "$n")
layout="$("$node_bin" "$repo/scripts/aurora/config-ranks.mjs" "${ranks_args[@]}" "${overrides[@]}")" || exit 2
world="$(sed -n 's/^world=//p' <<<"$layout")"

launch_default_run_name
# Each rank under scripts/mpi-rank.sh: a rank killed by a signal (kill -9, OOM) then lingers instead of making
# Hydra kill the others at once, so they report which rank died and where they waited, then abort the job.
cmd=("$mpiexec" -n "$world" sh "$repo/scripts/mpi-rank.sh" "${MOE_ACTORS_RANK_LINGER_S:-60}" "$node_bin" --initial-old-space-size=128 "$repo/bin/moe-actors.mjs" train --config "$config" --transport "$transport" "${overrides[@]}")
export UCX_MEM_EVENTS=no

if [[ $dry_run -eq 1 ]]; then
  printf 'UCX_MEM_EVENTS=no'
  printf ' %q' "${cmd[@]}"
  printf '\n'
  exit 0
fi
command -v "$mpiexec" >/dev/null || die "$mpiexec not found: install MPICH (apt-get install mpich) or pass --mpiexec /path/to/mpiexec.hydra"
exec "${cmd[@]}"
