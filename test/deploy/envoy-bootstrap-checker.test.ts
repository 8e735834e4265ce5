/**
 * The Envoy YAML checker of test/helpers/envoy-bootstrap.ts (strict proto3-JSON decoding against
 * Envoy's official protos, plus the protoc-gen-validate rules Envoy applies): what it accepts and
 * what it rejects, with exact paths and messages. The envoy-config tests are only as good as this.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  BOOTSTRAP_TYPE,
  REPO_ROOT,
  checkEnvoyValue,
  checkEnvoyYaml,
  formatYamlPath,
  jsonName,
  loadEnvoyProtos,
  type YamlPath,
} from '../helpers/envoy-bootstrap.js';

const EXT_AUTHZ_URL = 'type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz';
const HCM_URL = 'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager';

/** Violations of `value` as a bootstrap, as `path: message` lines. */
function problems(value: unknown): string[] {
  return checkEnvoyValue(value, BOOTSTRAP_TYPE).violations.map((v) => `${formatYamlPath(v.path)}: ${v.message}`);
}

/** A bootstrap with one cluster (fields of `extra` merged into it). */
function withCluster(extra: Record<string, unknown>): unknown {
  return { static_resources: { clusters: [{ name: 'c', type: 'STATIC', ...extra }] } };
}

/** A bootstrap whose one listener's HCM has `hcm` and whose one HTTP filter is ext_authz with `extAuthz`. */
function withExtAuthz(extAuthz: Record<string, unknown>, hcm: Record<string, unknown> = {}): unknown {
  return {
    static_resources: {
      listeners: [
        {
          name: 'l',
          address: { socket_address: { address: '0.0.0.0', port_value: 8080 } },
          filter_chains: [
            {
              filters: [
                {
                  name: 'envoy.filters.network.http_connection_manager',
                  typed_config: {
                    '@type': HCM_URL,
                    stat_prefix: 'in',
                    route_config: { name: 'r' },
                    http_filters: [{ name: 'envoy.filters.http.ext_authz', typed_config: { '@type': EXT_AUTHZ_URL, ...extAuthz } }],
                    ...hcm,
                  },
                },
              ],
            },
          ],
        },
      ],
    },
  };
}

const EXT_AUTHZ_PATH = 'static_resources.listeners[0].filter_chains[0].filters[0].typed_config.http_filters[0].typed_config';
const HCM_PATH = 'static_resources.listeners[0].filter_chains[0].filters[0].typed_config';

describe('checkEnvoyValue: accepts what Envoy accepts', () => {
  it('accepts an empty bootstrap and both proto and lowerCamel field names', () => {
    expect(problems({})).toEqual([]);
    expect(problems({ staticResources: { clusters: [{ name: 'c', connectTimeout: '1s', loadAssignment: { clusterName: 'c' } }] } })).toEqual([]);
  });

  it('reads wrappers as plain scalars, Struct as any mapping, Duration as "<seconds>s"', () => {
    expect(problems(withCluster({ per_connection_buffer_limit_bytes: 32768, connect_timeout: '0.000000001s' }))).toEqual([]);
    expect(problems({ node: { id: 'n', metadata: { anything: [1, { nested: 'yes' }], n: null } } })).toEqual([]);
  });

  it('resolves typed_config by @type and checks it as that message', () => {
    expect(problems(withExtAuthz({ transport_api_version: 'V3', include_peer_certificate: true }))).toEqual([]);
    expect(problems(withExtAuthz({ includePeerCertificate: true, grpcService: { envoyGrpc: { clusterName: 'x' }, timeout: '0.25s' } }))).toEqual([]);
  });

  it('treats null as "not set", as proto3 JSON does', () => {
    expect(problems(withCluster({ connect_timeout: null }))).toEqual([]);
  });
});

