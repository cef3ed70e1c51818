#!/usr/bin/env node
// Builds the native addons in native/ with node-gyp. Runs as npm's `install` script, so `npm ci` builds them.
// Why a script instead of node-gyp's implicit root build: two addons with different system requirements —
// `kernels` needs a CBLAS (OpenBLAS via pkg-config, or MKL with MOE_ACTORS_BLAS=mkl) and is required;
// `mpi` needs MPICH and is optional: where MPICH is absent we write a marker saying why, and the `mpi`
// transport reports it instead of failing to load.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync, rmSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);

function pkgConfigExists(name) {
  return spawnSync('pkg-config', ['--exists', name]).status === 0;
}

// node-gyp downloads headers unless told where Node's own headers are; this machine kind has them under
// <prefix>/include/node. Passing --nodedir keeps the build offline even when no .npmrc sets it.
function nodedirArgs() {
  const prefix = resolve(dirname(process.execPath), '..');
  if (existsSync(join(prefix, 'include', 'node', 'node_api.h'))) return [`--nodedir=${prefix}`];
  if (process.env.npm_config_nodedir) return [`--nodedir=${process.env.npm_config_nodedir}`];
  return [];
}

function gyp(dir) {
  const gypBin = require.resolve('node-gyp/bin/node-gyp.js');
  const args = [gypBin, 'rebuild', `--directory=${dir}`, ...nodedirArgs()];
  const jobs = process.env.MOE_ACTORS_BUILD_JOBS ?? '2';
  args.push(`--jobs=${jobs}`);
  const r = spawnSync(process.execPath, args, { stdio: 'inherit', env: process.env });
  return r.status === 0;
}

// oneDNN for the matmuls (optional): `pkg-config dnnl` where a .pc file exists, else dnnl.hpp and libdnnl.so on
// the usual paths (Debian's libdnnl-dev ships no .pc file), or under DNNLROOT. MOE_ACTORS_DNNL=off builds without.
function findDnnl() {
  if (process.env.MOE_ACTORS_DNNL === 'off') return { why: 'MOE_ACTORS_DNNL=off' };
  for (const name of ['dnnl', 'onednn']) {
    if (pkgConfigExists(name)) {
      const v = (args) => execFileSync('pkg-config', [...args, name], { encoding: 'utf8' }).trim();
      return { inc: v(['--variable=includedir']), lib: v(['--variable=libdir']), how: `pkg-config ${name}` };
    }
  }
  const roots = [process.env.DNNLROOT, '/usr', '/usr/local'].filter(Boolean);
  const libSubdirs = ['lib/x86_64-linux-gnu', 'lib/aarch64-linux-gnu', 'lib64', 'lib'];
  for (const r of roots) {
    const inc = join(r, 'include');
    if (!existsSync(join(inc, 'oneapi', 'dnnl', 'dnnl.hpp'))) continue;
    for (const s of libSubdirs) {
      const lib = join(r, s);
      if (existsSync(join(lib, 'libdnnl.so'))) return { inc, lib, how: `found ${join(lib, 'libdnnl.so')}` };
    }
  }
  return { why: 'no `pkg-config dnnl` and no oneapi/dnnl/dnnl.hpp + libdnnl.so under ' + roots.join(', ') };
}

const only = process.argv[2]; // optional: "kernels" | "mpi"
let failed = false;

if (!only || only === 'kernels') {
  const blas = process.env.MOE_ACTORS_BLAS ?? 'openblas';
  if (blas === 'openblas' && !pkgConfigExists('openblas')) {
    console.error(
      'moe-actors: cannot build native kernels: OpenBLAS not found by `pkg-config openblas`.\n' +
        '  Fix: install it (Debian/Ubuntu: `apt-get install libopenblas-dev pkg-config`, or run scripts/setup.sh as root),\n' +
        '  or build against MKL with MOE_ACTORS_BLAS=mkl and MKLROOT set.',
    );
    process.exit(1);
  }
  const dnnl = findDnnl();
  if (dnnl.lib) {
    process.env.MOE_ACTORS_DNNL_INCDIR = dnnl.inc;
    process.env.MOE_ACTORS_DNNL_LIBDIR = dnnl.lib;
  } else {
    delete process.env.MOE_ACTORS_DNNL_INCDIR;
    delete process.env.MOE_ACTORS_DNNL_LIBDIR;
  }
  console.log(
    `moe-actors: building native/kernels (BLAS: ${blas}; oneDNN: ${
      dnnl.lib ? dnnl.how : `not used, ${dnnl.why}; every matmul uses BLAS (install libdnnl-dev for oneDNN)`
    })`,
  );
  if (!gyp(join(root, 'native', 'kernels'))) {
    console.error('moe-actors: native kernels failed to build (see the compiler output above).');
    failed = true;
  }
}

if (!only || only === 'mpi') {
  const marker = join(root, 'native', 'mpi', 'UNAVAILABLE');
  rmSync(marker, { force: true });
  if (!pkgConfigExists('mpich')) {
    const why =
      'MPICH development files not found by `pkg-config mpich` when the addon was built.\n' +
      'Fix: apt-get install mpich libmpich-dev (or run scripts/setup.sh as root), then `npm run build:native`.';
    mkdirSync(dirname(marker), { recursive: true });
    writeFileSync(marker, why + '\n');
    console.warn('moe-actors: skipping native/mpi: ' + why);
  } else {
    console.log('moe-actors: building native/mpi (MPICH)');
    if (!gyp(join(root, 'native', 'mpi'))) {
      writeFileSync(marker, 'native/mpi failed to compile; rerun `npm run build:native mpi` to see why.\n');
      console.error('moe-actors: native mpi binding failed to build.');
      failed = true;
    }
  }
}

process.exit(failed ? 1 : 0);
