/**
 * Memory under repeated full pushes, and unchanged resources as no-ops: a real sidecar process takes a
 * mesh of 100 services (Istio's own cluster and endpoint shapes) from the test ADS server, then 20 full
 * pushes in which every cluster and endpoint set changed. The live heap (after the full GC a heap
 * snapshot starts with) must come back to about where it was at ready — generously bounded: old
 * snapshots and decoded copies must not pile up, whatever the GC does with the garbage in between.
 */
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import t from 'tap';
import { AdsServer, adsBootstrap, DSB, freePort, istioFixtureSet, jsonLines, type Json, readFixture, SidecarProc, waitJsonAfter } from './harness.js';
import { V8_SHRINKS_NEW_SPACE } from '../../src/memory/young-generation.js';

const SERVICES = 100;
t.setTimeout(900_000); // a shared 2-core machine: decoding and pushing the mesh 20 times can be slow

function mesh(round: number, ports: { outbound: number; inbound: number }): Json[] {
  const cluster = readFixture(DSB, 'cluster_outbound_9080_reviews.json');
  const cla = readFixture(DSB, 'cla_outbound_9080_reviews.json');
  const lb = ((cla.endpoints as Json[])[0]!.lb_endpoints as Json[])[0]!;
  const out = istioFixtureSet(ports);
  for (let s = 0; s < SERVICES; s++) {
    const name = `outbound|9000||svc-${s}.ns.svc.cluster.local`;
    out.push({ ...structuredClone(cluster), name, eds_cluster_config: { ...(cluster.eds_cluster_config as Json), service_name: name }, connect_timeout: `${10 + round}s` });
    const endpoints = Array.from({ length: 5 }, (_, e) => ({
      ...structuredClone(lb),
      endpoint: { address: { socket_address: { address: `10.${100 + (s >> 8)}.${s & 255}.${e + 1}`, port_value: 9000 } } },
      load_balancing_weight: 1 + round,
    }));
    out.push({ ...structuredClone(cla), cluster_name: name, endpoints: [{ ...(cla.endpoints as Json[])[0]!, lb_endpoints: endpoints }] });
  }
  return out;
}

/** The live heap in MiB: a heap snapshot (SIGUSR2) runs a full GC first; heap_used is read right after. */
async function liveHeap(sidecar: SidecarProc, diag: string): Promise<number> {
  sidecar.proc.child.kill('SIGUSR2');
  let size = -1;
  for (let i = 0; i < 600; i++) {
    await sleep(250);
    const f = readdirSync(diag).find((n) => n.endsWith('.heapsnapshot'));
    if (!f) continue;
    const now = statSync(join(diag, f)).size;
    if (now === size && now > 0) break;
    size = now;
  }
  const info = JSON.parse((await sidecar.get('/server_info')).body) as { memory: { heap_used: number } };
  for (const f of readdirSync(diag)) rmSync(join(diag, f));
  return info.memory.heap_used / 1024 / 1024;
}

