// The hardening corpus's table machinery. A case runs against a fresh sandbox:
//
//   <root>/outside/          files a crafted input might point at (a "system file" with a known size and hash)
//   <root>/run/              the run folder: config.toml, checkpoint/step-1 and step-2 (both complete)
//
// and is checked for (1) the exit status (0, or the code the CLI would exit with for the error thrown: 1, or the
// error's own exitCode), (2) the key words of the message, (3) that nothing outside the run folder changed and
// (4) that the earlier checkpoint (step-1) still verifies. Cases run in-process (the validating functions, or the
// CLI's main()) so 150 of them take seconds, not minutes.

import { createHash } from 'node:crypto';
import { cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, lstatSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { expect } from 'vitest';
import { stepDir, verifyCheckpoint, writeCheckpoint, type RankPayload } from '../../src/train/checkpoint/index.ts';
import { SLICES_KEY } from '../../src/train/checkpoint/slices.ts';

export type Kind = 'config' | 'cli' | 'data' | 'checkpoint' | 'tensor' | 'resume' | 'resource' | 'signal' | 'fault';

export interface Outcome {
  code: number;
  message: string;
}

export interface Case {
  kind: Kind;
  name: string;
  run: (sb: Sandbox) => Outcome | Promise<Outcome>;
  /** Expected exit status. */
  exit: number;
  /** Every one must match the message. */
  words: RegExp[];
  /** Prepares files outside the run folder (before the snapshot of what must not change). */
  setup?: (sb: Sandbox) => void;
  /** The case changes step-1 on purpose (it tests that checkpoint): skip the "earlier checkpoint kept" check. */
  touchesStep1?: boolean;
}

export interface Sandbox {
  root: string;
  outside: string;
  secret: string;
  run: string;
  folder: string;
  step1: string;
  step2: string;
}

export const meta = { configHash: 'sha256:test', mesh: { dp_replicate: 1, dp_shard: 2, tp: 1, pp: 1, cp: 1, ep: 2 } };

export function payload(rank: number): RankPayload {
  const f = (len: number, seed: number) => Float32Array.from({ length: len }, (_, i) => Math.sin(seed * 1000 + i));
  return {
    tensors: {
      'tok_embeddings.weight': { shape: [6], data: f(6, rank) },
      'optim.exp_avg.tok_embeddings.weight': { shape: [6], data: f(6, rank + 10) },
      'layers.0.moe.tokens_per_expert': { shape: [2], data: Int32Array.of(rank, 7) },
    },
    slices: {
      'tok_embeddings.weight': { globalShape: [4, 3], flat: [rank * 6, rank * 6 + 6] },
      'optim.exp_avg.tok_embeddings.weight': { globalShape: [4, 3], flat: [rank * 6, rank * 6 + 6] },
    },
    extras: { data: { docIndex: rank * 5 }, rng: [1, 2, rank] },
  };
}

const base = mkdtempSync(join(tmpdir(), 'moe-hardening-'));
let serial = 0;

let template: string | null = null;

/** A fresh sandbox: a copy of one built once (writing a checkpoint fsyncs every file; copying does not). */
export function sandbox(): Sandbox {
  template ??= build(join(base, 'template')).root;
  const root = join(base, `c${serial++}`);
  cpSync(template, root, { recursive: true });
  return paths(root);
}

function paths(root: string): Sandbox {
  const run = join(root, 'run');
  const folder = join(run, 'checkpoint');
  return {
    root,
    outside: join(root, 'outside'),
    secret: join(root, 'outside', 'secret.bin'),
    run,
    folder,
    step1: stepDir(folder, 1),
    step2: stepDir(folder, 2),
  };
}

function build(root: string): Sandbox {
  const outside = join(root, 'outside');
  const run = join(root, 'run');
  const folder = join(run, 'checkpoint');
  mkdirSync(outside, { recursive: true });
  mkdirSync(folder, { recursive: true });
  const secret = join(outside, 'secret.bin');
  writeFileSync(secret, 'not a checkpoint file: a system file a crafted manifest points at\n');
  writeFileSync(join(outside, 'notes.txt'), 'untouched\n');
  const step1 = writeCheckpoint(folder, 1, [payload(0), payload(1)], meta);
  const step2 = writeCheckpoint(folder, 2, [payload(0), payload(1)], meta);
  return { root, outside, secret, run, folder, step1, step2 };
}

export function cleanup(): void {
  rmSync(base, { recursive: true, force: true });
}

/** Path → size and SHA-256 of every file under `dir` except the run folder (symlinks as their target text). */
export function snapshotOutside(sb: Sandbox): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (d: string) => {
    for (const name of readdirSync(d)) {
      const p = join(d, name);
      if (p === sb.run) continue;
      const st = lstatSync(p);
      if (st.isDirectory()) walk(p);
      else
        out.set(
          relative(sb.root, p),
          st.isFile()
            ? `${st.size}:${createHash('sha256').update(readFileSync(p)).digest('hex')}:${st.mtimeMs}`
            : String(st.mode),
        );
    }
  };
  walk(sb.root);
  return out;
}

