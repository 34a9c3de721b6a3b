/**
 * Peers are spawned with a stdin pipe that nobody writes to (or that carries commands). When their test
 * is killed — tap's timeout skips teardowns — that pipe closes, and the peer must not outlive it holding
 * ports and namespaces for the next run.
 */
export function exitWhenStdinCloses(stop: () => void = () => process.exit(0)): void {
  process.stdin.on('end', stop);
  process.stdin.on('error', stop);
  process.stdin.resume();
}
