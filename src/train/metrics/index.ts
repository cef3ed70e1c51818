// Metrics: torchtitan's console line and JSONL keys, tps/TFLOPs/MFU, memory per rank, comm bytes and phase
// times, sgemm peak, progress bars.
export { fmtCommas, fmtFloat, pyFixed, pyRound } from './format.ts';
export { formatConsoleLine, useColor, type ConsoleFields } from './console-line.ts';
export { mfuPctOf, tflopsOf, ThroughputMeter, type ThroughputWindow } from './throughput.ts';
export { GIB, memorySnapshot, type MemorySnapshot } from './memory.ts';
export { measureSgemmPeak, resolvePeakFlops, type PeakFlops, type SgemmPeak } from './peak.ts';
export { JsonlWriter } from './jsonl.ts';
export { createProgress, type Progress } from './progress.ts';
export { createMetricsLogger, MetricsLogger, type MetricsRecord, type StepMetrics } from './logger.ts';
