// The native addon (native/kernels) behind the Kernels interface. The addon's functions take exactly the
// interface's arguments, so this wrapper only binds them; argument checks (buffer lengths, index ranges) happen
// in C++, where an out-of-range write would otherwise corrupt memory, and surface as JS RangeErrors.
import type { BlasInfo, Kernels, MatmulLibrary } from './kernels-api.ts';

type Fn<K extends keyof Kernels> = Kernels[K];

export interface KernelsAddon {
  sgemm: Fn<'sgemm'>;
  setNumThreads: Fn<'setNumThreads'>;
  blasInfo(): BlasInfo & { ompThreads?: number };
  setMatmulLibrary: Fn<'setMatmulLibrary'>;
  gemmBf16: Fn<'gemmBf16'>;
  sgemmBf16: Fn<'sgemmBf16'>;
  sgemmBf16Groups: Fn<'sgemmBf16Groups'>;
  toBf16: Fn<'toBf16'>;
  toBf16Rows: Fn<'toBf16Rows'>;
  fromBf16: Fn<'fromBf16'>;
  rmsnormFwd: Fn<'rmsnormFwd'>;
  rmsnormBwd: Fn<'rmsnormBwd'>;
  swigluFwd: Fn<'swigluFwd'>;
  swigluBwd: Fn<'swigluBwd'>;
  swigluFwdBf16: Fn<'swigluFwdBf16'>;
  swigluBwdBf16: Fn<'swigluBwdBf16'>;
  rope: Fn<'rope'>;
  ropeBf16: Fn<'ropeBf16'>;
  attentionFwd: Fn<'attentionFwd'>;
  attentionBwd: Fn<'attentionBwd'>;
  attentionFwdBf16: Fn<'attentionFwdBf16'>;
  attentionBwdBf16: Fn<'attentionBwdBf16'>;
  crossEntropyFwd: Fn<'crossEntropyFwd'>;
  crossEntropyBwd: Fn<'crossEntropyBwd'>;
  embeddingFwd: Fn<'embeddingFwd'>;
  embeddingBwd: Fn<'embeddingBwd'>;
  gatherRows: Fn<'gatherRows'>;
  scatterAddRows: Fn<'scatterAddRows'>;
  gatherRowDot: Fn<'gatherRowDot'>;
  adamw: Fn<'adamw'>;
  add: Fn<'add'>;
  copy: Fn<'copy'>;
  zero: Fn<'zero'>;
  axpy: Fn<'axpy'>;
  scale: Fn<'scale'>;
  sumSquares: Fn<'sumSquares'>;
}

const METHODS = [
  'sgemm',
  'setNumThreads',
  'blasInfo',
  'setMatmulLibrary',
  'gemmBf16',
  'sgemmBf16',
  'sgemmBf16Groups',
  'toBf16',
  'toBf16Rows',
  'fromBf16',
  'rmsnormFwd',
  'rmsnormBwd',
  'swigluFwd',
  'swigluBwd',
  'swigluFwdBf16',
  'swigluBwdBf16',
  'rope',
  'ropeBf16',
  'attentionFwd',
  'attentionBwd',
  'attentionFwdBf16',
  'attentionBwdBf16',
  'crossEntropyFwd',
  'crossEntropyBwd',
  'embeddingFwd',
  'embeddingBwd',
  'gatherRows',
  'scatterAddRows',
  'gatherRowDot',
  'adamw',
  'add',
  'copy',
  'zero',
  'axpy',
  'scale',
  'sumSquares',
] as const satisfies readonly (keyof KernelsAddon)[];

export class NativeKernels implements Kernels {
  readonly impl = 'native' as const;
  readonly sgemm: Fn<'sgemm'>;
  readonly setNumThreads: Fn<'setNumThreads'>;
  readonly setMatmulLibrary: Fn<'setMatmulLibrary'>;
  readonly gemmBf16: Fn<'gemmBf16'>;
  readonly sgemmBf16: Fn<'sgemmBf16'>;
  readonly sgemmBf16Groups: Fn<'sgemmBf16Groups'>;
  readonly toBf16: Fn<'toBf16'>;
  readonly toBf16Rows: Fn<'toBf16Rows'>;
  readonly fromBf16: Fn<'fromBf16'>;
  readonly rmsnormFwd: Fn<'rmsnormFwd'>;
  readonly rmsnormBwd: Fn<'rmsnormBwd'>;
  readonly swigluFwd: Fn<'swigluFwd'>;
  readonly swigluBwd: Fn<'swigluBwd'>;
  readonly swigluFwdBf16: Fn<'swigluFwdBf16'>;
  readonly swigluBwdBf16: Fn<'swigluBwdBf16'>;
  readonly rope: Fn<'rope'>;
  readonly ropeBf16: Fn<'ropeBf16'>;
  readonly attentionFwd: Fn<'attentionFwd'>;
  readonly attentionBwd: Fn<'attentionBwd'>;
  readonly attentionFwdBf16: Fn<'attentionFwdBf16'>;
  readonly attentionBwdBf16: Fn<'attentionBwdBf16'>;
  readonly crossEntropyFwd: Fn<'crossEntropyFwd'>;
  readonly crossEntropyBwd: Fn<'crossEntropyBwd'>;
  readonly embeddingFwd: Fn<'embeddingFwd'>;
  readonly embeddingBwd: Fn<'embeddingBwd'>;
  readonly gatherRows: Fn<'gatherRows'>;
  readonly scatterAddRows: Fn<'scatterAddRows'>;
  readonly gatherRowDot: Fn<'gatherRowDot'>;
  readonly adamw: Fn<'adamw'>;
  readonly add: Fn<'add'>;
  readonly copy: Fn<'copy'>;
  readonly zero: Fn<'zero'>;
  readonly axpy: Fn<'axpy'>;
  readonly scale: Fn<'scale'>;
  readonly sumSquares: Fn<'sumSquares'>;

