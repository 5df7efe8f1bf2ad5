"""The WebSocket hub on its own (in this process, a real aiohttp server and a real socket): a client
that never reads is disconnected once its outbox is full, and sending never waits for it."""
import asyncio
import base64
import os
import socket
import threading
import time

from aiohttp import web

from comfyui_sld.headless.server.hub import OUTBOX, Hub


def test_a_client_that_never_reads_is_dropped_and_never_blocks_the_sender():
    loop = asyncio.new_event_loop()
    hub = Hub(loop)
    ready = threading.Event()

    async def handler(request):
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await hub.serve(ws, "stuck", [])
        return ws

    async def start():
        app = web.Application()
        app.router.add_get("/ws", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return runner

    runner = loop.run_until_complete(start())
    port = runner.addresses[0][1]
    thread = threading.Thread(target=lambda: (ready.set(), loop.run_forever()), daemon=True)
    thread.start()
    ready.wait()
    try:
        stuck = socket.create_connection(("127.0.0.1", port))
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        key = base64.b64encode(os.urandom(16)).decode()
        stuck.sendall(f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
        assert b"101" in stuck.recv(1024).split(b"\r\n")[0]
        deadline = time.monotonic() + 10
        while "stuck" not in hub.clients and time.monotonic() < deadline:
            time.sleep(0.01)
        payload = "x" * 8192
        start = time.perf_counter()
        sent = 0
        while "stuck" in hub.clients and time.monotonic() < deadline + 20:
            for _ in range(100):
                hub.send("progress", {"filler": payload}, "stuck")
            sent += 100
            time.sleep(0.001)
        assert "stuck" not in hub.clients, "a client that never reads must be dropped"
        assert sent > OUTBOX  # it took more than one outbox, i.e. the socket buffers filled first
        assert (time.perf_counter() - start) / sent < 0.01  # hub.send never waited on the client
        stuck.close()
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.run_until_complete(runner.cleanup())
        loop.close()
