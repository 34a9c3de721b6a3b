import type { Socket } from 'node:net';

/**
 * Collects the writes made while the event loop handles one round of reads and flushes each socket once
 * after them: cork() turns many write() calls into a single writev, and deferring the uncork to
 * setImmediate lets frames from several connections' reads share it (8 callers multiplexed onto 2
 * upstream connections cost 2 writes instead of 8).
 */
export class WriteBatch {
  private readonly corked: Socket[] = [];
  private scheduled = false;

  write(socket: Socket, data: Buffer): boolean {
    if (socket.destroyed) return true;
    if (socket.writableCorked === 0) {
      socket.cork();
      this.corked.push(socket);
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(this.flush);
      }
    }
    return socket.write(data);
  }

  /** Also called directly before end(), so a closing socket sends everything first. */
  readonly flush = (): void => {
    this.scheduled = false;
    for (let i = 0; i < this.corked.length; i++) this.corked[i]!.uncork();
    this.corked.length = 0;
  };
}