  constructor(private readonly addon: KernelsAddon) {
    const missing = METHODS.filter((m) => typeof addon[m] !== 'function');
    if (missing.length > 0) {
      throw new Error(
        `moe-actors: the native kernels addon is out of date (it lacks ${missing.join(', ')}).\n` +
          '  Rebuild it with `npm run build:native kernels`, or select the TypeScript reference with MOE_ACTORS_KERNELS=ts.',
      );
    }
    // Direct references (no wrapper closures): N-API calls are already ~0.1–1 µs; keep the JS side free.
    this.sgemm = addon.sgemm;
    this.setNumThreads = addon.setNumThreads;
    this.setMatmulLibrary = addon.setMatmulLibrary;
    this.gemmBf16 = addon.gemmBf16;
    this.sgemmBf16 = addon.sgemmBf16;
    this.sgemmBf16Groups = addon.sgemmBf16Groups;
    this.toBf16 = addon.toBf16;
    this.toBf16Rows = addon.toBf16Rows;
    this.fromBf16 = addon.fromBf16;
    this.rmsnormFwd = addon.rmsnormFwd;
    this.rmsnormBwd = addon.rmsnormBwd;
    this.swigluFwd = addon.swigluFwd;
    this.swigluBwd = addon.swigluBwd;
    this.swigluFwdBf16 = addon.swigluFwdBf16;
    this.swigluBwdBf16 = addon.swigluBwdBf16;
    this.rope = addon.rope;
    this.ropeBf16 = addon.ropeBf16;
    this.attentionFwd = addon.attentionFwd;
    this.attentionBwd = addon.attentionBwd;
    this.attentionFwdBf16 = addon.attentionFwdBf16;
    this.attentionBwdBf16 = addon.attentionBwdBf16;
    this.crossEntropyFwd = addon.crossEntropyFwd;
    this.crossEntropyBwd = addon.crossEntropyBwd;
    this.embeddingFwd = addon.embeddingFwd;
    this.embeddingBwd = addon.embeddingBwd;
    this.gatherRows = addon.gatherRows;
    this.scatterAddRows = addon.scatterAddRows;
    this.gatherRowDot = addon.gatherRowDot;
    this.adamw = addon.adamw;
    this.add = addon.add;
    this.copy = addon.copy;
    this.zero = addon.zero;
    this.axpy = addon.axpy;
    this.scale = addon.scale;
    this.sumSquares = addon.sumSquares;
  }

  blasInfo(): BlasInfo {
    const i = this.addon.blasInfo();
    const out: BlasInfo = { name: i.name, threads: i.threads };
    if (i.corename !== undefined) out.corename = i.corename;
    if (i.config !== undefined) out.config = i.config;
    if (i.coretypeSource !== undefined) out.coretypeSource = i.coretypeSource;
    if (i.ompWaitPolicy !== undefined) out.ompWaitPolicy = i.ompWaitPolicy;
    if (i.threadTimeout) out.threadTimeout = i.threadTimeout;
    if (i.threadTimeoutSource) out.threadTimeoutSource = i.threadTimeoutSource as BlasInfo['threadTimeoutSource'];
    if (i.matmulMode !== undefined) out.matmulMode = i.matmulMode as MatmulLibrary;
    if (i.onednn !== undefined) out.onednn = i.onednn;
    if (i.onednnVersion) out.onednnVersion = i.onednnVersion;
    if (i.onednnIsa) out.onednnIsa = i.onednnIsa;
    if (i.f32Matmuls) out.f32Matmuls = i.f32Matmuls;
    if (i.onednnStatus) out.onednnStatus = i.onednnStatus;
    if (i.bf16Dot !== undefined) out.bf16Dot = i.bf16Dot;
    return out;
  }
}
