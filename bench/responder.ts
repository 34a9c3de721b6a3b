/**
 * A minimal RPC server for the benchmark: answers every request with a captured response of its protocol
 * (Bolt: sofa-rpc-node's; Dubbo: apache-dubbo-service's), id patched. The protocol is sniffed per
 * connection. It costs far less CPU than a real provider, so the proxy in between is what gets measured.
 * usage: responder PORT... — prints {"ready":true,"ports":[…]}.
 */
import { createServer } from 'node:net';
import { type Codec, CodecError, NEED_MORE } from '../protocols/codec.js';
import { codecs } from '../protocols/registry.js';
import { templates } from './fixtures.js';

function serve(port: number): Promise<number> {
  const server = createServer((socket) => {
    let rest: Buffer | undefined;
    let codec: Codec | undefined;
    socket.setNoDelay(true);
    socket.on('error', () => undefined);
    socket.on('data', (chunk: Buffer) => {
      let buf = rest ? Buffer.concat([rest, chunk]) : chunk;
      rest = undefined;
      codec ??= codecs.find((c) => c.match(buf) === 'yes');
      if (!codec) return void socket.destroy();
      const template = templates(codec.name).response;
      socket.cork();
      while (buf.length > 0) {
        const f = codec.decode(buf, 1 << 24);
        if (f === NEED_MORE) {
          rest = buf;
          break;
        }
        if (f instanceof CodecError) {
          socket.destroy();
          return;
        }
        buf = buf.subarray(f.raw.length);
        const out = f.heartbeat ? codec.heartbeatReply(f) : Buffer.from(template);
        codec.setRequestId(out, f.requestId);
        if (f.kind === 'request') socket.write(out);
      }
      socket.uncork();
    });
  });
  return new Promise((resolve) => server.listen(port, '127.0.0.1', () => resolve((server.address() as { port: number }).port)));
}

const ports = await Promise.all(process.argv.slice(2).map((p) => serve(Number(p))));
process.stdout.write(`${JSON.stringify({ ready: true, ports })}\n`);
