// CPU features read at run time (Linux /proc/cpuinfo), before the native kernels load: machines of one kind differ
// (Intel Xeon or AMD EPYC, with or without AVX-512), and choices made before libgomp starts cannot ask the addon.
import { readFileSync } from 'node:fs';

let cached: Set<string> | undefined;

/** The first CPU's flags (empty where /proc/cpuinfo is unreadable: callers then choose the conservative path). */
export function cpuFlags(): ReadonlySet<string> {
  if (cached) return cached;
  let flags: string[] = [];
  try {
    const line = /^flags\s*:(.*)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'));
    flags = line ? line[1]!.trim().split(/\s+/) : [];
  } catch {
    flags = [];
  }
  cached = new Set(flags);
  return cached;
}

/**
 * AVX-512 as oneDNN's avx512_core needs it (F, BW, VL, DQ). The kernels' auto rule (native/kernels/src/dnnl.cc
 * matmulUseDnnl) puts matmuls on oneDNN only there, from oneDNN's own ISA detection; this is the same test.
 */
export function hasAvx512Core(flags: ReadonlySet<string> = cpuFlags()): boolean {
  return ['avx512f', 'avx512bw', 'avx512vl', 'avx512dq'].every((f) => flags.has(f));
}
