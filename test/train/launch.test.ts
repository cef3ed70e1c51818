// The launchers' dry runs print the exact command without starting ranks, and bad input is refused with a reason.
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = fileURLToPath(new URL('../..', import.meta.url)).replace(/\/$/, '');
const tmp = mkdtempSync(join(tmpdir(), 'moe-launch-'));
const BIND = 'list:1-8:9-16:17-24:25-32:33-40:41-48:53-60:61-68:69-76:77-84:85-92:93-100';
// npm/npx export NODE (the node binary's path), which the launchers honour; the expected commands say plain "node".
// Under MPI every rank must use the same run folder, so the launchers add --job.run_name (fixed here by the env).
const baseEnv: NodeJS.ProcessEnv = { ...process.env, MOE_ACTORS_RUN_NAME: 'r1' };
delete baseEnv.NODE;

function run(script: string, args: string[], env: Record<string, string> = {}) {
  const r = spawnSync('bash', [join(repo, script), ...args], {
    cwd: repo,
    encoding: 'utf8',
    env: { ...baseEnv, ...env },
    timeout: 60_000,
  });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

describe('scripts/launch-mpi.sh', () => {
  it('--dry-run prints the mpiexec.mpich command with UCX_MEM_EVENTS=no, the rank count from the config, and the overrides', () => {
    const r = run('scripts/launch-mpi.sh', [
      '--dry-run',
      '--config',
      'configs/debug_ep4.toml',
      '--training.steps',
      '5',
      '--',
      '--metrics.log_freq',
      '2',
    ]);
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    expect(r.out).toBe(
      `UCX_MEM_EVENTS=no mpiexec.mpich -n 4 sh ${repo}/scripts/mpi-rank.sh 60 node --initial-old-space-size=128 ${repo}/bin/moe-actors.mjs train --config configs/debug_ep4.toml --transport mpi --training.steps 5 --metrics.log_freq 2 --job.run_name r1\n`,
    );
  });

  it('starts the MPI launcher with the same command and environment (a stub mpiexec.mpich records them)', () => {
    const bin = join(tmp, 'bin');
    spawnSync('mkdir', ['-p', bin]);
    const stub = join(bin, 'mpiexec.mpich');
    writeFileSync(stub, '#!/bin/sh\nprintf "UCX_MEM_EVENTS=%s\\n%s\\n" "$UCX_MEM_EVENTS" "$*"\n');
    chmodSync(stub, 0o755);
    const r = run('scripts/launch-mpi.sh', ['-n', '4', '--config', 'configs/debug_ep4.toml', '--training.steps', '7'], {
      PATH: `${bin}:${process.env.PATH}`,
    });
    expect(r.code).toBe(0);
    expect(r.out).toBe(
      `UCX_MEM_EVENTS=no\n-n 4 sh ${repo}/scripts/mpi-rank.sh 60 node --initial-old-space-size=128 ${repo}/bin/moe-actors.mjs train --config configs/debug_ep4.toml --transport mpi --training.steps 7 --job.run_name r1\n`,
    );
  });

  it('refuses plain mpiexec/mpirun (OpenMPI on Debian)', () => {
    for (const m of [
      ['--mpiexec', 'mpiexec'],
      ['--mpiexec', '/usr/bin/mpirun'],
    ]) {
      const r = run('scripts/launch-mpi.sh', ['--dry-run', ...m, '--config', 'configs/debug_ep4.toml']);
      expect(r.code).toBe(2);
      expect(r.err).toMatch(/refusing ".*(mpiexec|mpirun)": plain mpiexec\/mpirun is OpenMPI.*use mpiexec\.mpich/);
      expect(r.out).toBe('');
    }
    expect(
      run('scripts/launch-mpi.sh', ['--dry-run', '--config', 'configs/debug_ep4.toml'], { MPIEXEC: 'mpirun' }).code,
    ).toBe(2);
  });

  it('rejects a missing config, a rank count that does not match the degrees, and bad overrides', () => {
    let r = run('scripts/launch-mpi.sh', ['--dry-run', '-n', '4']);
    expect([r.code, r.out]).toEqual([2, '']);
    expect(r.err).toMatch(/missing --config <file>/);
    r = run('scripts/launch-mpi.sh', ['--dry-run', '--config', 'configs/nope.toml']);
    expect(r.err).toMatch(/config configs\/nope\.toml: no such file/);
    r = run('scripts/launch-mpi.sh', ['--dry-run', '-n', '8', '--config', 'configs/debug_ep4.toml']);
    expect([r.code, r.out]).toEqual([2, '']);
    expect(r.err).toMatch(/ranks not matching degrees: 8 ranks requested but dp_replicate 1 × dp_shard 4 = 4/);
    r = run('scripts/launch-mpi.sh', ['--dry-run', '--config', 'configs/debug_ep4.toml', '--training.stepz', '3']);
    expect(r.err).toMatch(/unknown field \[training\] stepz \(did you mean steps\?\)/);
    r = run('scripts/launch-mpi.sh', [
      '--dry-run',
      '--config',
      'configs/debug_ep4.toml',
      '--parallelism.expert_parallel_degree',
      '3',
    ]);
    expect(r.err).toMatch(/expert_parallel_degree 3 must divide dp_shard·cp·tp = 4/);
  });
});

describe('scripts/aurora/run_aurora.sh and job.pbs', () => {
  it('--dry-run prints modules, environment and the mpiexec line with 12 ranks per node and Aurora’s CPU binding', () => {
    const r = run('scripts/aurora/run_aurora.sh', [
      '--dry-run',
      '--config',
      'configs/deepseek_v3_1b_hsdp_ep6.toml',
      '--training.steps',
      '3',
    ]);
    expect(r.code).toBe(0);
    expect(r.out).toBe(
      [
        'module load mpich',
        'export ZE_FLAT_DEVICE_HIERARCHY=FLAT',
        'export UCX_MEM_EVENTS=no',
        'export OMP_NUM_THREADS=8',
        'export OPENBLAS_NUM_THREADS=8',
        `mpiexec -n 12 -ppn 12 --cpu-bind ${BIND} node --initial-old-space-size=128 ${repo}/bin/moe-actors.mjs train --config configs/deepseek_v3_1b_hsdp_ep6.toml --transport mpi --comm.ranks_per_node 12 --comm.blas_threads 8 --training.steps 3 --job.run_name r1`,
        '',
      ].join('\n'),
    );
    expect(r.err).toMatch(/12 ranks = dp_replicate 2 × dp_shard 6, EP 6/);
  });

  it('takes the node count from $PBS_NODEFILE and checks it against the config’s degrees', () => {
    const nodefile = join(tmp, 'nodes');
    writeFileSync(nodefile, 'x1000c0s0b0n0\nx1000c0s0b0n0\nx1000c0s1b0n0\n');
    let r = run('scripts/aurora/run_aurora.sh', ['--dry-run', '--config', 'configs/deepseek_v3_1b_ep12.toml'], {
      PBS_NODEFILE: nodefile,
    });
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/ranks not matching degrees: 24 ranks requested but dp_replicate 1 × dp_shard 12 = 12/);
    expect(r.err).toMatch(/2 node\(s\) × 12 ranks = 24 ranks/);
    r = run(
      'scripts/aurora/run_aurora.sh',
      ['--dry-run', '--config', 'configs/deepseek_v3_1b_ep12.toml', '--parallelism.data_parallel_shard_degree', '24'],
      { PBS_NODEFILE: nodefile },
    );
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^mpiexec -n 24 -ppn 12 --cpu-bind /m);
    r = run(
      'scripts/aurora/run_aurora.sh',
      ['--dry-run', '--nodes', '1', '--config', 'configs/deepseek_v3_1b_ep12.toml'],
      { PBS_NODEFILE: nodefile },
    );
    expect(r.out).toMatch(/^mpiexec -n 12 /m);
    r = run('scripts/aurora/run_aurora.sh', ['--dry-run']);
    expect([r.code, r.out]).toEqual([2, '']);
    expect(r.err).toMatch(/missing --config/);
  });

  it('job.pbs runs run_aurora.sh from the submission folder with CONFIG and OVERRIDES', () => {
    const nodefile = join(tmp, 'one-node');
    writeFileSync(nodefile, 'x1000c0s0b0n0\n');
    const r = spawnSync('bash', [join(repo, 'scripts/aurora/job.pbs')], {
      cwd: tmp,
      encoding: 'utf8',
      env: {
        ...baseEnv,
        PBS_O_WORKDIR: repo,
        PBS_NODEFILE: nodefile,
        CONFIG: 'configs/llama4_dense12.toml',
        OVERRIDES: '--training.steps 2 --metrics.log_freq 1',
        DRY_RUN: '1',
      },
    });
    expect(r.status).toBe(0);
    expect(r.stdout.trim().split('\n').at(-1)).toBe(
      `mpiexec -n 12 -ppn 12 --cpu-bind ${BIND} node --initial-old-space-size=128 ${repo}/bin/moe-actors.mjs train --config configs/llama4_dense12.toml --transport mpi --comm.ranks_per_node 12 --comm.blas_threads 8 --training.steps 2 --metrics.log_freq 1 --job.run_name r1`,
    );
    const noWorkdir = spawnSync('bash', [join(repo, 'scripts/aurora/job.pbs')], {
      cwd: tmp,
      encoding: 'utf8',
      env: { ...baseEnv, PBS_O_WORKDIR: '' },
    });
    expect(noWorkdir.status).not.toBe(0);
    expect(noWorkdir.stderr).toMatch(/submit this script with qsub/);
  });
});

