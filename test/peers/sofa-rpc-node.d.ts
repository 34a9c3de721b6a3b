/** The little of sofa-rpc-node (plain JS, no types) that the test peers use. */
declare module 'sofa-rpc-node' {
  import type { Socket } from 'node:net';

  interface Logger {
    debug(...args: unknown[]): void;
    info(...args: unknown[]): void;
    warn(...args: unknown[]): void;
    error(...args: unknown[]): void;
  }

  type Method = (...args: any[]) => Promise<unknown>;

  class RpcServer {
    constructor(options: { logger: Logger; port?: number; codecType?: string; maxIdleTime?: number });
    addService(info: { interfaceName: string; version?: string; uniqueId?: string }, delegate: Record<string, Method>): void;
    on(event: 'error', listener: (err: Error) => void): this;
    start(): Promise<void>;
    close(): Promise<void>;
    /** Internal: serves one accepted socket. Used to listen on a chosen host, which `start()` cannot. */
    _handleSocket(socket: Socket): void;
  }

  interface RpcConsumer {
    ready(): Promise<void>;
    invoke(method: string, args: unknown[], options?: { responseTimeout?: number }): Promise<unknown>;
  }

  class RpcClient {
    /** `protocol` replaces sofa-bolt-node for every connection (e.g. one whose encoder speaks Bolt v2). */
    constructor(options: { logger: Logger; protocol?: unknown; responseTimeout?: number });
    createConsumer(options: {
      interfaceName: string;
      version?: string;
      /** Comma-separated host:port list: direct connections, no registry. */
      serverHost: string;
      responseTimeout?: number;
    }): RpcConsumer;
    on(event: 'error', listener: (err: Error) => void): this;
    close(): Promise<void>;
  }

  const sofa: {
    server: { RpcServer: typeof RpcServer };
    client: { RpcClient: typeof RpcClient };
  };
  export = sofa;
}
