"""Durable waits: ``sleep`` and ``receive`` inside a workflow, ``send`` from anywhere.

A wait is recorded like a step, identified by occurrence (the third ``sleep`` of a
run is the third ``sleep`` of every re-run), so a re-run sees the same wake time and
the same message:

- its first call records the step as ``sleeping``/``waiting`` with its deadline
  (``until``), so a re-run after a crash waits only what remains;
- when it ends, the step is recorded ``completed``: a sleep with no result, a receive
  with the message's value (or None after its timeout) and its sequence number
  (``seq``), so that the next receive on that topic takes the next message.

Called directly, waits block (``time.sleep``, ``anyio.sleep``, or polling the inbox
with a growing delay, never blocking an event loop). Run by a runner, a wait longer
than the runner's threshold suspends the run instead: :class:`Suspended` unwinds the
user's code (a BaseException, like cancellation), the run records ``sleeping`` or
``waiting`` and releases its lock, and a later runner pass resumes it when it is due.

Messages live in the store's inbox (:meth:`Store.send`), not in the workflow's state:
sending never takes the workflow's lock, and a message sent to a workflow that does
not exist yet waits for it.
"""

from __future__ import annotations

import math
import time
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import anyio

from ._context import current_step
from ._errors import WorkflowError
from ._identity import CallIdentity, check_workflow_id
from ._json import compact
from ._run import Frame, Run, Step, Suspended
from ._typed import result_codec

if TYPE_CHECKING:
    from ._context import Context
    from ._serializer import Serializer
    from ._store import Store

__all__ = [
    "RECEIVE",
    "SLEEP",
    "check_topic",
    "encode_message",
    "receive",
    "receive_async",
    "sleep",
    "sleep_async",
]

#: The names the waits are recorded under.
SLEEP = "duravoke.sleep"
RECEIVE = "duravoke.receive"

# Polling the inbox: from 10 ms, doubling, up to half a second.
_POLL_FIRST = 0.01
_POLL_MAX = 0.5


def _no_args() -> None: ...


def _topic_arg(topic: str) -> None: ...


_SLEEP_ID = CallIdentity(_no_args, SLEEP, None)
_RECEIVE_ID = CallIdentity(_topic_arg, RECEIVE, None)
# Their records hold plain JSON values: no annotation decides how they are rebuilt.
_SLEEP_CODEC = result_codec(_no_args, SLEEP)
_RECEIVE_CODEC = result_codec(_topic_arg, RECEIVE)


def _frame(context: Context | None, what: str) -> Frame:
    if context is not None:
        frame = context.frame()
    else:
        step = current_step()
        if step is not None:
            frame = step.run.context.frame()
        else:
            from ._duravoke import default_instance

            frame = default_instance().context.frame()
    if frame is None:
        raise WorkflowError(
            f"duravoke.{what}() was called outside a workflow: it can only wait durably"
            " inside one (a decorated call, or `with duravoke.workflow(id):`). To wait"
            f" in ordinary code, use time.sleep or anyio.sleep."
        )
    return frame


def seconds(delay: object) -> float:
    """``delay`` (seconds or a timedelta) as a float of seconds.

    Raises:
        TypeError: it is neither a number nor a timedelta.
        ValueError: it is negative, NaN or infinite.
    """
    if isinstance(delay, timedelta):
        value = delay.total_seconds()
    elif isinstance(delay, (int, float)) and not isinstance(delay, bool):
        value = float(delay)
    else:
        raise TypeError(
            f"a delay is a number of seconds or a datetime.timedelta, not {type(delay).__name__}"
        )
    if math.isnan(value) or math.isinf(value) or value < 0:
        raise ValueError(f"a delay must be a finite number of seconds >= 0, not {delay!r}")
    return value


def check_topic(topic: object) -> str:
    """``topic`` if it can name a topic: a non-empty str.

    Raises:
        TypeError: it is not a str.
        ValueError: it is empty or not valid Unicode.
    """
    if not isinstance(topic, str):
        raise TypeError(f"a topic must be a str, not {type(topic).__name__}")
    if not topic:
        raise ValueError("a topic must not be empty: name it, e.g. 'confirmed'")
    try:
        topic.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"topic {topic!r} is not valid Unicode text") from None
    return topic


def encode_message(serializer: Serializer, value: object) -> str:
    """A message value as JSON text, refused before anything is written.

    Raises:
        SerializationError: the value cannot be recorded.
    """
    return compact(serializer.encode(value, where="value"))


def send_message(
    store: Store, serializer: Serializer, workflow_id: str, topic: str, value: object
) -> int:
    """Check and encode, then :meth:`Store.send`; returns the sequence number."""
    check_workflow_id(workflow_id)
    check_topic(topic)
    return store.send(workflow_id, topic, encode_message(serializer, value))


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat()


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


# --- sleep ----------------------------------------------------------------------------


def _sleep_step(
    frame: Frame, delay: float, on_loop: bool
) -> tuple[Step, float, dict[str, Any] | None]:
    """(the step, its wake time as an epoch, the record to write first or None)."""
    step = frame.run.begin(frame, _SLEEP_ID, (), {}, _SLEEP_CODEC, on_loop=on_loop)
    if step.replayed:
        return step, 0.0, None
    recorded = frame.run.steps.get(step.sid)
    if recorded is not None and isinstance(recorded.get("until"), str):
        until = recorded["until"]
        first = None
    else:
        until = _iso(time.time() + delay)
        first = step.mark("sleeping", until=until)
    step.extra = {"until": until}
    return step, _epoch(until), first


