/**
 * One long-lived ADS stream to istiod and its lifecycle, shared by the state-of-the-world and delta
 * clients: open, send the node on the first message, hand responses to the subclass, and when the stream
 * fails re-open it after a jittered, growing delay. Nothing here touches the config in force: while
 * istiod is away the last good Snapshot keeps serving.
 */
import * as grpc from '@grpc/grpc-js';
import type protobuf from 'protobufjs';
import { log as rootLog, type Logger } from '../observe/log.js';
import { Backoff, type BackoffOptions, DEFAULT_BACKOFF } from './backoff.js';
import { openChannel } from './channel.js';
import { type EngineOptions, type NameTable, XdsEngine, type XdsStatus } from './engine.js';
import type { NodeIdentity } from './node-identity.js';
import { fromProto3Json } from './proto-json.js';
import { loadXdsProtos, type XdsProtos } from './protos.js';
import type { XdsTarget } from './target.js';
import { asBuffer } from './wire-json.js';

/** What the engine needs, plus where istiod is and who we are. */
export interface XdsClientOptions extends Pick<EngineOptions, 'statics' | 'warming' | 'fetchTimeoutMs' | 'publish' | 'onNameTable'> {
  readonly node: NodeIdentity;
  readonly target: XdsTarget;
  readonly log?: Logger;
  readonly backoff?: BackoffOptions;
  /** Called as each response arrives, before it is decoded (the sidecar readies its heap for the burst). */
  readonly onResponse?: () => void;
}

export interface XdsClientStatus extends XdsStatus {
  readonly api: 'GRPC' | 'DELTA_GRPC';
  readonly target: string;
  readonly connected: boolean;
}

export interface XdsClient {
  /** The Node sent to istiod. */
  readonly node: NodeIdentity;
  start(): void;
  stop(): void;
  status(): XdsClientStatus;
  readonly nameTable: NameTable | undefined;
}

type Plain = Record<string, unknown>;

/** How long a response's remaining work waits for the requests it sent first to leave (see step). */
const SEND_AHEAD_WAIT_MS = 5;

export abstract class AdsStream<Res extends Plain> implements XdsClient {
  protected readonly protos: XdsProtos;
  protected readonly engine: XdsEngine;
  protected readonly log: Logger;
  private readonly backoff: Backoff;
  private readonly nodeMessage: protobuf.Message;
  private channel: grpc.Client | undefined;
  private call: grpc.ClientDuplexStream<Plain, Res> | undefined;
  private streamId = 0;
  private nodeSent = false;
  private connected = false;
  private retryTimer: NodeJS.Timeout | undefined;
  private stopped = false;
  /** A response's remaining work is waiting for its requests to go out (see step). */
  private holding = false;
  /** The wanted names changed meanwhile: synced once that work has run, not from a half-handled response. */
  private syncHeld = false;

  protected abstract readonly api: 'GRPC' | 'DELTA_GRPC';
  protected abstract readonly method: string;
  protected abstract readonly requestType: protobuf.Type;
  protected abstract readonly responseType: protobuf.Type;
  /** Sends what a new stream must ask for. */
  protected abstract streamStarted(): void;
  /**
   * Handles a response. It may send requests first and return the rest of the work: the stream then
   * holds further responses, lets those requests go out (the write reaches the socket only when the
   * event loop turns) and runs the rest before reading on.
   */
  protected abstract onResponse(res: Res): (() => void) | undefined;
  /** Brings the EDS/RDS subscriptions in line with what the config needs now. */
  protected abstract syncNames(): void;

  constructor(protected readonly opts: XdsClientOptions) {
    this.protos = loadXdsProtos();
    this.log = (opts.log ?? rootLog).child({ component: 'xds' });
    this.log.debug({ loadMs: Math.round(this.protos.loadMs) }, 'xds: protos loaded');
    this.backoff = new Backoff(opts.backoff ?? DEFAULT_BACKOFF);
    this.nodeMessage = fromProto3Json(this.protos.Node, opts.node);
    this.engine = new XdsEngine({
      protos: this.protos,
      statics: opts.statics,
      warming: opts.warming,
      fetchTimeoutMs: opts.fetchTimeoutMs,
      publish: opts.publish,
      onNameTable: opts.onNameTable,
      onWantedNamesChanged: () => {
        if (this.holding) this.syncHeld = true;
        else if (this.call) this.syncNames();
      },
      log: this.log,
    });
  }

