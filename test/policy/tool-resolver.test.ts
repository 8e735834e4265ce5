import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { CheckInput } from '../../src/check/request.js';
import { hostPatternMatches, parseHostPattern } from '../../src/policy/hosts.js';
import { ToolResolver, type ToolEntrySpec, type ToolSpec } from '../../src/policy/tool-resolver.js';
import { pathHasSegmentPrefix } from '../../src/spiffe/id.js';
import { grpcRequest, httpRequest, tcpRequest } from './input.js';

interface EntryInit {
  readonly methods?: readonly string[];
  readonly path?: string;
  readonly pathPrefix?: string;
  readonly hosts?: readonly string[];
  readonly grpcService?: string;
  readonly grpcMethod?: string;
}

function entry(init: EntryInit): ToolEntrySpec {
  return {
    methods: init.methods ?? null,
    path: init.path ?? null,
    pathPrefix: init.pathPrefix ?? null,
    hosts: init.hosts?.map(parseHostPattern) ?? null,
    grpcService: init.grpcService ?? null,
    grpcMethod: init.grpcMethod ?? null,
  };
}

function tools(spec: Record<string, EntryInit[]>): ToolResolver {
  return new ToolResolver(Object.entries(spec).map(([name, entries]) => ({ name, entries: entries.map(entry) })));
}

/** The definition: the first tool, in order, with an entry whose every present condition holds. */
function naiveEntryMatches(e: ToolEntrySpec, input: CheckInput): boolean {
  return (
    (e.methods === null || (input.method !== null && e.methods.map((m) => m.toUpperCase()).includes(input.method))) &&
    (e.path === null || input.path === e.path) &&
    (e.pathPrefix === null || (input.path !== null && pathHasSegmentPrefix(input.path, e.pathPrefix))) &&
    (e.hosts === null || e.hosts.some((h) => hostPatternMatches(h, input.host, input.hostname))) &&
    (e.grpcService === null || input.grpc?.service === e.grpcService) &&
    (e.grpcMethod === null || input.grpc?.method === e.grpcMethod)
  );
}

function naiveFirstTool(specs: readonly ToolSpec[], input: CheckInput): number {
  return specs.findIndex((t) => t.entries.some((e) => naiveEntryMatches(e, input)));
}

