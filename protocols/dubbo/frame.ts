import type { Frame, FrameKind, RequestId } from '../codec.js';
import { BAD, type ClassTable, findInMap, readString, skipValue } from '../hessian/skip.js';
import { HEADER, HESSIAN2, SERIALIZATION_MASK, Status } from './constants.js';

/**
 * One decoded Dubbo frame. A hessian2 request body is: dubbo version, service path, service version,
 * method, parameter descriptor, the arguments, the attachments map. Routing usually needs only the leading
 * strings, read on the first `header()` call; the arguments are stepped over (never decoded) only when a
 * route asks for an attachment. Other serializations route on the destination alone: no header is known.
 *
 * Header names: `service` (the path), `method`, `version` (the frame's, else the attachment), `interface`
 * (the attachment, else the path), `group`, and every attachment key by name.
 */
/** Attachment names as bytes, to compare in place; a handful of names, asked for again and again. */
const keyBytes = new Map<string, Buffer>();
const keyOf = (name: string): Buffer => {
  let k = keyBytes.get(name);
  if (!k) keyBytes.set(name, (k = Buffer.from(name, 'utf8')));
  return k;
};

export class DubboFrame implements Frame {
  private lead: Lead | null | undefined;
  /** Where the attachments map starts once the arguments were stepped over; BAD when it cannot be found. */
  private attachAt: number | undefined;
  private classes: ClassTable | undefined;
  /** Attachments already looked up: routes ask for the same few names again and again. */
  private seen: Map<string, string | undefined> | undefined;
  private timeout: number | undefined | null = null;

  constructor(
    readonly raw: Buffer,
    readonly kind: FrameKind,
    readonly heartbeat: boolean,
    readonly requestId: RequestId,
    readonly status: number | undefined,
  ) {}

  /** Node providers answer heartbeats with status 0, not 20: a heartbeat reply means alive, whatever it says. */
  get ok(): boolean {
    return this.status === undefined || this.status === Status.OK || this.heartbeat;
  }

  /** The caller's deadline rides in the `timeout` attachment (an int from most clients, a string from some). */
  get timeoutMs(): number | undefined {
    if (this.timeout === null) {
      const t = Number(this.lookup('timeout'));
      this.timeout = t > 0 ? t : undefined;
    }
    return this.timeout;
  }

  header(name: string): string | undefined {
    const lead = this.leading();
    if (!lead) return undefined;
    switch (name) {
      case 'service':
        return lead.path;
      case 'method':
        return lead.method;
      case 'version':
        return lead.version || this.attachment('version');
      case 'interface':
        return this.attachment('interface') ?? lead.path;
      default:
        return this.attachment(name);
    }
  }

  private leading(): Lead | undefined {
    if (this.lead === undefined) this.lead = this.kind === 'response' || this.heartbeat ? null : readLead(this.raw) ?? null;
    return this.lead ?? undefined;
  }

  private attachment(name: string): string | undefined {
    this.seen ??= new Map();
    if (this.seen.has(name)) return this.seen.get(name);
    const v = this.lookup(name);
    this.seen.set(name, v);
    return v;
  }

  private lookup(name: string): string | undefined {
    if (this.attachAt === undefined) {
      const lead = this.leading();
      this.classes = [];
      this.attachAt = lead ? attachmentsAt(this.raw, lead, this.classes) : BAD;
    }
    return this.attachAt === BAD ? undefined : findInMap(this.raw, this.attachAt, this.raw.length, keyOf(name), this.classes);
  }
}

interface Lead {
  readonly path: string | undefined;
  readonly version: string | undefined;
  readonly method: string | undefined;
  readonly descriptor: string;
  /** Where the first argument starts. */
  readonly argsAt: number;
}

const cursor = { pos: 0 };

function readLead(b: Buffer): Lead | undefined {
  if ((b[2]! & SERIALIZATION_MASK) !== HESSIAN2) return undefined;
  const end = b.length;
  const strings: (string | undefined)[] = [];
  let pos = HEADER;
  for (let i = 0; i < 5; i++) {
    const s = readString(b, pos, end, cursor);
    if (s === undefined) return undefined;
    strings.push(s ?? undefined);
    pos = cursor.pos;
  }
  const [, path, version, method, descriptor = ''] = strings;
  return { path, version, method, descriptor, argsAt: pos };
}

/** How many arguments a JVM method descriptor lists: `Ljava/lang/String;I[J` is three. */
export function argumentCount(desc: string): number {
  let n = 0;
  for (let i = 0; i < desc.length; i++) {
    while (desc[i] === '[') i++;
    if (desc[i] === 'L') {
      i = desc.indexOf(';', i);
      if (i < 0) return -1;
    } else if (!'ZBCDFIJSV'.includes(desc[i] ?? '?')) return -1;
    n++;
  }
  return n;
}

/** Where the attachments start: past the arguments, stepped over with one class table for the whole message. */
function attachmentsAt(b: Buffer, lead: Lead, classes: ClassTable): number {
  const n = argumentCount(lead.descriptor);
  if (n < 0) return BAD;
  let pos = lead.argsAt;
  for (let i = 0; i < n && pos !== BAD; i++) pos = skipValue(b, pos, b.length, classes);
  return pos;
}
