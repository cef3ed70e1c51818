// The event-loop check of threads-loop.ts, one rank per MPI process.
export { rankMain } from './threads-loop.ts';
