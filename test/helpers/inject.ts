/**
 * Istio's sidecar injection, offline: the injection templates rendered by Go's text/template with sprig
 * (test/istio/render, built with Debian's golang-go and golang-github-masterminds-sprig-dev), then applied
 * to the pod as istiod's injector does — a strategic merge patch of each rendered template onto the pod in
 * order — followed by the API server's defaulting of a volume with no source (emptyDir).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { fixture, repoRoot } from './paths.js';

type Json = Record<string, unknown>;
const isObj = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);

export const STOCK_TEMPLATE = fixture('istio-injection', 'injection-template.yaml');
export const XSIDECAR_TEMPLATE = join(repoRoot, 'deploy', 'istio', 'xsidecar-injection-template.yaml');
/** Istio's default image for the stock template (global.hub/global.proxy.image:global.tag). */
export const ISTIO_PROXY_IMAGE = 'docker.io/istio/proxyv2:1.30.3';

/** Why templates cannot be rendered here (no Go toolchain or sprig), or undefined. */
export function renderProblem(): string | undefined {
  if (spawnSync('go', ['version'], { stdio: 'ignore' }).status !== 0) return 'go (Debian golang-go) is not installed';
  if (!existsSync('/usr/share/gocode/src/github.com/Masterminds/sprig')) return 'sprig (Debian golang-github-masterminds-sprig-dev) is not installed';
  return undefined;
}

let renderer: string | undefined;

/** Builds test/istio/render once per source version (GOPATH mode: Debian's Go packages). */
function rendererBinary(): string {
  if (renderer) return renderer;
  const src = join(repoRoot, 'test', 'istio', 'render');
  const dir = join(tmpdir(), `xsidecar-render-${Math.floor(statSync(join(src, 'main.go')).mtimeMs)}`);
  const bin = join(dir, 'render');
  if (!existsSync(bin)) {
    mkdirSync(dir, { recursive: true });
    const r = spawnSync('go', ['build', '-o', bin, '.'], {
      cwd: src,
      encoding: 'utf8',
      env: { ...process.env, GO111MODULE: 'off', GOPATH: '/usr/share/gocode', GOCACHE: join(tmpdir(), 'xsidecar-gocache'), GOFLAGS: '' },
    });
    if (r.status !== 0) throw new Error(`building the template renderer failed: ${r.stderr || r.error?.message}`);
  }
  renderer = bin;
  return bin;
}

/** The mesh's default ProxyConfig as istiod hands it to the injector (and so into PROXY_CONFIG). */
export function defaultProxyConfig(over: Json = {}): Json {
  return {
    configPath: './etc/istio/proxy',
    binaryPath: '/usr/local/bin/envoy',
    serviceCluster: 'istio-proxy',
    drainDuration: '45s',
    discoveryAddress: 'istiod.istio-system.svc:15012',
    proxyAdminPort: 15000,
    controlPlaneAuthPolicy: 'MUTUAL_TLS',
    statNameLength: 189,
    concurrency: 2,
    tracing: { zipkin: { address: 'zipkin.istio-system:9411' } },
    statusPort: 15020,
    terminationDrainDuration: '5s',
    ...over,
  };
}

export interface InjectOptions {
  readonly templates?: readonly string[];
  readonly proxyConfig?: Json;
  readonly nativeSidecars?: boolean;
  readonly values?: Json;
  /** The owning Deployment's name (DeploymentMeta); default: the pod's app label. */
  readonly deployment?: string;
}

