/**
 * What a state-of-the-world ADS client has asked for, per resource type, and the requests that follow
 * from each event. Pure: no I/O, so the rules can be tested one by one.
 *
 * The rules istiod relies on:
 * - every response is answered: ACK = its version_info and nonce; NACK = the last *accepted* version, the
 *   new nonce and an error_detail;
 * - a request that changes resource names carries the type's latest nonce, or istiod drops it as stale;
 * - EDS and RDS are named subscriptions and an empty name list means "unsubscribe", so one is only sent
 *   when there are names (or to unsubscribe what istiod currently watches);
 * - on a new stream everything wanted is asked for again, in CDS, EDS, LDS, RDS, NDS order, with the last
 *   accepted versions and no nonce.
 */
import { KIND_ORDER, type ResourceKind, TYPE_URL, WILDCARD } from './type-urls.js';

export interface SotwRequest {
  readonly type_url: string;
  readonly version_info: string;
  readonly response_nonce: string;
  readonly resource_names: readonly string[];
  readonly error_detail?: { readonly code: number; readonly message: string };
}

/** google.rpc.Code INTERNAL, which is what Envoy puts in its NACKs. */
export const NACK_CODE = 13;

interface TypeState {
  readonly kind: ResourceKind;
  readonly wildcard: boolean;
  wanted: boolean;
  names: readonly string[];
  version: string;
  nonce: string;
  /** istiod watches this type on the current stream. */
  watchedOnStream: boolean;
}

const sameNames = (a: readonly string[], b: readonly string[]) => a.length === b.length && a.every((n, i) => n === b[i]);

export class SotwSubscriptions {
  private readonly types = new Map<ResourceKind, TypeState>();

  constructor() {
    for (const kind of KIND_ORDER) {
      this.types.set(kind, { kind, wildcard: WILDCARD.has(kind), wanted: false, names: [], version: '', nonce: '', watchedOnStream: false });
    }
  }

  private st(kind: ResourceKind): TypeState {
    return this.types.get(kind)!;
  }

  private request(st: TypeState, extra: Partial<SotwRequest> = {}): SotwRequest {
    return { type_url: TYPE_URL[st.kind], version_info: st.version, response_nonce: st.nonce, resource_names: st.wildcard ? [] : st.names, ...extra };
  }

  /** A new stream: nonces belong to the old one; ask again for everything wanted. */
  streamStarted(): SotwRequest[] {
    const out: SotwRequest[] = [];
    for (const kind of KIND_ORDER) {
      const st = this.st(kind);
      st.nonce = '';
      st.watchedOnStream = false;
      if (st.wanted && (st.wildcard || st.names.length > 0)) {
        st.watchedOnStream = true;
        out.push(this.request(st));
      }
    }
    return out;
  }

  /** Starts a wildcard subscription (CDS, LDS, NDS); undefined if it already runs. */
  watch(kind: ResourceKind): SotwRequest | undefined {
    const st = this.st(kind);
    if (!st.wildcard) throw new Error(`${kind} is not a wildcard type`);
    if (st.wanted) return undefined;
    st.wanted = true;
    st.watchedOnStream = true;
    return this.request(st);
  }

  isWatched(kind: ResourceKind): boolean {
    return this.st(kind).wanted;
  }

  /** New names for EDS or RDS; the request to send, if any. */
  setNames(kind: ResourceKind, names: Iterable<string>): SotwRequest | undefined {
    const st = this.st(kind);
    if (st.wildcard) throw new Error(`${kind} is a wildcard type`);
    const sorted = [...new Set(names)].sort();
    if (sameNames(sorted, st.names) && (st.wanted || sorted.length === 0)) return undefined;
    st.names = sorted;
    if (sorted.length === 0) {
      st.wanted = false;
      if (!st.watchedOnStream) return undefined;
      st.watchedOnStream = false;
      return this.request(st); // an explicit unsubscribe: nothing of this type is wanted any more
    }
    st.wanted = true;
    st.watchedOnStream = true;
    return this.request(st);
  }

  /** Records the nonce of a response; it goes into every later request of that type on this stream. */
  received(kind: ResourceKind, nonce: string): void {
    this.st(kind).nonce = nonce;
  }

  ack(kind: ResourceKind, version: string): SotwRequest {
    const st = this.st(kind);
    st.version = version;
    return this.request(st);
  }

  nack(kind: ResourceKind, message: string): SotwRequest {
    return this.request(this.st(kind), { error_detail: { code: NACK_CODE, message } });
  }

  version(kind: ResourceKind): string {
    return this.st(kind).version;
  }

  names(kind: ResourceKind): readonly string[] {
    return this.st(kind).names;
  }
}
