/**
 * Resilience with real Dubbo peers in their own processes: retries that hide a provider killed under load,
 * per-try timeouts, retries on a status, circuit breakers, outlier detection and active health checks
 * against a provider that stalls (SIGSTOP), fault injection and a local rate limit, each observed by the
 * real consumer.
 */
import t from 'tap';
import { DubboClient, type DubboProvider, startDubboProvider } from '../helpers/dubbo.js';
import { type LocalSidecar, startLocalSidecar, whenAtLeast } from '../helpers/sidecar.js';

const ep = (port: number) => ({ endpoint: { address: { socket_address: { address: '127.0.0.1', port_value: port } } } });
const cluster = (name: string, ports: number[], extra: object = {}) => ({ name, type: 'STATIC', connect_timeout: '1s', lb_policy: 'ROUND_ROBIN', load_assignment: { cluster_name: name, endpoints: [{ lb_endpoints: ports.map(ep) }] }, ...extra });
const listener = (name: string, routes: object[]) => ({
  name,
  address: { socket_address: { address: '127.0.0.1', port_value: 0 } },
  filter_chains: [{ filters: [{ name: 'xsidecar.filters.network.xprotocol', typed_config: { '@type': 'type.googleapis.com/xsidecar.xprotocol.v1.XProtocolProxy', stat_prefix: name, protocol: 'dubbo', route_config: { name, virtual_hosts: [{ name, domains: ['*'], routes }] } } }] }],
});
const method = (m: string) => ({ prefix: '/', headers: [{ name: 'method', string_match: { exact: m } }] });
const fault = (cfg: object) => ({ 'envoy.filters.http.fault': { '@type': 'type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault', ...cfg } });

function bootstrap(a: DubboProvider, b: DubboProvider, c: DubboProvider, d: DubboProvider) {
  const outlier = { consecutive_5xx: 3, interval: '0.5s', base_ejection_time: '2s', max_ejection_percent: 50 };
  return {
    static_resources: {
      clusters: [
        cluster('retried', [a.port, b.port]),
        cluster('breaker', [a.port], { circuit_breakers: { thresholds: [{ max_requests: 2, max_pending_requests: 1024, max_connections: 1024, max_retries: 3 }] } }),
        cluster('outlier', [c.port, d.port], { outlier_detection: outlier }),
        cluster('checked', [c.port, d.port], {
          health_checks: [{ timeout: '0.3s', interval: '0.3s', unhealthy_threshold: 2, healthy_threshold: 1, custom_health_check: { name: 'xsidecar.health_checkers.rpc_heartbeat', typed_config: { protocol: 'dubbo' } } }],
        }),
        cluster('per-try', [c.port, d.port]),
        cluster('single', [a.port]),
      ],
      listeners: [
        listener('retries', [{ match: { prefix: '/' }, route: { cluster: 'retried', retry_policy: { retry_on: 'connect-failure,reset', num_retries: 3 } } }]),
        listener('status-retries', [{ match: { prefix: '/' }, route: { cluster: 'retried', retry_policy: { retry_on: 'retriable-status-codes', retriable_status_codes: [501], num_retries: 2 } } }]),
        listener('per-try', [{ match: { prefix: '/' }, route: { cluster: 'per-try', timeout: '5s', retry_policy: { retry_on: '5xx', num_retries: 2, per_try_timeout: '0.3s' } } }]),
        listener('breaker', [{ match: { prefix: '/' }, route: { cluster: 'breaker' } }]),
        listener('outlier', [{ match: { prefix: '/' }, route: { cluster: 'outlier', timeout: '0.25s', retry_policy: { retry_on: '', num_retries: 0 } } }]),
        listener('checked', [{ match: { prefix: '/' }, route: { cluster: 'checked', timeout: '1s' } }]),
        listener('faults', [
          { name: 'abort', match: method('getUser'), route: { cluster: 'single' }, typed_per_filter_config: fault({ abort: { grpc_status: 14, percentage: { numerator: 100 } } }) },
          { name: 'delay', match: method('whoami'), route: { cluster: 'single' }, typed_per_filter_config: fault({ delay: { fixed_delay: '0.4s', percentage: { numerator: 100 } } }) },
          {
            name: 'limited',
            match: method('echoAttachments'),
            route: { cluster: 'single' },
            typed_per_filter_config: {
              'envoy.filters.http.local_ratelimit': {
                '@type': 'type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit',
                stat_prefix: 'rl',
                token_bucket: { max_tokens: 5, tokens_per_fill: 5, fill_interval: '60s' },
                filter_enabled: { default_value: { numerator: 100 } },
                filter_enforced: { default_value: { numerator: 100 } },
              },
            },
          },
        ]),
      ],
    },
  };
}