def _suspend_sleep(run: Run, wake: float) -> None:
    left = wake - time.time()
    if run.suspend_after is not None and left > run.suspend_after:
        raise Suspended({"event": "sleeping", "until": _iso(wake)})


def sleep(delay: float | timedelta, *, context: Context | None = None) -> None:
    """Durable sleep inside a workflow; see :func:`duravoke.sleep`."""
    value = seconds(delay)
    frame = _frame(context, "sleep")
    step, wake, first = _sleep_step(frame, value, False)
    if step.replayed:
        return
    if first is not None:
        frame.run.record(first)
    _suspend_sleep(frame.run, wake)
    left = wake - time.time()
    if left > 0:
        time.sleep(left)
    step.complete(None)


async def sleep_async(delay: float | timedelta, *, context: Context | None = None) -> None:
    """Durable sleep inside a workflow, for async code; see :func:`duravoke.sleep_async`."""
    value = seconds(delay)
    frame = _frame(context, "sleep_async")
    step, wake, first = _sleep_step(frame, value, True)
    if step.replayed:
        return
    if first is not None:
        await frame.run.arecord(first)
    _suspend_sleep(frame.run, wake)
    left = wake - time.time()
    if left > 0:
        await anyio.sleep(left)
    await step.acomplete(None)


# --- receive --------------------------------------------------------------------------


class _Receive:
    """One receive in progress: its step, deadline and the inbox it polls."""

    def __init__(self, frame: Frame, topic: str, timeout: float | None, on_loop: bool) -> None:
        self.run = run = frame.run
        self.topic = topic
        self.step = step = run.begin(
            frame, _RECEIVE_ID, (topic,), {}, _RECEIVE_CODEC, on_loop=on_loop
        )
        self.first: dict[str, Any] | None = None
        self.deadline: float | None = None
        if step.replayed:
            return
        if run.store is None:  # pragma: no cover - every run opened by Workflow has one
            raise WorkflowError("receive() needs a run opened with a store")
        recorded = run.steps.get(step.sid)
        if recorded is not None and recorded.get("status") == "waiting":
            until = recorded.get("until")
            self.deadline = _epoch(until) if isinstance(until, str) else None
        else:
            self.deadline = None if timeout is None else time.time() + timeout
            until_text = None if self.deadline is None else _iso(self.deadline)
            self.first = step.mark("waiting", topic=topic, until=until_text)

    def _after(self) -> int:
        claimed = self.run.claimed
        if self.topic not in claimed:
            # Every message taken before, in any run: the receives recorded completed.
            claimed[self.topic] = max(
                (
                    int(r["seq"])
                    for r in self.run.steps.values()
                    if r.get("fn") == RECEIVE
                    and r.get("topic") == self.topic
                    and r.get("status") == "completed"
                    and isinstance(r.get("seq"), int)
                ),
                default=0,
            )
        return claimed[self.topic]

    def poll(self) -> tuple[bool, Any]:
        """(whether the receive is over, its value); takes the next message if any."""
        run = self.run
        assert run.store is not None
        with run.lock:
            after = self._after()
            found = run.store.messages(run.workflow_id, self.topic, after)
            if found:
                seq, data = found[0]
                run.claimed[self.topic] = seq
                self.step.extra = {"topic": self.topic, "seq": seq}
                return True, run.serializer.decode(data)
        if self.deadline is not None and time.time() >= self.deadline:
            self.step.extra = {"topic": self.topic, "seq": None}
            return True, None
        return False, None

    def suspend_or_wait(self, delay: float) -> float:
        """Suspend the run (under a runner, for a long wait), else how long to sleep."""
        left = math.inf if self.deadline is None else self.deadline - time.time()
        limit = self.run.suspend_after
        if limit is not None and left > limit:
            until = None if self.deadline is None else _iso(self.deadline)
            event = {"event": "waiting", "topic": self.topic, "after": self._after()}
            event["until"] = until
            raise Suspended(event)
        return max(0.0, min(delay, left))


def receive(
    topic: str, timeout: float | timedelta | None = None, *, context: Context | None = None
) -> Any:
    """Durable receive inside a workflow; see :func:`duravoke.receive`."""
    check_topic(topic)
    limit = None if timeout is None else seconds(timeout)
    wait = _Receive(_frame(context, "receive"), topic, limit, False)
    if wait.step.replayed:
        return wait.step.value
    done, value = wait.poll()
    delay = _POLL_FIRST
    while not done:
        if wait.first is not None:
            wait.run.record(wait.first)
            wait.first = None
        time.sleep(wait.suspend_or_wait(delay))
        delay = min(delay * 2, _POLL_MAX)
        done, value = wait.poll()
    return wait.step.complete(value)


async def receive_async(
    topic: str, timeout: float | timedelta | None = None, *, context: Context | None = None
) -> Any:
    """Durable receive inside a workflow, for async code; see :func:`duravoke.receive_async`."""
    check_topic(topic)
    limit = None if timeout is None else seconds(timeout)
    wait = _Receive(_frame(context, "receive_async"), topic, limit, True)
    if wait.step.replayed:
        return wait.step.value
    done, value = await anyio.to_thread.run_sync(wait.poll)
    delay = _POLL_FIRST
    while not done:
        if wait.first is not None:
            await wait.run.arecord(wait.first)
            wait.first = None
        await anyio.sleep(wait.suspend_or_wait(delay))
        delay = min(delay * 2, _POLL_MAX)
        done, value = await anyio.to_thread.run_sync(wait.poll)
    return await wait.step.acomplete(value)
