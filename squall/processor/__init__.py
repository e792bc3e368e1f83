"""The processor: the slow pipeline, in its own process, behind a TCP line protocol."""
