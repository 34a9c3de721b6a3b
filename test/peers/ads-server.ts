/**
 * A test ADS server (istiod's side of xDS) in its own process, over @grpc/grpc-js: StreamAggregatedResources
 * (state of the world) and DeltaAggregatedResources, serving resources from a JSON file and scripted
 * updates, and recording every request it receives.
 *
 *   node dist/test/peers/ads-server.js [--host 127.0.0.1] [--port 0] [--resources FILE]
 *                                      [--tls-cert F --tls-key F [--tls-ca F]]
 *
 * FILE: {"version": "v1", "resources": [<proto3 JSON resource with "@type">, ...]} — e.g. the Istio
 * fixtures as they are. Unknown nested Any types (istio.stats, metadata exchange, …) are sent with empty
 * bodies; their type URLs are listed once on stderr.
 *
 * It answers like istiod (pilot/pkg/xds ShouldRespond): a request with error_detail is a NACK and gets no
 * response; one with no nonce is a (re)subscription and gets the current resources; one whose nonce is
 * not the last sent is stale and ignored; one that changes EDS/RDS names gets the new set; anything else
 * is an ACK. An EDS/RDS request with no names unsubscribes. EDS names with no resource get an empty
 * ClusterLoadAssignment, as istiod sends.
 *
 * stdout, one JSON object per line:
 *   {"event":"listening","port":N}
 *   {"event":"stream","stream":1,"api":"sotw"|"delta","open":true|false}
 *   {"event":"request","stream":1,"api":"sotw","type":"cluster","kind":"initial"|"ack"|"nack"|"names"|"stale"|"unsubscribe",
 *    "version":"…","nonce":"…","names":[…],"error_detail":{…}?,"node":{…}?}            (node: first request of a stream)
 *   {"event":"request",…,"api":"delta","subscribe":[…],"unsubscribe":[…],"initial_resource_versions":{…}}
 *   {"event":"response","stream":1,"type":"cluster","version":"…","nonce":"…","names":[…],"bytes":N,"removed":[…]?}
 *   {"event":"done","cmd":"…"}  after each command; {"event":"error","error":"…"} for a bad one
 *
 * stdin commands, one JSON object per line (types: cluster, endpoint, listener, route, nametable):
 *   {"cmd":"set","version":"v2","resources":[…],"types":["route"]?}  replace every resource of the types
 *        present (and of `types`, which may be emptied), bump their version, push; "file" instead of
 *        "resources" reads them from a file of the --resources format
 *   {"cmd":"update","version":"v3","resources":[…]}                  upsert these resources, push
 *   {"cmd":"remove","version":"v4","type":"listener","names":[…]}    delete, push
 *   {"cmd":"push","version":"v5"}            a full push: every type, new version, same content
 *   {"cmd":"hold","types":["route"]} / {"cmd":"release","types":["route"]}   delay / send responses of a type
 *        ("end":true on release: then end every stream at once, with the responses just sent in flight)
 *   {"cmd":"kill-streams"}                   end every stream with UNAVAILABLE
 *   {"cmd":"stop"} / {"cmd":"start"}         shut the server down / listen again on the same port
 */
