import type { Codec } from '../../../protocols/codec.js';
import { codecs } from '../../../protocols/registry.js';
import type { DownstreamContext } from '../context.js';
import { countClosed, endEarlyDial, limits, tryEarlyDial, unwatch, watch, type Watched } from '../limits.js';
import { L4Attempt, type L4Target, proxyL4 } from '../tcp-proxy.js';

/** How long a silent client waits before we also dial the upstream, in case the server speaks first. */
const SERVER_FIRST_WAIT_MS = 100;
/** Enough bytes for every codec's magic; past this, undecided means "not RPC". */
const SNIFF_LIMIT = 64;

export interface SniffOutcome {
  rpc(codec: Codec, first: Buffer): void;
  /** No codec matched; undefined when there is nowhere to send plain bytes (the connection closes). */
  readonly l4?: L4Target;
  notRpc?(): void;
  /** The filter's own first-bytes timeout; undefined: the bootstrap's. 0 disables. */
  readonly timeoutMs?: number;
}

function detect(head: Buffer): Codec | 'no' | 'need-more' {
  let undecided = false;
  for (const c of codecs) {
    const m = c.match(head);
    if (m === 'yes') return c;
    if (m === 'need-more') undecided = true;
  }
  return undecided && head.length < SNIFF_LIMIT ? 'need-more' : 'no';
}

/**
 * Reads a connection's first bytes and picks a codec by its magic; anything else goes through at L4.
 * A client that stays silent may be talking to a server-first protocol, so after a short wait the L4
 * upstream is dialled too: if the server speaks first the bytes flow at L4, and if the client then speaks
 * RPC that unused upstream connection is dropped. Idle RPC connection pools thus keep their request-level
 * routing, and server-first protocols are not stalled.
 *
 * Limits: at most `max_early_dials` such dials are in progress at once (beyond that a silent client just
 * waits, costing no upstream descriptor), and a connection on which neither side has spoken a decisive
 * byte within the sniff timeout is closed, as Envoy closes one whose listener filters time out.
 */
export function sniff(ctx: DownstreamContext, out: SniffOutcome): void {
  const s = ctx.socket;
  let head: Buffer | undefined;
  let attempt: L4Attempt | undefined;
  let settled = false;
  let dialing = false;
  const endDial = () => {
    if (dialing) endEarlyDial();
    dialing = false;
  };
  const startedAt = Date.now();
  const timeoutMs = out.timeoutMs ?? limits.sniffTimeoutMs;
  const watcher: Watched = {
    check(now) {
      if (timeoutMs > 0 && now - startedAt >= timeoutMs) this.shed('sniff_timeout');
    },
    held: () => head?.length ?? 0,
    idle: () => true,
    silent: true,
    shed(reason) {
      countClosed(ctx.listener.name, reason, { source: ctx.source, bytesRead: head?.length ?? 0 });
      settle();
      attempt?.cancel();
      s.destroy();
    },
  };
  const settle = () => {
    settled = true;
    clearTimeout(timer);
    unwatch(watcher);
    endDial();
    s.off('data', onData);
    s.pause();
  };
  const toL4 = (first?: Buffer) => {
    settle();
    if (!out.l4) {
      attempt?.cancel();
      out.notRpc?.();
      s.destroy();
      return;
    }
    proxyL4(ctx, out.l4, first, attempt?.usable ? attempt : undefined);
  };
  const onData = (chunk: Buffer) => {
    head = head ? Buffer.concat([head, chunk]) : chunk;
    const found = detect(head);
    if (found === 'need-more') return;
    if (found === 'no') return toL4(head);
    settle();
    attempt?.cancel();
    out.rpc(found, head);
  };
  const timer = setTimeout(() => {
    if (settled || head || !out.l4 || !tryEarlyDial()) return;
    dialing = true;
    attempt = new L4Attempt(ctx, out.l4);
    attempt.onUpstreamFirst = (chunk) => {
      if (settled) return;
      s.write(chunk);
      toL4();
    };
  }, SERVER_FIRST_WAIT_MS);
  s.on('data', onData);
  s.once('end', () => {
    if (!settled) toL4(head);
  });
  s.once('close', () => {
    if (!settled) settle();
  });
  watch(watcher, timeoutMs);
  s.resume();
}
