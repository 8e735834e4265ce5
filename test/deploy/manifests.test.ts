/**
 * deploy/ (Kubernetes manifests, Istio and Grafana files; SPEC §2–§3, §8): every cross-reference
 * holds. Selectors select the chio-authz pods, Service ports name container ports, probes use the
 * gRPC port, volumes project existing ConfigMap/Secret keys to the paths chio.yaml names, chio.yaml
 * and policy.yaml load with chio's own loaders, the Istio provider points at the Service, and every
 * metric the Grafana dashboard queries exists. Failures name the file and document.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { parseConfig, type Config } from '../../src/config/load.js';
import { ChioError } from '../../src/errors.js';
import { loadSeedFile } from '../../src/keys.js';
import { METRIC_NAMES, Metrics } from '../../src/metrics.js';
import { compilePolicy } from '../../src/policy/load.js';
import { REPO_ROOT, listFiles, readYamlDocuments, type YamlDocument } from '../helpers/envoy-bootstrap.js';

// ---- the shapes this test reads (loose: other fields are Kubernetes' business) ----

const labelMap = z.record(z.string(), z.string());
const labelSelector = z.looseObject({
  matchLabels: labelMap.optional(),
  matchExpressions: z
    .array(z.looseObject({ key: z.string(), operator: z.enum(['In', 'NotIn', 'Exists', 'DoesNotExist']), values: z.array(z.string()).optional() }))
    .optional(),
});
const metadata = z.looseObject({ name: z.string().min(1), namespace: z.string().optional(), labels: labelMap.optional() });
const manifest = z.looseObject({ apiVersion: z.string().min(1), kind: z.string().min(1), metadata });
const volumeMount = z.looseObject({ name: z.string(), mountPath: z.string(), readOnly: z.boolean().optional(), subPath: z.string().optional() });
const grpcProbe = z.looseObject({ grpc: z.looseObject({ port: z.number().int(), service: z.string().optional() }) });
const quantity = z.union([z.string(), z.number()]);
const resources = z.looseObject({ requests: z.record(z.string(), quantity).optional(), limits: z.record(z.string(), quantity).optional() });
const containerSecurity = z.looseObject({
  runAsNonRoot: z.boolean().optional(),
  allowPrivilegeEscalation: z.boolean().optional(),
  readOnlyRootFilesystem: z.boolean().optional(),
  capabilities: z.looseObject({ drop: z.array(z.string()).optional(), add: z.array(z.string()).optional() }).optional(),
});
const container = z.looseObject({
  name: z.string(),
  image: z.string(),
  command: z.array(z.string()).optional(),
  args: z.array(z.string()).optional(),
  env: z.array(z.looseObject({ name: z.string(), value: z.string().optional() })).optional(),
  ports: z.array(z.looseObject({ name: z.string(), containerPort: z.number().int(), protocol: z.string().optional() })).optional(),
  volumeMounts: z.array(volumeMount).optional(),
  readinessProbe: z.unknown().optional(),
  livenessProbe: z.unknown().optional(),
  resources: resources.optional(),
  securityContext: containerSecurity.optional(),
});
const keyToPath = z.looseObject({ key: z.string(), path: z.string() });
const volume = z.looseObject({
  name: z.string(),
  configMap: z.looseObject({ name: z.string(), items: z.array(keyToPath).optional(), defaultMode: z.number().optional() }).optional(),
  secret: z.looseObject({ secretName: z.string(), items: z.array(keyToPath).optional(), defaultMode: z.number().optional() }).optional(),
  emptyDir: z.looseObject({ medium: z.string().optional(), sizeLimit: quantity.optional() }).optional(),
  csi: z.looseObject({ driver: z.string(), readOnly: z.boolean().optional() }).optional(),
});
const podSpec = z.looseObject({
  serviceAccountName: z.string().optional(),
  securityContext: z
    .looseObject({ runAsNonRoot: z.boolean().optional(), runAsUser: z.number().optional(), fsGroup: z.number().optional(), seccompProfile: z.looseObject({ type: z.string() }).optional() })
    .optional(),
  initContainers: z.array(container).optional(),
  containers: z.array(container).min(1),
  volumes: z.array(volume).optional(),
  topologySpreadConstraints: z.array(z.looseObject({ labelSelector })).optional(),
});
const deploymentSchema = manifest.extend({
  spec: z.looseObject({
    replicas: z.number().int(),
    selector: labelSelector,
    template: z.looseObject({ metadata: z.looseObject({ labels: labelMap }), spec: podSpec }),
  }),
});
const servicePort = z.looseObject({ name: z.string(), port: z.number().int(), targetPort: z.union([z.string(), z.number()]), appProtocol: z.string().optional() });
const serviceSchema = manifest.extend({ spec: z.looseObject({ selector: labelMap, ports: z.array(servicePort).min(1) }) });
const pdbSchema = manifest.extend({ spec: z.looseObject({ selector: labelSelector, minAvailable: z.union([z.number(), z.string()]).optional() }) });
const networkPeer = z.looseObject({ namespaceSelector: labelSelector.optional(), podSelector: labelSelector.optional() });
const networkPolicySchema = manifest.extend({
  spec: z.looseObject({
    podSelector: labelSelector,
    policyTypes: z.array(z.string()),
    ingress: z.array(z.looseObject({ from: z.array(networkPeer), ports: z.array(z.looseObject({ port: z.union([z.string(), z.number()]) })) })),
  }),
});
const serviceMonitorSchema = manifest.extend({
  spec: z.looseObject({
    selector: labelSelector,
    namespaceSelector: z.looseObject({ matchNames: z.array(z.string()) }),
    endpoints: z.array(z.looseObject({ port: z.string(), path: z.string() })).min(1),
  }),
});
const clusterSpiffeIdSchema = manifest.extend({
  spec: z.looseObject({ spiffeIDTemplate: z.string(), podSelector: labelSelector, namespaceSelector: labelSelector }),
});
const configMapSchema = manifest.extend({ data: z.record(z.string(), z.string()) });
const secretSchema = manifest.extend({ stringData: z.record(z.string(), z.string()).optional(), data: z.record(z.string(), z.string()).optional() });
const istioOperatorSchema = manifest.extend({
  spec: z.looseObject({
    meshConfig: z.looseObject({
      extensionProviders: z.array(
        z.looseObject({
          name: z.string(),
          envoyExtAuthzGrpc: z.looseObject({ service: z.string(), port: z.number().int(), timeout: z.string(), failOpen: z.boolean() }),
        }),
      ),
    }),
  }),
});
const authorizationPolicySchema = manifest.extend({
  spec: z.looseObject({ action: z.string(), provider: z.looseObject({ name: z.string() }), rules: z.array(z.unknown()).min(1) }),
});
const kustomizationSchema = z.looseObject({
  kind: z.literal('Kustomization'),
  resources: z.array(z.string()),
  images: z.array(z.looseObject({ name: z.string() })).optional(),
});

type Container = z.infer<typeof container>;
type PodSpec = z.infer<typeof podSpec>;
type LabelSelector = z.infer<typeof labelSelector>;
type Volume = z.infer<typeof volume>;

// ---- loading ----

const docs = readYamlDocuments('deploy');
const BASE_DIR = 'deploy';
const NOT_IN_KUSTOMIZATION = ['deploy/kustomization.yaml', 'deploy/secret.yaml'];
const CHIO_CONTAINER = 'chio-authz';
const SPIFFE_CSI_DRIVER = 'csi.spiffe.io';
const CHIO_SERVICES = ['', 'envoy.service.auth.v3.Authorization'];
const SPIFFE_ID_TEMPLATE = 'spiffe://{{ .TrustDomain }}/ns/{{ .PodMeta.Namespace }}/sa/{{ .PodSpec.ServiceAccountName }}';

function kindOf(doc: YamlDocument): string {
  const kind = (doc.value as { kind?: unknown }).kind;
  return typeof kind === 'string' ? kind : '';
}

/** The one document of `kind` (and `name`), parsed with `schema`; throws naming what is missing or wrong. */
function one<S extends z.ZodType>(kind: string, schema: S, name?: string): { doc: YamlDocument; value: z.infer<S> } {
  const matches = docs.filter((d) => kindOf(d) === kind && (name === undefined || (d.value as { metadata?: { name?: unknown } }).metadata?.name === name));
  if (matches.length !== 1) throw new Error(`deploy/: expected one ${kind}${name ? ` named ${name}` : ''}, found ${matches.map((d) => d.label).join(', ') || 'none'}`);
  const doc = matches[0] as YamlDocument;
  const parsed = schema.safeParse(doc.value);
  if (!parsed.success) throw new Error(`${doc.label}: ${z.prettifyError(parsed.error)}`);
  return { doc, value: parsed.data };
}

