"""Read deadlines for uvicorn's HTTP/1.1 protocol: a slow or silent client cannot hold a connection.

uvicorn closes idle keep-alive connections, but a client that connects and sends nothing, or sends
its headers or body a few bytes at a time, is served forever (the "slowloris" attack). This protocol
gives every request two deadlines, counted while the server waits on the client:
  headers: from the connection (or the end of the previous response) to the end of the headers;
  body:    from the end of the headers to the end of the body (the whole body, not each read).
Past a deadline the client gets 408 and the connection is closed. Time the app spends working on a
request that has fully arrived is never counted.
"""

from __future__ import annotations

import asyncio
import json

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

HEADER_TIMEOUT = 10.0
BODY_TIMEOUT = 60.0


class DeadlineH11Protocol(H11Protocol):
    header_timeout = HEADER_TIMEOUT
    body_timeout = BODY_TIMEOUT

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._deadline: asyncio.TimerHandle | None = None
        self._phase = "headers"
        super().connection_made(transport)
        self._arm("headers", self.header_timeout)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._follow_client()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._follow_client()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _follow_client(self) -> None:
        """Arm the deadline for what the client still owes us, or drop it once the request is in."""
        state = self.conn.their_state
        if state is h11.IDLE and self._phase != "headers":
            self._arm("headers", self.header_timeout)  # waiting for the next request on a kept-alive connection
        elif state is h11.SEND_BODY and self._phase != "body":
            self._arm("body", self.body_timeout)
        elif state not in (h11.IDLE, h11.SEND_BODY):
            self._disarm()
            self._phase = "done"

    def _arm(self, phase: str, seconds: float) -> None:
        self._disarm()
        self._phase = phase
        self._deadline = self.loop.call_later(seconds, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if self.transport.is_closing() or self.conn.their_state not in (h11.IDLE, h11.SEND_BODY):
            return
        if self.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE) and (
            self._phase == "body" or self.conn.trailing_data[0]
        ):
            # Nothing sent yet: say why before closing (a silent connection is simply closed).
            message = f"request {self._phase} not received within {self._timeout():g} s"
            body = json.dumps({"error": message, "filename": None}).encode()  # the API's error shape
            headers = [(b"content-type", b"application/json"), (b"connection", b"close"),
                       (b"content-length", str(len(body)).encode())]  # fmt: skip
            try:
                self.transport.write(
                    self.conn.send(h11.Response(status_code=408, headers=headers, reason=b"Request Timeout"))
                )
                self.transport.write(self.conn.send(h11.Data(data=body)) + self.conn.send(h11.EndOfMessage()))
            except h11.LocalProtocolError:
                pass
        self.transport.close()

    def _timeout(self) -> float:
        return self.body_timeout if self._phase == "body" else self.header_timeout


def deadline_protocol(header_timeout: float = HEADER_TIMEOUT, body_timeout: float = BODY_TIMEOUT) -> type:
    """The protocol class to pass as uvicorn's `http=`, with these deadlines in seconds."""
    return type("DeadlineH11Protocol", (DeadlineH11Protocol,),
                {"header_timeout": float(header_timeout), "body_timeout": float(body_timeout)})  # fmt: skip