describe('checkEnvoyValue: rejects, naming the path', () => {
  it('unknown and misspelled fields, also inside typed_config', () => {
    expect(problems({ static_resource: {} })).toEqual(['static_resource: unknown field "static_resource" in envoy.config.bootstrap.v3.Bootstrap']);
    expect(problems(withExtAuthz({ include_peer_certficate: true }))).toEqual([
      `${EXT_AUTHZ_PATH}.include_peer_certficate: unknown field "include_peer_certficate" in envoy.extensions.filters.http.ext_authz.v3.ExtAuthz`,
    ]);
  });

  it('a field given under both its names', () => {
    expect(problems(withCluster({ connect_timeout: '1s', connectTimeout: '2s' }))).toEqual([
      'static_resources.clusters[0].connectTimeout: field connect_timeout of envoy.config.cluster.v3.Cluster is given twice ("connect_timeout" and "connectTimeout")',
    ]);
  });

  it('enum values that do not exist or are deprecated', () => {
    expect(problems(withExtAuthz({ transport_api_version: 'V4' }))).toEqual([
      `${EXT_AUTHZ_PATH}.transport_api_version: "V4" is not a value of envoy.config.core.v3.ApiVersion (AUTO, V2, V3)`,
    ]);
    expect(problems(withExtAuthz({ transport_api_version: 'V2' }))).toEqual([
      `${EXT_AUTHZ_PATH}.transport_api_version: deprecated value V2 of envoy.config.core.v3.ApiVersion`,
    ]);
    expect(problems(withExtAuthz({ status_on_error: { code: 'Empty' } }))).toEqual([
      `${EXT_AUTHZ_PATH}.status_on_error.code: "Empty" is not allowed here (validate: enum.not_in)`,
    ]);
  });

  it('durations not in proto3 JSON form', () => {
    expect(problems(withExtAuthz({ grpc_service: { envoy_grpc: { cluster_name: 'x' }, timeout: '250ms' } }))).toEqual([
      `${EXT_AUTHZ_PATH}.grpc_service.timeout: expected a duration like "0.25s" (seconds, up to 9 decimals, then "s"), got "250ms"`,
    ]);
    expect(problems(withCluster({ connect_timeout: 1 }))).toEqual([
      'static_resources.clusters[0].connect_timeout: expected a duration like "0.25s" (seconds, up to 9 decimals, then "s"), got 1',
    ]);
  });

  it('wrappers written as messages, wrong scalar types, out-of-range numbers', () => {
    expect(problems(withCluster({ per_connection_buffer_limit_bytes: { value: 1 } }))).toEqual([
      'static_resources.clusters[0].per_connection_buffer_limit_bytes: expected an integer (uint32), got a mapping',
    ]);
    expect(problems(withExtAuthz({ include_peer_certificate: 'true' }))).toEqual([
      `${EXT_AUTHZ_PATH}.include_peer_certificate: expected true or false, got "true"`,
    ]);
    expect(problems({ admin: { address: { socket_address: { address: '127.0.0.1', port_value: 70000 } } } })).toEqual([
      'admin.address.socket_address.port_value: 70000 must be <= 65535',
    ]);
    expect(problems(withCluster({ per_connection_buffer_limit_bytes: -1 }))).toEqual([
      'static_resources.clusters[0].per_connection_buffer_limit_bytes: -1 is out of range for uint32',
    ]);
  });

  it('lists and mappings in the wrong place', () => {
    expect(problems({ static_resources: { clusters: { name: 'c' } } })).toEqual([
      'static_resources.clusters: expected a list (repeated envoy.config.cluster.v3.Cluster), got a mapping',
    ]);
    expect(problems({ node: 'n' })).toEqual(['node: expected a mapping (envoy.config.core.v3.Node), got "n"']);
  });

  it('typed_config without @type or with a type no loaded proto defines', () => {
    expect(problems(withCluster({ typed_extension_protocol_options: { x: { explicit_http_config: {} } } }))).toEqual([
      'static_resources.clusters[0].typed_extension_protocol_options.x: missing "@type" (google.protobuf.Any needs a type URL like type.googleapis.com/<message>)',
    ]);
    expect(problems(withCluster({ typed_extension_protocol_options: { x: { '@type': 'type.googleapis.com/envoy.Nope' } } }))).toEqual([
      'static_resources.clusters[0].typed_extension_protocol_options.x["@type"]: unknown type type.googleapis.com/envoy.Nope: not a message of the loaded Envoy protos (see ENVOY_PROTO_FILES)',
    ]);
  });

  it('checks the message a TypedStruct names', () => {
    const typedStruct = {
      static_resources: {
        clusters: [
          {
            name: 'c',
            typed_extension_protocol_options: {
              h: {
                '@type': 'type.googleapis.com/xds.type.v3.TypedStruct',
                type_url: 'type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions',
                value: { explicit_http_config: { http2_protocol_options: {}, http3_protocol_option: {} } },
              },
            },
          },
        ],
      },
    };
    expect(problems(typedStruct)).toEqual([
      'static_resources.clusters[0].typed_extension_protocol_options.h.value.explicit_http_config.http3_protocol_option: ' +
        'unknown field "http3_protocol_option" in envoy.extensions.upstreams.http.v3.HttpProtocolOptions.ExplicitHttpConfig',
    ]);
  });

  it('two members of one oneof, and a required oneof left empty', () => {
    expect(problems(withCluster({ cluster_type: { name: 'envoy.clusters.aggregate' } }))).toEqual([
      'static_resources.clusters[0].cluster_type: only one of type, cluster_type may be set (oneof cluster_discovery_type of envoy.config.cluster.v3.Cluster)',
    ]);
    expect(problems(withExtAuthz({}, { route_config: null }))).toEqual([
      `${HCM_PATH}: one of rds, route_config, scoped_routes is required (oneof route_specifier of envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager)`,
    ]);
  });

  it('required fields (validate rules) that are missing or empty', () => {
    expect(problems(withExtAuthz({}, { stat_prefix: null }))).toEqual([
      `${HCM_PATH}.stat_prefix: required field stat_prefix of envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager is missing`,
    ]);
    expect(problems(withCluster({ name: '' }))).toEqual(['static_resources.clusters[0].name: must be at least 1 character(s) long']);
  });

  it('deprecated fields', () => {
    expect(problems(withCluster({ http2_protocol_options: {} }))).toEqual([
      'static_resources.clusters[0].http2_protocol_options: deprecated field http2_protocol_options of envoy.config.cluster.v3.Cluster',
    ]);
  });
});

