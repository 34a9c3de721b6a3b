/**
 * The EDS names read from a CDS response before it is decoded: the same as the decoded clusters give on
 * every Istio fixture and on hand-made clusters; nothing for a cluster that is not EDS; never a throw on
 * bad bytes (the decoder reports those).
 */
import { randomBytes } from 'node:crypto';
import t from 'tap';
import type { Cluster } from '../../src/config/model.js';
import { edsNameOf } from '../../src/xds/config-state.js';
import { edsNameAhead, edsNamesAhead } from '../../src/xds/eds-ahead.js';
import { fromProto3Json } from '../../src/xds/proto-json.js';
import { DUMP_PROTOS, loadXdsProtos } from '../../src/xds/protos.js';
import { decodeResources } from '../../src/xds/resources.js';
import { TYPE_URL } from '../../src/xds/type-urls.js';
import { istioFixtureSet, type Json, readFixture } from './harness.js';

const client = loadXdsProtos();
const AnyType = loadXdsProtos(DUMP_PROTOS).root.lookupType('google.protobuf.Any');
const encodeAny = (json: Json) => fromProto3Json(AnyType, json, { onUnknownAny: () => undefined }) as unknown as { type_url: string; value: Uint8Array };
const ClusterType = client.root.lookupType('envoy.config.cluster.v3.Cluster');
const clusterBytes = (json: Json) => ClusterType.encode(fromProto3Json(ClusterType, json)).finish();

/** What the decoder makes of the clusters: the EDS names the engine subscribes once they are accepted. */
function decodedEdsNames(anys: { type_url: string; value: Uint8Array }[]): string[] {
  const { resources, failures } = decodeResources(client, 'cluster', anys.map((any) => ({ any })), new Map(), 'v', new Date().toISOString());
  if (failures.length > 0) throw new Error(failures.map((f) => f.message).join('; '));
  return resources.map((r) => r.config as Cluster).filter((c) => c.type === 'EDS').map(edsNameOf);
}

t.test('Istio\'s clusters: the names read ahead are the names decoded', async (t) => {
  // The fixture set (one EDS cluster, the rest STATIC or ORIGINAL_DST) and, as istiod makes them for each
  // service, the EDS cluster renamed, with a subset's service_name or without one.
  const fixtures = istioFixtureSet().filter((r) => r['@type'] === TYPE_URL.cluster);
  const reviews = readFixture('istio/istio-1.18-sidecar-deathstarbench/cluster_outbound_9080_reviews.json');
  const made = Array.from({ length: 20 }, (_, i) => {
    const c: Json = { ...structuredClone(reviews), name: `outbound|${9000 + i}|${i % 2 ? 'v1' : ''}|svc-${i}.ns.svc.cluster.local` };
    const eds = c.eds_cluster_config as Json;
    if (i % 2) eds.service_name = c.name;
    else delete eds.service_name;
    return c;
  });
  const anys = [...fixtures, ...made].map(encodeAny);
  const expected = decodedEdsNames(anys);
  t.equal(expected.length, 21, `${expected.length} EDS clusters among ${anys.length}`);
  t.ok(expected.includes('outbound|9001|v1|svc-1.ns.svc.cluster.local') && expected.includes('outbound|9000||svc-0.ns.svc.cluster.local'));
  t.strictSame(edsNamesAhead(anys), expected);
});