t.test('a push storm: unchanged resources are no-ops, and the live heap returns to its level', async (t) => {
  const procs: { kill(s?: NodeJS.Signals): unknown }[] = [];
  const diag = mkdtempSync(join(tmpdir(), 'xsidecar-storm-'));
  t.teardown(() => {
    procs.forEach((p) => p.kill('SIGKILL'));
    rmSync(diag, { recursive: true, force: true });
  });
  const ports = { outbound: await freePort(), inbound: await freePort() };
  const rounds = [0, 1].map((r) => mesh(r, ports));
  const server = await AdsServer.start({ resources: rounds[0]!, version: 's0', label: 'storm', timeoutMs: 120_000 });
  procs.push(server);
  const sidecar = await SidecarProc.start(adsBootstrap({ xdsAddress: '127.0.0.1', xdsPort: server.port }), {
    env: { NODE_OPTIONS: `--heapsnapshot-signal=SIGUSR2 --diagnostic-dir=${diag}` },
    args: ['--dns-port', '0'],
    timeoutMs: 120_000,
  });
  procs.push(sidecar);
  // The xDS side's own signal (/ready also waits for things this test does not provide, such as a certificate).
  const applied = await sidecar.proc.waitJson<{ msg?: string; clusters?: number }>((o) => o.msg === 'xds: first complete config applied', 300_000);
  t.equal(applied.clusters, SERVICES + 6, 'the mesh applied: its clusters and the static xds-grpc');

  const pushed = async (version: string, resources: Json[]) => {
    const mark = server.mark;
    await server.command({ cmd: 'set', version, resources });
    for (const type of ['cluster', 'endpoint', 'listener', 'route']) await server.waitRequest(mark, (r) => r.type === type && r.kind === 'ack' && r.version === version, 120_000);
  };

  await t.test('a full push of unchanged resources changes nothing', async (t) => {
    const from = sidecar.proc.lines.length;
    await pushed('same', rounds[0]!);
    await sleep(200);
    const accepted = jsonLines(sidecar.proc, from).filter((o) => o.msg === 'xds: update accepted' && o.version === 'same');
    t.same(accepted.map((o) => [o.type, o.changed]).sort(), [['CDS', 0], ['EDS', 0], ['LDS', 0], ['RDS', 0]], 'every type accepted with nothing changed');
  });

  await t.test('20 full pushes, every cluster and endpoint changed', async (t) => {
    const before = await liveHeap(sidecar, diag);
    for (let i = 1; i <= 20; i++) await pushed(`s${i}`, rounds[i % 2]!);
    const dump = await sidecar.configDump();
    const clusters = dump.configs.find((c) => String(c['@type']).endsWith('ClustersConfigDump'))!;
    t.equal(clusters.version_info, 's20', 'the last push is in force');
    t.equal((clusters.dynamic_active_clusters as Json[]).length, SERVICES + 5, 'every cluster, once');
    const after = await liveHeap(sidecar, diag);
    t.comment(`live heap: ${before.toFixed(1)} MiB at ready, ${after.toFixed(1)} MiB after the pushes`);
    t.ok(after < before * 1.5 + 16, `live heap back near its level (${before.toFixed(1)} → ${after.toFixed(1)} MiB)`);
  });

  await t.test('the young generation: widened for the pushes where V8 shrinks it again, held and small once compacted', async (t) => {
    const from = sidecar.proc.lines.length;
    await pushed('young', rounds[0]!);
    // The compaction after this push: after its config is applied (one left over from the pushes before may
    // come first), a second after the pushes settle and at most every 10 s.
    const applied = await waitJsonAfter<{ msg?: string; version?: string }>(sidecar.proc, from, (o) => o.msg === 'xds: config applied' && String(o.version).includes('cluster=young'), 30_000);
    const at = sidecar.proc.lines.findIndex((l, i) => i >= from && l.includes('"xds: config applied"') && l.includes(applied.version!));
    const compacted = await waitJsonAfter<{ msg?: string; youngNarrowed?: boolean }>(sidecar.proc, at, (o) => o.msg === 'memory: compacted after a config change', 30_000);
    const widenable = V8_SHRINKS_NEW_SPACE; // Node 24; Node 20's V8 would not shrink it again
    t.equal(compacted.youngNarrowed, widenable, widenable ? 'it was widened for the push, and narrowed' : 'Node 20: held throughout');
    type Young = { state: string; new_space: number };
    let young: Young | undefined;
    // Nothing arrives after the push (the test server sends nothing unasked), so it stays held; read it a few times in case a late request is answered.
    for (let i = 0; i < 20 && young?.state !== 'held'; i++) {
      young = (JSON.parse((await sidecar.get('/server_info')).body) as { memory: { young_generation: Young } }).memory.young_generation;
      if (young.state !== 'held') await sleep(250);
    }
    t.equal(young!.state, 'held', 'held between pushes');
    t.ok(young!.new_space <= 8 * 1024 * 1024, `new space back to ${(young!.new_space / 1048576).toFixed(1)} MiB`);
  });
});
