// Types of ./policy-gen.mjs for the TypeScript tests (test/policy/scale.test.ts).
export declare const DEMO_POLICY: string;
export declare function flowYaml(value: unknown): string;
export declare function generatedRule(i: number, prefixesPerRule: number): { match: { hosts?: string[]; path_prefixes: string[] } };
export declare function scalePolicyYaml(o: { rules: number; prefixesPerRule?: number }): { text: string; rules: number; pathPrefixes: number; tools: number };
