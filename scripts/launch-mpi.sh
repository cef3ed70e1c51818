#!/usr/bin/env bash
# Launch a moe-actors training job as N MPI processes (one rank each) with MPICH's mpiexec:
#
#   scripts/launch-mpi.sh [-n N] --config CONFIG [--transport mpi|ccl] [--mpiexec CMD] [--dry-run] [--section.key value ...]
#
#   -n N           number of ranks (default: dp_replicate · dp_shard of the config); must match the config's degrees
#   --transport T  mpi (default): collectives on MPICH; ccl: on oneCCL (needs native/ccl, built where oneCCL is found)
#   --mpiexec CMD  MPICH launcher (default: $MPIEXEC or mpiexec.mpich)
#   --dry-run      validate the config and print the exact command; start no ranks
#   anything else  passed through as config overrides, e.g. --training.steps 20 (a "--" separator is optional)
#
# Runs:  UCX_MEM_EVENTS=no mpiexec.mpich -n N node bin/moe-actors.mjs train --config CONFIG --transport T [overrides]
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

n=""
config=""
mpiexec="${MPIEXEC:-mpiexec.mpich}"
transport=mpi
dry_run=0
overrides=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    -n | --np | -np)
      [[ $# -ge 2 ]] || die "$1 needs a number"
      n="$2"
      shift 2
      ;;
    --config)
      [[ $# -ge 2 ]] || die "--config needs a file"
      config="$2"
      shift 2
      ;;
    --transport)
      [[ $# -ge 2 ]] || die "--transport needs mpi or ccl"
      transport="$2"
      shift 2
      ;;
    --mpiexec)
      [[ $# -ge 2 ]] || die "--mpiexec needs a command"
      mpiexec="$2"
      shift 2
      ;;
    --dry-run)
      dry_run=1
      shift
      ;;
    -h | --help)
      usage
      exit 0
      ;;
    --)
      shift
      overrides+=("$@")
      break
      ;;
    *)
      overrides+=("$1")
      shift
      ;;
  esac
done

[[ -n "$config" ]] || {
  usage >&2
  die "missing --config <file> (e.g. --config configs/debug_ep4.toml)"
}
[[ -f "$config" ]] || die "config $config: no such file"
[[ "$transport" == mpi || "$transport" == ccl ]] || die "--transport must be mpi or ccl (got \"$transport\")"
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

# Every rank must write into the same run folder; the trainer cannot pick a timestamp per process under MPI.
if [[ " ${overrides[*]-} " != *" --job.run_name"* ]]; then
  overrides+=(--job.run_name "${MOE_ACTORS_RUN_NAME:-$(basename "$config" .toml)-$(date -u +%Y%m%d-%H%M%S)}")
fi
cmd=("$mpiexec" -n "$world" "$node_bin" "$repo/bin/moe-actors.mjs" train --config "$config" --transport "$transport" "${overrides[@]}")
export UCX_MEM_EVENTS=no

if [[ $dry_run -eq 1 ]]; then
  printf 'UCX_MEM_EVENTS=no'
  printf ' %q' "${cmd[@]}"
  printf '\n'
  exit 0
fi
command -v "$mpiexec" >/dev/null || die "$mpiexec not found: install MPICH (apt-get install mpich) or pass --mpiexec /path/to/mpiexec.hydra"
exec "${cmd[@]}"