/** The injector's SidecarTemplateData for this pod, as JSON for the renderer. */
export function templateData(pod: Json, o: InjectOptions = {}): Json {
  const meta = (pod.metadata ?? {}) as Json;
  const spec = (pod.spec ?? {}) as Json;
  const labels = (meta.labels ?? {}) as Record<string, string>;
  const ns = (meta.namespace as string) ?? 'default';
  const pc = o.proxyConfig ?? defaultProxyConfig();
  const values = o.values ?? (JSON.parse(readFileSync(fixture('istio-injection', 'values.json'), 'utf8')) as Json);
  const containers = ((spec.containers ?? []) as Json[]).map((c) => ({ Name: c.name, Ports: c.ports ?? [] }));
  return {
    TypeMeta: { APIVersion: 'apps/v1', Kind: 'Deployment' },
    DeploymentMeta: { Name: o.deployment ?? labels.app ?? meta.name, Namespace: ns },
    ObjectMeta: { Name: meta.name ?? '', Namespace: ns, Labels: labels, Annotations: meta.annotations ?? {} },
    Spec: { Containers: containers, ServiceAccountName: spec.serviceAccountName ?? 'default' },
    ProxyConfig: {
      InterceptionMode: (pc.interceptionMode as string) ?? 'REDIRECT',
      HoldApplicationUntilProxyStarts: pc.holdApplicationUntilProxyStarts === true ? { Value: true } : null,
      ProxyMetadata: pc.proxyMetadata ?? {},
      Tracing: null,
      JSON: pc,
    },
    MeshConfig: { ProxyListenPort: 0, ProxyInboundListenPort: 0, TrustDomain: 'cluster.local' },
    Values: values,
    Revision: '',
    ProxyImage: ISTIO_PROXY_IMAGE,
    ProxyUID: null,
    ProxyGID: null,
    NativeSidecars: o.nativeSidecars ?? false,
    InboundTrafficPolicyMode: '',
    CompliancePolicy: '',
  };
}

/** Renders templates (each its own YAML document) for this data. */
export function render(templates: readonly string[], data: Json): Json[] {
  const r = spawnSync(rendererBinary(), [...templates], { input: JSON.stringify(data), encoding: 'utf8', maxBuffer: 16 << 20 });
  if (r.status !== 0) throw new Error(`rendering failed: ${r.stderr || r.error?.message}`);
  return parseAllDocuments(r.stdout).map((d, i) => {
    if (d.errors.length > 0) throw new Error(`rendered template ${i} is not valid YAML: ${d.errors[0]!.message}\n${r.stdout}`);
    return (d.toJS() ?? {}) as Json;
  });
}

/** patchMergeKey of the Pod's lists (k8s.io/api core/v1 struct tags); other lists are replaced. */
const MERGE_KEYS: Record<string, string> = {
  containers: 'name',
  initContainers: 'name',
  ephemeralContainers: 'name',
  env: 'name',
  volumes: 'name',
  volumeMounts: 'mountPath',
  volumeDevices: 'devicePath',
  ports: 'containerPort',
  imagePullSecrets: 'name',
  hostAliases: 'ip',
};

/** null in a patch deletes the field (or is dropped where nothing was there). */
function stripNulls(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(stripNulls);
  if (!isObj(v)) return v;
  return Object.fromEntries(Object.entries(v).filter(([, x]) => x !== null).map(([k, x]) => [k, stripNulls(x)]));
}

/** Kubernetes' strategic merge patch, for the shapes a Pod has. */
export function strategicMerge(original: unknown, patch: unknown, field = ''): unknown {
  if (isObj(original) && isObj(patch)) {
    const out: Json = { ...original };
    for (const [k, v] of Object.entries(patch)) {
      if (v === null) delete out[k];
      else out[k] = k in original ? strategicMerge(original[k], v, k) : stripNulls(v);
    }
    return out;
  }
  const key = MERGE_KEYS[field];
  if (key && Array.isArray(original) && Array.isArray(patch)) {
    const out = [...original] as unknown[];
    for (const item of patch) {
      const i = isObj(item) ? out.findIndex((o) => isObj(o) && o[key] === item[key]) : -1;
      // `$patch: delete` removes the element with that key.
      if (isObj(item) && item.$patch === 'delete') {
        if (i >= 0) out.splice(i, 1);
      } else if (i >= 0) out[i] = strategicMerge(out[i], item);
      else out.push(stripNulls(item));
    }
    return out;
  }
  return stripNulls(patch);
}

