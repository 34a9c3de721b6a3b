/**
 * The process metrics on /stats/prometheus: prom-client's defaults (but its GC observer) and our own CPU
 * counters, without loading prom-client's index or `@opentelemetry/api` (memory every pod pays).
 */
import { execFileSync } from 'node:child_process';
import t from 'tap';
import { registry } from '../../src/observe/metrics.js';

const value = (text: string, name: string): number => {
  const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(text);
  if (!m) throw new Error(`${name} is not in the output`);
  return Number(m[1]);
};

t.test('process CPU counters: user + system = total, and they grow with the CPU spent', async (t) => {
  const first = await registry.metrics();
  const spin = performance.now() + 200;
  while (performance.now() < spin); // CPU for the counters to see
  const text = await registry.metrics();
  const user = value(text, 'xsidecar_process_process_cpu_user_seconds_total');
  const system = value(text, 'xsidecar_process_process_cpu_system_seconds_total');
  const total = value(text, 'xsidecar_process_process_cpu_seconds_total');
  t.ok(Math.abs(user + system - total) < 1e-6, `user ${user} + system ${system} = total ${total}`);
  t.ok(total - value(first, 'xsidecar_process_process_cpu_seconds_total') >= 0.1, 'at least 0.1 s more after 0.2 s of spinning');
  t.match(text, /# TYPE xsidecar_process_process_cpu_seconds_total counter/);
  for (const name of ['xsidecar_process_process_start_time_seconds', 'xsidecar_process_nodejs_eventloop_lag_seconds', 'xsidecar_process_nodejs_heap_size_used_bytes', 'xsidecar_process_process_open_fds']) {
    t.match(text, new RegExp(`^${name} `, 'm'), `${name} is exported`);
  }
  t.notMatch(text, /gc_duration_seconds/, 'no GC observer');
});

t.test('neither prom-client\'s index nor @opentelemetry/api is loaded', async (t) => {
  const metrics = new URL('../../src/observe/metrics.js', import.meta.url).href;
  const script = `await import(${JSON.stringify(metrics)}); const { createRequire } = await import('node:module');
    const req = createRequire(import.meta.url); console.log(JSON.stringify(Object.keys(req.cache)));`;
  const loaded = JSON.parse(execFileSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' })) as string[];
  t.ok(loaded.some((f) => f.includes('prom-client/lib/counter.js')), 'prom-client\'s metric classes are loaded');
  t.same(loaded.filter((f) => f.includes('@opentelemetry') || /prom-client\/index\.js$/.test(f)), []);
});
