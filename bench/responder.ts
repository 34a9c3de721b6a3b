/**
 * A minimal Bolt server for the benchmark: answers every request with the captured sofa-rpc-node response,
 * id patched. It costs far less CPU than a real RpcServer, so the proxy in between is what gets measured.
 * usage: responder PORT... — prints {"ready":true,"ports":[…]}.
 */
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { boltCodec } from '../protocols/bolt/index.js';
import { CodecError, NEED_MORE } from '../protocols/codec.js';
import { fixture } from './fixtures.js';

const template = readFileSync(fixture('bolt', 'response-plus.bin'));

function serve(port: number): Promise<number> {
  const server = createServer((socket) => {
    let rest: Buffer | undefined;
    socket.setNoDelay(true);
    socket.on('error', () => undefined);
    socket.on('data', (chunk: Buffer) => {
      let buf = rest ? Buffer.concat([rest, chunk]) : chunk;
      rest = undefined;
      socket.cork();
      while (buf.length > 0) {
        const f = boltCodec.decode(buf, 1 << 24);
        if (f === NEED_MORE) {
          rest = buf;
          break;
        }
        if (f instanceof CodecError) {
          socket.destroy();
          return;
        }
        buf = buf.subarray(f.raw.length);
        const out = f.heartbeat ? boltCodec.heartbeatReply(f) : Buffer.from(template);
        boltCodec.setRequestId(out, f.requestId);
        if (f.kind === 'request') socket.write(out);
      }
      socket.uncork();
    });
  });
  return new Promise((resolve) => server.listen(port, '127.0.0.1', () => resolve((server.address() as { port: number }).port)));
}

const ports = await Promise.all(process.argv.slice(2).map((p) => serve(Number(p))));
process.stdout.write(`${JSON.stringify({ ready: true, ports })}\n`);
