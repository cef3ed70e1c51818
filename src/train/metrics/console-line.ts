// torchtitan's per-step console line (components/metrics.py, torchtitan-semantics.md §6), field for field:
//   step: {step:2}  loss: {loss:8.5f}  grad_norm: {gn:7.4f}  memory: {GiB:5.2f}GiB({pct:.2f}%)  tps: {round(tps):,}  tflops: {tflops:,.2f}  mfu: {mfu:.2f}%
// Colours per field as torchtitan: step red, loss green, grad_norm orange, memory turquoise, tps blue, tflops cyan,
// mfu magenta. picocolors has no orange/turquoise, so those two are yellow and bright cyan. Colours are off when
// metrics.disable_color_printing is set or the stream is not a TTY (picocolors' own NO_COLOR/FORCE_COLOR rules
// are not consulted: the config decides).

import pc from 'picocolors';
import { fmtCommas, fmtFloat, fmtInt, pyFixed, pyRound } from './format.ts';

export interface ConsoleFields {
  step: number;
  /** global_avg_loss */
  loss: number;
  gradNorm: number;
  memoryGiB: number;
  memoryPct: number;
  tps: number;
  tflops: number;
  mfuPct: number;
}

export function formatConsoleLine(f: ConsoleFields, color: boolean): string {
  const c = pc.createColors(color);
  return [
    c.red(`step: ${fmtInt(f.step, 2)}`),
    c.green(`loss: ${fmtFloat(f.loss, 8, 5)}`),
    c.yellow(`grad_norm: ${fmtFloat(f.gradNorm, 7, 4)}`),
    c.cyanBright(`memory: ${fmtFloat(f.memoryGiB, 5, 2)}GiB(${pyFixed(f.memoryPct, 2)}%)`),
    c.blue(`tps: ${fmtCommas(pyRound(f.tps))}`),
    c.cyan(`tflops: ${fmtCommas(f.tflops, 2)}`),
    c.magenta(`mfu: ${pyFixed(f.mfuPct, 2)}%`),
  ].join('  ');
}

/** Whether to colour: torchtitan's flag, and only on a terminal. */
export function useColor(disableColorPrinting: boolean, stream: { isTTY?: boolean } = process.stdout): boolean {
  return !disableColorPrinting && stream.isTTY === true;
}
