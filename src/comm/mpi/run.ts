// One MPI rank as a command: parses the options, runs launchMpi, prints this rank's outcome as a tagged JSON line
// (OUTCOME_TAG) for whoever started mpiexec, and sets the exit code. A failing rank of a multi-rank job does not
// come back here: world.ts prints its outcome and aborts the job.
//
//   --module <path|file: URL>  rank program exporting rankMain (required)
//   --export <name>            export name (default rankMain)
//   --args <json>              arguments passed to the program as ctx.args (default null)
//   --timeout <ms>             per-collective timeout (default 30000)
//   --profile <name>           capability profile (default full)
//   --transport mpi|ccl        collectives on MPI (default) or on oneCCL
//   --dump-dir <dir>           flight dumps on failure
//   --flight-entries <n>       flight recorder ring size

import { parseArgs } from 'node:util';
import { PROFILE_NAMES, type ProfileName } from '../capabilities.ts';
import { CclUnavailableError } from '../ccl/native.ts';
import type { LaunchResult } from '../launch.ts';
import { launchMpi } from './launch.ts';
import { MpiUnavailableError } from './native.ts';
import { OUTCOME_TAG } from './world.ts';

const { values } = parseArgs({
  options: {
    module: { type: 'string' },
    export: { type: 'string' },
    args: { type: 'string' },
    timeout: { type: 'string' },
    profile: { type: 'string' },
    transport: { type: 'string' },
    'dump-dir': { type: 'string' },
    'flight-entries': { type: 'string' },
  },
});

function usage(msg: string): never {
  console.error(
    `moe-actors mpi run: ${msg}\nusage: mpiexec.mpich -n N node src/comm/mpi/run.mjs --module <rank program> [--transport mpi|ccl] [--args <json>] [--timeout <ms>] [--profile <${PROFILE_NAMES.join('|')}>] [--dump-dir <dir>]`,
  );
  process.exit(2);
}

if (!values.module) usage('--module is required');
let args: unknown = null;
try {
  args = values.args === undefined ? null : JSON.parse(values.args);
} catch (e) {
  usage(`--args is not valid JSON: ${(e as Error).message}`);
}
const transport = values.transport ?? 'mpi';
if (transport !== 'mpi' && transport !== 'ccl') usage(`--transport must be mpi or ccl (got ${transport})`);
if (values.profile && !(PROFILE_NAMES as readonly string[]).includes(values.profile))
  usage(`unknown --profile ${values.profile}`);

try {
  const launcher: (...a: Parameters<typeof launchMpi>) => Promise<LaunchResult<unknown>> =
    transport === 'ccl' ? (await import('../ccl/launch.ts')).launchCcl : launchMpi;
  const res = await launcher(
    {
      transport,
      size: 0,
      timeoutMs: values.timeout ? Number(values.timeout) : undefined,
      profile: values.profile as ProfileName | undefined,
      dumpDir: values['dump-dir'],
      flightEntries: values['flight-entries'] ? Number(values['flight-entries']) : undefined,
    },
    { module: values.module!, exportName: values.export },
    args,
  );
  const o = res.outcomes[0]!;
  process.stdout.write(OUTCOME_TAG + JSON.stringify(o) + '\n');
  if (!o.ok) console.error(`moe-actors mpi rank ${o.rank}: ${o.error}`);
  process.exitCode = o.ok ? 0 : 1;
} catch (e) {
  // Only failures before MPI is up reach here (unavailable binding, wrong launcher).
  console.error(
    `moe-actors mpi run: ${e instanceof MpiUnavailableError || e instanceof CclUnavailableError ? e.message : ((e as Error).stack ?? e)}`,
  );
  process.exitCode = 2;
}
