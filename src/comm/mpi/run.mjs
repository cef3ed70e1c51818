// Entry of one MPI rank: `mpiexec.mpich -n N node src/comm/mpi/run.mjs --module <rank program> [options]`.
// Registers tsx's ESM loader (so the rank program and the transport can be TypeScript), then runs run.ts.
import { register } from 'tsx/esm/api';

register();
await import('./run.ts');
