// moe-actors command line. Each command lives in its own module, loaded only when used (startup stays fast and a
// command's dependencies — native addons, browsers — are not touched by the others).
import { readFileSync } from 'node:fs';
import { Command, CommanderError } from 'commander';
import { reportError } from './errors.ts';
import { checkOptionValues, checkUnknownOptions } from './options.ts';

const VERSION = (
  JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }
).version;

export async function main(argv: string[]): Promise<void> {
  const program = new Command('moe-actors')
    .description('Train MoE transformers with torchtitan semantics as XState actors on every rank')
    .version(VERSION, '-V, --version', 'print the moe-actors version')
    .exitOverride()
    .showHelpAfterError()
    .showSuggestionAfterError()
    // An option that takes a value never takes the next option as it (`--config --training.steps 3`).
    .hook('preAction', (_program, cmd) => checkOptionValues(cmd));

  program
    .command('train')
    .description('train a model from a TOML job config (default: the embedded debug job)')
    .option('--config <path>', 'job config (TOML)')
    .option('--transport <name>', 'inproc | threads | mpi | ccl (overrides [comm] transport)')
    .option('--ranks <n>', 'world size on inproc/threads (overrides [comm] ranks)')
    .option('--live', 'one refreshing line per rank')
    .option('--dry-run', 'validate the config and print the plan; start no ranks')
    .option(
      '--fault <spec>',
      'inject a fault on inproc, e.g. kill:rank=2,group=ep,seq=1 (repeatable; see README)',
      (v: string, prev: string[] = []) => [...prev, v],
    )
    .option(
      '--start-over',
      'train from step 1 although the run folder has checkpoints (they are moved aside, not deleted)',
    )
    .option('--skip-resource-check', "start even if the plan exceeds this host's available memory or rank ceiling")
    .allowUnknownOption()
    .allowExcessArguments()
    .argument('[overrides...]', 'config overrides like --training.steps 20')
    .action(async (...a: unknown[]) => {
      const cmd = a[a.length - 1] as Command;
      const { runTrain } = await import('./train.ts');
      await runTrain(cmd.opts(), overridesOf(cmd));
    });

  program
    .command('grad')
    .description('one forward/backward from given weights and batch; write loss and gradients (parity tool)')
    .requiredOption(
      '--config <path>',
      'config with [model] and [training] seq_len (and [parallelism]/[comm] for --ranks)',
    )
    .requiredOption('--checkpoint <path>', 'weights (.safetensors, torchtitan names)')
    .requiredOption('--batch <path>', 'batch (.safetensors with int64 tokens, labels of shape (B, S))')
    .requiredOption('--out <path>', 'output .safetensors: loss and grad.<name>')
    .option('--ranks <n>', 'ranks of a distributed run (default 1: the single-rank model; under mpi, mpiexec decides)')
    .option(
      '--transport <name>',
      'inproc | threads | mpi | ccl (default: [comm] transport; mpi and ccl run inside mpiexec.mpich -n N)',
    )
    .allowUnknownOption()
    .allowExcessArguments()
    .argument('[overrides...]', 'config overrides like --parallelism.expert_parallel_degree 2')
    .action(async (...a: unknown[]) => {
      const cmd = a[a.length - 1] as Command;
      const { runGrad } = await import('./grad.ts');
      await runGrad(cmd.opts(), overridesOf(cmd));
    });

  program
    .command('plan')
    .description('print mesh, per-rank memory, chosen strategies and bytes per step for a job config')
    .option('--config <path>', 'job config (TOML; default: the embedded debug job)')
    .option('--ranks <n>', 'world size (default: [comm] ranks)')
    .allowUnknownOption()
    .allowExcessArguments()
    .argument('[overrides...]', 'config overrides like --comm.profile xccl-2025')
    .action(async (...a: unknown[]) => {
      const cmd = a[a.length - 1] as Command;
      const { runPlan } = await import('./plan.ts');
      await runPlan(cmd.opts(), overridesOf(cmd));
    });

  program
    .command('project')
    .description(
      'project memory per rank by category, bytes per step per group, time per step, TPS and MFU on a system',
    )
    .option('--config <path>', 'job config (TOML; default: the embedded debug job)')
    .option('--system <name|path>', 'aurora-pvc | local | path/to/system.toml (configs/systems/)', 'local')
    .option('--ranks <n>', 'world size (default: [comm] ranks)')
    .option('--format <fmt>', 'text | json', 'text')
    .option('--rmax <x>', "routing imbalance: the busiest EP rank's rows over the mean (default: the system's)")
    .option('--compute-dtype <dtype>', "bf16 | fp32 (default: the system's, or [training] mixed_precision_param)")
    .option('--torch-compile', 'the torchtitan run uses torch.compile (its [compile] enable; changes what EP keeps)')
    .allowUnknownOption()
    .allowExcessArguments()
    .argument('[overrides...]', 'config overrides like --training.local_batch_size 16')
    .action(async (...a: unknown[]) => {
      const cmd = a[a.length - 1] as Command;
      const { runProject } = await import('./project.ts');
      await runProject(cmd.opts(), overridesOf(cmd));
    });

  program
    .command('inspect')
    .description('diff flight-recorder dumps of a failed run: who did not join which collective')
    .argument('<dumps...>', 'dump files or a folder of them')
    .action(async (dumps: string[]) => {
      const { runInspect } = await import('./inspect.ts');
      await runInspect(dumps);
    });

  program
    .command('view')
    .description('write trace.json (Perfetto) and timeline.html (self-contained, opens offline) for a run folder')
    .argument('<run>', 'outputs/<run>')
    .action(async (run: string) => {
      const { runView } = await import('./view.ts');
      await runView(run);
    });

  program
    .command('summary')
    .description('per-layer, per-state time table of a run')
    .argument('<run>', 'outputs/<run>')
    .action(async (run: string) => {
      const { runSummary } = await import('./view.ts');
      await runSummary(run);
    });

  program
    .command('machines')
    .description('export the protocol state machines as Mermaid or Graphviz')
    .option('--format <fmt>', 'mermaid | dot', 'mermaid')
    .option('--machine <name>', 'moe-layer | fsdp-unit | train-step (default: all)')
    .action(async (o: { format: string; machine?: string }) => {
      const { runMachines } = await import('./machines.ts');
      await runMachines(o);
    });

  program
    .command('ep-ops')
    .description(
      'check every EP dispatch strategy (dispatch → experts → combine, forward + backward) against one rank, and time it',
    )
    .option('--transport <name>', 'inproc | threads | mpi | ccl', 'inproc')
    .option('--ranks <n>', 'ranks on inproc/threads (under mpi and ccl, mpiexec decides)', '2')
    .option('--profile <name>', 'capability profile', 'full')
    .option('--tokens <n>', 'tokens per rank', '64')
    .option('--dim <n>', 'hidden size', '32')
    .option('--hidden <n>', 'expert hidden size', '32')
    .option('--shared-hidden <n>', 'shared expert hidden size (0: no shared expert)', '32')
    .option('--experts <n>', 'experts (a multiple of the ranks)', '8')
    .option('--topk <n>', 'experts per token', '2')
    .option('--reps <n>', 'repetitions per strategy', '3')
    .option('--strategy <name>', 'a2a | allgather-padded | allgather-rs | all', 'all')
    .option('--timeout <ms>', 'per-collective timeout', '30000')
    .action(async (o: import('./ep-ops.ts').EpOpsOptions) => {
      const { runEpOps } = await import('./ep-ops.ts');
      await runEpOps(o);
    });

  program
    .command('probe')
    .description('run each collective once on a transport and print what works')
    .option('--transport <name>', 'inproc | threads | mpi | ccl', 'inproc')
    .option('--ranks <n>', 'ranks on inproc/threads (under mpi, mpiexec decides)', '2')
    .option('--profile <name>', 'capability profile', 'full')
    .action(async (o: { transport: string; ranks: string; profile: string }) => {
      const { runProbe } = await import('./probe.ts');
      await runProbe(o);
    });

  try {
    await program.parseAsync(argv, { from: 'user' });
  } catch (e) {
    if (e instanceof CommanderError) {
      if (e.code === 'commander.helpDisplayed' || e.code === 'commander.version' || e.code === 'commander.help') return;
      process.exitCode = e.exitCode || 2;
      return;
    }
    process.exitCode = reportError(e);
  }
}

/** Arguments commander did not recognise: `--section.key value` config overrides (checked by parseOverrides). */
function overridesOf(cmd: Command): string[] {
  checkUnknownOptions(cmd, cmd.args);
  return [...cmd.args];
}
