"""One connection's sends keep their order into a room's seqs, also while the
web node's checks before the hand-over to the processor wait on the store (a
room's access facts read for the first time, a file's attachment looked up).

Seen in CI once the access checks came in: ten sends pipelined into a new
room were stored as 1, 2, 6, 7, 8, 9, 3, 4, 10, 5.
"""

from __future__ import annotations

from support import ChatClient, SquallProcess, run_async

ROOMS = 30
PER_ROOM = 12
SQUALL_ENV = {"SQUALL_SEND_RATE": "100000", "SQUALL_SEND_BURST": "100000"}


def test_pipelined_sends_into_new_rooms_are_stored_in_the_order_sent(server: SquallProcess, room: str) -> None:
    token = server.session("pipeliner")

    async def scenario() -> dict[str, list[int]]:
        client = await ChatClient.connect(server.address, token)
        try:
            for n in range(PER_ROOM):  # round-robin: every room's first send finds nothing cached
                for r in range(ROOMS):
                    await client.send_json({"type": "send", "room": f"{room}-{r}", "body": f"m{n}", "id": f"{r}-{n}"})
            seqs: dict[str, list[int]] = {}
            for _ in range(ROOMS * PER_ROOM):
                ack = await client.recv_until(lambda f: f["type"] in ("ack", "error"))
                assert ack["type"] == "ack", ack
                seqs.setdefault(ack["id"].split("-")[0], []).append((int(ack["id"].split("-")[1]), ack["seq"]))
            return {r: [seq for _, seq in sorted(pairs)] for r, pairs in seqs.items()}
        finally:
            await client.close()

    for r, seqs in run_async(scenario()).items():
        assert seqs == list(range(1, PER_ROOM + 1)), (r, seqs)
