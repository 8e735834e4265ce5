/**
 * The Envoy bootstraps operators run (envoy-config/*.yaml, and any under deploy/) decode against
 * Envoy's official `envoy.config.bootstrap.v3.Bootstrap` (SPEC §3; checker: test/helpers/envoy-bootstrap.ts)
 * and carry the ext_authz settings chio-authz relies on: transport V3, the peer certificate, fail
 * closed, a timeout, HTTP/2 to chio, mTLS with SPIRE SVIDs, and per-route `chio_rule`s that name
 * rules of the policy shipped in deploy/.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseDocument } from 'yaml';
import { compilePolicy } from '../../src/policy/load.js';
import { SpiffeId } from '../../src/spiffe/id.js';
import {
  REPO_ROOT,
  checkEnvoyYaml,
  formatYamlPath,
  listFiles,
  messagesOfType,
  readYamlDocuments,
  valueAt,
  type EnvoyYamlCheck,
  type VisitedMessage,
  type YamlPath,
} from '../helpers/envoy-bootstrap.js';

const HTTP_EXT_AUTHZ = 'envoy.extensions.filters.http.ext_authz.v3.ExtAuthz';
const NETWORK_EXT_AUTHZ = 'envoy.extensions.filters.network.ext_authz.v3.ExtAuthz';
const EXT_AUTHZ_PER_ROUTE = 'envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute';
const HCM = 'envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager';
const DOWNSTREAM_TLS = 'envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext';
const HTTP_PROTOCOL_OPTIONS = 'envoy.extensions.upstreams.http.v3.HttpProtocolOptions';
const HTTP_EXT_AUTHZ_FILTER = 'envoy.filters.http.ext_authz';
const TERMINAL_FILTERS = ['envoy.filters.http.router', 'envoy.filters.network.tcp_proxy', 'envoy.filters.network.http_connection_manager'];
const CHIO_GRPC_PORT = 9191;
const SPIRE_AGENT_SOCKET = '/run/spire/sockets/agent.sock';
const MAX_AUTHZ_TIMEOUT_SECONDS = 1;

interface Bootstrap {
  readonly label: string;
  readonly text: string;
}

/** envoy-config/*.yaml, plus Envoy bootstraps anywhere under deploy/ (whole files or ConfigMap values). */
function findBootstraps(): Bootstrap[] {
  const found: Bootstrap[] = listFiles('envoy-config', /\.ya?ml$/).map((file) => ({
    label: file,
    text: readFileSync(path.join(REPO_ROOT, file), 'utf8'),
  }));
  for (const doc of readYamlDocuments('deploy')) {
    if (isBootstrap(doc.value)) found.push({ label: doc.label, text: readFileSync(path.join(REPO_ROOT, doc.file), 'utf8') });
    const data = record(record(doc.value)['data']);
    for (const [key, text] of Object.entries(data)) {
      if (typeof text === 'string' && /\.ya?ml$/.test(key) && isBootstrap(parseDocument(text).toJS())) {
        found.push({ label: `${doc.label} data.${key}`, text });
      }
    }
  }
  return found;
}

function isBootstrap(value: unknown): boolean {
  return 'static_resources' in record(value) || 'staticResources' in record(value);
}

function record(value: unknown): Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value) ? (value as Record<string, unknown>) : {};
}

function list(value: unknown): unknown[] {
  return Array.isArray(value) ? value : [];
}

/** The rule names of the policy in deploy/'s chio-config ConfigMap. */
function deployedPolicyRules(): ReadonlySet<string> {
  const configMap = readYamlDocuments('deploy').find(
    (d) => record(d.value)['kind'] === 'ConfigMap' && record(record(d.value)['metadata'])['name'] === 'chio-config',
  );
  const text = record(record(configMap?.value)['data'])['policy.yaml'];
  if (typeof text !== 'string') throw new Error('deploy/: no ConfigMap chio-config with a policy.yaml');
  return new Set(compilePolicy(text, 'deploy ConfigMap chio-config policy.yaml').rules.keys());
}

function clusters(check: EnvoyYamlCheck): Record<string, unknown>[] {
  return list(record(record(check.value)['static_resources'])['clusters']).map(record);
}

