// The timeline page's script: src/trace/timeline/client.ts (browser TypeScript, checked by tsc with the rest of the
// repo) bundled by esbuild into one self-contained IIFE that timeline.ts inlines. Bundled on first use and kept: a
// run writes its page once, and a checkout carries no build output that could fall out of step with the source.

import { buildSync } from 'esbuild';
import { fileURLToPath } from 'node:url';

let bundled: string | undefined;

export function timelineClientScript(): string {
  if (bundled !== undefined) return bundled;
  const entry = fileURLToPath(new URL('./timeline/client.ts', import.meta.url));
  const out = buildSync({
    entryPoints: [entry],
    bundle: true,
    write: false,
    format: 'iife',
    // Chromium/Firefox of the last years; the page uses nothing newer than ES2020.
    target: 'es2020',
    platform: 'browser',
    charset: 'utf8',
    logLevel: 'silent',
  });
  const js = out.outputFiles[0]?.text;
  if (js === undefined)
    throw new Error(`esbuild produced no output for ${entry}; reinstall dependencies (npm ci) and retry`);
  // A literal "</script" would end the inline <script> element early.
  bundled = js.replace(/<\/script/gi, '<\\/script');
  return bundled;
}
