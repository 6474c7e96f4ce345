/**
 * Sockets written to in this turn of the event loop, corked until its end: the frames a socket gets in one
 * turn leave in one write instead of one each, since socket writes take the largest share of a busy relay's
 * time. A turn is one pass of the loop over the I/O that is ready, so the busier the relay, the more its
 * writes share: an early frame read from one socket, the answers and notices of a batch its database just
 * returned, and those of other sockets read in the same pass.
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
  // Uncorked once every I/O callback of this pass, with its promise reactions, has run: immediates run right
  // after the loop's poll phase (one queued from an immediate runs after the next pass, which does not block).
  if (corkedSockets.size === 0) setImmediate(uncorkAll);
  socket.cork();
  corkedSockets.add(socket);
  return true;
}

/** The TLS or TCP socket under a `ws` WebSocket (not in its public API; absent once the socket is gone). */
export function transportOf(ws: object): (Corkable & { writableLength: number }) | undefined {
  return (ws as { _socket?: Corkable & { writableLength: number } })._socket;
}
