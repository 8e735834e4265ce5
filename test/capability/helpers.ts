/**
 * Shared pieces of the capability tests: fixed authority keys, the fixture policy, attestation
 * documents relative to a decision time, and a Check request builder for the e2e tests.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { CredentialKind, WorkloadIdentity } from '../../src/identity/identity.js';
import { keyFromSeed, type SigningKey } from '../../src/keys.js';
import type { Decision } from '../../src/policy/evaluate.js';
import { compilePolicy } from '../../src/policy/load.js';
import type { CompiledPolicy } from '../../src/policy/types.js';
import { FIXTURES, fixturePem, fixtureRequest, type FixtureRequest } from '../helpers/service.js';

export const CAPABILITY_FIXTURES = path.join(FIXTURES, 'capability');
export const POLICY_FILE = path.join(CAPABILITY_FIXTURES, 'policy.yaml');

export const FRONTEND = 'spiffe://example.org/ns/default/sa/frontend';

/** A deterministic authority key (seed = 32 copies of `byte`). */
export function authorityKey(byte: number): SigningKey {
  return keyFromSeed(Buffer.alloc(32, byte));
}

export function fixturePolicy(): CompiledPolicy {
  return compilePolicy(readFileSync(POLICY_FILE, 'utf8'), POLICY_FILE);
}

export function readFixtureJson(name: string): Record<string, unknown> {
  return JSON.parse(readFileSync(path.join(CAPABILITY_FIXTURES, name), 'utf8')) as Record<string, unknown>;
}

/** A valid raw attestation of `uri` issued one minute before `now`, valid for an hour after it. */
export function attestation(now: number, uri = FRONTEND, overrides: Record<string, unknown> = {}): Record<string, unknown> {
  const id = /^spiffe:\/\/([^/]+)(.*)$/.exec(uri);
  return {
    schema: 'chio.runtime-attestation.v1',
    verifier: 'https://agent.local',
    verifierFamily: 'spiffe',
    evidenceSchema: 'chio.runtime-attestation.spiffe.x509-svid.v1',
    attestationType: 'x509_svid',
    issuedAt: new Date(now - 60_000).toISOString(),
    expiresAt: new Date(now + 3_600_000).toISOString(),
    evidenceSha256: 'ab'.repeat(32),
    workloadIdentity: { scheme: 'spiffe', credentialKind: 'x509_svid', uri, trustDomain: id?.[1] ?? '', path: id?.[2] ?? '' },
    runtimeIdentity: uri,
    ...overrides,
  };
}

export interface Presenter {
  /** Envoy's URL-encoded PEM, or null for a principal-only request */
  readonly certificate: string | null;
  readonly principal: string | null;
}

/** The fixture SVIDs of test/fixtures/envoy/pki as presented through Envoy. */
export function fixturePresenter(name: string, principalOnly = false): Presenter {
  const index = JSON.parse(readFileSync(path.join(FIXTURES, 'envoy', 'pki', 'index.json'), 'utf8')) as Record<string, { envoy_principal: string }>;
  const principal = index[name]?.envoy_principal ?? null;
  return { certificate: principalOnly ? null : fixturePem(name).envoy, principal };
}

export interface RequestShape {
  readonly presenter: Presenter | null;
  readonly capability?: string;
  readonly capabilityHeader?: string;
  readonly method?: string;
  readonly path?: string;
  readonly host?: string;
}

/** The reference mTLS CheckRequest, re-shaped: who presents, which capability, which operation. */
export function checkRequest(shape: RequestShape): FixtureRequest {
  const req = fixtureRequest('http-mtls-spiffe-full');
  const source = req.attributes.source ?? {};
  req.attributes.source = source;
  delete source.certificate;
  delete source.principal;
  if (shape.presenter?.certificate) source.certificate = shape.presenter.certificate;
  if (shape.presenter?.principal) source.principal = shape.presenter.principal;
  const http = req.attributes.request?.http;
  if (!http) throw new TypeError('fixture request without http');
  const headers = http.headers ?? {};
  http.headers = headers;
  if (shape.method) {
    http.method = shape.method;
    headers[':method'] = shape.method;
  }
  if (shape.path) {
    http.path = shape.path;
    headers[':path'] = shape.path;
  }
  if (shape.host) {
    http.host = shape.host;
    headers[':authority'] = shape.host;
  }
  if (shape.capability !== undefined) headers[shape.capabilityHeader ?? 'x-chio-capability'] = shape.capability;
  return req;
}

/** A WorkloadIdentity for a SPIFFE ID (default credential kind x509_svid). */
export function identity(uri: string, credentialKind: CredentialKind = 'x509_svid'): WorkloadIdentity {
  const m = /^spiffe:\/\/([^/]+)(.*)$/.exec(uri);
  return { scheme: 'spiffe', credentialKind, uri, trustDomain: m?.[1] ?? '', path: m?.[2] ?? '' };
}

/** A policy allow of list_orders under rule orders, with the workload identity matched: what the capability stage gets. */
export const ALLOW_LIST_ORDERS: Decision = {
  verdict: 'allow',
  rule: 'orders',
  tool: 'list_orders',
  reason: null,
  httpStatus: null,
  workloadIdentityMatch: { mode: 'require', matched: true },
  runtimeAssuranceMatch: null,
  requireCapability: false,
};
