"""Custom pipeline stages for ``test_e2e_pipeline_stages.py``.

The processor child imports this module by name (``stages_for_test:shout``),
so the test puts this folder on its ``PYTHONPATH``.
"""

from __future__ import annotations

import asyncio
import dataclasses

from squall.message import Draft


def shout(message: Draft) -> Draft:
    """Upper-cases the body."""
    return dataclasses.replace(message, body=message.body.upper())


async def explode(message: Draft) -> Draft:
    """Fails, with an exception that is not ``Rejected``, on bodies that say boom."""
    if "BOOM" in message.body.upper():
        raise RuntimeError("the explode test stage went boom")
    return message


def unstorable(message: Draft) -> Draft:
    """Gives bodies that say "unstorable" a ts of 2**63, which SQLite's INTEGER cannot hold.

    Such a message passes every check before the store and fails only inside
    the transaction of its batch (``test_processor_boundary.py``).
    """
    if "unstorable" in message.body:
        return dataclasses.replace(message, ts=2**63)
    return message



async def _hold_if(marker: str, message: Draft) -> Draft:
    if marker in message.body:
        print(f"held {message.id}", flush=True)
        await asyncio.get_running_loop().create_future()  # never resolved: the processor dies first
    return message


async def hold(message: Draft) -> Draft:
    """Holds for ever a message whose body says ``[hold]``, and prints ``held <id>``:
    put before ``store``, a processor killed then has unstored work in flight
    (``test_e2e_processors.py``)."""
    return await _hold_if("[hold]", message)


async def hold_stored(message: Draft) -> Draft:
    """The same for ``[hold-stored]``, put after ``store``: work stored but not answered."""
    return await _hold_if("[hold-stored]", message)