const deployment = one('Deployment', deploymentSchema, 'chio-authz');
const pod = deployment.value.spec.template.spec;
const podLabels = deployment.value.spec.template.metadata.labels;
const namespace = one('Namespace', manifest);
const service = one('Service', serviceSchema, 'chio-authz');

function chioContainer(): Container {
  const c = pod.containers.find((x) => x.name === CHIO_CONTAINER);
  if (!c) throw new Error(`${deployment.doc.label}: no container ${CHIO_CONTAINER}`);
  return c;
}

function containerPort(c: Container, name: string): number {
  const port = c.ports?.find((p) => p.name === name);
  if (!port) throw new Error(`${deployment.doc.label}: container ${c.name} has no port named ${name}`);
  return port.containerPort;
}

function selects(selector: LabelSelector, labels: Readonly<Record<string, string>>): boolean {
  const byLabel = Object.entries(selector.matchLabels ?? {}).every(([k, v]) => labels[k] === v);
  const byExpression = (selector.matchExpressions ?? []).every((e) => {
    const value = labels[e.key];
    const listed = value !== undefined && (e.values ?? []).includes(value);
    switch (e.operator) {
      case 'In':
        return listed;
      case 'NotIn':
        return !listed;
      case 'Exists':
        return value !== undefined;
      case 'DoesNotExist':
        return value === undefined;
    }
  });
  return byLabel && byExpression;
}

