"""One bad request cannot fail the others (issue 10, defect 6).

Before the fix a ``process`` with ``ts`` = 2**63 raised inside SQLite and rolled
back its whole group commit: most of 400 good messages pipelined beside it were
answered ``internal``; ``"Bad Room"``, a 66-character id and nick ``"bad nick!"``
were stored as they came. Now every field is checked at the processor's
boundary with the web node's own checks, and a batch that still fails in the
store is stored again one message at a time.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support import LineClient, SquallProcess, run_async, squall_server

TESTS = Path(__file__).resolve().parent
GOOD = 400
_ids = itertools.count(1)


def process(room: str, ref: Any, **fields: Any) -> dict[str, Any]:
    request = {"op": "process", "ref": ref, "room": room, "nick": "alice", "id": f"m{next(_ids)}",
               "body": f"message {ref}", "ts": 1_700_000_000_000}
    return {**request, **fields}


@pytest.fixture
def processor(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[SquallProcess]:
    env = {"PYTHONPATH": os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH")) if p)}
    env.update(getattr(request, "param", {}))
    with squall_server(tmp_path, "processor", env=env) as instance:
        yield instance


async def send_all(processor: SquallProcess, requests: list[dict[str, Any]]) -> dict[Any, dict[str, Any]]:
    """Send every request in one write on one link; the answers by ref."""
    client = await LineClient.connect(processor.processor_port)
    try:
        await client.authenticate(processor.link_key())
        client.send(*requests)
        answers = [await client.recv() for _ in requests]
    finally:
        await client.close()
    return {answer["ref"]: answer for answer in answers}


def interleave(good: list[dict[str, Any]], bad: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The bad requests spread through the good ones, so that they share batches."""
    step = len(good) // (len(bad) + 1)
    mixed = list(good)
    for n, request in enumerate(bad, start=1):
        mixed.insert(n * step + n - 1, request)
    return mixed


POISON = {
    "ts-2**63": ({"ts": 2**63}, "bad_ts"),
    "ts-negative": ({"ts": -1}, "bad_ts"),
    "room": ({"room": "Bad Room"}, "bad_room"),
    "id-66": ({"id": "x" * 66}, "bad_id"),
    "id-empty": ({"id": ""}, "bad_id"),
    "nick": ({"nick": "bad nick!"}, "bad_nick"),
    "nick-empty": ({"nick": ""}, "bad_nick"),
    "nick-33": ({"nick": "n" * 33}, "bad_nick"),
    "body-long": ({"body": "x" * 4001}, "body_too_long"),
}


def test_poison_requests_among_good_ones_are_refused_alone(processor: SquallProcess) -> None:
    good = [process("poisoned", f"good-{n}") for n in range(GOOD)]
    bad = [{**process("poisoned", name), **fields} for name, (fields, _) in POISON.items()]
    answers = run_async(send_all(processor, interleave(good, bad)))

    for name, (_, code) in POISON.items():
        answer = answers[name]
        assert answer["op"] == "rejected" and answer["code"] == code, answer
        assert answer["reason"]
    processed = [answers[request["ref"]] for request in good]
    assert [a["op"] for a in processed] == ["processed"] * GOOD, [a for a in processed if a["op"] != "processed"][:3]
    assert sorted(a["message"]["seq"] for a in processed) == list(range(1, GOOD + 1))


@pytest.mark.parametrize(
    "processor", [{"SQUALL_STAGES": "validate,stages_for_test:unstorable,render,store"}], indirect=True
)
def test_a_failed_batch_is_stored_again_one_by_one(processor: SquallProcess) -> None:
    """Messages that pass every check but fail in SQLite cost only themselves."""
    good = [process("retried", f"good-{n}") for n in range(GOOD)]
    bad = [process("retried", f"unstorable-{n}", body=f"unstorable {n}") for n in range(3)]
    answers = run_async(send_all(processor, interleave(good, bad)))

    for request in bad:
        answer = answers[request["ref"]]
        assert answer["op"] == "rejected" and answer["code"] == "internal", answer
    processed = [answers[request["ref"]] for request in good]
    assert [a["op"] for a in processed] == ["processed"] * GOOD, [a for a in processed if a["op"] != "processed"][:3]
    assert sorted(a["message"]["seq"] for a in processed) == list(range(1, GOOD + 1))
    assert processor.count_lines("storing them one by one") >= 1, processor.output()