/** The CLI's exit code for an error (cli/errors.ts reportError, without printing). */
export function exitCodeOf(e: unknown): number {
  const code = (e as { exitCode?: unknown })?.exitCode;
  return typeof code === 'number' && Number.isInteger(code) && code > 0 ? code : 1;
}

/** Runs `fn`, turning a throw into the CLI's exit status and message. */
export async function attempt(fn: () => unknown): Promise<Outcome> {
  try {
    const v = await fn();
    return { code: 0, message: typeof v === 'string' ? v : '' };
  } catch (e) {
    return { code: exitCodeOf(e), message: e instanceof Error ? e.message : String(e) };
  }
}

export async function checkCase(c: Case): Promise<void> {
  const sb = sandbox();
  c.setup?.(sb);
  const before = snapshotOutside(sb);
  const o = await c.run(sb);
  const label = `[${c.kind}] ${c.name}`;
  expect(o.code, `${label}: exit status (message: ${o.message.slice(0, 400)})`).toBe(c.exit);
  for (const w of c.words) expect(o.message, `${label}: key words ${w}`).toMatch(w);
  expect(snapshotOutside(sb), `${label}: nothing outside the run folder changed`).toEqual(before);
  if (!c.touchesStep1)
    expect(() => verifyCheckpoint(sb.step1, 'checksum', 1), `${label}: the earlier checkpoint is intact`).not.toThrow();
}

// ---- checkpoint mutation helpers ----

export function manifestOf(dir: string): Record<string, any> {
  return JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8'));
}

export function writeManifest(dir: string, m: unknown): void {
  writeFileSync(join(dir, 'manifest.json'), typeof m === 'string' ? m : JSON.stringify(m));
}

/** Edits the manifest of `dir` in place. */
export function editManifest(dir: string, edit: (m: Record<string, any>) => void): void {
  const m = manifestOf(dir);
  edit(m);
  writeManifest(dir, m);
}

/** Replaces a file of the checkpoint and re-vouches for it in the manifest (size and hash), so only its content is wrong. */
export function replaceVouched(dir: string, name: string, bytes: Uint8Array): void {
  writeFileSync(join(dir, name), bytes);
  editManifest(dir, (m) => {
    const f = m.files.find((x: { name: string }) => x.name === name);
    f.bytes = bytes.length;
    f.sha256 = createHash('sha256').update(bytes).digest('hex');
  });
}

/** A safetensors file from a header object and a data section. */
export function safetensorsBytes(
  header: unknown,
  data: Uint8Array = new Uint8Array(0),
  rawHeader?: Uint8Array,
): Uint8Array {
  let h = rawHeader ?? new TextEncoder().encode(JSON.stringify(header));
  const pad = (8 - (h.length % 8)) % 8;
  if (!rawHeader && pad) h = new TextEncoder().encode(JSON.stringify(header) + ' '.repeat(pad));
  const out = new Uint8Array(8 + h.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(h.length), true);
  out.set(h, 8);
  out.set(data, 8 + h.length);
  return out;
}

export const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

export { SLICES_KEY, stepDir };
