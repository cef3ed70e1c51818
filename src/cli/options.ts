// Command-line option checks commander does not make for commands that take config overrides: an option that is
// neither the command's nor a `--section.field` override gets "did you mean", and no option swallows the next
// option as its value.

import type { Command } from 'commander';
import { CliError } from './common.ts';
import { closest } from '../train/job-config.ts';

/** Throws for a `--name` (no dot) that is not an option of `cmd`, suggesting the closest one. */
export function checkUnknownOptions(cmd: Command, args: readonly string[]): void {
  const known = cmd.options.flatMap((o) => [o.long, o.short]).filter((x): x is string => !!x);
  for (const a of args) {
    if (!a.startsWith('-') || a === '-' || /^-\d/.test(a)) continue;
    const name = a.split('=', 1)[0]!;
    if (name.startsWith('--') && name.includes('.')) continue; // a config override; job-config checks it
    const hint = closest(name, known);
    throw new CliError(
      `unknown option ${name} for \`moe-actors ${cmd.name()}\`${hint ? ` (did you mean ${hint}?)` : ''}; its options: ${known.filter((k) => k.startsWith('--')).join(', ')}; config overrides look like --training.steps 20`,
    );
  }
}

/** Throws when an option that takes a value got another option instead (`--config --training.steps 3`). */
export function checkOptionValues(cmd: Command): void {
  for (const o of cmd.options) {
    if (!o.required && !o.optional) continue;
    const key = o.attributeName();
    const v = cmd.getOptionValue(key) as unknown;
    const vals = Array.isArray(v) ? v : [v];
    for (const x of vals) {
      if (typeof x === 'string' && x.startsWith('--') && cmd.getOptionValueSource(key) === 'cli') {
        throw new CliError(
          `${o.long} needs a value, but the next argument is the option ${x}; e.g. ${o.long} ${o.flags.includes('<path>') ? 'path/to/file' : '…'}`,
        );
      }
    }
  }
}