function isEmptySelector(selector: LabelSelector): boolean {
  return Object.keys(selector.matchLabels ?? {}).length === 0 && (selector.matchExpressions ?? []).length === 0;
}

// ---- where a file inside a container comes from ----

type FileSource =
  | { readonly kind: 'configMap'; readonly name: string; readonly key: string }
  | { readonly kind: 'secret'; readonly name: string; readonly key: string }
  | { readonly kind: 'emptyDir'; readonly volume: string; readonly writable: boolean };

/** The mount of `c` that holds `file` (longest mountPath prefix), with the path inside it. */
function mountOf(spec: PodSpec, c: Container, file: string): { volume: Volume; relative: string; readOnly: boolean } {
  const mounts = (c.volumeMounts ?? [])
    .filter((m) => file.startsWith(`${m.mountPath.replace(/\/$/, '')}/`))
    .sort((a, b) => b.mountPath.length - a.mountPath.length);
  const mount = mounts[0];
  if (!mount) throw new Error(`${deployment.doc.label}: ${file} is on no volume of container ${c.name} (read-only root filesystem)`);
  const vol = spec.volumes?.find((v) => v.name === mount.name);
  if (!vol) throw new Error(`${deployment.doc.label}: container ${c.name} mounts undefined volume ${mount.name}`);
  const relative = path.posix.relative(mount.mountPath, file);
  return { volume: vol, relative: mount.subPath ? path.posix.join(mount.subPath, relative) : relative, readOnly: mount.readOnly === true };
}

/** The ConfigMap/Secret key or emptyDir that `file` in container `c` is, following init-container copies. */
function resolveFile(spec: PodSpec, c: Container, file: string): FileSource {
  const { volume: vol, relative, readOnly } = mountOf(spec, c, file);
  const projected = (items: ReadonlyArray<{ key: string; path: string }> | undefined): string => {
    const key = items ? items.find((i) => i.path === relative)?.key : relative;
    if (key === undefined) throw new Error(`${deployment.doc.label}: volume ${vol.name} projects nothing at ${relative} (needed for ${file})`);
    return key;
  };
  if (vol.configMap) return { kind: 'configMap', name: vol.configMap.name, key: projected(vol.configMap.items) };
  if (vol.secret) return { kind: 'secret', name: vol.secret.secretName, key: projected(vol.secret.items) };
  if (vol.emptyDir) return { kind: 'emptyDir', volume: vol.name, writable: !readOnly };
  throw new Error(`${deployment.doc.label}: ${file} is on volume ${vol.name}, which is not a ConfigMap, Secret or emptyDir`);
}

/** An init container running the copy script (`node -e <script> FROM TO NAME…`). */
interface CopyStep {
  readonly container: Container;
  readonly script: string;
  readonly from: string;
  readonly to: string;
  readonly names: readonly string[];
}

function copySteps(spec: PodSpec): CopyStep[] {
  return (spec.initContainers ?? []).flatMap((c) => {
    const [node, flag, script, from, to, ...names] = [...(c.command ?? []), ...(c.args ?? [])];
    return node === 'node' && flag === '-e' && script && from && to ? [{ container: c, script, from, to, names }] : [];
  });
}

/** Where a file on an emptyDir was copied from: the init step that writes it, and its source. */
function seededFrom(spec: PodSpec, emptyDir: string, file: string): { step: CopyStep; source: FileSource } {
  for (const step of copySteps(spec)) {
    const target = mountOf(spec, step.container, path.posix.join(step.to, path.posix.basename(file)));
    if (target.volume.name !== emptyDir || target.readOnly || !step.names.includes(path.posix.basename(file))) continue;
    return { step, source: resolveFile(spec, step.container, path.posix.join(step.from, path.posix.basename(file))) };
  }
  throw new Error(`${deployment.doc.label}: no init container copies ${path.posix.basename(file)} into emptyDir ${emptyDir}`);
}

/** A ConfigMap value, and a label naming the manifest document and key for messages. */
function configMapEntry(name: string, key: string): { text: string; label: string } {
  const cm = one('ConfigMap', configMapSchema, name);
  const text = cm.value.data[key];
  if (text === undefined) throw new Error(`${cm.doc.label}: no key ${key}`);
  return { text, label: `${cm.doc.label} data["${key}"]` };
}

function secretKeys(name: string): string[] {
  const secret = one('Secret', secretSchema, name).value;
  return [...Object.keys(secret.stringData ?? {}), ...Object.keys(secret.data ?? {})];
}

/** The value after `flag` in the chio container's command line. */
function commandOption(c: Container, flag: string): string {
  const argv = [...(c.command ?? []), ...(c.args ?? [])];
  const value = argv[argv.indexOf(flag) + 1];
  if (!argv.includes(flag) || value === undefined) throw new Error(`${deployment.doc.label}: container ${c.name} has no ${flag}`);
  return value;
}

