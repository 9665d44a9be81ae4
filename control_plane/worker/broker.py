"""The Redis broker transport, with one fix: a worker survives losing Redis mid-task.

kombu 5.7.0 / celery 5.7.0 (the newest releases; pinned in constraints.txt): when the broker
connection breaks, the consumer first `collect()`s the connection, then `close()`s it
(celery.worker.consumer.Consumer.on_connection_error_after_connected). If the channel was
waiting on BRPOP, the first close reads the pending reply, gets the ConnectionError and stops
before marking the channel closed; `collect()` then drops the transport's client. The second
close goes on to restore the unacknowledged messages through a fresh pool, whose parameters
come from the dropped client: AttributeError ('NoneType' has no attribute 'hostname'), which
no one catches, and the worker exits ("Unrecoverable error") instead of reconnecting.

Here a broken connection while closing is what it is: the pending reply is gone, the close
goes on in the first call. Restoring then fails with a connection error, which kombu ignores;
the messages stay in Redis's unacked set (restored by the visibility timeout, and the jobs by
beat's recovery sweep, control_plane.worker.recovery). Selected by CELERY_BROKER_TRANSPORT.
"""

from __future__ import annotations

from queue import Empty

from kombu.transport import redis


class Channel(redis.Channel):
    """kombu's Redis channel whose close finishes in one call when its connection is broken."""

    def close(self) -> None:
        if self._in_poll and not self.closed:  # type: ignore[attr-defined]
            try:
                self._brpop_read()  # type: ignore[attr-defined]
            except Empty:
                pass
            except self.connection_errors:  # type: ignore[attr-defined]
                pass  # the pending BRPOP reply is lost with the connection: close on
        super().close()


class Transport(redis.Transport):
    """kombu's Redis transport (redis:// and rediss:// URLs) with the channel above."""

    Channel = Channel