function clusterNamed(check: EnvoyYamlCheck, name: unknown): Record<string, unknown> | undefined {
  return clusters(check).find((c) => c['name'] === name);
}

function endpointAddresses(cluster: Record<string, unknown>): Record<string, unknown>[] {
  return list(record(cluster['load_assignment'])['endpoints'])
    .flatMap((locality) => list(record(locality)['lb_endpoints']))
    .map((lb) => record(record(record(lb)['endpoint'])['address']));
}

function isHttp2(cluster: Record<string, unknown>): boolean {
  const options = record(record(cluster['typed_extension_protocol_options'])[HTTP_PROTOCOL_OPTIONS]);
  return (
    options['@type'] === `type.googleapis.com/${HTTP_PROTOCOL_OPTIONS}` &&
    'http2_protocol_options' in record(options['explicit_http_config'])
  );
}

/** Seconds of a proto3 JSON Duration ("0.25s"). */
function seconds(duration: unknown): number {
  return typeof duration === 'string' && /^\d+(\.\d+)?s$/.test(duration) ? Number.parseFloat(duration) : Number.NaN;
}

/** The filter chain (listeners[i].filter_chains[j]) that contains `p`. */
function filterChainOf(check: EnvoyYamlCheck, p: YamlPath): { path: YamlPath; chain: Record<string, unknown> } {
  const at = p.indexOf('filter_chains');
  const chainPath = p.slice(0, at + 2);
  return { path: chainPath, chain: record(valueAt(check.value, chainPath)) };
}

/** The filter list an ext_authz typed_config sits in, and its position there. */
function filterListOf(check: EnvoyYamlCheck, m: VisitedMessage): { filters: unknown[]; index: number } {
  const index = m.path[m.path.length - 2];
  if (m.path[m.path.length - 1] !== 'typed_config' || typeof index !== 'number') {
    throw new Error(`${formatYamlPath(m.path)}: ext_authz is not the typed_config of a filter list entry`);
  }
  return { filters: list(valueAt(check.value, m.path.slice(0, -2))), index };
}

function extAuthzFilters(check: EnvoyYamlCheck): VisitedMessage[] {
  return [...messagesOfType(check, HTTP_EXT_AUTHZ), ...messagesOfType(check, NETWORK_EXT_AUTHZ)];
}

/** "line:col" (1-based) of the first occurrence of `needle` in `text`. */
function positionOf(text: string, needle: string): string {
  const offset = text.indexOf(needle);
  if (offset < 0) throw new Error(`${needle} not found`);
  const before = text.slice(0, offset).split('\n');
  return `${before.length}:${(before[before.length - 1]?.length ?? 0) + 1}`;
}

const bootstraps = findBootstraps();
const checks = new Map(bootstraps.map((b) => [b.label, checkEnvoyYaml(b.text, b.label)]));

function checkOf(label: string): EnvoyYamlCheck {
  const check = checks.get(label);
  if (!check) throw new Error(`${label} was not checked`);
  return check;
}

describe('Envoy bootstraps under envoy-config/ and deploy/', () => {
  it('finds the sidecar (HTTP) and TCP bootstraps', () => {
    expect(bootstraps.map((b) => b.label)).toEqual(expect.arrayContaining(['envoy-config/sidecar.yaml', 'envoy-config/tcp.yaml']));
  });

  it.each(bootstraps.map((b) => b.label))('%s decodes as envoy.config.bootstrap.v3.Bootstrap', (label) => {
    const check = checkOf(label);
    expect(check.violations.map((v) => `${v.at}: ${v.path}: ${v.message}`)).toEqual([]);
    expect(check.messages.length).toBeGreaterThan(20);
  });

  it('rejects a misspelled key and a wrong enum value, naming file, line and YAML path', () => {
    const original = readFileSync(path.join(REPO_ROOT, 'envoy-config/sidecar.yaml'), 'utf8');
    const broken = original
      .replace('include_peer_certificate: true', 'include_peer_certficate: true')
      .replace('forward_client_cert_details: SANITIZE_SET', 'forward_client_cert_details: SANITISE_SET');
    expect(broken).not.toBe(original);
    const hcm = 'static_resources.listeners[0].filter_chains[0].filters[0].typed_config';
    expect(checkEnvoyYaml(broken, 'sidecar-broken.yaml').violations).toEqual([
      {
        path: `${hcm}.forward_client_cert_details`,
        at: `sidecar-broken.yaml:${positionOf(broken, 'forward_client_cert_details: SANITISE_SET')}`,
        message:
          '"SANITISE_SET" is not a value of envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.ForwardClientCertDetails' +
          ' (SANITIZE, FORWARD_ONLY, APPEND_FORWARD, SANITIZE_SET, ALWAYS_FORWARD_ONLY)',
      },
      {
        path: `${hcm}.http_filters[0].typed_config.include_peer_certficate`,
        at: `sidecar-broken.yaml:${positionOf(broken, 'include_peer_certficate')}`,
        message: 'unknown field "include_peer_certficate" in envoy.extensions.filters.http.ext_authz.v3.ExtAuthz',
      },
    ]);
  });
});

