/**
 * The EDS names a CDS response will need, read before the response is decoded, so the EDS request can
 * go out first and istiod builds the endpoints while we decode the clusters. On a 1,000-service mesh the
 * clusters take longer to decode than istiod takes to answer, so the endpoints are waiting when we are
 * done instead of being asked for then (bench/xds-scale.ts: first response → ready).
 *
 * Only a hint: the names asked for after the response is accepted or rejected are the ones that count
 * (engine.wantedNames), so a name read here for a cluster that is then rejected is dropped again, and a
 * resource this scan cannot read is simply left to the decoder. It reads three fields of each Cluster
 * and skips everything else by its wire type, without building anything, with the decoder's own cursor:
 * one reading of the wire. Only clusters the sidecar does not have yet are read (engine.endpointNamesAhead),
 * known by the name their bytes begin with (any.ts, leadingName).
 */
import { asBuffer, WireCursor } from './wire-json.js';

/** envoy.config.cluster.v3.Cluster and EdsClusterConfig field numbers. */
const NAME = 1, TYPE = 2, EDS_CLUSTER_CONFIG = 3, CLUSTER_TYPE = 38;
const SERVICE_NAME = 2;
/** Cluster.DiscoveryType.EDS. */
const EDS = 3;

function serviceNameOf(c: WireCursor, end: number, current: string): string {
  let name = current; // a message sent twice merges: a later one without the field keeps the earlier value
  while (c.pos < end) {
    const tag = c.tag(end);
    if (tag === (SERVICE_NAME << 3) + 2) name = c.string(end);
    else c.skip(tag & 7, end, 1);
  }
  return name;
}

/** The EDS name of one serialized Cluster, or undefined when it is not an EDS cluster (or not readable). */
export function edsNameAhead(bytes: Uint8Array): string | undefined {
  try {
    const buf = asBuffer(bytes);
    const c = new WireCursor(buf);
    const end = buf.length;
    let name = '', type = 0, custom = false, service = '';
    while (c.pos < end) {
      const tag = c.tag(end);
      const field = tag >>> 3, wire = tag & 7;
      // type and cluster_type are one oneof: the last on the wire wins. A field of another wire type is
      // skipped, as the decoder skips it.
      if (field === NAME && wire === 2) name = c.string(end);
      else if (field === TYPE && wire === 0) {
        type = c.uint32(end) | 0;
        custom = false;
      } else if (field === CLUSTER_TYPE && wire === 2) {
        c.pos = c.delimited(end);
        custom = true;
      } else if (field === EDS_CLUSTER_CONFIG && wire === 2) {
        const stop = c.delimited(end);
        service = serviceNameOf(c, stop, service);
      } else c.skip(wire, end, 0);
    }
    if (custom || type !== EDS || !name) return undefined;
    return service || name;
  } catch {
    return undefined;
  }
}

/** The EDS names of a CDS response's clusters, as far as they can be read without decoding. */
export function edsNamesAhead(clusters: readonly { readonly value: Uint8Array }[]): string[] {
  const names: string[] = [];
  for (const c of clusters) {
    const n = edsNameAhead(c.value);
    if (n !== undefined) names.push(n);
  }
  return names;
}
