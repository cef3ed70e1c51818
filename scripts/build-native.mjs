#!/usr/bin/env node
// Builds the native addons in native/ with node-gyp. Runs as npm's `install` script, so `npm ci` builds them.
// Why a script instead of node-gyp's implicit root build: two addons with different system requirements —
// `kernels` needs a CBLAS (OpenBLAS via pkg-config, or MKL with MOE_ACTORS_BLAS=mkl) and is required;
// `mpi` needs MPICH and is optional: where MPICH is absent we write a marker saying why, and the `mpi`
// transport reports it instead of failing to load. `ccl` needs oneCCL and MPICH and is optional the same way.
import { execFileSync, spawnSync } from 'node:child_process';
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  readSync,
  realpathSync,
  symlinkSync,
  writeFileSync,
  rmSync,
} from 'node:fs';
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

function gyp(dir, commands = ['rebuild'], env = process.env) {
  const gypBin = require.resolve('node-gyp/bin/node-gyp.js');
  const args = [gypBin, ...commands, `--directory=${dir}`, ...nodedirArgs()];
  const jobs = process.env.MOE_ACTORS_BUILD_JOBS ?? '2';
  args.push(`--jobs=${jobs}`);
  const r = spawnSync(process.execPath, args, { stdio: 'inherit', env });
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

const only = process.argv[2]; // optional: "kernels" | "mpi" | "ccl"
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

// oneCCL is in no package registry: $CCL_ROOT (Aurora's frameworks module), MOE_ACTORS_CCL_ROOT, or a build
// next to the checkout's parent folder (../shared/oneccl, as on the CI machines). The first with the header wins.
function findOneCcl() {
  const candidates = [
    ['MOE_ACTORS_CCL_ROOT', process.env.MOE_ACTORS_CCL_ROOT],
    ['CCL_ROOT', process.env.CCL_ROOT],
    ['../shared/oneccl', resolve(root, '..', '..', 'shared', 'oneccl')],
    ['../shared/oneccl', resolve(root, '..', 'shared', 'oneccl')],
  ];
  for (const [from, dir] of candidates) {
    if (dir && existsSync(join(dir, 'include', 'oneapi', 'ccl.hpp')) && existsSync(join(dir, 'lib')))
      return { from, dir };
  }
  return null;
}

const isElf = (file) => {
  const fd = openSync(file, 'r');
  try {
    const b = Buffer.alloc(4);
    readSync(fd, b, 0, 4, 0);
    return b.toString('latin1') === '\x7fELF';
  } finally {
    closeSync(fd);
  }
};

// The real libccl behind libccl.so. Copies of the library folder made without preserving links hold the link
// target's name as a tiny text file (../shared/oneccl/lib/libccl.so reads "libccl.so.1"); such names are followed.
function realLibccl(libdir) {
  let file = join(libdir, 'libccl.so');
  for (let hop = 0; hop < 4 && existsSync(file); hop++) {
    file = realpathSync(file);
    if (isElf(file)) return file;
    file = join(dirname(file), readFileSync(file, 'utf8').trim());
  }
  return null;
}

if (!only || only === 'ccl') {
  const dir = join(root, 'native', 'ccl');
  const marker = join(dir, 'UNAVAILABLE');
  rmSync(marker, { force: true });
  const found = findOneCcl();
  const lib = found && realLibccl(join(found.dir, 'lib'));
  let why = null;
  if (!pkgConfigExists('mpich'))
    why =
      'MPICH development files not found by `pkg-config mpich` (oneCCL runs over MPI here).\nFix: apt-get install mpich libmpich-dev, then `npm run build:native ccl`.';
  else if (!found)
    why =
      'oneCCL not found ($CCL_ROOT, $MOE_ACTORS_CCL_ROOT and ../shared/oneccl have no include/oneapi/ccl.hpp).\nFix: set CCL_ROOT to a oneCCL install (on Aurora: module load frameworks), then `npm run build:native ccl`.';
  else if (!lib)
    why = `oneCCL at ${found.dir} has no loadable lib/libccl.so.\nFix: point CCL_ROOT at a complete oneCCL install, then \`npm run build:native ccl\`.`;
  if (why) {
    mkdirSync(dir, { recursive: true });
    writeFileSync(marker, why + '\n');
    console.warn('moe-actors: skipping native/ccl: ' + why.split('\n', 1)[0]);
  } else {
    console.log(`moe-actors: building native/ccl (oneCCL at ${found.dir}, from ${found.from})`);
    // The loader looks libccl up by its soname (libccl.so.1) along the rpath; this folder holds real links to the
    // library under both names, so a folder whose links were flattened to text still works.
    const linkdir = join(dir, 'build', 'oneccl-lib');
    const ok =
      gyp(dir, ['clean']) &&
      (() => {
        mkdirSync(linkdir, { recursive: true });
        for (const name of ['libccl.so', 'libccl.so.1']) symlinkSync(lib, join(linkdir, name));
        // Where the headers are, for programs built against the same library (bench:comm's C++ baseline).
        writeFileSync(join(dir, 'build', 'oneccl-root.txt'), found.dir + '\n');
        return true;
      })() &&
      gyp(dir, ['configure', 'build'], {
        ...process.env,
        MOE_ACTORS_CCL_INCLUDE: join(found.dir, 'include'),
        MOE_ACTORS_CCL_LINKDIR: linkdir,
        MOE_ACTORS_CCL_LIBDIR: join(found.dir, 'lib'),
      });
    if (!ok) {
      writeFileSync(marker, 'native/ccl failed to compile; rerun `npm run build:native ccl` to see why.\n');
      console.error('moe-actors: native ccl binding failed to build.');
      failed = true;
    }
  }
}

process.exit(failed ? 1 : 0);