describe.each(bootstraps.map((b) => b.label))('%s: ext_authz settings', (label) => {
  const check = checkOf(label);

  it('has an ext_authz filter: transport V3, peer certificate, fail closed, a timeout of at most 1s', () => {
    const filters = extAuthzFilters(check);
    expect(filters.length).toBeGreaterThan(0);
    for (const { path: p, value } of filters) {
      const grpc = record(value['grpc_service']);
      const where = `${label} ${formatYamlPath(p)}`;
      expect({ where, transport: value['transport_api_version'], peerCertificate: value['include_peer_certificate'], failOpen: value['failure_mode_allow'] }).toEqual({
        where,
        transport: 'V3',
        peerCertificate: true,
        failOpen: false,
      });
      const timeout = seconds(grpc['timeout']);
      expect(timeout, `${where}.grpc_service.timeout`).toBeGreaterThan(0);
      expect(timeout, `${where}.grpc_service.timeout`).toBeLessThanOrEqual(MAX_AUTHZ_TIMEOUT_SECONDS);
    }
  });

  it('sends Checks over HTTP/2 to a cluster on the chio gRPC port', () => {
    for (const { path: p, value } of extAuthzFilters(check)) {
      const name = record(record(value['grpc_service'])['envoy_grpc'])['cluster_name'];
      const cluster = clusterNamed(check, name);
      expect(cluster, `${label} ${formatYamlPath(p)}: cluster ${String(name)}`).toBeDefined();
      if (!cluster) continue;
      expect(isHttp2(cluster), `${label}: cluster ${String(name)} speaks HTTP/2 (explicit_http_config.http2_protocol_options)`).toBe(true);
      const ports = endpointAddresses(cluster).map((a) => record(a['socket_address'])['port_value']);
      expect(ports.length).toBeGreaterThan(0);
      expect(ports.every((port) => port === CHIO_GRPC_PORT), `${label}: cluster ${String(name)} ports ${ports.join(',')}`).toBe(true);
    }
  });

  it('runs ext_authz before the terminal filter (router / tcp_proxy)', () => {
    for (const m of extAuthzFilters(check)) {
      const { filters, index } = filterListOf(check, m);
      const names = filters.map((f) => record(f)['name']);
      expect(TERMINAL_FILTERS, `${label} ${formatYamlPath(m.path)}: last filter of ${names.join(', ')}`).toContain(names[names.length - 1]);
      expect(index, `${label} ${formatYamlPath(m.path)}: ext_authz before ${String(names[names.length - 1])}`).toBeLessThan(filters.length - 1);
    }
  });

  it('requires a client certificate on every filter chain that asks chio', () => {
    for (const m of extAuthzFilters(check)) {
      const { path: chainPath, chain } = filterChainOf(check, m.path);
      const tls = record(record(chain['transport_socket'])['typed_config']);
      expect({ chain: formatYamlPath(chainPath), type: tls['@type'], requireClientCertificate: tls['require_client_certificate'] }).toEqual({
        chain: formatYamlPath(chainPath),
        type: `type.googleapis.com/${DOWNSTREAM_TLS}`,
        requireClientCertificate: true,
      });
    }
  });

  it('gets its SVID and trust bundle from the SPIRE agent over SDS', () => {
    const contexts = messagesOfType(check, DOWNSTREAM_TLS);
    expect(contexts.length).toBeGreaterThan(0);
    for (const { path: p, value } of contexts) {
      const common = record(value['common_tls_context']);
      const svids = list(common['tls_certificate_sds_secret_configs']).map(record);
      const bundle = record(common['validation_context_sds_secret_config']);
      expect(svids.length, `${label} ${formatYamlPath(p)}`).toBe(1);
      const svid = SpiffeId.parse(String(svids[0]?.['name']));
      expect(svid.path).not.toBe('');
      expect(bundle['name'], `${label} ${formatYamlPath(p)}: bundle of the SVID's trust domain`).toBe(`spiffe://${svid.trustDomain}`);
      for (const sds of [...svids, bundle]) {
        const source = record(record(sds['sds_config'])['api_config_source']);
        const clusterName = record(record(list(source['grpc_services'])[0])['envoy_grpc'])['cluster_name'];
        const cluster = clusterNamed(check, clusterName);
        expect(cluster, `${label}: SDS cluster ${String(clusterName)}`).toBeDefined();
        if (!cluster) continue;
        expect(isHttp2(cluster)).toBe(true);
        expect(endpointAddresses(cluster).map((a) => record(a['pipe'])['path'])).toEqual([SPIRE_AGENT_SOCKET]);
      }
    }
  });

  it('keeps the Envoy admin interface on loopback', () => {
    const admin = record(record(record(check.value)['admin'])['address'])['socket_address'];
    expect(record(admin)['address']).toBe('127.0.0.1');
  });
});