t.test('type, service name and a merged eds_cluster_config', async (t) => {
  const base = { name: 'outbound|9080||reviews.default.svc.cluster.local', connect_timeout: '1s' };
  t.equal(edsNameAhead(clusterBytes({ ...base, type: 'EDS', eds_cluster_config: { eds_config: { ads: {} } } })), base.name, 'no service_name: the cluster name');
  t.equal(edsNameAhead(clusterBytes({ ...base, type: 'EDS', eds_cluster_config: { eds_config: { ads: {} }, service_name: 'svc-a' } })), 'svc-a');
  t.equal(edsNameAhead(clusterBytes({ ...base, type: 'STATIC' })), undefined, 'STATIC is not EDS');
  t.equal(edsNameAhead(clusterBytes({ ...base, type: 'ORIGINAL_DST' })), undefined);
  t.equal(edsNameAhead(clusterBytes({ ...base })), undefined, 'no type: STATIC');
  t.equal(edsNameAhead(clusterBytes({ type: 'EDS' })), undefined, 'no name: left to the decoder');

  // Bytes no encoder of ours writes, read as protobuf merges them: a config sent twice keeps the earlier
  // service_name when the later one lacks it; the last of two types wins.
  const named = clusterBytes({ ...base, type: 'EDS', eds_cluster_config: { service_name: 'first' } });
  const bare = clusterBytes({ eds_cluster_config: { eds_config: { ads: {} } } });
  const renamed = clusterBytes({ eds_cluster_config: { service_name: 'second' } });
  t.equal(edsNameAhead(Buffer.concat([named, bare])), 'first');
  t.equal(edsNameAhead(Buffer.concat([named, renamed])), 'second');
  t.equal(edsNameAhead(Buffer.concat([named, clusterBytes({ type: 'STATIC' })])), undefined);
  const custom = Buffer.from([0xb2, 0x02, 0x00]); // cluster_type (38), empty
  t.equal(edsNameAhead(Buffer.concat([named, custom])), undefined, 'a custom cluster_type (38) last: not EDS');
  t.equal(edsNameAhead(Buffer.concat([custom, named])), 'first', 'type = EDS after it: the oneof\'s last member wins');
  t.equal(edsNameAhead(Buffer.concat([named, Buffer.from([0xb0, 0x02, 0x01])])), 'first', 'field 38 as a varint: skipped, as the decoder skips it');
  t.strictSame(decodedEdsNames([{ type_url: TYPE_URL.cluster, value: Buffer.concat([named, renamed]) }]), ['second'], 'as the decoder reads them');
});

t.test('bad bytes give no name, never a throw; whatever the decoder accepts reads the same ahead', async (t) => {
  const good = clusterBytes({ name: 'c', type: 'EDS', connect_timeout: '1s', eds_cluster_config: { service_name: 'svc' } });
  t.equal(edsNameAhead(good), 'svc');
  t.equal(edsNameAhead(good.subarray(0, good.length - 2)), undefined, 'truncated');
  t.equal(edsNameAhead(Buffer.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f])), undefined, 'a length past the end');
  t.equal(edsNameAhead(Buffer.from([0x0b, 0x0c])), undefined, 'a group');
  t.equal(edsNameAhead(Buffer.alloc(12, 0xff)), undefined, 'a varint over 10 bytes');
  t.equal(edsNameAhead(Buffer.concat([good, Buffer.from([0x00, 0x00])])), undefined, 'field number 0, which the decoder refuses');
  t.equal(edsNameAhead(Buffer.concat([good, Buffer.from([0x1a, 0x02, 0x00, 0x00])])), undefined, 'field number 0 inside eds_cluster_config');
  let accepted = 0, differ = 0;
  for (let i = 0; i < 2000; i++) {
    const b = Buffer.from(good);
    for (let k = 0; k < 3; k++) b[randomBytes(1)[0]! % b.length] = randomBytes(1)[0]!;
    const bytes = b.subarray(0, 1 + (randomBytes(1)[0]! % b.length));
    const ahead = edsNameAhead(bytes);
    let decoded: string[];
    try {
      decoded = decodedEdsNames([{ type_url: TYPE_URL.cluster, value: bytes }]);
    } catch {
      continue; // rejected by the decoder: the hint is corrected once the response is handled
    }
    accepted++;
    if ((decoded[0] ?? undefined) !== ahead) differ++;
  }
  t.ok(accepted > 50, `${accepted} of 2000 corrupted copies still decode`);
  t.equal(differ, 0, 'and each of those reads ahead as decoded');
  t.strictSame(edsNamesAhead([{ value: Buffer.from([0x0a, 0x05]) }, { value: good }]), ['svc'], 'one unreadable cluster does not hide the others');
});
