// Imported first by the CLI and bench entries. A rank's V8 isolate starts with a small old generation and keeps its
// limit near the ~13 MB that survive each collection, so every ~4 MB promoted costs a full mark-compact: a 10-step
// EP=4 DeepSeek-V3 run on 4 worker-thread ranks did ~250 of them, about a third of the process's CPU on V8's GC
// threads (bench:seed's per-thread CPU; notes in docs/benchmarks.md). Starting the old generation at 128 MB cut that
// to 34 and the default job's user CPU by ~30 %, losses unchanged, peak RSS +15 %. The flag reaches isolates made
// after this line — every worker-thread rank and the side pool; the main isolate needs it on node's command line
// (scripts/launch-mpi.sh passes it to MPI ranks). NODE_OPTIONS cannot carry it. A flag given on the command line wins.
import v8 from 'node:v8';

export const INITIAL_OLD_SPACE_MB = 128;
if (!process.execArgv.some((a) => a.startsWith('--initial-old-space-size'))) {
  v8.setFlagsFromString(`--initial-old-space-size=${INITIAL_OLD_SPACE_MB}`);
}