describe('envoy-config/README.md', () => {
  it('its example policies (```yaml blocks with schema: chio.policy.v1) compile', () => {
    const readme = readFileSync(path.join(REPO_ROOT, 'envoy-config/README.md'), 'utf8');
    const policies = [...readme.matchAll(/```yaml\n([\s\S]*?)```/g)].map((m) => m[1] ?? '').filter((y) => y.includes('schema: chio.policy.v1'));
    expect(policies.length).toBeGreaterThan(0);
    for (const text of policies) expect(compilePolicy(text, 'envoy-config/README.md policy example').rules.size).toBeGreaterThan(0);
  });
});

describe('envoy-config/sidecar.yaml: HTTP specifics', () => {
  const check = checkOf('envoy-config/sidecar.yaml');

  it('replaces client-sent XFCC with the verified peer URI before chio sees it', () => {
    const managers = messagesOfType(check, HCM).filter((m) =>
      list(m.value['http_filters']).some((f) => record(f)['name'] === HTTP_EXT_AUTHZ_FILTER),
    );
    expect(managers.length).toBeGreaterThan(0);
    for (const { value } of managers) {
      expect(value['forward_client_cert_details']).toBe('SANITIZE_SET');
      expect(record(value['set_current_client_cert_details'])['uri']).toBe(true);
    }
  });

  it('normalizes the path before routing, since the route picks the chio_rule', () => {
    for (const { path: p, value } of messagesOfType(check, HCM)) {
      const where = formatYamlPath(p);
      expect({ where, normalize: value['normalize_path'], merge: value['merge_slashes'], escaped: value['path_with_escaped_slashes_action'] }).toEqual({
        where,
        normalize: true,
        merge: true,
        escaped: 'UNESCAPE_AND_REDIRECT',
      });
    }
  });

  it('names policy rules per route with context_extensions.chio_rule, all defined in the deployed policy', () => {
    const perRoute = messagesOfType(check, EXT_AUTHZ_PER_ROUTE);
    for (const { path: p } of perRoute) {
      expect(p[p.length - 2], `${formatYamlPath(p)} is keyed by the ext_authz filter name`).toBe('typed_per_filter_config');
      expect(p[p.length - 1]).toBe(HTTP_EXT_AUTHZ_FILTER);
    }
    const rules = perRoute.map((m) => record(record(record(m.value['check_settings'])['context_extensions']))['chio_rule']);
    expect(new Set(rules)).toEqual(new Set(['payments_write', 'payments_read']));
    const defined = deployedPolicyRules();
    for (const rule of rules) expect(defined.has(String(rule)), `rule ${String(rule)} in deploy/configmap.yaml policy.yaml`).toBe(true);
  });
});
