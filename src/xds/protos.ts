/**
 * The protobuf schema xDS needs, loaded at start-up from the .proto files @grpc/grpc-js-xds ships (Envoy
 * API, xds, googleapis, protoc-gen-validate) plus our own proto/ (the x-protocol filter, Istio's
 * NameTable). Only the resource types and the few filter configs we act on are loaded: every other Any
 * (istio.stats, metadata exchange, Lua, TypedStruct…) stays opaque bytes, which keeps start-up cheap and
 * means a filter we do not implement can never break decoding.
 */
import { statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { packagePath } from '../sys/package-root.js';
import protobuf from 'protobufjs';
import { installProto3JsonReaders } from './proto-json.js';
import { messageNameOf } from './type-urls.js';

const require = createRequire(import.meta.url);

/** Resources, the ADS service messages, and the typed configs the config decoders read. */
export const CLIENT_PROTOS: readonly string[] = [
  'envoy/service/discovery/v3/ads.proto',
  'envoy/config/cluster/v3/cluster.proto',
  'envoy/config/endpoint/v3/endpoint.proto',
  'envoy/config/listener/v3/listener.proto',
  'envoy/config/route/v3/route.proto',
  'envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto',
  'envoy/extensions/filters/network/tcp_proxy/v3/tcp_proxy.proto',
  // Per-route configs the router acts on: Istio's VirtualService fault, and a local rate limit.
  'envoy/extensions/filters/http/fault/v3/fault.proto',
  'envoy/extensions/filters/http/local_ratelimit/v3/local_rate_limit.proto',
  // The file access logger: filters' access_log is acted on (an Istio listener logs to /dev/stdout).
  'envoy/extensions/access_loggers/file/v3/file.proto',
  'xsidecar/xprotocol/v1/xprotocol.proto',
  'istio/networking/nds/v1/nds.proto',
  // Mesh mTLS: clusters' transport_socket_matches and inbound chains' transport sockets are acted on.
  'envoy/extensions/transport_sockets/tls/v3/tls.proto',
];

/**
 * What istiod puts inside Anys (filter, transport socket, access log and protocol option configs). Not
 * needed to run; loaded on the first /config_dump so it can print them expanded as Envoy does (and as
 * istioctl expects), and by the test ADS server to send the Istio fixtures with their contents.
 */
export const DUMP_PROTOS: readonly string[] = [
  'envoy/extensions/transport_sockets/tls/v3/tls.proto',
  'envoy/extensions/transport_sockets/raw_buffer/v3/raw_buffer.proto',
  'envoy/extensions/filters/http/router/v3/router.proto',
  'envoy/extensions/filters/http/wasm/v3/wasm.proto',
  'envoy/extensions/filters/http/grpc_stats/v3/config.proto',
  'envoy/extensions/filters/http/cors/v3/cors.proto',
  'envoy/extensions/filters/http/lua/v3/lua.proto',
  'envoy/extensions/filters/http/rbac/v3/rbac.proto',
  'envoy/extensions/filters/network/rbac/v3/rbac.proto',
  'envoy/extensions/filters/http/ext_authz/v3/ext_authz.proto',
  'envoy/extensions/request_id/uuid/v3/uuid.proto',
  'envoy/extensions/upstreams/http/v3/http_protocol_options.proto',
  'envoy/extensions/retry/host/previous_hosts/v3/previous_hosts.proto',
  'envoy/extensions/filters/listener/tls_inspector/v3/tls_inspector.proto',
  'envoy/extensions/filters/listener/http_inspector/v3/http_inspector.proto',
  'envoy/extensions/filters/listener/original_dst/v3/original_dst.proto',
  'udpa/type/v1/typed_struct.proto',
];

function includeDirs(): string[] {
  const deps = join(dirname(require.resolve('@grpc/grpc-js-xds/package.json')), 'deps');
  const ours = packagePath('proto');
  const wkt = dirname(require.resolve('protobufjs/package.json')); // google/protobuf/*.proto
  return [ours, join(deps, 'envoy-api'), join(deps, 'xds'), join(deps, 'googleapis'), join(deps, 'protoc-gen-validate'), wkt];
}

export interface XdsProtos {
  readonly root: protobuf.Root;
  readonly DiscoveryRequest: protobuf.Type;
  readonly DiscoveryResponse: protobuf.Type;
  readonly DeltaDiscoveryRequest: protobuf.Type;
  readonly DeltaDiscoveryResponse: protobuf.Type;
  readonly Node: protobuf.Type;
  /** The message type of a type URL, or undefined when it was not loaded. */
  typeOf(typeUrl: string): protobuf.Type | undefined;
  /** Wall-clock milliseconds spent parsing the .proto files. */
  readonly loadMs: number;
}

const loaded = new Map<string, XdsProtos>();

/**
 * stat(), not existsSync(): existsSync is access(2), which checks the real uid without capabilities, so a
 * sidecar started as 1337 with CAP_DAC_READ_SEARCH (reading a tree it does not own) would find nothing.
 */
function readable(path: string): boolean {
  try {
    return statSync(path, { throwIfNoEntry: false }) !== undefined;
  } catch {
    return false;
  }
}

/** Loads (once per file set) and returns the schema; `extra` adds .proto files (the test server wants more). */
export function loadXdsProtos(extra: readonly string[] = []): XdsProtos {
  const files = [...CLIENT_PROTOS, ...extra];
  const key = files.join('\n');
  const cached = loaded.get(key);
  if (cached) return cached;
  const started = performance.now();
  const dirs = includeDirs();
  const root = new protobuf.Root();
  // protobufjs asks once per import statement, before it de-duplicates: the same few hundred files
  // would cost a filesystem probe per include dir each time.
  const resolved = new Map<string, string>();
  root.resolvePath = (_origin, target) => {
    let path = resolved.get(target);
    if (path === undefined) {
      path = dirs.map((d) => join(d, target)).find(readable) ?? target;
      resolved.set(target, path);
    }
    return path;
  };
  root.loadSync(files, { keepCase: true });
  root.resolveAll();
  installProto3JsonReaders(root);
  const type = (name: string) => root.lookupType(name);
  const byUrl = new Map<string, protobuf.Type | undefined>();
  const protos: XdsProtos = {
    root,
    DiscoveryRequest: type('envoy.service.discovery.v3.DiscoveryRequest'),
    DiscoveryResponse: type('envoy.service.discovery.v3.DiscoveryResponse'),
    DeltaDiscoveryRequest: type('envoy.service.discovery.v3.DeltaDiscoveryRequest'),
    DeltaDiscoveryResponse: type('envoy.service.discovery.v3.DeltaDiscoveryResponse'),
    Node: type('envoy.config.core.v3.Node'),
    typeOf(typeUrl) {
      if (!byUrl.has(typeUrl)) {
        const t = root.lookup(messageNameOf(typeUrl));
        byUrl.set(typeUrl, t instanceof protobuf.Type ? t : undefined);
      }
      return byUrl.get(typeUrl);
    },
    loadMs: performance.now() - started,
  };
  loaded.set(key, protos);
  return protos;
}

export const ADS_SERVICE = '/envoy.service.discovery.v3.AggregatedDiscoveryService';
export const SOTW_METHOD = `${ADS_SERVICE}/StreamAggregatedResources`;
export const DELTA_METHOD = `${ADS_SERVICE}/DeltaAggregatedResources`;
