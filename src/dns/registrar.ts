/**
 * The registrar ("Register Agent"): publishes this pod's RPC interfaces as INTERFACE.<zone> → the app's
 * ClusterIP with signed RFC 2136 updates, re-asserts them every interval, and withdraws them on drain.
 *
 * Several pods of one app publish the same names. Each also owns a TXT record at the name
 * ("xsidecar-owner=POD"); withdrawal removes its own TXT first, then deletes the address records only
 * on the prerequisite that no TXT is left — so the last pod out removes the name, atomically on the
 * server, and the others' names stay. A pod that registers during someone else's withdrawal restores its
 * records at its next re-assertion. Everything runs off the data path: a slow or refusing server only
 * delays the next attempt.
 */
import type { Logger } from '../observe/log.js';
import { dnsMetrics } from './metrics.js';
import type { Upstream } from './resolv.js';
import type { StaticName } from './table.js';
import type { TsigKey } from './tsig.js';
import { addressRdata, rr, sendUpdate, txtRdata, type UpdateRecord, type UpdateResult } from './update.js';
import { TYPE } from './wire.js';

export interface RegistrarOptions {
  readonly server: Upstream;
  readonly zone: string;
  readonly key: TsigKey;
  readonly interfaces: readonly string[];
  /** The app's ClusterIP(s), asked on every attempt (from XSIDECAR_SERVICE_IP, or the NameTable as it arrives). */
  readonly serviceIps: () => readonly string[];
  /** Names this pod's ownership record. */
  readonly owner: string;
  readonly ttlSeconds: number;
  readonly intervalMs: number;
  readonly timeoutMs?: number;
  readonly log: Logger;
  /** The records as published, for the local DNS proxy to answer too. */
  readonly onPublished?: (names: readonly StaticName[]) => void;
}

export class Registrar {
  private timer: NodeJS.Timeout | undefined;
  private failures = 0;
  private stopped = false;
  private running: Promise<void> | undefined;
  private published = false;
  private lastIps = '';

  constructor(private readonly opts: RegistrarOptions) {}

  get fqdns(): string[] {
    const zone = this.opts.zone.replace(/\.$/, '');
    return this.opts.interfaces.map((i) => `${i}.${zone}`.toLowerCase());
  }

  private get ownerTxt(): Buffer {
    return txtRdata(`xsidecar-owner=${this.opts.owner}`);
  }

  /** Registers now and keeps re-asserting; never throws, never waits on the server. */
  start(): void {
    this.stopped = false;
    this.schedule(0);
  }

  private schedule(ms: number): void {
    clearTimeout(this.timer);
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.running = this.register().finally(() => (this.running = undefined));
    }, ms);
    this.timer.unref();
  }

  private async register(): Promise<void> {
    const ips = [...this.opts.serviceIps()];
    if (ips.length === 0) {
      this.opts.log.warn({ interfaces: this.opts.interfaces }, 'dns registrar: no service IP yet (XSIDECAR_SERVICE_IP, or the service name in the NameTable); retrying');
      dnsMetrics.updates.inc({ op: 'register', result: 'no-service-ip' });
      return this.retry();
    }
    let addrs: { type: number; rdata: Buffer }[];
    try {
      addrs = ips.map(addressRdata);
    } catch (e) {
      this.opts.log.error({ err: (e as Error).message }, 'dns registrar: bad service IP; not registering');
      return this.retry();
    }
    const ttl = this.opts.ttlSeconds;
    const updates: UpdateRecord[] = [];
    for (const name of this.fqdns) {
      // Replace, not add: a Service re-created with a new ClusterIP must not leave the old address behind.
      updates.push(rr.deleteRRset(name, TYPE.A), rr.deleteRRset(name, TYPE.AAAA));
      for (const a of addrs) updates.push(rr.add(name, a.type, ttl, a.rdata));
      updates.push(rr.add(name, TYPE.TXT, ttl, this.ownerTxt));
    }
    const r = await this.send('register', [], updates);
    if (this.stopped) return;
    if (r.result !== 'NOERROR') return this.retry();
    const key = ips.join(',');
    if (!this.published || key !== this.lastIps) {
      this.opts.log.info({ names: this.fqdns, addresses: ips, server: `${this.opts.server.host}:${this.opts.server.port}`, ttl }, 'dns registrar: interfaces registered');
    }
    this.published = true;
    this.lastIps = key;
    this.failures = 0;
    this.opts.onPublished?.(this.fqdns.map((name) => ({ name, addresses: ips, ttlSeconds: ttl })));
    this.schedule(this.opts.intervalMs);
  }

  private retry(): void {
    // Exponential from 1 s, jittered, never longer than the re-assertion interval.
    const ceiling = Math.min(this.opts.intervalMs, 1000 * 2 ** Math.min(this.failures++, 10));
    this.schedule(Math.round(ceiling / 2 + (Math.random() * ceiling) / 2));
  }

  private async send(op: string, prereq: UpdateRecord[], updates: UpdateRecord[]): Promise<UpdateResult> {
    const r = await sendUpdate(this.opts.server, this.opts.zone, this.opts.key, prereq, updates, this.opts.timeoutMs ?? 5000);
    dnsMetrics.updates.inc({ op, result: r.result });
    // YXRRSET on the withdraw step only means another pod still serves the name: expected.
    if (r.result !== 'NOERROR' && !(op === 'withdraw-address' && r.result === 'YXRRSET')) {
      this.opts.log.error(
        { op, result: r.result, rcode: r.rcode, signature: r.signature, detail: r.detail, server: `${this.opts.server.host}:${this.opts.server.port}`, zone: this.opts.zone, key: this.opts.key.name },
        `dns registrar: update ${op} failed: ${r.result}`,
      );
    }
    return r;
  }

  /**
   * Drain: stops re-asserting, removes this pod's ownership records, then the address records of every
   * name no other pod owns. Bounded by the update timeout; failures are logged, never thrown.
   */
  async withdraw(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.running?.catch(() => {});
    const names = this.fqdns;
    const own = await this.send('withdraw-owner', [], names.map((n) => rr.deleteRR(n, TYPE.TXT, this.ownerTxt)));
    if (own.result !== 'NOERROR') return;
    const results = await Promise.all(
      names.map(async (n) => [n, await this.send('withdraw-address', [rr.rrsetAbsent(n, TYPE.TXT)], [rr.deleteRRset(n, TYPE.A), rr.deleteRRset(n, TYPE.AAAA)])] as const),
    );
    this.opts.onPublished?.([]);
    this.opts.log.info(
      { removed: results.filter(([, r]) => r.result === 'NOERROR').map(([n]) => n), keptForOtherPods: results.filter(([, r]) => r.result === 'YXRRSET').map(([n]) => n) },
      'dns registrar: withdrawn',
    );
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }
}
