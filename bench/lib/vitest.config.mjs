/**
 * Vitest config for the harness's own unit tests (bench/lib/*.test.mjs), which the project's
 * vitest.config.ts (test/** only) does not pick up:  npx vitest run --config bench/lib/vitest.config.mjs
 */
import { defineConfig } from 'vitest/config';

export default defineConfig({
  // keep vite's cache in the repo's node_modules, not in bench/lib/
  cacheDir: new URL('../../node_modules/.vite-bench-lib', import.meta.url).pathname,
  test: {
    root: new URL('.', import.meta.url).pathname,
    include: ['*.test.mjs'],
    pool: 'forks',
    testTimeout: 20_000,
  },
});