const VOLUME_SOURCES = ['emptyDir', 'configMap', 'secret', 'projected', 'downwardAPI', 'persistentVolumeClaim', 'hostPath', 'csi', 'ephemeral', 'nfs', 'image'];

/** The API server's defaulting that injection relies on: a volume with no source is an emptyDir. */
function applyDefaults(pod: Json): Json {
  const spec = pod.spec as Json;
  for (const v of (spec.volumes ?? []) as Json[]) if (!VOLUME_SOURCES.some((s) => s in v)) v.emptyDir = {};
  return pod;
}

/** The pod after injection. */
export function inject(pod: Json, o: InjectOptions = {}): Json {
  const templates = o.templates ?? [STOCK_TEMPLATE];
  let out: unknown = structuredClone(pod);
  for (const doc of render(templates, templateData(pod, o))) out = strategicMerge(out, doc);
  return applyDefaults(out as Json);
}

export const containerNamed = (pod: Json, name: string, list: 'containers' | 'initContainers' = 'containers'): Json | undefined =>
  (((pod.spec as Json)[list] ?? []) as Json[]).find((c) => c.name === name);

/**
 * A container's environment as the kubelet resolves it for this pod: values, fieldRef (metadata.name,
 * metadata.namespace, status.podIP, status.hostIP, spec.serviceAccountName, spec.nodeName) and
 * resourceFieldRef (limits, divisor 1; unset limits give the node's capacity, here "2" CPUs and 8 GiB).
 */
export function resolveEnv(pod: Json, container: Json, status: { podIp: string; hostIp: string; nodeName: string }): Record<string, string> {
  const meta = pod.metadata as Json;
  const spec = pod.spec as Json;
  const limits = ((container.resources as Json | undefined)?.limits ?? {}) as Record<string, string>;
  const fields: Record<string, string> = {
    'metadata.name': meta.name as string,
    'metadata.namespace': (meta.namespace as string) ?? 'default',
    'status.podIP': status.podIp,
    'status.hostIP': status.hostIp,
    'spec.serviceAccountName': (spec.serviceAccountName as string) ?? 'default',
    'spec.nodeName': status.nodeName,
  };
  const cpu = (q: string) => String(Math.ceil(q.endsWith('m') ? Number(q.slice(0, -1)) / 1000 : Number(q)));
  const mem = (q: string) => {
    const m = /^(\d+)(Ki|Mi|Gi)?$/.exec(q);
    return m ? String(Number(m[1]) * { Ki: 1024, Mi: 1024 ** 2, Gi: 1024 ** 3, '': 1 }[m[2] ?? '']!) : q;
  };
  const out: Record<string, string> = {};
  for (const e of (container.env ?? []) as Json[]) {
    const from = e.valueFrom as Json | undefined;
    if (!from) out[e.name as string] = String(e.value ?? '').replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (m, n: string) => out[n] ?? m);
    else if (from.fieldRef) {
      const path = (from.fieldRef as Json).fieldPath as string;
      if (!(path in fields)) throw new Error(`fieldRef ${path} is not modelled`);
      out[e.name as string] = fields[path]!;
    } else if (from.resourceFieldRef) {
      const r = (from.resourceFieldRef as Json).resource as string;
      out[e.name as string] = r === 'limits.cpu' ? cpu(limits.cpu ?? '2') : r === 'limits.memory' ? mem(limits.memory ?? '8Gi') : '0';
    } else throw new Error(`env ${e.name}: valueFrom ${Object.keys(from).join()} is not modelled`);
  }
  return out;
}

/** $(VAR) references in args, expanded as the kubelet does. */
export const expandArgs = (args: readonly string[], env: Record<string, string>) => args.map((a) => a.replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (m, n: string) => env[n] ?? m));
