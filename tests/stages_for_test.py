"""Custom pipeline stages for ``test_e2e_pipeline_stages.py``.

The processor child imports this module by name (``stages_for_test:shout``),
so the test puts this folder on its ``PYTHONPATH``.
"""

from __future__ import annotations

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