describe('ToolResolver', () => {
  const resolver = tools({
    transfer_funds: [{ methods: ['POST'], pathPrefix: '/v1/transfers' }],
    get_order: [{ methods: ['get'], path: '/api/v1/orders', hosts: ['orders.svc'] }],
    reconcile_ledger: [{ grpcService: 'payments.v1.Ledger', grpcMethod: 'Reconcile' }],
    any_ledger_call: [{ grpcService: 'payments.v1.Ledger' }],
    any_reconcile: [{ grpcMethod: 'Reconcile' }],
    partner_api: [{ hosts: ['*.partner.example'] }, { hosts: ['partner.example:8443'] }],
    anything_deleted: [{ methods: ['DELETE'] }],
  });

  it('maps a request to the first tool whose entry matches', () => {
    expect(resolver.resolve(httpRequest({ method: 'POST', path: '/v1/transfers' }))).toBe('transfer_funds');
    expect(resolver.resolve(httpRequest({ method: 'POST', path: '/v1/transfers/9' }))).toBe('transfer_funds');
    expect(resolver.resolve(httpRequest({ method: 'POST', path: '/v1/transfersX' }))).toBeNull();
    expect(resolver.resolve(httpRequest({ method: 'GET', path: '/v1/transfers' }))).toBeNull();
  });

  it('requires every condition of an entry: exact path, methods (upper-case), hosts', () => {
    expect(resolver.resolve(httpRequest({ method: 'GET', host: 'orders.svc:8080', path: '/api/v1/orders' }))).toBe('get_order');
    expect(resolver.resolve(httpRequest({ method: 'GET', host: 'orders.svc', path: '/api/v1/orders/1' }))).toBeNull();
    expect(resolver.resolve(httpRequest({ method: 'GET', host: 'other.svc', path: '/api/v1/orders' }))).toBeNull();
    expect(resolver.resolve(httpRequest({ method: 'POST', host: 'orders.svc', path: '/api/v1/orders' }))).toBeNull();
  });

  it('matches gRPC service and method against the request gRPC call, first tool first', () => {
    expect(resolver.resolve(grpcRequest('payments.v1.Ledger', 'Reconcile'))).toBe('reconcile_ledger');
    expect(resolver.resolve(grpcRequest('payments.v1.Ledger', 'Balance'))).toBe('any_ledger_call');
    expect(resolver.resolve(grpcRequest('audit.v1.Ledger', 'Reconcile'))).toBe('any_reconcile');
    // The same path without a gRPC content type is no gRPC call.
    expect(resolver.resolve(httpRequest({ method: 'POST', path: '/payments.v1.Ledger/Reconcile' }))).toBeNull();
  });

  it('any entry of a tool may match; hosts-only and methods-only entries work', () => {
    expect(resolver.resolve(httpRequest({ host: 'a.partner.example', path: '/x' }))).toBe('partner_api');
    expect(resolver.resolve(httpRequest({ host: 'partner.example:8443', path: '/x' }))).toBe('partner_api');
    expect(resolver.resolve(httpRequest({ host: 'partner.example', path: '/x' }))).toBeNull();
    expect(resolver.resolve(httpRequest({ method: 'DELETE', host: 'a.partner.example', path: '/x' }))).toBe('partner_api');
    expect(resolver.resolve(httpRequest({ method: 'DELETE', path: '/x' }))).toBe('anything_deleted');
  });

  it('a tcp request maps to no tool', () => {
    expect(resolver.resolve(tcpRequest())).toBeNull();
  });

  it('refuses an entry without any condition', () => {
    expect(() => tools({ empty: [{}] })).toThrow(new TypeError('tool "empty" has an entry without any condition'));
  });

  it('agrees with a linear scan on random tools and requests', () => {
    const method = fc.constantFrom('GET', 'POST', 'delete');
    const segments = fc.array(fc.constantFrom('v1', 'x', ''), { maxLength: 3 });
    const path = segments.map((s) => `/${s.join('/')}`);
    const host = fc.constantFrom('a.svc', 'b.a.svc', 'a.svc:8443');
    const hostPattern = fc.constantFrom('a.svc', '*.svc', '*.a.svc', 'a.svc:8443', '*.svc:8443');
    const service = fc.constantFrom('p.v1.Ledger', 'p.v1.Audit');
    const rpc = fc.constantFrom('Reconcile', 'Get');
    const entryInit = fc.record(
      {
        methods: fc.array(method, { minLength: 1, maxLength: 2 }),
        path,
        pathPrefix: fc.tuple(segments, fc.boolean()).map(([s, dir]) => `/${s.join('/')}${dir && s.length > 0 ? '/' : ''}`),
        hosts: fc.array(hostPattern, { minLength: 1, maxLength: 2 }),
        grpcService: service,
        grpcMethod: rpc,
      },
      { requiredKeys: [] },
    ).filter((e) => Object.keys(e).length > 0);
    const toolSpecs = fc
      .array(fc.array(entryInit, { minLength: 1, maxLength: 3 }), { maxLength: 10 })
      .map((list) => list.map((entries, i): ToolSpec => ({ name: `t${i}`, entries: entries.map(entry) })));
    const request = fc.oneof(
      { weight: 6, arbitrary: fc.tuple(method, host, path).map(([m, h, p]) => httpRequest({ method: m.toUpperCase(), host: h, path: p })) },
      { weight: 3, arbitrary: fc.tuple(service, rpc, host).map(([s, r, h]) => grpcRequest(s, r, h)) },
      { weight: 1, arbitrary: fc.constant(tcpRequest()) },
    );
    fc.assert(
      fc.property(toolSpecs, fc.array(request, { minLength: 1, maxLength: 10 }), (specs, requests) => {
        const compiled = new ToolResolver(specs);
        for (const input of requests) expect(compiled.firstMatchIndex(input)).toBe(naiveFirstTool(specs, input));
      }),
      { numRuns: 1000 },
    );
  });
});
