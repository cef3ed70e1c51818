// System files (configs/systems/<name>.toml): `--system aurora-pvc` names a bundled file, anything ending in .toml
// (or containing a slash) is a path. Parsed with smol-toml and checked by protocols/system.ts.

import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse as parseToml } from 'smol-toml';
import { parseSystem, SystemError, type SystemSpec } from '../protocols/system.ts';

export const SYSTEMS_DIR = join(resolve(dirname(fileURLToPath(import.meta.url)), '..', '..'), 'configs', 'systems');

export function bundledSystems(): string[] {
  return readdirSync(SYSTEMS_DIR)
    .filter((f) => f.endsWith('.toml'))
    .map((f) => f.replace(/\.toml$/, ''))
    .sort();
}

export function loadSystem(nameOrPath: string): SystemSpec {
  const isPath = nameOrPath.endsWith('.toml') || nameOrPath.includes('/');
  const path = isPath ? nameOrPath : join(SYSTEMS_DIR, `${nameOrPath}.toml`);
  if (!existsSync(path)) {
    throw new SystemError(
      isPath
        ? `--system ${nameOrPath}: no such file`
        : `--system ${nameOrPath}: no bundled system of that name; use one of ${bundledSystems().join(', ')} or a path to a .toml file`,
    );
  }
  let parsed: Record<string, unknown>;
  try {
    parsed = parseToml(readFileSync(path, 'utf8')) as Record<string, unknown>;
  } catch (e) {
    throw new SystemError(`--system ${nameOrPath}: ${path} is not valid TOML: ${(e as Error).message.split('\n')[0]}`);
  }
  return parseSystem(parsed, isPath ? nameOrPath : `configs/systems/${nameOrPath}.toml`);
}
