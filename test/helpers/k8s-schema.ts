/**
 * Offline validation of Kubernetes and Istio manifests: the kubernetes-models / @kubernetes-models/istio
 * ajv validators (types, enums, required fields), plus a strict unknown-field check of our own — those
 * validators let unknown fields through, and Kubernetes' strict decoding (kubectl --validate=strict)
 * does not. The strict check walks each object against the models' TypeScript declarations with the
 * TypeScript compiler, so it knows exactly the fields the models know.
 */
import { join } from 'node:path';
import ts from 'typescript';
import { repoRoot } from './paths.js';

interface Kind {
  readonly module: string;
  readonly iface: string;
}

/** apiVersion/kind -> the model's module and interface. */
const KINDS: Record<string, Kind> = {
  'v1/Pod': { module: 'kubernetes-models/v1/Pod', iface: 'IPod' },
  'v1/Service': { module: 'kubernetes-models/v1/Service', iface: 'IService' },
  'v1/ServiceAccount': { module: 'kubernetes-models/v1/ServiceAccount', iface: 'IServiceAccount' },
  'v1/ConfigMap': { module: 'kubernetes-models/v1/ConfigMap', iface: 'IConfigMap' },
  'v1/Secret': { module: 'kubernetes-models/v1/Secret', iface: 'ISecret' },
  'v1/Namespace': { module: 'kubernetes-models/v1/Namespace', iface: 'INamespace' },
  'apps/v1/Deployment': { module: 'kubernetes-models/apps/v1/Deployment', iface: 'IDeployment' },
  'networking.istio.io/v1/VirtualService': { module: '@kubernetes-models/istio/networking.istio.io/v1/VirtualService', iface: 'IVirtualService' },
  'networking.istio.io/v1/DestinationRule': { module: '@kubernetes-models/istio/networking.istio.io/v1/DestinationRule', iface: 'IDestinationRule' },
  'networking.istio.io/v1/ServiceEntry': { module: '@kubernetes-models/istio/networking.istio.io/v1/ServiceEntry', iface: 'IServiceEntry' },
  'networking.istio.io/v1/Sidecar': { module: '@kubernetes-models/istio/networking.istio.io/v1/Sidecar', iface: 'ISidecar' },
};

const kindOf = (o: { apiVersion?: string; kind?: string }) => `${o.apiVersion}/${o.kind}`;

export const knownKinds = () => Object.keys(KINDS);

/** The models' ajv validation; throws with the field path of the first problems. */
export async function validateModel(obj: { apiVersion?: string; kind?: string }): Promise<void> {
  const k = KINDS[kindOf(obj)];
  if (!k) throw new Error(`no schema for ${kindOf(obj)}`);
  const mod = (await import(k.module)) as Record<string, new (d: unknown) => { validate(): void }>;
  const Model = mod[k.iface.slice(1)];
  if (!Model) throw new Error(`${k.module} has no ${k.iface.slice(1)}`);
  new Model(obj).validate();
}

let checker: ts.TypeChecker | undefined;
const types = new Map<string, ts.Type>();

function typeOf(kind: string): ts.Type {
  const cached = types.get(kind);
  if (cached) return cached;
  const entries = Object.entries(KINDS);
  const probe = join(repoRoot, '__k8s_schema_probe__.ts');
  const source = entries.map(([, k], i) => `import type { ${k.iface} as T${i} } from '${k.module}';\nexport declare const v${i}: T${i};`).join('\n');
  const options: ts.CompilerOptions = { module: ts.ModuleKind.NodeNext, moduleResolution: ts.ModuleResolutionKind.NodeNext, target: ts.ScriptTarget.ES2022, strict: true, skipLibCheck: true, noEmit: true, types: [] };
  const host = ts.createCompilerHost(options);
  const getSourceFile = host.getSourceFile.bind(host);
  host.getSourceFile = (f, lang, ...rest) => (f === probe ? ts.createSourceFile(f, source, lang) : getSourceFile(f, lang, ...rest));
  const fileExists = host.fileExists.bind(host);
  host.fileExists = (f) => f === probe || fileExists(f);
  const program = ts.createProgram([probe], options, host);
  checker = program.getTypeChecker();
  const sf = program.getSourceFile(probe)!;
  let i = 0;
  for (const stmt of sf.statements) {
    if (!ts.isVariableStatement(stmt)) continue;
    const decl = stmt.declarationList.declarations[0]!;
    types.set(kindOf({ apiVersion: entries[i]![0].split('/').slice(0, -1).join('/'), kind: entries[i]![0].split('/').pop() }), checker.getTypeAtLocation(decl));
    i++;
  }
  const t = types.get(kind);
  if (!t) throw new Error(`no schema for ${kind}`);
  return t;
}

function propertyType(c: ts.TypeChecker, sym: ts.Symbol): ts.Type {
  return c.getTypeOfSymbol(sym);
}

function walk(c: ts.TypeChecker, value: unknown, type: ts.Type, path: string, out: string[]): void {
  if (value === null || typeof value !== 'object') return;
  const t = c.getNonNullableType(type);
  const members = t.isUnion() ? t.types : [t];
  if (Array.isArray(value)) {
    const arr = members.find((m) => c.isArrayType(m));
    if (!arr) return;
    const el = c.getTypeArguments(arr as ts.TypeReference)[0]!;
    value.forEach((v, i) => walk(c, v, el, `${path}[${i}]`, out));
    return;
  }
  const objects = members.filter((m) => m.flags & ts.TypeFlags.Object && !c.isArrayType(m));
  if (objects.length === 0) return;
  for (const [key, v] of Object.entries(value)) {
    let found: ts.Type | undefined;
    for (const m of objects) {
      const p = m.getProperty(key);
      if (p) {
        found = propertyType(c, p);
        break;
      }
      const index = c.getIndexInfoOfType(m, ts.IndexKind.String);
      if (index) {
        found = index.type;
        break;
      }
    }
    // An object type with no properties and no index signature (e.g. `{}` or any): nothing to check against.
    const open = objects.some((m) => m.getProperties().length === 0 && !c.getIndexInfoOfType(m, ts.IndexKind.String));
    if (!found) {
      if (!open) out.push(`${path}.${key}`);
      continue;
    }
    walk(c, v, found, `${path}.${key}`, out);
  }
}

/** Field paths the models do not know, e.g. ["spec.containers[1].bogus"]. */
export function unknownFields(obj: { apiVersion?: string; kind?: string }): string[] {
  const type = typeOf(kindOf(obj));
  const out: string[] = [];
  walk(checker!, obj, type, kindOf(obj), out);
  return out;
}

/** Both checks; throws naming every unknown field, or the ajv errors. */
export async function validateManifest(obj: { apiVersion?: string; kind?: string; metadata?: { name?: string }; [k: string]: unknown }): Promise<void> {
  const where = `${kindOf(obj)} ${obj.metadata?.name ?? '(unnamed)'}`;
  try {
    await validateModel(obj);
  } catch (e) {
    throw new Error(`${where}: ${(e as Error).message}`);
  }
  const unknown = unknownFields(obj);
  if (unknown.length > 0) throw new Error(`${where}: unknown fields: ${unknown.join(', ')}`);
}