function configFilePath(): string {
  return commandOption(chioContainer(), '--config');
}

function loadDeployedConfig(): Config {
  const file = configFilePath();
  const source = resolveFile(pod, chioContainer(), file);
  if (source.kind !== 'configMap') throw new Error(`${deployment.doc.label}: ${file} should come from a ConfigMap, comes from ${source.kind}`);
  const { text, label } = configMapEntry(source.name, source.key);
  return parseConfig(text, label, path.posix.dirname(file));
}

function portOf(hostPort: string): number {
  return Number(hostPort.slice(hostPort.lastIndexOf(':') + 1));
}

// ---- the tests ----

describe('deploy/: the manifests as a set', () => {
  it('every manifest has apiVersion, kind and name; namespaced ones are in the chio-system Namespace', () => {
    const clusterScoped = new Set(['Namespace', 'ClusterSPIFFEID', 'Kustomization']);
    const base = docs.filter((d) => !d.file.startsWith(`${BASE_DIR}/istio/`) && kindOf(d) !== 'Kustomization');
    expect(base.length).toBeGreaterThanOrEqual(10);
    for (const d of base) {
      const parsed = manifest.safeParse(d.value);
      expect(parsed.success, `${d.label}: ${parsed.success ? '' : z.prettifyError(parsed.error)}`).toBe(true);
      if (!parsed.success || clusterScoped.has(parsed.data.kind)) continue;
      expect(parsed.data.metadata.namespace, `${d.label}: metadata.namespace`).toBe(namespace.value.metadata.name);
    }
  });

  it('kustomization.yaml lists every base manifest (all but the placeholder Secret), and only existing files', () => {
    const kustomization = kustomizationSchema.parse(one('Kustomization', z.unknown()).doc.value);
    const listed = kustomization.resources.map((r) => `${BASE_DIR}/${r}`).sort();
    const expected = listFiles(BASE_DIR, /^[^/]+\.ya?ml$/).filter((f) => !NOT_IN_KUSTOMIZATION.includes(f));
    expect(listed, 'deploy/kustomization.yaml resources').toEqual(expected);
    const images = [...pod.containers, ...(pod.initContainers ?? [])].map((c) => c.image.replace(/:[^/:]+$/, ''));
    for (const image of kustomization.images ?? []) expect(images, `kustomization images: ${image.name}`).toContain(image.name);
  });
});

describe('deploy/: selectors select the chio-authz pods', () => {
  it('the Deployment selector matches its pod labels', () => {
    expect(isEmptySelector(deployment.value.spec.selector), `${deployment.doc.label}: empty selector`).toBe(false);
    expect(selects(deployment.value.spec.selector, podLabels), deployment.doc.label).toBe(true);
  });

  it('Service, PodDisruptionBudget, NetworkPolicy, ClusterSPIFFEID and topology spread select them', () => {
    const selectors: Array<[string, LabelSelector]> = [
      [service.doc.label, { matchLabels: service.value.spec.selector }],
      [one('PodDisruptionBudget', pdbSchema).doc.label, one('PodDisruptionBudget', pdbSchema).value.spec.selector],
      [one('NetworkPolicy', networkPolicySchema).doc.label, one('NetworkPolicy', networkPolicySchema).value.spec.podSelector],
      [one('ClusterSPIFFEID', clusterSpiffeIdSchema).doc.label, one('ClusterSPIFFEID', clusterSpiffeIdSchema).value.spec.podSelector],
      ...(pod.topologySpreadConstraints ?? []).map((t): [string, LabelSelector] => [`${deployment.doc.label} topologySpreadConstraints`, t.labelSelector]),
    ];
    expect(selectors.length).toBeGreaterThanOrEqual(5);
    for (const [where, selector] of selectors) {
      expect(isEmptySelector(selector), `${where}: an empty selector selects every pod`).toBe(false);
      expect(selects(selector, podLabels), `${where} selects ${JSON.stringify(podLabels)}`).toBe(true);
    }
  });

  it('the ServiceMonitor selects the Service, in its namespace', () => {
    const monitor = one('ServiceMonitor', serviceMonitorSchema);
    expect(selects(monitor.value.spec.selector, service.value.metadata.labels ?? {}), `${monitor.doc.label} selects ${service.doc.label}`).toBe(true);
    expect(isEmptySelector(monitor.value.spec.selector), `${monitor.doc.label}: empty selector`).toBe(false);
    expect(monitor.value.spec.namespaceSelector.matchNames, `${monitor.doc.label}: namespaceSelector`).toContain(service.value.metadata.namespace);
  });

  it('the ClusterSPIFFEID selects the chio-system namespace and uses the standard ID template', () => {
    const spiffe = one('ClusterSPIFFEID', clusterSpiffeIdSchema);
    const nsLabels = { ...namespace.value.metadata.labels, 'kubernetes.io/metadata.name': namespace.value.metadata.name };
    expect(selects(spiffe.value.spec.namespaceSelector, nsLabels), `${spiffe.doc.label} selects ${namespace.doc.label}`).toBe(true);
    expect(spiffe.value.spec.spiffeIDTemplate, `${spiffe.doc.label}: spiffeIDTemplate`).toBe(SPIFFE_ID_TEMPLATE);
  });

  it('the PodDisruptionBudget leaves room for a drain', () => {
    const pdb = one('PodDisruptionBudget', pdbSchema);
    const minAvailable = pdb.value.spec.minAvailable;
    expect(deployment.value.spec.replicas, `${deployment.doc.label}: replicas`).toBeGreaterThanOrEqual(2);
    expect(typeof minAvailable === 'number' && minAvailable < deployment.value.spec.replicas, `${pdb.doc.label}: minAvailable ${String(minAvailable)} < replicas ${deployment.value.spec.replicas}`).toBe(true);
  });
});

