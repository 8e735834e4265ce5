/**
 * Policy YAML (SPEC §5) → CompiledPolicy: strict YAML (src/yaml-source.ts), the zod schema
 * (./schema.ts), whole-document checks and indexed matchers (./compile.ts).
 *
 * Every error is `ChioError('policy_invalid', 'file:line:col: yaml.path: message')`; a missing
 * file is `ChioError('file_not_found')`. The policy hash is `sha256:` + hex of the file's bytes.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { ChioError, describe } from '../errors.js';
import { parseYamlSource, validateYaml } from '../yaml-source.js';
import { compileDocument } from './compile.js';
import { policySchema } from './schema.js';
import type { CompiledPolicy } from './types.js';

/** Throws ChioError('policy_invalid') naming file:line:col and the YAML path. */
export function compilePolicy(text: string, file: string): CompiledPolicy {
  return compileText(text, file, policyHash(Buffer.from(text, 'utf8')));
}

/**
 * Reads and compiles a policy file. Throws ChioError('policy_invalid' | 'file_not_found').
 * `label` names the file in messages (default: `path`).
 */
export function loadPolicyFile(path: string, label: string = path): CompiledPolicy {
  const bytes = readPolicyBytes(path, label);
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw new ChioError('policy_invalid', `${label}: not valid UTF-8`);
  }
  return compileText(text, label, policyHash(bytes));
}

/** `sha256:` + lower-case hex of `bytes`. */
export function policyHash(bytes: Uint8Array): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
}

function compileText(text: string, file: string, hash: string): CompiledPolicy {
  const src = parseYamlSource(text, file, 'policy_invalid');
  const doc = validateYaml(src, policySchema, 'policy_invalid');
  return compileDocument(src, doc, { hash, source: file });
}

function readPolicyBytes(path: string, label: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new ChioError('file_not_found', `${label}: no such file`, { cause: err });
    // not the policy's fault (a folder, no permission): what a missing file is, not an invalid policy
    throw new ChioError('io_error', `${label}: cannot read: ${describe(err)}`, { cause: err });
  }
}
