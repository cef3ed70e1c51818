#!/bin/sh
# One rank of an MPI job under Hydra (mpiexec.mpich): `mpi-rank.sh LINGER_SECONDS COMMAND [ARGS...]`.
# Runs the rank's command; if SIGKILL ended it (kill -9, the OOM killer), stays LINGER_SECONDS before exiting
# with its status. Why: Hydra's proxy SIGKILLs every other rank the moment one of its children dies
# by a signal — also with -disable-auto-cleanup (MPICH 4.0.2 sends SIGUSR1, then SIGKILL at once) — so the
# survivors could never say which rank died and where they waited. While this shell lives, the survivors see the
# rank's process gone (src/comm/mpi/world.ts, watchPeers), report, write their flight dumps and end the job with
# MPI_Abort, whose teardown also ends this shell. Every other end passes through at once: the ranks' own exits
# (MPI_Abort, SIGINT/SIGTERM handled: 129, 130, 143) and crashes (SIGSEGV, SIGABRT), since a crash can also hit a
# rank that has already reported (oneCCL's worker thread may segfault once a peer is gone), and lingering then
# would only delay the end.
# The shell ignores what Hydra forwards to the rank's process group (Ctrl-C, a deadline's SIGTERM; SIGUSR1 under
# -disable-auto-cleanup): the rank handles them (world.ts: dump, report) and this shell must outlive it, or Hydra
# would kill the rank before it reports. Node resets these dispositions to default at start-up.
trap '' USR1 INT TERM HUP
linger=$1
shift
"$@"
rc=$?
case $rc in
  137)
    echo "moe-actors: rank ${PMI_RANK:-?} was killed by signal $((rc - 128)); the other ranks have up to ${linger} s to report" >&2
    sleep "$linger"
    ;;
esac
exit "$rc"