import { readFileSync, statSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import * as grpc from '@grpc/grpc-js';
import protobuf from 'protobufjs';
import { fromProto3Json, TO_OBJECT } from '../../src/xds/proto-json.js';
import { DELTA_METHOD, DUMP_PROTOS, loadXdsProtos, SOTW_METHOD } from '../../src/xds/protos.js';
import { kindOfTypeUrl, type ResourceKind, TYPE_URL, WILDCARD } from '../../src/xds/type-urls.js';
import { exitWhenStdinCloses } from './lifeline.js';

const { values } = parseArgs({
  options: {
    host: { type: 'string', default: '127.0.0.1' },
    port: { type: 'string', default: '0' },
    resources: { type: 'string' },
    'tls-cert': { type: 'string' },
    'tls-key': { type: 'string' },
    'tls-ca': { type: 'string' },
  },
});

// The wider schema, so the Istio fixtures reach the client with the contents of their typed configs.
const protos = loadXdsProtos(DUMP_PROTOS);
const AnyType = protos.root.lookupType('google.protobuf.Any');
/** Every line carries `at` (epoch ms, sub-ms precision) so a benchmark can time the client between events. */
const out = (o: object) => process.stdout.write(`${JSON.stringify({ ...o, at: performance.timeOrigin + performance.now() })}\n`);
const unknownAnys = new Set<string>();

interface AnyMsg {
  type_url: string;
  value: Uint8Array;
}
interface Stored {
  readonly name: string;
  readonly any: AnyMsg;
  /** `any` encoded, so a response is put together from bytes: encoding each Any again on every push was
   * the most of this peer's CPU, on the cores the client it measures runs on. */
  readonly anyBytes: Uint8Array;
  /** The set version in which this resource last changed (its delta version). */
  readonly version: string;
}
interface TypeStore {
  version: string;
  readonly resources: Map<string, Stored>;
}

const store = new Map<ResourceKind, TypeStore>(
  (Object.keys(TYPE_URL) as ResourceKind[]).map((k) => [k, { version: '', resources: new Map() }]),
);

function kindOfJson(json: Record<string, unknown>): ResourceKind {
  const url = String(json['@type'] ?? '');
  const kind = kindOfTypeUrl(url);
  if (!kind) throw new Error(`resource with unsupported "@type": "${url}"`);
  return kind;
}

/** A resource encoded, before it is given a version. */
type Encoded = Omit<Stored, 'version'> & { readonly kind: ResourceKind };

function encode(json: Record<string, unknown>): Encoded {
  const kind = kindOfJson(json);
  const any = fromProto3Json(AnyType, json, {
    onUnknownAny: (url) => {
      if (!unknownAnys.has(url)) process.stderr.write(`[ads-server] ${url} is not loaded: sent with an empty body\n`);
      unknownAnys.add(url);
    },
  }) as unknown as AnyMsg;
  const name = String(json.name ?? json.cluster_name ?? json.clusterName ?? '');
  return { kind, name, any, anyBytes: AnyType.encode(any).finish() };
}

/** Throws (before changing anything) if one cannot be encoded. */
function encodeEach(resources: unknown[]): Encoded[] {
  return resources.map((r, i) => {
    try {
      return encode(r as Record<string, unknown>);
    } catch (e) {
      throw new Error(`resources[${i}]: ${(e as Error).message}`);
    }
  });
}

/**
 * A file's resources, encoded once: the scale benchmark alternates two large files, and encoding one
 * again on every push (a second of CPU for a 1,000-service mesh) would compete with the client it measures
 * for the machine's cores, which istiod, on another node, does not.
 */
const encodedFiles = new Map<string, { readonly stamp: string; readonly version?: string; readonly items: Encoded[] }>();

function encodeFile(file: string): { readonly version?: string; readonly items: Encoded[] } {
  const st = statSync(file);
  const stamp = `${st.mtimeMs}:${st.size}`;
  const cached = encodedFiles.get(file);
  if (cached?.stamp === stamp) return cached;
  const json = JSON.parse(readFileSync(file, 'utf8')) as { version?: string; resources?: unknown[] };
  const encoded = { stamp, version: json.version, items: encodeEach(json.resources ?? []) };
  encodedFiles.set(file, encoded);
  return encoded;
}

/** Groups resources by type, each keeping the version in which it last changed. */
function byKindVersioned(items: readonly Encoded[], version: string): Map<ResourceKind, Stored[]> {
  const byKind = new Map<ResourceKind, Stored[]>();
  for (const e of items) {
    const prev = store.get(e.kind)!.resources.get(e.name);
    let list = byKind.get(e.kind);
    if (!list) byKind.set(e.kind, (list = []));
    const same = prev !== undefined && Buffer.compare(prev.anyBytes, e.anyBytes) === 0;
    list.push({ name: e.name, any: e.any, anyBytes: e.anyBytes, version: same ? prev.version : version });
  }
  return byKind;
}

const encodeAll = (resources: unknown[], version: string) => byKindVersioned(encodeEach(resources), version);

// ----------------------------------------------------------------------------------------------- streams

interface SotwWatch {
  names: string[];
  nonceSent: string;
  pending: boolean;
}
interface DeltaWatch {
  wildcard: boolean;
  names: Set<string>;
  /** What the client has: name -> version. */
  sent: Map<string, string>;
  nonceSent: string;
  pending: boolean;
}
interface Stream {
  readonly id: number;
  readonly api: 'sotw' | 'delta';
  readonly call: grpc.ServerDuplexStream<Plain, Plain | Uint8Array>;
  readonly sotw: Map<ResourceKind, SotwWatch>;
  readonly delta: Map<ResourceKind, DeltaWatch>;
  nodeSeen: boolean;
}

const streams = new Map<number, Stream>();
const held = new Set<ResourceKind>();
let streamSeq = 0;
let nonceSeq = 0;

const nextNonce = () => `n${++nonceSeq}-${process.pid}`;

function emptyCla(name: string): Stored {
  const { kind: _kind, ...e } = encode({ '@type': TYPE_URL.endpoint, cluster_name: name });
  return { ...e, version: store.get('endpoint')!.version };
}

/** False while responses of `kind` are held: the watch is marked pending and answered on release. */
function releasable(w: { pending: boolean }, kind: ResourceKind): boolean {
  w.pending = held.has(kind);
  return !w.pending;
}

/** A DiscoveryResponse's bytes (fields 1, 2, 4, 5), its Anys copied as they were encoded. */
function sotwResponse(version: string, items: readonly Stored[], typeUrl: string, nonce: string): Uint8Array {
  const w = protobuf.Writer.create().uint32(10).string(version);
  for (const i of items) w.uint32(18).bytes(i.anyBytes);
  return w.uint32(34).string(typeUrl).uint32(42).string(nonce).finish();
}

function respondSotw(s: Stream, kind: ResourceKind): void {
  const w = s.sotw.get(kind);
  if (!w || !releasable(w, kind)) return;
  const ts = store.get(kind)!;
  const items = WILDCARD.has(kind)
    ? [...ts.resources.values()]
    : w.names.flatMap((n) => ts.resources.get(n) ?? (kind === 'endpoint' ? [emptyCla(n)] : []));
  const nonce = nextNonce();
  w.nonceSent = nonce;
  s.call.write(sotwResponse(ts.version, items, TYPE_URL[kind], nonce));
  out({ event: 'response', stream: s.id, api: 'sotw', type: kind, version: ts.version, nonce, names: items.map((i) => i.name), bytes: items.reduce((n, i) => n + i.any.value.length, 0) });
}

function respondDelta(s: Stream, kind: ResourceKind, force: boolean): void {
  const w = s.delta.get(kind);
  if (!w || !releasable(w, kind)) return;
  const ts = store.get(kind)!;
  const inScope = (n: string) => w.wildcard || w.names.has(n);
  const changed = [...ts.resources.values()].filter((r) => inScope(r.name) && w.sent.get(r.name) !== r.version);
  const removed = [...w.sent.keys()].filter((n) => !ts.resources.has(n) || !inScope(n));
  if (!force && changed.length === 0 && removed.length === 0) return;
  for (const r of changed) w.sent.set(r.name, r.version);
  for (const n of removed) w.sent.delete(n);
  const nonce = nextNonce();
  w.nonceSent = nonce;
  s.call.write({
    system_version_info: ts.version,
    resources: changed.map((r) => ({ name: r.name, version: r.version, resource: r.any })),
    type_url: TYPE_URL[kind],
    removed_resources: removed,
    nonce,
  });
  out({ event: 'response', stream: s.id, api: 'delta', type: kind, version: ts.version, nonce, names: changed.map((r) => r.name), removed });
}

function push(kinds: Iterable<ResourceKind>): void {
  for (const kind of kinds) {
    for (const s of streams.values()) {
      if (s.api === 'sotw') respondSotw(s, kind);
      else respondDelta(s, kind, false);
    }
  }
}

type Plain = Record<string, unknown>;

function nodeSummary(s: Stream, req: Plain): object {
  if (s.nodeSeen || !req.node) return {};
  s.nodeSeen = true;
  return { node: req.node };
}

function onSotwRequest(s: Stream, req: Plain): void {
  const type = String(req.type_url ?? '');
  const kind = kindOfTypeUrl(type);
  const names = ((req.resource_names as string[] | undefined) ?? []).slice().sort();
  const nonce = String(req.response_nonce ?? '');
  const error = req.error_detail as { code?: number; message?: string } | undefined;
  const base = { event: 'request', stream: s.id, api: 'sotw', type: kind ?? type, version: String(req.version_info ?? ''), nonce, names, ...nodeSummary(s, req) };
  if (!kind) {
    out({ ...base, kind: 'unknown-type' });
    return;
  }
  const w = s.sotw.get(kind);
  const wildcard = WILDCARD.has(kind);
  let verdict: string;
  if (error && (error.code || error.message)) verdict = 'nack';
  else if (!wildcard && names.length === 0) verdict = 'unsubscribe';
  else if (!nonce || !w) verdict = 'initial';
  else if (nonce !== w.nonceSent) verdict = 'stale';
  else if (!wildcard && names.join('\n') !== w.names.join('\n')) verdict = 'names';
  else verdict = 'ack';
  out({ ...base, kind: verdict, ...(verdict === 'nack' ? { error_detail: error } : {}) });
  if (verdict === 'unsubscribe') s.sotw.delete(kind);
  if (verdict === 'initial' || verdict === 'names') {
    s.sotw.set(kind, { names, nonceSent: w?.nonceSent ?? '', pending: false });
    respondSotw(s, kind);
  }
}

function onDeltaRequest(s: Stream, req: Plain): void {
  const type = String(req.type_url ?? '');
  const kind = kindOfTypeUrl(type);
  const subscribe = (req.resource_names_subscribe as string[] | undefined) ?? [];
  const unsubscribe = (req.resource_names_unsubscribe as string[] | undefined) ?? [];
  const initial = (req.initial_resource_versions as Record<string, string> | undefined) ?? {};
  const nonce = String(req.response_nonce ?? '');
  const error = req.error_detail as { code?: number; message?: string } | undefined;
  const base = { event: 'request', stream: s.id, api: 'delta', type: kind ?? type, nonce, subscribe, unsubscribe, initial_resource_versions: initial, ...nodeSummary(s, req) };
  if (!kind) {
    out({ ...base, kind: 'unknown-type' });
    return;
  }
  let w = s.delta.get(kind);
  const first = !w;
  if (!w) {
    w = { wildcard: subscribe.length === 0 || subscribe.includes('*'), names: new Set(), sent: new Map(Object.entries(initial)), nonceSent: '', pending: false };
    s.delta.set(kind, w);
  }
  for (const n of subscribe) if (n !== '*') w.names.add(n);
  for (const n of unsubscribe) w.names.delete(n);
  const nack = !!(error && (error.code || error.message));
  const verdict = nack ? 'nack' : first ? 'initial' : subscribe.length || unsubscribe.length ? 'names' : nonce && nonce !== w.nonceSent ? 'stale' : 'ack';
  out({ ...base, kind: verdict, ...(nack ? { error_detail: error } : {}) });
  if (verdict === 'initial' || verdict === 'names') respondDelta(s, kind, first);
}

function serve(api: 'sotw' | 'delta') {
  return (call: grpc.ServerDuplexStream<Plain, Plain | Uint8Array>) => {
    const s: Stream = { id: ++streamSeq, api, call, sotw: new Map(), delta: new Map(), nodeSeen: false };
    streams.set(s.id, s);
    out({ event: 'stream', stream: s.id, api, open: true, peer: call.getPeer(), authorization: call.metadata.get('authorization')[0], clusterId: call.metadata.get('clusterid')[0] });
    call.on('data', (req: Plain) => {
      try {
        if (api === 'sotw') onSotwRequest(s, req);
        else onDeltaRequest(s, req);
      } catch (e) {
        out({ event: 'error', stream: s.id, error: (e as Error).stack });
      }
    });
    const close = () => {
      if (!streams.delete(s.id)) return;
      out({ event: 'stream', stream: s.id, api, open: false });
    };
    call.on('end', () => {
      close();
      call.end();
    });
    call.on('error', close);
    call.on('cancelled', close);
  };
}

const codec = (type: protobuf.Type) => ({
  serialize: (m: Plain | Uint8Array) => {
    const bytes = m instanceof Uint8Array ? m : type.encode(type.fromObject(m)).finish();
    return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  },
  deserialize: (b: Buffer) => type.toObject(type.decode(b), TO_OBJECT) as Plain,
});

function method(path: string, req: protobuf.Type, res: protobuf.Type): grpc.MethodDefinition<Plain, Plain> {
  const rq = codec(req);
  const rs = codec(res);
  return { path, requestStream: true, responseStream: true, requestSerialize: rq.serialize, requestDeserialize: rq.deserialize, responseSerialize: rs.serialize, responseDeserialize: rs.deserialize };
}

const service: grpc.ServiceDefinition = {
  StreamAggregatedResources: method(SOTW_METHOD, protos.DiscoveryRequest, protos.DiscoveryResponse),
  DeltaAggregatedResources: method(DELTA_METHOD, protos.DeltaDiscoveryRequest, protos.DeltaDiscoveryResponse),
};

function credentials(): grpc.ServerCredentials {
  if (!values['tls-cert']) return grpc.ServerCredentials.createInsecure();
  const ca = values['tls-ca'] ? readFileSync(values['tls-ca']) : null;
  return grpc.ServerCredentials.createSsl(ca, [{ cert_chain: readFileSync(values['tls-cert']), private_key: readFileSync(values['tls-key']!) }], !!ca);
}

let server: grpc.Server | undefined;
let port = Number(values.port);

function start(): Promise<void> {
  server = new grpc.Server({ 'grpc.max_receive_message_length': -1, 'grpc.max_send_message_length': -1 });
  server.addService(service, { StreamAggregatedResources: serve('sotw'), DeltaAggregatedResources: serve('delta') } as grpc.UntypedServiceImplementation);
  return new Promise((resolve, reject) => {
    server!.bindAsync(`${values.host}:${port}`, credentials(), (err, bound) => {
      if (err) return reject(err);
      port = bound;
      out({ event: 'listening', port, host: values.host });
      resolve();
    });
  });
}

function bump(kinds: Iterable<ResourceKind>, version: string): void {
  for (const k of kinds) store.get(k)!.version = version;
}

function killStreams(): void {
  for (const s of streams.values()) s.call.emit('error', { code: grpc.status.UNAVAILABLE, details: 'killed by test' });
}

function command(c: Plain): void | Promise<void> {
  const version = String(c.version ?? `v${Date.now()}`);
  switch (c.cmd) {
    case 'set': {
      // Big sets (the scale benchmark) come as a file rather than one huge stdin line.
      const byKind = c.file ? byKindVersioned(encodeFile(String(c.file)).items, version) : encodeAll((c.resources as unknown[]) ?? [], version);
      const kinds = new Set<ResourceKind>([...byKind.keys(), ...((c.types as ResourceKind[] | undefined) ?? [])]);
      for (const k of kinds) {
        const ts = store.get(k)!;
        ts.resources.clear();
        for (const r of byKind.get(k) ?? []) ts.resources.set(r.name, r);
      }
      bump(kinds, version);
      return push(kinds);
    }
    case 'update': {
      const byKind = encodeAll((c.resources as unknown[]) ?? [], version);
      for (const [k, rs] of byKind) for (const r of rs) store.get(k)!.resources.set(r.name, r);
      bump(byKind.keys(), version);
      return push(byKind.keys());
    }
    case 'remove': {
      const kind = c.type as ResourceKind;
      for (const n of (c.names as string[]) ?? []) store.get(kind)!.resources.delete(n);
      bump([kind], version);
      return push([kind]);
    }
    case 'push': {
      const kinds = [...store.keys()];
      bump(kinds, version);
      return push(kinds);
    }
    case 'hold':
      for (const k of (c.types as ResourceKind[]) ?? []) held.add(k);
      return;
    case 'release': {
      const kinds = (c.types as ResourceKind[]) ?? [];
      for (const k of kinds) held.delete(k);
      for (const s of streams.values()) {
        for (const k of kinds) {
          if (s.api === 'sotw' && s.sotw.get(k)?.pending) respondSotw(s, k);
          if (s.api === 'delta' && s.delta.get(k)?.pending) respondDelta(s, k, true);
        }
      }
      if (c.end === true) killStreams();
      return;
    }
    case 'kill-streams':
      killStreams();
      return;
    case 'stop':
      for (const s of streams.values()) s.call.emit('error', { code: grpc.status.UNAVAILABLE, details: 'server stopping' });
      server?.forceShutdown();
      server = undefined;
      return;
    case 'start':
      return start();
    default:
      throw new Error(`unknown command ${JSON.stringify(c.cmd)}`);
  }
}

if (values.resources) {
  const file = encodeFile(values.resources);
  const version = file.version ?? 'v1';
  const byKind = byKindVersioned(file.items, version);
  for (const [k, rs] of byKind) for (const r of rs) store.get(k)!.resources.set(r.name, r);
  bump(store.keys(), version);
}

await start();
exitWhenStdinCloses();

let queue = Promise.resolve();
createInterface({ input: process.stdin }).on('line', (line) => {
  if (!line.trim()) return;
  queue = queue.then(async () => {
    let c: Plain;
    try {
      c = JSON.parse(line) as Plain;
      await command(c);
      out({ event: 'done', cmd: c.cmd, version: c.version });
    } catch (e) {
      out({ event: 'error', error: (e as Error).message, line });
    }
  });
});
process.on('SIGTERM', () => process.exit(0));
