import type { Socket } from 'node:net';

/** A reader that stops reading while a socket it writes to is congested. */
export interface Throttle {
  pauseFor(socket: Socket): void;
}

function throttleIfCongested(writers: Throttle[], socket: Socket): void {
  if (socket.writableNeedDrain && !socket.destroyed) for (const w of writers) w.pauseFor(socket);
}

/**
 * Collects the writes made while the event loop handles one round of reads and flushes each socket once
 * after them: cork() turns many write() calls into a single writev, and deferring the uncork to
 * setImmediate lets frames from several connections' reads share it (8 callers multiplexed onto 2
 * upstream connections cost 2 writes instead of 8).
 *
 * Backpressure is judged after the flush, when the kernel has taken what it can: a socket that still
 * holds more than its high-water mark pauses everyone who wrote to it in this round until it drains.
 * (While corked, write()'s own answer only reflects the batch being built.)
 */
export class WriteBatch {
  private readonly corked: Socket[] = [];
  private readonly writers = new Map<Socket, Throttle[]>();
  private scheduled = false;

  write(socket: Socket, data: Buffer, writer?: Throttle): void {
    if (socket.destroyed) return;
    if (socket.writableCorked === 0) {
      socket.cork();
      this.corked.push(socket);
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(this.flush);
      }
    }
    socket.write(data);
    if (writer) {
      const list = this.writers.get(socket);
      if (!list) this.writers.set(socket, [writer]);
      else if (list[list.length - 1] !== writer) list.push(writer);
    }
  }

  /** Also called directly before end(), so a closing socket sends everything first. */
  readonly flush = (): void => {
    this.scheduled = false;
    for (let i = 0; i < this.corked.length; i++) this.corked[i]!.uncork();
    this.corked.length = 0;
    if (this.writers.size === 0) return;
    this.writers.forEach(throttleIfCongested);
    this.writers.clear();
  };
}
