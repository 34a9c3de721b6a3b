/**
 * The little of apache-dubbo-service, apache-dubbo-consumer and dubbo2.js that the Dubbo test peers use.
 * The packages ship typings, but they mark private the internals the provider must reach (its listen and
 * socket handler) and pull in registry clients' types; the peers load them with createRequire and these
 * shapes instead.
 */
import type { Socket } from 'node:net';

/** A js-to-java boxed value: hessian.js writes it with the given Java class. */
export interface JavaValue {
  $class: string;
  $: unknown;
}

export interface Java {
  String(value: string | null): JavaValue;
  Integer(value: number): JavaValue;
  Long(value: number): JavaValue;
  Boolean(value: boolean): JavaValue;
}

// ---- apache-dubbo-service@0.0.1 ----

/** The koa-like context a provider method gets as its last argument. */
export interface ProviderContext {
  request: { requestId: number; methodName: string; args?: unknown[]; attachment: Record<string, unknown> };
  /** Response attachments; the encoder adds `dubbo`. */
  attachments: Record<string, unknown>;
}

export interface ProviderService {
  dubboInterface: string;
  methods: Record<string, (...args: any[]) => unknown>;
}

export interface ProviderRegistry {
  ready(): Promise<void>;
  registerServices(services: { dubboServiceInterface: string; dubboServiceUrl: string }[]): Promise<void>;
  getClient(): unknown;
  close(): void;
}

export interface DubboService {
  /** Internal: called on the next tick after construction; picks a random port and listens on every interface. */
  listen: () => Promise<void>;
  /** Internal: serves one accepted socket (no `error` listener of its own). */
  handleSocketRequest: (socket: Socket) => void;
  /** Internal: fills the service router from `services` and resolves `ready()`. */
  registerServices(): Promise<void>;
  port: number;
  ready(): Promise<void>;
}

export interface ApacheDubboService {
  DubboService: {
    from(props: {
      registry: ProviderRegistry;
      services: Record<string, ProviderService>;
      /** Duck-typed: the service only calls getDubboSetting with each entry of `services`. */
      dubboSetting: { getDubboSetting(info: { dubboServiceShortName: string; dubboServiceInterface: string }): { group: string; version: string } | null };
    }): DubboService;
  };
}

/** apache-dubbo-serialization@0.0.2, which the service uses for framing and heartbeats. */
export interface DubboSerialization {
  HeartBeat: {
    from(props: { type: 'request' | 'response'; transport: Socket; onTimeout: () => void }): ProviderHeartBeat;
    /** True for any event frame whose body is hessian null. */
    isHeartBeat(frame: Buffer): boolean;
  };
}

/** One connection's heartbeat manager: a timer that sends heartbeats when idle and closes when silent. */
export interface ProviderHeartBeat {
  heartBeatTimer: NodeJS.Timeout;
  lastReadTimestamp: number;
  lastWriteTimestamp: number;
  onTimeout: () => void;
  emit(): void;
}

// ---- consumers ----

export interface InvokeParam {
  dubboInterface: string;
  version?: string;
  group?: string;
  /** apache-dubbo-consumer only; dubbo2.js's direct mode ignores it. */
  attachments?: Record<string, unknown>;
  /** Each method maps the call's arguments to the hessian values sent. */
  methods: Record<string, (...args: any[]) => JavaValue[]>;
}

/** Both consumers resolve every call to `{ res, err }` instead of rejecting. */
export type CallResult = Promise<{ res: unknown; err: (Error & { constructor: { name: string } }) | null }>;
export type ServiceProxy = Record<string, (...args: unknown[]) => CallResult>;

export interface ApacheDubboConsumer {
  java: Java;
  DubboDirectlyInvoker: {
    from(props: { dubboHost: string; dubboVersion: string; dubboInvokeTimeout?: number }): {
      /** Read at each call: the timeout in milliseconds (the `timeout` of proxyService is overwritten by it). */
      props: { dubboInvokeTimeout?: number };
      proxyService(param: InvokeParam): ServiceProxy;
      close(): void;
    };
  };
}

export interface Dubbo2jsContext {
  attachments: Record<string, unknown>;
}

export interface Dubbo2js {
  java: Java;
  Context: { create(): Dubbo2jsContext };
  DirectlyDubbo: {
    from(props: { dubboAddress: string; dubboVersion: string; dubboInvokeTimeout: number }): {
      /** Read at each call: the timeout in SECONDS. */
      _props: { dubboInvokeTimeout: number };
      proxyService(param: InvokeParam): ServiceProxy;
    };
  };
}