describe('deploy/: ports and probes', () => {
  it('every Service targetPort names a container port with the same number', () => {
    for (const p of service.value.spec.ports) {
      expect(typeof p.targetPort, `${service.doc.label} port ${p.name}: targetPort by name`).toBe('string');
      expect(containerPort(chioContainer(), String(p.targetPort)), `${service.doc.label} port ${p.name}`).toBe(p.port);
    }
    expect(service.value.spec.ports.find((p) => p.name === 'grpc')?.appProtocol, `${service.doc.label}: grpc appProtocol`).toBe('grpc');
  });

  it('readiness and liveness are gRPC probes (grpc.health.v1) on the grpc container port', () => {
    const c = chioContainer();
    for (const [name, probe] of [
      ['readinessProbe', c.readinessProbe],
      ['livenessProbe', c.livenessProbe],
    ] as const) {
      const parsed = grpcProbe.safeParse(probe);
      expect(parsed.success, `${deployment.doc.label} ${name} is a grpc probe`).toBe(true);
      if (!parsed.success) continue;
      expect(parsed.data.grpc.port, `${deployment.doc.label} ${name}.grpc.port`).toBe(containerPort(c, 'grpc'));
      expect(CHIO_SERVICES, `${deployment.doc.label} ${name}.grpc.service`).toContain(parsed.data.grpc.service ?? '');
    }
  });

  it("chio.yaml listens on all interfaces, on the container's grpc and admin ports", () => {
    const config = loadDeployedConfig();
    const c = chioContainer();
    const where = `${config.file} listen vs ${deployment.doc.label} container ports`;
    expect({ where, grpc: portOf(config.listen.grpc), admin: portOf(config.listen.admin) }).toEqual({ where, grpc: containerPort(c, 'grpc'), admin: containerPort(c, 'admin') });
    for (const address of [config.listen.grpc, config.listen.admin]) expect(address, `${config.file}: listen address reachable from probes and the Service`).toMatch(/^(0\.0\.0\.0|\[::\]):/);
  });

  it('the NetworkPolicy admits the Check port from mesh namespaces and the admin port from monitoring', () => {
    const policy = one('NetworkPolicy', networkPolicySchema);
    const where = policy.doc.label;
    expect(policy.value.spec.policyTypes, `${where}: policyTypes`).toEqual(['Ingress']);
    const c = chioContainer();
    const ports = policy.value.spec.ingress.map((rule) => rule.ports.map((p) => (typeof p.port === 'string' ? containerPort(c, p.port) : p.port)));
    expect(ports, `${where}: ingress ports`).toEqual([[containerPort(c, 'grpc')], [containerPort(c, 'admin')]]);
    const [mesh, monitoring] = policy.value.spec.ingress;
    expect(mesh?.from.map((peer) => peer.namespaceSelector?.matchLabels), `${where}: mesh namespaces`).toContainEqual({ 'istio-injection': 'enabled' });
    expect(monitoring?.from.map((peer) => peer.namespaceSelector?.matchLabels), `${where}: Prometheus`).toEqual([{ 'kubernetes.io/metadata.name': 'monitoring' }]);
  });

  it('the ServiceMonitor scrapes /metrics on the Service port that reaches the admin listener', () => {
    const monitor = one('ServiceMonitor', serviceMonitorSchema);
    const admin = service.value.spec.ports.find((p) => p.targetPort === 'admin');
    expect(admin, `${service.doc.label}: a port targeting admin`).toBeDefined();
    expect(monitor.value.spec.endpoints.map((e) => ({ port: e.port, path: e.path })), monitor.doc.label).toEqual([{ port: admin?.name, path: '/metrics' }]);
  });
});

