/**
 * The Istio-shaped mesh the xDS benches send: real istiod resources (the DeathStarBench and authz
 * config dumps in test/fixtures/istio) as templates, so sizes and shapes (metadata, TLS matches, filters)
 * are Istio's. Per service: its default cluster and a v1 subset, each with a ClusterLoadAssignment of
 * ENDPOINTS_PER_CLUSTER endpoints; half the services are HTTP (a virtual host in one per-port
 * RouteConfiguration), half TCP (a ClusterIP tcp_proxy listener of their own).
 */
import { readFileSync } from 'node:fs';
import { fixture } from './fixtures.js';

export const ENDPOINTS_PER_CLUSTER = 5;

export type Json = Record<string, unknown>;
const dsb = (f: string) => JSON.parse(readFileSync(fixture('istio/istio-1.18-sidecar-deathstarbench', f), 'utf8')) as Json;
const clone = <T>(v: T): T => structuredClone(v);

const T = {
  cluster: dsb('cluster_outbound_9080_reviews.json'),
  cla: dsb('cla_outbound_9080_reviews.json'),
  tcpListener: dsb('listener_10.68.54.170_27017_tcp.json'),
  httpListener: dsb('listener_0.0.0.0_9080_http.json'),
  route: dsb('route_9080.json'),
};

const ip = (i: number, base: number) => `10.${base}.${Math.floor(i / 250)}.${(i % 250) + 1}`;

/**
 * Every resource of a mesh of `services`; `round` changes something in each one, so a push re-sends all
 * of it changed. `ports`: where the virtual listeners bind; `inScope`: the services a Sidecar resource keeps.
 */
export function generateMesh(services: number, round: number, ports: { outbound: number; inbound: number }, inScope: (s: number) => boolean = () => true): Json[] {
  const out: Json[] = [];
  for (const f of ['cluster_PassthroughCluster.json', 'cluster_BlackHoleCluster.json', 'cluster_InboundPassthroughClusterIpv4.json']) out.push(dsb(f));
  const vhosts: Json[] = [];
  for (let s = 0; s < services; s++) {
    if (!inScope(s)) continue;
    const http = s % 2 === 0;
    const port = http ? 8080 : 9000;
    const fqdn = `svc-${s}.ns-${s % 20}.svc.cluster.local`;
    const clusterIp = ip(s, 96);
    for (const subset of ['', 'v1']) {
      const name = `outbound|${port}|${subset}|${fqdn}`;
      const c = clone(T.cluster);
      c.name = name;
      (c.eds_cluster_config as Json).service_name = name;
      c.connect_timeout = `${10 + (round % 2)}s`;
      (((c.metadata as Json).filter_metadata as Json).istio as Json).services = [{ host: fqdn, name: `svc-${s}`, namespace: `ns-${s % 20}` }];
      // As istiod makes them: an SNI per cluster, the SAN of the service's account.
      const tls = (((c.transport_socket_matches as Json[])[0]!.transport_socket as Json).typed_config as Json);
      tls.sni = `outbound_.${port}_.${subset}_.${fqdn}`;
      (((tls.common_tls_context as Json).combined_validation_context as Json).default_validation_context as Json).match_subject_alt_names = [{ exact: `spiffe://cluster.local/ns/ns-${s % 20}/sa/svc-${s}` }];
      out.push(c);
      const cla = clone(T.cla);
      cla.cluster_name = name;
      const lbTemplate = ((cla.endpoints as Json[])[0]!.lb_endpoints as Json[])[0]!;
      (cla.endpoints as Json[])[0]!.lb_endpoints = Array.from({ length: ENDPOINTS_PER_CLUSTER }, (_, e) => {
        const lb = clone(lbTemplate);
        ((lb.endpoint as Json).address as Json).socket_address = { address: ip(s * ENDPOINTS_PER_CLUSTER + e, 244), port_value: port };
        lb.load_balancing_weight = 1 + (round % 2);
        return lb;
      });
      out.push(cla);
    }
    const def = `outbound|${port}||${fqdn}`;
    if (http) {
      const vh = clone((T.route.virtual_hosts as Json[])[0]!);
      vh.name = `${fqdn}:${port}`;
      vh.domains = [fqdn, `svc-${s}`, `svc-${s}.ns-${s % 20}`, `svc-${s}.ns-${s % 20}.svc`, clusterIp];
      const r = (vh.routes as Json[])[0]!;
      (r.route as Json).cluster = def;
      (r.route as Json).timeout = `${round % 2}s`;
      vhosts.push(vh);
    } else {
      const l = clone(T.tcpListener);
      l.name = `${clusterIp}_${port}`;
      l.address = { socket_address: { address: clusterIp, port_value: port } };
      const tp = ((l.filter_chains as Json[])[0]!.filters as Json[])[1]!.typed_config as Json;
      tp.cluster = def;
      tp.stat_prefix = `${def}#${round % 2}`;
      out.push(l);
    }
  }
  const allowAny = (T.route.virtual_hosts as Json[]).find((v) => (v.domains as string[]).includes('*'));
  out.push({ ...clone(T.route), name: '8080', virtual_hosts: [...vhosts, ...(allowAny ? [clone(allowAny)] : [])] });
  const http = clone(T.httpListener);
  http.name = '0.0.0.0_8080';
  http.address = { socket_address: { address: '0.0.0.0', port_value: 8080 } };
  const hcm = (((http.filter_chains as Json[])[0]!.filters as Json[]).find((f) => String(f.name).includes('http_connection_manager'))!.typed_config as Json);
  (hcm.rds as Json).route_config_name = '8080';
  hcm.stat_prefix = `outbound_0.0.0.0_8080#${round % 2}`;
  out.push(http);
  const vo = dsb('listener_virtualOutbound.json');
  (vo.address as Json).socket_address = { address: '127.0.0.1', port_value: ports.outbound };
  out.push(vo);
  const vi = JSON.parse(readFileSync(fixture('istio/istio-repo-authz-configdump/listener_virtualInbound.json'), 'utf8')) as Json;
  (vi.address as Json).socket_address = { address: '127.0.0.1', port_value: ports.inbound };
  out.push(vi);
  return out;
}

