"""The ceiling: fan-out from a raw ``websockets`` asyncio server, no Django, no Redis.

``python -m bench.ceiling --port P`` serves 127.0.0.1:P. Clients on any path but
``/trigger`` are recipients. A text frame ``"<M> <size>"`` on ``/trigger`` sends M
messages (``bench.messages.message(seq, size)``) to every recipient with
``websockets.broadcast`` and replies ``"done <recipients>"``.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from websockets.asyncio.server import ServerConnection, broadcast, serve

from bench.messages import message

TRIGGER_PATH = "/trigger"


class FanOut:
    """The set of recipient connections and the trigger protocol."""

    def __init__(self) -> None:
        self.recipients: set[ServerConnection] = set()

    async def handler(self, connection: ServerConnection) -> None:
        if connection.request is not None and connection.request.path == TRIGGER_PATH:
            async for frame in connection:
                count, size = (int(part) for part in str(frame).split())
                for seq in range(count):
                    broadcast(self.recipients, message(seq, size))
                    await asyncio.sleep(0)
                await connection.send(f"done {len(self.recipients)}")
            return
        self.recipients.add(connection)
        try:
            await connection.wait_closed()
        finally:
            self.recipients.discard(connection)


async def serve_forever(port: int) -> None:
    """Serve until SIGTERM or SIGINT."""
    stop = asyncio.get_running_loop().create_future()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.cancel)
    fan_out = FanOut()
    async with serve(fan_out.handler, "127.0.0.1", port, compression=None, ping_interval=None):
        try:
            await stop
        except asyncio.CancelledError:
            pass


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ceiling", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(serve_forever(parser.parse_args().port))


if __name__ == "__main__":
    main()