  get node(): NodeIdentity {
    return this.opts.node;
  }

  get nameTable(): NameTable | undefined {
    return this.engine.nameTable;
  }

  start(): void {
    this.log.info({ target: this.opts.target.target, from: this.opts.target.source, tls: !!this.opts.target.tls, api: this.api, node: this.opts.node.id }, 'xds: connecting');
    this.connect();
  }

  private connect(): void {
    if (this.stopped) return;
    this.channel?.close();
    const id = ++this.streamId;
    let call: grpc.ClientDuplexStream<Plain, Res>;
    try {
      this.channel = openChannel(this.opts.target);
      call = this.channel.makeBidiStreamRequest(
        this.method,
        (req: Plain) => {
          const bytes = this.requestType.encode(this.requestType.fromObject(req)).finish();
          return asBuffer(bytes);
        },
        (buf: Buffer) => {
          this.log.debug({ bytes: buf.length }, 'xds: response read');
          this.opts.onResponse?.();
          return this.responseType.decode(buf) as unknown as Res;
        },
        new grpc.Metadata(),
      );
    } catch (e) {
      this.log.error({ err: (e as Error).message }, 'xds: cannot open the stream');
      this.scheduleReconnect(id);
      return;
    }
    this.call = call;
    this.nodeSent = false;
    call.on('metadata', () => id === this.streamId && (this.connected = true));
    call.on('data', (res: Res) => {
      if (id !== this.streamId) return;
      this.connected = true;
      this.backoff.reset();
      this.engine.noteResponse();
      this.step(id, call, () => this.onResponse(res));
    });
    call.on('error', (e: grpc.ServiceError) => this.streamEnded(id, `${grpc.status[e.code] ?? e.code}: ${e.details || e.message}`));
    call.on('status', (s: grpc.StatusObject) => this.streamEnded(id, `${grpc.status[s.code] ?? s.code}: ${s.details}`));
    this.streamStarted();
  }

  private step(id: number, call: grpc.ClientDuplexStream<Plain, Res>, work: () => (() => void) | void): void {
    try {
      const rest = work();
      if (!rest) return;
      call.pause();
      this.holding = true;
      // The requests just sent must be on the wire before the long synchronous work starts. Between
      // write() and the socket there are promise hops in grpc-js, an immediate in Node's HTTP/2 and libuv's
      // poll phase, and how many turns of the event loop that takes differs between Node 20 and 24 (two
      // setImmediates were enough on 24, not on 20): a few milliseconds' timer covers any of them.
      setTimeout(() => {
        this.holding = false;
        if (id === this.streamId) {
          this.step(id, call, rest);
          call.resume();
        } else if (!this.stopped) this.log.info('xds: the stream ended before a response was handled: dropped unapplied, the new stream asks again');
        if (this.syncHeld && !this.holding) {
          this.syncHeld = false;
          if (this.call) this.syncNames();
        }
      }, SEND_AHEAD_WAIT_MS);
    } catch (e) {
      // A bug must not take the sidecar down; a new stream starts from a clean slate.
      this.log.error({ err: (e as Error).stack }, 'xds: failed handling a response, restarting the stream');
      call.cancel();
      this.streamEnded(id, `internal error: ${(e as Error).message}`);
    }
  }

  private streamEnded(id: number, reason: string): void {
    if (id !== this.streamId || this.stopped) return;
    this.streamId++; // late events of this stream are ignored from now on
    this.connected = false;
    this.call?.cancel();
    this.call = undefined;
    this.scheduleReconnect(this.streamId, reason);
  }

  private scheduleReconnect(id: number, reason?: string): void {
    if (this.stopped) return;
    const delayMs = this.backoff.next();
    this.log.warn({ reason, retryInMs: delayMs, target: this.opts.target.target }, 'xds: stream closed, serving the last good config until it is back');
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => id === this.streamId && this.connect(), delayMs);
  }

  /** Writes one request; the first on a stream carries the node, as istiod requires. */
  protected send(req: Plain | undefined): void {
    if (!req || !this.call) return;
    const msg = this.nodeSent ? req : { ...req, node: this.nodeMessage };
    this.nodeSent = true;
    this.call.write(msg);
  }

  status(): XdsClientStatus {
    return { ...this.engine.status(), api: this.api, target: this.opts.target.target, connected: this.connected };
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    this.streamId++;
    this.call?.cancel();
    this.channel?.close();
    this.engine.stop();
  }
}
