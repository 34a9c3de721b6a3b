/**
 * pilot-agent's secret manager for the workload: gets the certificate, keeps it in memory, renews it
 * before it expires and hands out the newest to whoever builds TLS contexts.
 *
 * Renewal is due when `graceRatio` of the lifetime is left (± jitter), the lifetime measured from when
 * the certificate arrived to its NotAfter: istiod backdates NotBefore, which would otherwise pull the
 * renewal earlier. A failed call is retried with jittered exponential backoff; the old certificate stays
 * in use until a new one has arrived, and connections already open keep theirs.
 */
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { log } from '../observe/log.js';
import { CaError, createCertificate, pemBlocks, type SignedChain } from './ca-client.js';
import { newWorkloadKey } from './keys.js';
import { identityMetrics } from './metrics.js';
import { type IdentityOptions, spiffeIdOf } from './options.js';

export interface WorkloadCertificate {
  readonly keyPem: string;
  /** Leaf first, then intermediates and the root as the CA returned them (what Envoy sends for `default`). */
  readonly chainPem: string;
  /** The trust anchors for peers (`ROOTCA`). */
  readonly rootsPem: string;
  readonly spiffeId: string;
  readonly notAfter: Date;
  readonly receivedAt: Date;
  /** Increments with every new certificate; TLS contexts are cached per generation. */
  readonly generation: number;
}

/** Injected for tests of the schedule; the real one calls the CA. */
export type Signer = (csrPem: string, ttlSeconds: number) => Promise<SignedChain>;

export function rotationDelayMs(receivedAt: number, notAfter: number, graceRatio: number, jitterRatio: number, random = Math.random): number {
  const lifetime = Math.max(0, notAfter - receivedAt);
  const jitter = (random() * 2 - 1) * jitterRatio;
  const ratio = Math.min(1, Math.max(0, graceRatio + jitter));
  return Math.max(0, Math.round(lifetime * (1 - ratio)));
}

export class WorkloadIdentity {
  private cert: WorkloadCertificate | undefined;
  private timer: NodeJS.Timeout | undefined;
  private attempt = 0;
  private stopped = false;
  private inFlight = false;
  private readonly listeners: ((c: WorkloadCertificate) => void)[] = [];
  private waiters: ((c: WorkloadCertificate) => void)[] = [];
  private readonly spiffeId: string;
  private readonly signer: Signer;
  lastError: string | undefined;

  constructor(
    readonly opts: IdentityOptions,
    signer?: Signer,
  ) {
    this.spiffeId = spiffeIdOf(opts);
    this.signer = signer ?? ((csr, ttl) => createCertificate(opts, csr, ttl));
  }

  get certificate(): WorkloadCertificate | undefined {
    return this.cert;
  }

  get ready(): boolean {
    return this.cert !== undefined && this.cert.notAfter.getTime() > Date.now();
  }

  /** Called with each new certificate (and at once with the current one, if any). */
  onChange(cb: (c: WorkloadCertificate) => void): void {
    this.listeners.push(cb);
    if (this.cert) cb(this.cert);
  }

  /** Resolves with the first certificate; keeps retrying until there is one or stop() is called. */
  whenReady(): Promise<WorkloadCertificate> {
    if (this.cert) return Promise.resolve(this.cert);
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  start(): void {
    if (!this.timer && !this.inFlight) void this.renew();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  private schedule(delayMs: number): void {
    clearTimeout(this.timer);
    if (this.stopped) return;
    // setTimeout's ceiling is 2^31-1 ms (~24.8 days): a longer wait is taken in steps.
    const step = Math.min(delayMs, 2 ** 31 - 1);
    this.timer = setTimeout(() => (step < delayMs ? this.schedule(delayMs - step) : void this.renew()), step);
    this.timer.unref();
  }

  private async renew(): Promise<void> {
    if (this.stopped || this.inFlight) return;
    this.inFlight = true;
    this.timer = undefined;
    try {
      const key = await newWorkloadKey(this.spiffeId, this.opts.keyAlgorithm);
      const signed = await this.signer(key.csrPem, this.opts.ttlSeconds);
      this.install(key.keyPem, signed);
      this.attempt = 0;
    } catch (e) {
      const err = e as CaError;
      const reason = err.code !== undefined ? String(err.code) : 'local';
      identityMetrics.failures.inc({ reason });
      this.lastError = err.message;
      const ceiling = Math.min(this.opts.retryMaxMs, this.opts.retryBaseMs * 2 ** Math.min(this.attempt++, 20));
      const delay = Math.round(ceiling / 2 + (ceiling / 2) * Math.random());
      log.warn({ err: err.message, retryInMs: delay, haveCertificate: !!this.cert }, 'identity: certificate request failed');
      this.schedule(delay);
    } finally {
      this.inFlight = false;
    }
  }

  private install(keyPem: string, signed: SignedChain): void {
    const leaf = new X509Certificate(signed.chain[0]!);
    const receivedAt = new Date();
    const notAfter = new Date(leaf.validTo);
    const uris = (leaf.subjectAltName ?? '').split(', ').filter((s) => s.startsWith('URI:')).map((s) => s.slice(4));
    if (!uris.includes(this.spiffeId)) {
      throw new CaError(`the CA returned a certificate for ${uris.join(', ') || 'no URI SAN'}, expected ${this.spiffeId}`);
    }
    if (!leaf.checkPrivateKey(createPrivateKey(keyPem))) throw new CaError('the CA returned a certificate for another key');
    let roots = signed.roots;
    if (roots.length === 0) roots = pemBlocks(readFileSync(this.opts.rootCertFile, 'utf8'));
    this.cert = {
      keyPem,
      chainPem: signed.chain.join(''),
      rootsPem: roots.join(''),
      spiffeId: this.spiffeId,
      notAfter,
      receivedAt,
      generation: (this.cert?.generation ?? 0) + 1,
    };
    this.lastError = undefined;
    const delay = rotationDelayMs(receivedAt.getTime(), notAfter.getTime(), this.opts.graceRatio, this.opts.graceJitterRatio);
    identityMetrics.issued.inc();
    identityMetrics.expiry.set(notAfter.getTime() / 1000);
    identityMetrics.rotateAt.set((receivedAt.getTime() + delay) / 1000);
    log.info({ spiffeId: this.spiffeId, notAfter: notAfter.toISOString(), renewInMs: delay, generation: this.cert.generation }, 'identity: workload certificate issued');
    this.schedule(delay);
    const cert = this.cert;
    const waiting = this.waiters;
    this.waiters = [];
    for (const cb of [...this.listeners, ...waiting]) cb(cert);
  }
}