t.test('resilience with real Dubbo peers', async (t) => {
  const [a, b, c, d] = await Promise.all(['A', 'B', 'C', 'D'].map((n) => startDubboProvider(n)));
  const sidecar: LocalSidecar = await startLocalSidecar('resilience', bootstrap(a!, b!, c!, d!));
  const listeners = (await (await fetch(`http://${sidecar.admin}/listeners?format=json`)).json()) as { listener_statuses: { name: string; local_address: { socket_address: { address: string } } }[] };
  const clients: DubboClient[] = [];
  const client = (name: string) => {
    const [host, port] = listeners.listener_statuses.find((l) => l.name === name)!.local_address.socket_address.address.split(':');
    const cl = DubboClient.local('apache', host!, Number(port));
    clients.push(cl);
    return cl;
  };
  const stopped = new Set<DubboProvider>();
  const pause = (p: DubboProvider) => (stopped.add(p), p.proc.child.kill('SIGSTOP'));
  const resume = (p: DubboProvider) => (stopped.delete(p), p.proc.child.kill('SIGCONT'));
  t.teardown(() => {
    for (const p of stopped) p.proc.child.kill('SIGCONT');
    clients.forEach((cl) => cl.proc.kill('SIGKILL'));
    [a, b, c, d].forEach((p) => p!.proc.kill('SIGKILL'));
    sidecar.proc.kill('SIGKILL');
  });

  t.test('faults and the rate limit, as the consumer sees them', async (t) => {
    const cl = client('faults');
    const aborted = await cl.run({ method: 'getUser', calls: 5 });
    t.equal(aborted.failed, 5, 'every call aborted');
    t.match(Object.keys(aborted.errors)[0], /xsidecar no-healthy-upstream: fault filter abort \(grpc 14\)/);
    t.same(aborted.errorTypes, { DubboServiceError: 5 }, 'a Dubbo error, not a hang');
    const delayed = await cl.run({ method: 'whoami', calls: 3 });
    t.equal(delayed.ok, 3);
    t.ok(delayed.elapsedMs >= 3 * 400 - 50, `three calls one after the other took ${delayed.elapsedMs} ms (0.4 s delay each)`);
    const limited = await cl.run({ method: 'echoAttachments', args: ['x'], calls: 20 });
    t.equal(limited.ok, 5, 'the bucket holds five tokens');
    t.equal(limited.failed, 15);
    t.match(Object.keys(limited.errors)[0], /xsidecar overflow: local rate limit of route limited/);
    t.equal(await sidecar.metric('xsidecar_local_rate_limited_total', 'route="limited"'), 15);
    t.equal(await sidecar.metric('xsidecar_fault_injected_total', 'fault="abort"'), 5);
  });

  t.test('the circuit breaker answers overflow at once', async (t) => {
    const cl = client('breaker');
    const r = await cl.run({ method: 'sleep', args: [600], calls: 10, concurrency: 10, timeout: 5000 });
    t.equal(r.ok, 2, `max_requests 2: two in flight: ${JSON.stringify(r.results)}`);
    t.equal(r.failed, 8);
    t.match(Object.keys(r.errors)[0], /xsidecar overflow: too many requests in flight to cluster breaker/);
    t.equal(await sidecar.metric('xsidecar_upstream_rq_overflow_total', 'cluster="breaker",resource="requests"'), 8);
    t.equal(await sidecar.metric('xsidecar_cluster_upstream_active', 'cluster="breaker",resource="connections"'), 1, 'one upstream connection stays open');
    t.equal(await sidecar.metric('xsidecar_cluster_upstream_active', 'cluster="breaker",resource="requests"'), 0, 'nothing left in flight');
  });

  t.test('retries on a status name the condition, and stop at num_retries', async (t) => {
    const before = await sidecar.metric('xsidecar_cluster_upstream_rq_retry_total', 'cluster="retried"');
    const r = await client('status-retries').run({ version: '9.9.9', method: 'getUser', calls: 4 });
    t.equal(r.failed, 4, 'no provider serves 9.9.9');
    t.match(Object.keys(r.errors)[0], /Service not found/, 'the provider\'s own answer is passed on after the last try');
    const retries = (await sidecar.metric('xsidecar_cluster_upstream_rq_retry_total', 'cluster="retried"')) - before;
    t.equal(retries, 8, `two retries for each call (${retries}; ${JSON.stringify(r.errors)})`);
  });

  t.test('a per-try timeout moves a call off a stalled provider', async (t) => {
    const cl = client('per-try');
    t.equal((await cl.run({ method: 'whoami', calls: 4 })).ok, 4, 'both providers serve before the stall');
    pause(c!);
    const r = await cl.run({ method: 'whoami', calls: 20, concurrency: 2 });
    resume(c!);
    t.equal(r.ok, 20, `all served: ${JSON.stringify(r.errors)}`);
    t.same(r.results, { D: 20 }, 'every try that met the stalled provider was retried on the other');
  });

  t.test('outlier detection ejects a stalled provider and takes it back after the ejection time', async (t) => {
    const cl = client('outlier');
    pause(c!);
    const during = await cl.run({ method: 'whoami', calls: 40, concurrency: 1, timeout: 5000 });
    t.ok(during.failed >= 3 && during.failed <= 5, `only the calls before the ejection failed (${during.failed}: ${JSON.stringify(during.errors)})`);
    t.equal(during.results.D, during.ok, 'the rest went to the healthy provider');
    for (const msg of Object.keys(during.errors)) t.match(msg, /xsidecar timeout/);
    t.equal(await sidecar.metric('xsidecar_outlier_detection_ejections_total', 'cluster="outlier"'), 1);
    resume(c!);
    await new Promise((r) => setTimeout(r, 2500));
    const after = await cl.run({ method: 'whoami', calls: 20, concurrency: 1 });
    t.equal(after.ok, 20);
    t.ok((after.results.C ?? 0) > 0, `C is back in rotation after the ejection time: ${JSON.stringify(after.results)}`);
  });

  t.test('an active heartbeat check takes a stalled provider out of rotation and brings it back', async (t) => {
    const cl = client('checked');
    // The earlier subtests stalled C, which this cluster's checker saw too: count from here.
    const failures = () => sidecar.metric('xsidecar_health_check_total', 'cluster="checked",result="failure"');
    const before = await failures();
    pause(d!);
    await whenAtLeast(failures, before + 2);
    await new Promise((r) => setTimeout(r, 400));
    const during = await cl.run({ method: 'whoami', calls: 20, concurrency: 2 });
    t.same(during.results, { C: 20 }, `no call went to the stalled provider: ${JSON.stringify(during.errors)}`);
    resume(d!);
    const back = await whenAtLeast(async () => (await cl.run({ method: 'whoami', calls: 10 })).results.D ?? 0, 1, 10_000);
    t.ok(back >= 1, 'D serves again once its check passes');
  });

  t.test('a provider killed under load: with retries, no call fails', async (t) => {
    const cl = client('retries');
    t.equal((await cl.run({ method: 'getUser', calls: 2 })).ok, 2, 'connected before the load starts');
    const load = cl.run({ method: 'getUser', args: ['k'], durationMs: 3000, concurrency: 20 });
    await whenAtLeast(async () => cl.progress(), 300);
    b!.proc.kill('SIGKILL');
    const r = await load;
    t.equal(r.failed, 0, `no failures: ${JSON.stringify(r.errors)}`);
    t.ok((r.results['user:k@A'] ?? 0) > 0 && (r.results['user:k@B'] ?? 0) > 0, `both served before the kill: ${JSON.stringify(r.results)}`);
    t.ok((await sidecar.metric('xsidecar_cluster_upstream_rq_retry_total', 'cluster="retried"')) > 8, 'the in-flight calls were retried');
  });
});