describe('deploy/: files, keys and the paths chio.yaml names', () => {
  it('every ConfigMap and Secret a volume uses exists with the keys it projects', () => {
    const vols = pod.volumes ?? [];
    expect(vols.length).toBeGreaterThan(0);
    for (const v of vols) {
      if (v.configMap) {
        const keys = Object.keys(one('ConfigMap', configMapSchema, v.configMap.name).value.data);
        for (const item of v.configMap.items ?? []) expect(keys, `${deployment.doc.label} volume ${v.name}`).toContain(item.key);
      }
      if (v.secret) {
        const keys = secretKeys(v.secret.secretName);
        for (const item of v.secret.items ?? []) expect(keys, `${deployment.doc.label} volume ${v.name}`).toContain(item.key);
        expect(v.secret.defaultMode, `${deployment.doc.label} volume ${v.name}: defaultMode 0400`).toBe(0o400);
      }
    }
    for (const c of [...pod.containers, ...(pod.initContainers ?? [])]) {
      for (const m of c.volumeMounts ?? []) expect(vols.map((v) => v.name), `${deployment.doc.label} ${c.name} mounts ${m.name}`).toContain(m.name);
    }
  });

  it('--config is the ConfigMap chio.yaml, and it validates with parseConfig', () => {
    expect(resolveFile(pod, chioContainer(), configFilePath()), `${deployment.doc.label}: --config`).toEqual({ kind: 'configMap', name: 'chio-config', key: 'chio.yaml' });
    expect(loadDeployedConfig().schema).toBe('chio.config.v1');
  });

  it('the policy chio.yaml names is the ConfigMap policy.yaml, and it compiles', () => {
    const config = loadDeployedConfig();
    const source = resolveFile(pod, chioContainer(), config.policy);
    expect(source, `${config.file}: policy`).toEqual({ kind: 'configMap', name: 'chio-config', key: 'policy.yaml' });
    if (source.kind !== 'configMap') return;
    const { text, label } = configMapEntry(source.name, source.key);
    const policy = compilePolicy(text, label);
    expect([...policy.rules.keys()], label).toEqual(['payments_write', 'payments_read']);
    expect(policy.unmatched, `${label}: defaults.unmatched`).toBe('deny');
  });

  it('the signing seed is a read-only 0600 copy, made by an init container from the Secret key kernel.seed', () => {
    const config = loadDeployedConfig();
    const seed = resolveFile(pod, chioContainer(), config.keys.receipt_signing_seed);
    const where = `${config.file} keys.receipt_signing_seed in ${deployment.doc.label}`;
    expect(seed, where).toMatchObject({ kind: 'emptyDir', writable: false });
    if (seed.kind !== 'emptyDir') return;
    expect(pod.volumes?.find((v) => v.name === seed.volume)?.emptyDir?.medium, `${where}: the seed copy stays in memory`).toBe('Memory');
    expect(seededFrom(pod, seed.volume, config.keys.receipt_signing_seed).source, where).toEqual({ kind: 'secret', name: 'chio-secrets', key: 'kernel.seed' });
  });

  it('the admin token file is the Secret key admin.token (re-read on use, so rotation needs no restart)', () => {
    const config = loadDeployedConfig();
    expect(config.admin.token_file, `${config.file}: admin.token_file`).toBeDefined();
    expect(resolveFile(pod, chioContainer(), String(config.admin.token_file)), `${config.file}: admin.token_file in ${deployment.doc.label}`).toEqual({
      kind: 'secret',
      name: 'chio-secrets',
      key: 'admin.token',
    });
  });

  it('receipts go to a writable volume', () => {
    const config = loadDeployedConfig();
    expect(config.receipts.sinks.length, `${config.file}: receipts.sinks`).toBeGreaterThan(0);
    for (const sink of config.receipts.sinks) {
      expect(resolveFile(pod, chioContainer(), sink.path), `${config.file}: sink ${sink.path} in ${deployment.doc.label}`).toMatchObject({ kind: 'emptyDir', writable: true });
    }
  });

  it('the SPIRE Workload API socket is mounted read-only from the SPIFFE CSI driver', () => {
    const c = chioContainer();
    const socket = c.env?.find((e) => e.name === 'SPIFFE_ENDPOINT_SOCKET')?.value ?? '';
    expect(socket, `${deployment.doc.label}: SPIFFE_ENDPOINT_SOCKET`).toMatch(/^unix:\/\//);
    const { volume: vol, readOnly } = mountOf(pod, c, socket.replace(/^unix:\/\//, ''));
    expect({ driver: vol.csi?.driver, readOnly }, `${deployment.doc.label}: volume ${vol.name}`).toEqual({ driver: SPIFFE_CSI_DRIVER, readOnly: true });
  });

  it('the pod runs as the chio-authz ServiceAccount', () => {
    expect(pod.serviceAccountName, `${deployment.doc.label}: serviceAccountName`).toBeDefined();
    const account = one('ServiceAccount', manifest, pod.serviceAccountName);
    expect(account.value.metadata.namespace, `${account.doc.label}: namespace`).toBe(deployment.value.metadata.namespace);
  });
});

describe('deploy/: the init copy step and the Secret placeholders, run for real', () => {
  const work = mkdtempSync(path.join(tmpdir(), 'chio-deploy-'));
  afterAll(() => rmSync(work, { recursive: true, force: true }));
  const SEED_HEX = `${'ab'.repeat(32)}\n`;

  it("turns a group-readable Secret file (what the kubelet makes with fsGroup) into a seed chio accepts", () => {
    const [step] = copySteps(pod);
    expect(step, `${deployment.doc.label}: an init container copies the seed`).toBeDefined();
    if (!step) return;
    const from = path.join(work, 'from');
    const to = path.join(work, 'to');
    mkdirSync(from);
    mkdirSync(to);
    for (const name of step.names) {
      writeFileSync(path.join(from, name), SEED_HEX);
      chmodSync(path.join(from, name), 0o440);
    }
    const source = path.join(from, 'kernel.seed');
    expect(() => loadSeedFile(source)).toThrow(expect.objectContaining({ code: 'key_permissions' }));
    const where = `${deployment.doc.label} init container ${step.container.name}`;
    for (let run = 0; run < 2; run++) {
      // twice: a restarted pod finds the memory emptyDir still filled
      const result = spawnSync(process.execPath, ['-e', step.script, from, to, ...step.names], { encoding: 'utf8' });
      expect({ where, run, status: result.status, stderr: result.stderr }).toEqual({ where, run, status: 0, stderr: '' });
    }
    const copy = path.join(to, 'kernel.seed');
    expect(statSync(copy).mode & 0o777, `${where}: mode of the copy`).toBe(0o600);
    expect(readFileSync(copy, 'utf8'), `${where}: content of the copy`).toBe(SEED_HEX);
    expect(loadSeedFile(copy).kid).toMatch(/^[A-Za-z0-9_-]{43}$/);
  });

  it('a placeholder seed left in deploy/secret.yaml stops chio (key_invalid); an empty admin token accepts no one', () => {
    const secret = one('Secret', secretSchema, 'chio-secrets');
    const values = secret.value.stringData ?? {};
    expect(Object.keys(values).sort(), `${secret.doc.label}: keys`).toEqual(['admin.token', 'authority.seed', 'kernel.seed']);
    for (const name of ['kernel.seed', 'authority.seed']) {
      const file = path.join(work, `placeholder-${name}`);
      writeFileSync(file, values[name] ?? '', { mode: 0o600 });
      let error: unknown;
      try {
        loadSeedFile(file);
      } catch (err) {
        error = err;
      }
      expect(error, `${secret.doc.label} stringData.${name}`).toBeInstanceOf(ChioError);
      expect((error as ChioError).code, `${secret.doc.label} stringData.${name}`).toBe('key_invalid');
    }
    expect(values['admin.token']?.trim(), `${secret.doc.label} stringData.admin.token`).toBe('');
  });
});

describe('deploy/: the pod is locked down and sized for one core', () => {
  it('every container meets the restricted Pod Security Standard', () => {
    expect(pod.securityContext?.runAsNonRoot, `${deployment.doc.label}: runAsNonRoot`).toBe(true);
    expect(pod.securityContext?.seccompProfile?.type, `${deployment.doc.label}: seccompProfile`).toBe('RuntimeDefault');
    for (const c of [...(pod.initContainers ?? []), ...pod.containers]) {
      const sc = c.securityContext;
      expect(
        { container: c.name, escalation: sc?.allowPrivilegeEscalation, readOnlyRoot: sc?.readOnlyRootFilesystem, drop: sc?.capabilities?.drop, add: sc?.capabilities?.add },
      ).toEqual({ container: c.name, escalation: false, readOnlyRoot: true, drop: ['ALL'], add: undefined });
    }
    expect(namespace.value.metadata.labels?.['pod-security.kubernetes.io/enforce'], namespace.doc.label).toBe('restricted');
  });

  it('every container has requests equal to limits (Guaranteed QoS); chio gets exactly one CPU', () => {
    for (const c of [...(pod.initContainers ?? []), ...pod.containers]) {
      expect(c.resources?.requests, `${deployment.doc.label} ${c.name} resources`).toEqual(c.resources?.limits);
    }
    expect(String(chioContainer().resources?.limits?.['cpu']), `${deployment.doc.label}: cpu limit`).toBe('1');
  });

  it('node accepts the flags on the command line and in NODE_OPTIONS (--single-threaded-gc is not allowed there)', () => {
    const c = chioContainer();
    const argv = c.command ?? [];
    expect(argv[0], `${deployment.doc.label}: command`).toBe('node');
    const flags = argv.slice(1, argv.findIndex((a, i) => i > 0 && !a.startsWith('--')));
    expect(flags, `${deployment.doc.label}: node flags`).toContain('--single-threaded-gc');
    const nodeOptions = c.env?.find((e) => e.name === 'NODE_OPTIONS')?.value ?? '';
    const result = spawnSync(process.execPath, [...flags, '-e', '0'], { encoding: 'utf8', env: { ...process.env, NODE_OPTIONS: nodeOptions } });
    const where = `${deployment.doc.label}: node ${flags.join(' ')} with NODE_OPTIONS=${nodeOptions}`;
    expect({ where, status: result.status, stderr: result.stderr }).toEqual({ where, status: 0, stderr: '' });
  });
});

describe('deploy/istio: the extension provider and the AuthorizationPolicy', () => {
  const operator = one('IstioOperator', istioOperatorSchema);
  const providers = operator.value.spec.meshConfig.extensionProviders;
  const provider = providers.find((p) => p.name === 'chio-authz');

  it("points at the Service's grpc port, fails closed, with a short timeout", () => {
    const where = `${operator.doc.label} extension provider chio-authz`;
    expect(provider, where).toBeDefined();
    const grpc = provider?.envoyExtAuthzGrpc;
    const svc = service.value.metadata;
    expect(grpc?.service, `${where}: service is ${service.doc.label}`).toBe(`${svc.name}.${svc.namespace}.svc.cluster.local`);
    expect(grpc?.port, `${where}: port is ${service.doc.label} grpc`).toBe(service.value.spec.ports.find((p) => p.name === 'grpc')?.port);
    expect(grpc?.failOpen, `${where}: failOpen`).toBe(false);
    expect(grpc?.timeout, `${where}: timeout`).toMatch(/^0\.\d+s$/);
  });

  it('the AuthorizationPolicy is CUSTOM with that provider', () => {
    const policy = one('AuthorizationPolicy', authorizationPolicySchema);
    const where = policy.doc.label;
    expect({ where, action: policy.value.spec.action, provider: policy.value.spec.provider.name }).toEqual({ where, action: 'CUSTOM', provider: provider?.name });
  });
});

describe('deploy/grafana: the dashboard', () => {
  const file = 'deploy/grafana/chio-authz-dashboard.json';
  const dashboard: unknown = JSON.parse(readFileSync(path.join(REPO_ROOT, file), 'utf8'));
  const registry = new Metrics().registry;
  const types = new Map(registry.getMetricsAsArray().map((m) => [m.name, String(m.type)]));

  /** Every PromQL string: targets' `expr` and the templating queries. */
  function queries(node: unknown, found: string[] = []): string[] {
    if (Array.isArray(node)) node.forEach((n) => queries(n, found));
    else if (node !== null && typeof node === 'object') {
      for (const [key, value] of Object.entries(node)) {
        if ((key === 'expr' || key === 'definition') && typeof value === 'string') found.push(value);
        else queries(value, found);
      }
    }
    return found;
  }

  /** The registered metric a series name belongs to (histograms expose _bucket/_sum/_count). */
  function metricOf(series: string): string | undefined {
    if (types.has(series)) return series;
    const base = series.replace(/_(bucket|sum|count)$/, '');
    return types.get(base) === 'histogram' || types.get(base) === 'summary' ? base : undefined;
  }

  const exprs = queries(dashboard);

  it('queries only metrics chio-authz exports (chio_* from METRIC_NAMES, plus Node.js process defaults)', () => {
    expect(exprs.length, `${file}: queries`).toBeGreaterThan(15);
    const known = new Set<string>(Object.values(METRIC_NAMES));
    const used = new Set(exprs.flatMap((e) => e.match(/\b(chio|nodejs|process)_[a-z0-9_]+/g) ?? []));
    for (const series of used) {
      const metric = metricOf(series);
      expect(metric, `${file}: ${series} is not exported`).toBeDefined();
      if (series.startsWith('chio_')) expect(known.has(metric ?? ''), `${file}: ${series} (${String(metric)}) is in METRIC_NAMES`).toBe(true);
    }
    const chioUsed = new Set([...used].filter((s) => s.startsWith('chio_')).map(metricOf));
    expect([...known].filter((m) => !chioUsed.has(m)), 'metrics the dashboard shows nowhere').toEqual([]);
  });

  it('has balanced brackets in every query', () => {
    for (const e of exprs) {
      let depth = 0;
      for (const ch of e) {
        depth += '([{'.includes(ch) ? 1 : ')]}'.includes(ch) ? -1 : 0;
        expect(depth, `${file}: ${e}`).toBeGreaterThanOrEqual(0);
      }
      expect(depth, `${file}: ${e}`).toBe(0);
    }
  });

  it('shows allow/deny by rule and reason, Check p50/p90/p99, receipt commit latency and bundle expiry', () => {
    const all = exprs.join('\n');
    expect(all, file).toContain('sum by (rule, reason) (rate(chio_admissions_total{');
    for (const q of ['0.5', '0.9', '0.99']) expect(all, file).toContain(`histogram_quantile(${q}, sum by (le) (rate(chio_check_duration_seconds_bucket{`);
    expect(all, file).toContain('rate(chio_receipt_commit_duration_seconds_bucket{');
    expect(all, file).toMatch(/chio_trust_bundle_expiry_timestamp_seconds\{[^}]*\}\) - time\(\)/);
  });

  it('every panel has a unique id and a data source', () => {
    const panels = (dashboard as { panels?: Array<{ id?: unknown; type?: unknown; datasource?: unknown }> }).panels ?? [];
    expect(new Set(panels.map((p) => p.id)).size, `${file}: panel ids`).toBe(panels.length);
    for (const p of panels.filter((x) => x.type !== 'row')) expect(p.datasource, `${file} panel ${String(p.id)}`).toEqual({ type: 'prometheus', uid: '${datasource}' });
  });
});
