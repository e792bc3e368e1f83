"""squall/web/streams.py leans on IOStream internals: fail loudly if Tornado changes them."""

from __future__ import annotations

from tornado.concurrent import Future
from tornado.iostream import IOStream
from tornado.tcpclient import TCPClient
from tornado.tcpserver import TCPServer
from tornado.testing import AsyncTestCase, bind_unused_port, gen_test

from squall.web.streams import buffered_bytes, check_internals, give_socket, take_socket


class _Accept(TCPServer):
    def __init__(self) -> None:
        super().__init__()
        self.accepted: Future[IOStream] = Future()

    async def handle_stream(self, stream: IOStream, address: object) -> None:
        self.accepted.set_result(stream)


class StreamInternalsTest(AsyncTestCase):
    async def _pair(self) -> tuple[IOStream, IOStream, _Accept]:
        listener, port = bind_unused_port()
        server = _Accept()
        server.add_socket(listener)
        client = await TCPClient().connect("127.0.0.1", port)
        accepted = await server.accepted
        return client, accepted, server

    @gen_test
    async def test_internals_exist(self) -> None:
        client, accepted, server = await self._pair()
        try:
            check_internals(client)
            check_internals(accepted)
            assert buffered_bytes(client) == 0
        finally:
            client.close()
            accepted.close()
            server.stop()

    @gen_test
    async def test_take_socket_keeps_bytes_read_ahead(self) -> None:
        client, accepted, server = await self._pair()
        try:
            await client.write(b"GET / HTTP/1.1\r\n\r\nafter the request")
            request = await accepted.read_until(b"\r\n\r\n")
            assert request.endswith(b"\r\n\r\n")
            sock, leftover = take_socket(accepted)
            try:
                # Whatever Tornado read past the delimiter is handed over, and
                # the rest of the stream arrives on the bare socket.
                await client.write(b"!")
                received = leftover
                while not received.endswith(b"!"):
                    future: Future[None] = Future()
                    self.io_loop.add_handler(sock, lambda fd, events: future.set_result(None), self.io_loop.READ)
                    await future
                    self.io_loop.remove_handler(sock)
                    received += sock.recv(100)
                assert received == b"after the request!"
            finally:
                sock.close()
        finally:
            client.close()
            server.stop()

    @gen_test
    async def test_give_socket_reads_the_bytes_handed_back_first(self) -> None:
        client, accepted, server = await self._pair()
        try:
            await client.write(b"first part, ")
            await accepted.read_bytes(5)
            sock, leftover = take_socket(accepted)
            stream = give_socket(sock, leftover + b"and more, ")
            try:
                await client.write(b"then the socket\n")
                line = await stream.read_until(b"\n")
                assert line == b" part, and more, then the socket\n"
            finally:
                stream.close()
        finally:
            client.close()
            server.stop()
