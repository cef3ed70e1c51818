// Corrupted, crafted and hostile checkpoints. Each one must be refused by name (CheckpointError → exit 1), never
// read a file outside its step folder, never hang on a device or FIFO, and leave the earlier checkpoint alone.

import { execFileSync } from 'node:child_process';
import {
  appendFileSync,
  mkdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  truncateSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import {
  latestComplete,
  listCheckpoints,
  readCheckpoint,
  verifyCheckpoint,
} from '../../../src/train/checkpoint/index.ts';
import {
  attempt,
  editManifest,
  manifestOf,
  payload,
  replaceVouched,
  safetensorsBytes,
  sha256,
  SLICES_KEY,
  type Case,
  type Sandbox,
} from '../harness.ts';

/** Verify (checksums) and read the whole of step-2; the first refusal is the outcome. */
const load = (sb: Sandbox) =>
  attempt(() => {
    verifyCheckpoint(sb.step2, 'checksum', 2);
    readCheckpoint(sb.step2);
  });

/** The manifest of step-2 lists `name` (with the size and hash of `target`) in place of rank0.json. */
function pointAt(sb: Sandbox, name: unknown, target: string) {
  const bytes = readFileSync(target);
  editManifest(sb.step2, (m) => {
    const f = m.files.find((x: { name: string }) => x.name === 'rank0.json');
    f.name = name;
    f.bytes = bytes.length;
    f.sha256 = sha256(bytes);
  });
}

const field = (edit: (m: Record<string, any>) => void) => (sb: Sandbox) => {
  editManifest(sb.step2, edit);
  return load(sb);
};

const corrupted = /step-2.*(corrupted|not|missing|lacks)/;

export const checkpointCases: Case[] = [
  // ---- names that leave the step folder ----
  {
    kind: 'checkpoint',
    name: 'a ../ name pointing at a file outside, with its right size and hash',
    exit: 1,
    words: [/secret\.bin/, /is a path, not a file name/, /cannot be used/],
    run: (sb) => (pointAt(sb, '../../../outside/secret.bin', sb.secret), load(sb)),
  },
  {
    kind: 'checkpoint',
    name: 'an absolute name with the right size and hash',
    exit: 1,
    words: [/is a path, not a file name/],
    run: (sb) => (pointAt(sb, sb.secret, sb.secret), load(sb)),
  },
  {
    kind: 'checkpoint',
    name: 'the name ".."',
    exit: 1,
    words: [/".."/, /not a plain file name/],
    run: (sb) => (pointAt(sb, '..', sb.secret), load(sb)),
  },
  {
    kind: 'checkpoint',
    name: 'the name "."',
    exit: 1,
    words: [/not a plain file name/],
    run: (sb) => (pointAt(sb, '.', sb.secret), load(sb)),
  },
  {
    kind: 'checkpoint',
    name: 'a name going down and up again',
    exit: 1,
    words: [/is a path/],
    run: (sb) => (pointAt(sb, 'rank0.safetensors/../../../outside/secret.bin', sb.secret), load(sb)),
  },
  {
    kind: 'checkpoint',
    name: 'a backslash path',
    exit: 1,
    words: [/is a path/],
    run: (sb) => (pointAt(sb, '..\\..\\outside\\secret.bin', sb.secret), load(sb)),
  },
  {
    kind: 'checkpoint',
    name: 'an empty name',
    exit: 1,
    words: [/is not a file name/],
    run: (sb) => (pointAt(sb, '', sb.secret), load(sb)),
  },
  {
    kind: 'checkpoint',
    name: 'a number as name',
    exit: 1,
    words: [/is not a file name/],
    run: (sb) => (pointAt(sb, 42, sb.secret), load(sb)),
  },
  {
    kind: 'checkpoint',
    name: 'a name with a NUL byte',
    exit: 1,
    words: [/is a path/],
    run: (sb) => (pointAt(sb, 'rank0.json\0x', sb.secret), load(sb)),
  },
  {
    kind: 'checkpoint',
    name: 'a device path (/dev/zero) as name',
    exit: 1,
    words: [/is a path/],
    run: (sb) => (editManifest(sb.step2, (m) => (m.files[0].name = '/dev/zero')), load(sb)),
  },
  // ---- what is at a good name ----
  {
    kind: 'checkpoint',
    name: 'a symlink to a file outside, same content',
    exit: 1,
    words: [/rank0\.json is a symbolic link/, /regular files inside its step folder/],
    setup: (sb) => writeFileSync(join(sb.outside, 'copy.json'), readFileSync(join(sb.step2, 'rank0.json'))),
    run: (sb) => {
      const p = join(sb.step2, 'rank0.json');
      unlinkSync(p);
      symlinkSync(join(sb.outside, 'copy.json'), p);
      return load(sb);
    },
  },
  {
    kind: 'checkpoint',
    name: 'a symlink to /dev/zero (would hash forever)',
    exit: 1,
    words: [/symbolic link/],
    run: (sb) => (
      unlinkSync(join(sb.step2, 'rank1.json')), symlinkSync('/dev/zero', join(sb.step2, 'rank1.json')), load(sb)
    ),
  },
  {
    kind: 'checkpoint',
    name: 'a relative symlink inside the folder',
    exit: 1,
    words: [/symbolic link/],
    run: (sb) => (
      unlinkSync(join(sb.step2, 'rank1.json')), symlinkSync('rank0.json', join(sb.step2, 'rank1.json')), load(sb)
    ),
  },
  {
    kind: 'checkpoint',
    name: 'a FIFO in place of a shard (a read would block)',
    exit: 1,
    words: [/rank0\.safetensors is not a regular file/],
    run: (sb) => (
      unlinkSync(join(sb.step2, 'rank0.safetensors')),
      execFileSync('mkfifo', [join(sb.step2, 'rank0.safetensors')]),
      load(sb)
    ),
  },
  {
    kind: 'checkpoint',
    name: 'a folder in place of a shard',
    exit: 1,
    words: [/not a regular file/],
    run: (sb) => (unlinkSync(join(sb.step2, 'rank0.json')), mkdirSync(join(sb.step2, 'rank0.json')), load(sb)),
  },
  {
    kind: 'checkpoint',
    name: 'a missing shard',
    exit: 1,
    words: [/rank1\.safetensors is missing/],
    run: (sb) => (unlinkSync(join(sb.step2, 'rank1.safetensors')), load(sb)),
  },
  {
    kind: 'checkpoint',
    name: 'a shard one byte longer',
    exit: 1,
    words: [/rank0\.safetensors is corrupted: \d+ bytes, the manifest lists/],
    run: (sb) => (appendFileSync(join(sb.step2, 'rank0.safetensors'), 'x'), load(sb)),
  },
  {
    kind: 'checkpoint',
    name: 'a truncated shard',
    exit: 1,
    words: [/corrupted: \d+ bytes/],
    run: (sb) => (truncateSync(join(sb.step2, 'rank1.safetensors'), 10), load(sb)),
  },
  {
    kind: 'checkpoint',
    name: 'a flipped byte in tensor data',
    exit: 1,
    words: [/rank0\.safetensors is corrupted: SHA-256/],
    run: (sb) => {
      const p = join(sb.step2, 'rank0.safetensors');
      const b = readFileSync(p);
      b[b.length - 3]! ^= 0xff;
      writeFileSync(p, b);
      return load(sb);
    },
  },
  // ---- the manifest itself ----
  {
    kind: 'checkpoint',
    name: 'no manifest (crashed write)',
    exit: 1,
    words: [/step-2 is incomplete: no manifest\.json/],
    run: (sb) => (unlinkSync(join(sb.step2, 'manifest.json')), load(sb)),
  },
  {
    kind: 'checkpoint',
    name: 'manifest is a symlink to one outside',
    exit: 1,
    words: [/manifest\.json is a symbolic link/],
    setup: (sb) => writeFileSync(join(sb.outside, 'm.json'), readFileSync(join(sb.step2, 'manifest.json'))),
    run: (sb) => (
      unlinkSync(join(sb.step2, 'manifest.json')),
      symlinkSync(join(sb.outside, 'm.json'), join(sb.step2, 'manifest.json')),
      load(sb)
    ),
  },
  {
    kind: 'checkpoint',
    name: 'manifest is a dangling symlink',
    exit: 1,
    words: [/manifest\.json is a symbolic link/],
    run: (sb) => (
      unlinkSync(join(sb.step2, 'manifest.json')),
      symlinkSync('/nonexistent/m.json', join(sb.step2, 'manifest.json')),
      load(sb)
    ),
  },
  {
    kind: 'checkpoint',
    name: 'manifest is a folder',
    exit: 1,
    words: [/manifest\.json is not a regular file/],
    run: (sb) => (unlinkSync(join(sb.step2, 'manifest.json')), mkdirSync(join(sb.step2, 'manifest.json')), load(sb)),
  },
  {
    kind: 'checkpoint',
    name: 'manifest of 17 MiB',
    exit: 1,
    words: [/more than a manifest can be/],
    run: (sb) => (writeFileSync(join(sb.step2, 'manifest.json'), ' '.repeat(17 << 20)), load(sb)),
  },
  {
    kind: 'checkpoint',
    name: 'manifest is not JSON',
    exit: 1,
    words: [/manifest\.json is not valid JSON/],
    run: (sb) => (writeFileSync(join(sb.step2, 'manifest.json'), '{"format": "moe-actors/checkpoint",'), load(sb)),
  },
  {
    kind: 'checkpoint',
    name: 'manifest is JSON null',
    exit: 1,
    words: [/not valid JSON \(not a JSON object\)/],
    run: (sb) => (writeFileSync(join(sb.step2, 'manifest.json'), 'null'), load(sb)),
  },
  {
    kind: 'checkpoint',
    name: 'manifest is a JSON array',
    exit: 1,
    words: [/not a JSON object/],
    run: (sb) => (writeFileSync(join(sb.step2, 'manifest.json'), '[1,2]'), load(sb)),
  },
  {
    kind: 'checkpoint',
    name: 'manifest of another format',
    exit: 1,
    words: [/not a moe-actors checkpoint manifest/],
    run: field((m) => (m.format = 'torch.distributed.checkpoint')),
  },
  {
    kind: 'checkpoint',
    name: 'manifest of a newer version',
    exit: 1,
    words: [/format version 2; this moe-actors reads version 1/],
    run: field((m) => (m.version = 2)),
  },
  {
    kind: 'checkpoint',
    name: 'manifest names another step',
    exit: 1,
    words: [/says step 7 but its folder is step 2/],
    run: field((m) => (m.step = 7)),
  },
  {
    kind: 'checkpoint',
    name: 'step -2',
    exit: 1,
    words: [/lacks its step|step -2 is not an integer/],
    run: (sb) => (editManifest(sb.step2, (m) => (m.step = -2)), attempt(() => readCheckpoint(sb.step2))),
  },
  {
    kind: 'checkpoint',
    name: 'worldSize 0',
    exit: 1,
    words: [corrupted, /worldSize 0 is not an integer in \[1,/],
    run: field((m) => (m.worldSize = 0)),
  },
  {
    kind: 'checkpoint',
    name: 'worldSize 1.5',
    exit: 1,
    words: [/worldSize 1\.5/],
    run: field((m) => (m.worldSize = 1.5)),
  },
  {
    kind: 'checkpoint',
    name: 'worldSize 1e9',
    exit: 1,
    words: [/worldSize 1000000000/],
    run: field((m) => (m.worldSize = 1e9)),
  },
  {
    kind: 'checkpoint',
    name: 'worldSize as a string',
    exit: 1,
    words: [/worldSize "2"/],
    run: field((m) => (m.worldSize = '2')),
  },
  {
    kind: 'checkpoint',
    name: 'worldSize smaller than the ranks listed',
    exit: 1,
    words: [/worldSize is 1/],
    run: field((m) => (m.worldSize = 1)),
  },
  {
    kind: 'checkpoint',
    name: 'mesh degree 0',
    exit: 1,
    words: [/mesh degree ep = 0/],
    run: field((m) => (m.mesh.ep = 0)),
  },
  {
    kind: 'checkpoint',
    name: 'mesh degree 2.5',
    exit: 1,
    words: [/mesh degree dp_shard = 2\.5/],
    run: field((m) => (m.mesh.dp_shard = 2.5)),
  },
  {
    kind: 'checkpoint',
    name: 'mesh degree negative, unused by the load',
    exit: 1,
    words: [/mesh degree etp = -1/],
    run: field((m) => (m.mesh.etp = -1)),
  },
  {
    kind: 'checkpoint',
    name: 'mesh degrees that do not multiply to the world size',
    exit: 1,
    words: [/dp_replicate·dp_shard·tp·pp·cp = 4, but worldSize is 2/],
    run: field((m) => (m.mesh.dp_replicate = 2)),
  },
  {
    kind: 'checkpoint',
    name: 'ep that does not divide dp_shard·cp',
    exit: 1,
    words: [/ep = 3 does not divide/],
    run: field((m) => (m.mesh.ep = 3)),
  },
  {
    kind: 'checkpoint',
    name: 'mesh is a list',
    exit: 1,
    words: [/mesh is not an object/],
    run: field((m) => (m.mesh = [2, 2])),
  },
  {
    kind: 'checkpoint',
    name: 'configHash missing',
    exit: 1,
    words: [/configHash is not a string/],
    run: field((m) => delete m.configHash),
  },
  {
    kind: 'checkpoint',
    name: 'files is not a list',
    exit: 1,
    words: [/lacks its step or file list/],
    run: field((m) => (m.files = { a: 1 })),
  },
  {
    kind: 'checkpoint',
    name: 'a file entry of rank 7 in a world of 2',
    exit: 1,
    words: [/rank 7 is not a rank of a world of 2/],
    run: field((m) => (m.files[0].rank = 7)),
  },
  {
    kind: 'checkpoint',
    name: 'a file entry of rank -1',
    exit: 1,
    words: [/rank -1/],
    run: field((m) => (m.files[0].rank = -1)),
  },
  {
    kind: 'checkpoint',
    name: 'bytes -1',
    exit: 1,
    words: [/bytes -1 is not a size/],
    run: field((m) => (m.files[0].bytes = -1)),
  },
  {
    kind: 'checkpoint',
    name: 'bytes 1e300',
    exit: 1,
    words: [/bytes 1e\+300 is not a size/],
    run: field((m) => (m.files[0].bytes = 1e300)),
  },
  {
    kind: 'checkpoint',
    name: 'bytes as a string',
    exit: 1,
    words: [/bytes "100" is not a size/],
    run: field((m) => (m.files[0].bytes = '100')),
  },
  {
    kind: 'checkpoint',
    name: 'sha256 not hex',
    exit: 1,
    words: [/sha256 is not 64 hex digits/],
    run: field((m) => (m.files[0].sha256 = 'z'.repeat(64))),
  },
  {
    kind: 'checkpoint',
    name: 'a file listed twice',
    exit: 1,
    words: [/is listed twice/],
    run: field((m) => m.files.push({ ...m.files[0] })),
  },
  {
    kind: 'checkpoint',
    name: 'a file entry that is null',
    exit: 1,
    words: [/files\[0\] is not an entry/],
    run: field((m) => (m.files[0] = null)),
  },
  // ---- vouched-for content that is still wrong ----
  {
    kind: 'checkpoint',
    name: 'a slice outside its global tensor (unused by this load)',
    exit: 1,
    words: [
      /rank1\.safetensors is corrupted: tensor "optim\.exp_avg\.tok_embeddings\.weight": slice \[6, 60\) is outside \[0, 12\)/,
    ],
    run: (sb) => {
      const p = payload(1);
      const slices = { ...p.slices!, 'optim.exp_avg.tok_embeddings.weight': { globalShape: [4, 3], flat: [6, 60] } };
      const tensors = p.tensors as Record<string, { shape: number[]; data: Float32Array | Int32Array }>;
      replaceVouched(sb.step2, 'rank1.safetensors', stBytes(tensors, { [SLICES_KEY]: JSON.stringify(slices) }));
      return attempt(() => readCheckpoint(sb.step2, { ranks: [1] }));
    },
  },
  {
    kind: 'checkpoint',
    name: 'a slice for a tensor the file does not hold',
    exit: 1,
    words: [/a slice is given for "ghost"/],
    run: (sb) => {
      const p = payload(0);
      replaceVouched(
        sb.step2,
        'rank0.safetensors',
        stBytes(p.tensors as never, {
          [SLICES_KEY]: JSON.stringify({ ...p.slices!, ghost: { globalShape: [2], flat: [0, 1] } }),
        }),
      );
      return attempt(() => readCheckpoint(sb.step2, { ranks: [0] }));
    },
  },
  {
    kind: 'checkpoint',
    name: 'a slice with a negative global dimension',
    exit: 1,
    words: [/invalid globalShape/],
    run: (sb) => {
      const p = payload(0);
      replaceVouched(
        sb.step2,
        'rank0.safetensors',
        stBytes(p.tensors as never, {
          [SLICES_KEY]: JSON.stringify({
            ...p.slices!,
            'tok_embeddings.weight': { globalShape: [-4, 3], flat: [0, 6] },
          }),
        }),
      );
      return attempt(() => readCheckpoint(sb.step2, { ranks: [0] }));
    },
  },
  {
    kind: 'checkpoint',
    name: 'slices metadata that is not JSON',
    exit: 1,
    words: [/is not valid slice JSON/],
    run: (sb) => (
      replaceVouched(sb.step2, 'rank0.safetensors', stBytes(payload(0).tensors as never, { [SLICES_KEY]: '{nope' })),
      attempt(() => readCheckpoint(sb.step2, { ranks: [0] }))
    ),
  },
  {
    kind: 'checkpoint',
    name: 'rank extras that are not JSON',
    exit: 1,
    words: [/rank0\.json is not valid JSON/],
    run: (sb) => (
      replaceVouched(sb.step2, 'rank0.json', new TextEncoder().encode('{"data":')),
      attempt(() => readCheckpoint(sb.step2, { ranks: [0] }))
    ),
  },
  {
    kind: 'checkpoint',
    name: 'rank extras that are a JSON list',
    exit: 1,
    words: [/rank0\.json is not a JSON object/],
    run: (sb) => (
      replaceVouched(sb.step2, 'rank0.json', new TextEncoder().encode('[1]')),
      attempt(() => readCheckpoint(sb.step2, { ranks: [0] }))
    ),
  },
  // ---- listing and choosing ----
  {
    kind: 'checkpoint',
    name: 'the newest checkpoint crafted: resume picks the earlier one and says why',
    exit: 0,
    words: [/^1 step-2: .*is a path/],
    run: (sb) => {
      pointAt(sb, '../../../outside/secret.bin', sb.secret);
      const skipped: string[] = [];
      return attempt(
        () =>
          `${latestComplete(sb.folder, { skipped: (p) => skipped.push(`step-${p.step}: ${p.reason}`) })!.step} ${skipped.join('; ')}`,
      );
    },
  },
  {
    kind: 'checkpoint',
    name: 'listing a folder whose newest step holds a FIFO finishes',
    exit: 0,
    words: [/^complete 1; partial 2/],
    run: (sb) => {
      unlinkSync(join(sb.step2, 'rank1.json'));
      execFileSync('mkfifo', [join(sb.step2, 'rank1.json')]);
      return attempt(() => {
        const l = listCheckpoints(sb.folder);
        return `complete ${l.complete.map((c) => c.step)}; partial ${l.partial.map((p) => p.step)}`;
      });
    },
  },
  {
    kind: 'checkpoint',
    name: 'a step folder that is a file is ignored',
    exit: 0,
    words: [/^2$/],
    run: (sb) => (
      writeFileSync(join(sb.folder, 'step-9'), 'x'), attempt(() => String(latestComplete(sb.folder)!.step))
    ),
  },
  {
    kind: 'checkpoint',
    name: 'a good checkpoint still loads (control)',
    exit: 0,
    words: [/^2 ranks$/],
    run: (sb) => attempt(() => `${readCheckpoint(sb.step2).shards.length} ranks`),
  },
  {
    kind: 'checkpoint',
    name: 'a size-only listing refuses a symlinked shard without following it',
    exit: 0,
    words: [/partial 2: .*symbolic link/],
    run: (sb) => {
      rmSync(join(sb.step2, 'rank0.safetensors'));
      symlinkSync(join(sb.step1, 'rank0.safetensors'), join(sb.step2, 'rank0.safetensors'));
      return attempt(() => {
        const l = listCheckpoints(sb.folder, { verify: 'size' });
        return (
          l.partial.map((p) => `partial ${p.step}: ${p.reason}`).join('\n') + ` (${statSync(sb.step1).isDirectory()})`
        );
      });
    },
  },
];

/** safetensors bytes of tensors (sorted by name) with metadata, as the writer lays them out. */
function stBytes(
  tensors: Record<string, { shape: number[]; data: Float32Array | Int32Array }>,
  metadata: Record<string, string>,
): Uint8Array {
  const names = Object.keys(tensors).sort();
  const header: Record<string, unknown> = { __metadata__: metadata };
  let off = 0;
  const parts: Uint8Array[] = [];
  for (const n of names) {
    const t = tensors[n]!;
    const b = new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
    header[n] = {
      dtype: t.data instanceof Int32Array ? 'I32' : 'F32',
      shape: t.shape,
      data_offsets: [off, off + b.length],
    };
    parts.push(b);
    off += b.length;
  }
  const data = new Uint8Array(off);
  let at = 0;
  for (const p of parts) {
    data.set(p, at);
    at += p.length;
  }
  return safetensorsBytes(header, data);
}

export { manifestOf, stBytes };
