"""A stage module that kills the process importing it, for ``test_startup.py``.

It stands for a processor that dies before it listens for a reason that is no
setting (a crash in a native extension, the OOM killer): ``squall run`` must
give up after a bounded number of such starts. Never import it in the tests.
"""

import os

os._exit(3)