describe('the options both launchers share (scripts/launch-args.sh)', () => {
  const launchers = [
    ['scripts/launch-mpi.sh', 'launch-mpi', 'configs/deepseek_v3_1b_ep12.toml', ['-n', '12']],
    ['scripts/aurora/run_aurora.sh', 'run_aurora', 'configs/deepseek_v3_1b_ep12.toml', ['--nodes', '1']],
  ] as const;
  it('refuse the same bad input with the same reason, each under its own name', () => {
    for (const [script, name, cfg] of launchers) {
      for (const [args, msg] of [
        [['--dry-run', '--config'], '--config needs a file'],
        [['--dry-run', '--config', cfg, '--transport'], '--transport needs mpi or ccl'],
        [['--dry-run', '--config', cfg, '--transport', 'gloo'], '--transport must be mpi or ccl (got "gloo")'],
        [['--dry-run', '--config', 'configs/nope.toml'], 'config configs/nope.toml: no such file'],
      ] as const) {
        const r = run(script, [...args]);
        expect([r.code, r.out], `${script} ${args.join(' ')}`).toEqual([2, '']);
        expect(r.err).toContain(`${name}: ${msg}`);
      }
    }
  });
  it('pass overrides through the same way, with or without "--", and keep a given run name', () => {
    for (const [script, , cfg, own] of launchers) {
      const a = run(script, [
        '--dry-run',
        ...own,
        '--config',
        cfg,
        '--training.steps',
        '3',
        '--',
        '--metrics.log_freq',
        '2',
        '--job.run_name',
        'mine',
      ]);
      const b = run(script, [
        '--dry-run',
        '--training.steps',
        '3',
        '--config',
        cfg,
        ...own,
        '--metrics.log_freq',
        '2',
        '--job.run_name',
        'mine',
      ]);
      expect(a.code, a.err).toBe(0);
      const last = (s: string) => s.trim().split('\n').at(-1)!;
      expect(last(a.out)).toBe(last(b.out));
      expect(last(a.out)).toMatch(/ --training\.steps 3 --metrics\.log_freq 2 --job\.run_name mine$/);
      expect(last(a.out)).not.toMatch(/run_name r1/);
    }
  });
});