describe('checkEnvoyYaml', () => {
  it('reports YAML errors (here a duplicate key) with file, line and column', () => {
    expect(checkEnvoyYaml('admin: {}\nadmin: {}\n', 'dup.yaml').violations).toEqual([
      { path: '(root)', at: 'dup.yaml:2:1', message: 'not valid YAML: Map keys must be unique' },
    ]);
  });

  it('locates a violation at its key', () => {
    expect(checkEnvoyYaml('node:\n  id: n\n  clustr: c\n', 'n.yaml').violations).toEqual([
      { path: 'node.clustr', at: 'n.yaml:3:3', message: 'unknown field "clustr" in envoy.config.core.v3.Node' },
    ]);
  });

  it('quotes map keys that are not identifiers in paths', () => {
    expect(formatYamlPath(['a', 0, 'envoy.filters.http.ext_authz', '@type'])).toBe('a[0]["envoy.filters.http.ext_authz"]["@type"]');
    expect(formatYamlPath([])).toBe('(root)');
  });
});

describe('checkEnvoyValue properties (on envoy-config/sidecar.yaml)', () => {
  const text = readFileSync(path.join(REPO_ROOT, 'envoy-config/sidecar.yaml'), 'utf8');
  const base = checkEnvoyYaml(text, 'sidecar.yaml');
  const root = loadEnvoyProtos();

  function edited(p: YamlPath, edit: (parent: Record<string | number, unknown>, key: string | number) => void): unknown {
    const copy: unknown = structuredClone(base.value);
    let node = copy as Record<string | number, unknown>;
    for (const key of p.slice(0, -1)) node = node[key] as Record<string | number, unknown>;
    const last = p[p.length - 1];
    if (last === undefined) throw new Error('empty path');
    edit(node, last);
    return copy;
  }

  it('starts from a clean file', () => {
    expect(base.violations).toEqual([]);
    expect(base.messages.length).toBeGreaterThan(20);
    expect(base.enums.length).toBeGreaterThan(5);
  });

  it('an unknown key added to any message is the one violation, at that key', () => {
    const key = fc.stringMatching(/^[a-z][a-z0-9_]{0,24}$/);
    fc.assert(
      fc.property(fc.nat(base.messages.length - 1), key, (i, k) => {
        const target = base.messages[i];
        if (!target) throw new Error('no message');
        const type = root.lookupType(target.typeName);
        fc.pre(!type.fieldsArray.some((f) => f.name === k || jsonName(f) === k));
        const value = edited([...target.path, k], (parent, last) => {
          parent[last] = true;
        });
        const result = checkEnvoyValue(value, BOOTSTRAP_TYPE).violations;
        expect(result).toEqual([{ path: [...target.path, k], message: `unknown field "${k}" in ${target.typeName}` }]);
      }),
    );
  });

  it('any enum value replaced by a name the enum lacks is the one violation, at that value', () => {
    fc.assert(
      fc.property(fc.nat(base.enums.length - 1), fc.stringMatching(/^[A-Z][A-Z0-9_]{0,20}$/), (i, name) => {
        const target = base.enums[i];
        if (!target) throw new Error('no enum');
        const en = root.lookupEnum(target.typeName);
        fc.pre(!(name in en.values));
        const value = edited(target.path, (parent, last) => {
          parent[last] = name;
        });
        const result = checkEnvoyValue(value, BOOTSTRAP_TYPE).violations;
        expect(result).toEqual([
          { path: target.path, message: `${JSON.stringify(name)} is not a value of ${target.typeName} (${Object.keys(en.values).join(', ')})` },
        ]);
      }),
    );
  });

  it('accepts every proto3 JSON duration and rejects other spellings', () => {
    const timeoutPath = [...(base.messages.find((m) => m.typeName === 'envoy.config.core.v3.GrpcService')?.path ?? []), 'timeout'];
    const withTimeout = (t: string): unknown =>
      edited(timeoutPath, (parent, last) => {
        parent[last] = t;
      });
    const valid = fc
      .tuple(fc.integer({ min: 0, max: 10 ** 9 }), fc.option(fc.stringMatching(/^[0-9]{1,9}$/), { nil: undefined }))
      .map(([s, frac]) => `${s}${frac === undefined ? '' : `.${frac}`}s`);
    fc.assert(
      fc.property(valid, (t) => {
        expect(checkEnvoyValue(withTimeout(t), BOOTSTRAP_TYPE).violations).toEqual([]);
      }),
    );
    const invalid = fc.string({ maxLength: 12 }).filter((t) => !/^-?\d{1,12}(\.\d{1,9})?s$/.test(t));
    fc.assert(
      fc.property(invalid, (t) => {
        const result = checkEnvoyValue(withTimeout(t), BOOTSTRAP_TYPE).violations;
        expect(result.map((v) => v.path)).toEqual([timeoutPath]);
      }),
    );
  });
});
