import type { Socket } from 'node:net';

/**
 * Collects the writes made while handling one read and flushes each socket once: cork() turns many
 * write() calls into a single writev.
 */
export class WriteBatch {
  private readonly corked: Socket[] = [];

  write(socket: Socket, data: Buffer): boolean {
    if (socket.destroyed) return true;
    if (socket.writableCorked === 0) {
      socket.cork();
      this.corked.push(socket);
    }
    return socket.write(data);
  }

  flush(): void {
    for (let i = 0; i < this.corked.length; i++) this.corked[i]!.uncork();
    this.corked.length = 0;
  }
}
