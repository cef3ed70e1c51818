// The MPI failure tests run the same misbehaving loop as the threads ones (threads-faults.ts), one rank per process.
export { rankMain, type FaultArgs } from './threads-faults.ts';
