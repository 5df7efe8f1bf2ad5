"""WebSocket clients of `sld serve` and the messages sent to them.

The worker thread never waits for a client: `send` hands a message to the event loop and returns.
There each client has a bounded outbox drained by its own task, so a slow reader only fills its own
outbox; when that is full the client is disconnected (it can reconnect and read /history), and a
vanished client is dropped when its socket closes. Messages are ComfyUI's `{"type", "data"}`.
"""
import asyncio
import logging

log = logging.getLogger(__name__)

OUTBOX = 1000  # messages waiting for one client; a 50-step prompt sends about 60


class Hub:
    def __init__(self, loop):
        self.loop = loop
        self.clients = {}  # client id -> (websocket, outbox queue)
        self.current = (None, None)  # (client id of the running prompt, node it is executing)

    def send(self, event, data, client_id=None):
        """From any thread: queue `event` for `client_id`, or for every client when it is None."""
        self.loop.call_soon_threadsafe(self._deliver, event, data, client_id)

    def _deliver(self, event, data, client_id):
        targets = list(self.clients) if client_id is None else [client_id] if client_id in self.clients else []
        for sid in targets:
            ws, outbox = self.clients[sid]
            try:
                outbox.put_nowait({"type": event, "data": data})
            except asyncio.QueueFull:
                log.warning("WebSocket client %s reads too slowly; disconnecting it", sid)
                self.clients.pop(sid, None)
                asyncio.ensure_future(ws.close(code=1008, message=b"too slow"))

    async def serve(self, ws, client_id, first_messages):
        """Run one connected client until it goes away."""
        old = self.clients.pop(client_id, None)
        if old is not None:  # ComfyUI: a reconnect with the same id replaces the old socket
            await old[0].close()
        outbox = asyncio.Queue(OUTBOX)
        for event, data in first_messages:
            outbox.put_nowait({"type": event, "data": data})
        self.clients[client_id] = (ws, outbox)
        writer = asyncio.ensure_future(self._write(ws, outbox))
        try:
            async for _message in ws:  # clients may send feature flags; nothing is needed from them
                pass
        finally:
            writer.cancel()
            if self.clients.get(client_id, (None,))[0] is ws:
                del self.clients[client_id]

    @staticmethod
    async def _write(ws, outbox):
        try:
            while True:
                message = await outbox.get()
                await ws.send_json(message)
        except (ConnectionError, RuntimeError):  # closed under us: the reader loop ends too
            pass
