/**
 * The floor for any DNS server on Node here: a UDP responder that answers every query with one A record
 * and does nothing else (no table, no metrics, no other servers in the process). bench/dns.ts runs it
 * beside the proxy so the report shows how much of the proxy's latency is Node's own.
 *   node dist/bench/dns-floor.js PORT
 */
import { createSocket } from 'node:dgram';

const socket = createSocket({ type: 'udp4', lookup: (address, _family, cb) => cb(null, address, 4) });
// Owner: a pointer to the question; type A, class IN, TTL 30, 4 bytes of address.
const record = Buffer.from([0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4, 10, 0, 0, 1]);
socket.on('message', (query, from) => {
  // Header and question only: the query's other sections (an EDNS OPT) are not echoed.
  let end = 12;
  while (end < query.length && query[end] !== 0) end += 1 + query[end]!;
  end += 5;
  if (end > query.length) return;
  const reply = Buffer.allocUnsafe(end + record.length);
  query.copy(reply, 0, 0, end);
  reply.writeUInt16BE(0x8580, 2); // QR, AA, RD, RA
  reply.writeUInt16BE(1, 4);
  reply.writeUInt16BE(1, 6);
  reply.writeUInt32BE(0, 8);
  record.copy(reply, end);
  socket.send(reply, from.port, from.address);
});
socket.bind(Number(process.argv[2]), '127.0.0.1', () => console.log('dns-floor listening'));
