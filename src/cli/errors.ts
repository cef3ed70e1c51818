// How the CLI reports failures: one line naming the cause (and the fix, which the error messages carry), a
// non-zero exit code, and a stack trace only when MOE_ACTORS_DEBUG is set.
import pc from 'picocolors';

/** Prints the error and returns the exit code to use (1, or the error's own `exitCode`: 130 for an interrupted run). */
export function reportError(e: unknown): number {
  const err = e instanceof Error ? e : new Error(String(e));
  console.error(pc.red(`moe-actors: ${err.message}`));
  if (process.env.MOE_ACTORS_DEBUG && err.stack) console.error(pc.dim(err.stack));
  const code = (err as { exitCode?: unknown }).exitCode;
  return typeof code === 'number' && Number.isInteger(code) && code > 0 ? code : 1;
}
