/**
 * Policies the hardening tests decide under (SPEC §5): the demo policy (one rule, `orders`, that
 * admits only spiffe://example.org/ns/default/sa/frontend at tier attested, for three tools) and a
 * deny-everything policy with the same tools and rule names: `default: block`, an empty allow list
 * and `defaults.unmatched: deny`. Under the second one no request, whatever its bytes, may be
 * allowed.
 */
import { demoPolicy } from '../../helpers/service.js';

export const DEMO_POLICY = demoPolicy();

export const DENY_ALL_POLICY = `schema: chio.policy.v1
tools:
  list_orders:
    - { methods: [GET], path_prefix: /api/v1/orders }
  create_order:
    - { methods: [POST], path_prefix: /api/v1/orders }
  admin:
    - { path_prefix: /admin }
  health:
    - { methods: [GET], path: /healthz }
rules:
  orders:
    match: { hosts: [backend.default.svc, backend] }
    default: block
    allow: []
defaults:
  unmatched: deny
`;

/** The only workload the demo policy admits, and the rule and tools it may be admitted under. */
export const DEMO_ADMITS = {
  workload: 'spiffe://example.org/ns/default/sa/frontend',
  rule: 'orders',
  tools: ['list_orders', 'create_order', 'health'],
} as const;
