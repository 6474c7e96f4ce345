/**
 * Sockets written to in this turn of the event loop, corked until its end: the frames a socket gets in one
 * turn (the answers and notices of one stored batch, say) leave in one write instead of one each: socket
 * writes take the largest share of a busy relay's time.
 */
interface Corkable {
  cork(): void;
  uncork(): void;
}

const corkedSockets = new Set<Corkable>();

function uncorkAll(): void {
  for (const socket of corkedSockets) socket.uncork();
  corkedSockets.clear();
}

/** Corks `socket` until the end of this turn; true when it was not corked yet (its frames of this turn make one write). */
export function corkForThisTurn(socket: Corkable): boolean {
  if (corkedSockets.has(socket)) return false;
  // Uncorked once this turn's callbacks and promise reactions have all run (a tick queued from a promise
  // reaction runs after the last of them).
  if (corkedSockets.size === 0) process.nextTick(uncorkAll);
  socket.cork();
  corkedSockets.add(socket);
  return true;
}

/** The TLS or TCP socket under a `ws` WebSocket (not in its public API; absent once the socket is gone). */
export function transportOf(ws: object): (Corkable & { writableLength: number }) | undefined {
  return (ws as { _socket?: Corkable & { writableLength: number } })._socket;
}
