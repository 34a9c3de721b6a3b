/**
 * A real Prometheus (Debian's `prometheus` package) for telemetry tests: started inside a test's network
 * namespace as UID 1337 (so the pod's capture rules leave its scrapes alone, as they leave the sidecar's
 * own traffic), with its own temporary storage, scraping every second; queried over its HTTP API from a
 * peer inside the same namespace. The namespace is the test's own, so its fixed port cannot collide.
 */
import { spawn, spawnSync } from 'node:child_process';
import { chownSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Proc, runPeer } from './netns.js';

export const PROMETHEUS = '/usr/bin/prometheus';

export function prometheusProblem(): string | undefined {
  const r = spawnSync(PROMETHEUS, ['--version'], { stdio: 'ignore' });
  return r.error || r.status !== 0 ? 'prometheus is not installed (apt-get install prometheus)' : undefined;
}

export interface PromResult {
  metric: Record<string, string>;
  value: [number, string];
}

export class Prometheus {
  private constructor(
    readonly proc: Proc,
    readonly ns: string,
    readonly address: string,
    private readonly dir: string,
  ) {}

  /** Starts Prometheus in `ns` scraping `targets` (host:port, path /stats/prometheus) every second. */
  static async start(ns: string, targets: string[], port = 9090): Promise<Prometheus> {
    const dir = mkdtempSync(join(tmpdir(), 'xsidecar-prom-'));
    const config = join(dir, 'prometheus.yml');
    writeFileSync(
      config,
      [
        'global: { scrape_interval: 1s, evaluation_interval: 1s }',
        'scrape_configs:',
        '  - job_name: sidecars',
        '    metrics_path: /stats/prometheus',
        '    scrape_interval: 1s',
        '    scrape_timeout: 900ms',
        `    static_configs: [{ targets: [${targets.map((t) => `"${t}"`).join(', ')}] }]`,
        '',
      ].join('\n'),
    );
    chownSync(dir, 1337, 1337);
    chownSync(config, 1337, 1337);
    const address = `127.0.0.1:${port}`;
    const child = spawn(
      'ip',
      ['netns', 'exec', ns, 'setpriv', '--reuid=1337', '--regid=1337', '--clear-groups', PROMETHEUS, `--config.file=${config}`, `--storage.tsdb.path=${join(dir, 'data')}`, `--web.listen-address=${address}`, '--log.level=warn'],
      { stdio: ['pipe', 'pipe', 'pipe'] },
    );
    const p = new Prometheus(new Proc(child, `${ns}: prometheus`), ns, address, dir);
    const deadline = Date.now() + 60_000;
    for (;;) {
      const r = await runPeer<{ status?: number }>(ns, 'http-get', `http://${address}/-/ready`);
      if (r.status === 200) break;
      if (child.exitCode !== null || Date.now() > deadline) throw new Error(`prometheus did not become ready: ${p.proc.lines.join('\n')}`);
      await new Promise((r) => setTimeout(r, 300));
    }
    return p;
  }

  /** An instant query; throws with Prometheus's error. */
  async query(q: string): Promise<PromResult[]> {
    const r = await runPeer<{ status?: number; body?: string; error?: string }>(this.ns, 'http-get', `http://${this.address}/api/v1/query?query=${encodeURIComponent(q)}`);
    if (r.status !== 200 || !r.body) throw new Error(`query ${q}: ${r.status ?? r.error} ${r.body ?? ''}`);
    const body = JSON.parse(r.body) as { status: string; data: { result: PromResult[] } };
    return body.data.result;
  }

  /** Polls `q` until `pred` holds of its result (scrapes and rates lag the traffic by a few seconds). */
  async until(q: string, pred: (r: PromResult[]) => boolean, timeoutMs = 60_000): Promise<PromResult[]> {
    const deadline = Date.now() + timeoutMs;
    let last: PromResult[] = [];
    for (;;) {
      last = await this.query(q);
      if (pred(last)) return last;
      if (Date.now() > deadline) throw new Error(`timed out waiting on ${q}; last result: ${JSON.stringify(last)}`);
      await new Promise((r) => setTimeout(r, 500));
    }
  }

  // Awaits the exit before removing its directory: until then it may still be writing its WAL there.
  async stop(): Promise<void> {
    await this.proc.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** The value of the result row whose labels include `labels`, or undefined. */
export function rowValue(rows: PromResult[], labels: Record<string, string>): number | undefined {
  const row = rows.find((r) => Object.entries(labels).every(([k, v]) => r.metric[k] === v));
  return row ? Number(row.value[1]) : undefined;
}
