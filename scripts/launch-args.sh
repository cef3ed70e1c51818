# Argument parsing shared by scripts/launch-mpi.sh and scripts/aurora/run_aurora.sh (sourced, not run): the
# options both launchers take, their checks and the run name every rank must share. Each launcher keeps only its
# own options (launch-mpi: -n, --mpiexec; run_aurora: --nodes) in a launch_option function.
#
# The sourcing script defines before calling launch_parse_args:
#   die MESSAGE      print "<launcher>: MESSAGE" on stderr, exit 2
#   usage            print the launcher's help
#   launch_option    (optional) called with the remaining arguments when the first is not a common option;
#                    sets launch_shift to how many it consumed (0: not its option, so it becomes an override)
# launch_parse_args sets: config, transport (mpi|ccl), dry_run (0|1), overrides (array, config overrides).

# "$1 needs $what" unless a value follows the option.
launch_need_value() {
  local what="$1"
  shift
  [[ $# -ge 2 ]] || die "$1 needs $what"
}

launch_parse_args() {
  config=""
  transport=mpi
  dry_run=0
  overrides=()
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --config)
        launch_need_value "a file" "$@"
        config="$2"
        shift 2
        ;;
      --transport)
        launch_need_value "mpi or ccl" "$@"
        transport="$2"
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
        launch_shift=0
        if declare -F launch_option >/dev/null; then launch_option "$@"; fi
        if [[ $launch_shift -gt 0 ]]; then
          shift "$launch_shift"
        else
          overrides+=("$1")
          shift
        fi
        ;;
    esac
  done
}

# The checks both launchers make before planning; $1 is an example config for the "missing --config" message.
launch_check_args() {
  [[ -n "$config" ]] || {
    usage >&2
    die "missing --config <file> (e.g. --config $1)"
  }
  [[ -f "$config" ]] || die "config $config: no such file"
  [[ "$transport" == mpi || "$transport" == ccl ]] || die "--transport must be mpi or ccl (got \"$transport\")"
}

# Every rank must write into the same run folder; the trainer cannot pick a timestamp per process under MPI.
launch_default_run_name() {
  if [[ " ${overrides[*]-} " != *" --job.run_name"* ]]; then
    overrides+=(--job.run_name "${MOE_ACTORS_RUN_NAME:-$(basename "$config" .toml)-$(date -u +%Y%m%d-%H%M%S)}")
  fi
}
