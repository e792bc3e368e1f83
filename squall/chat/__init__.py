"""``squall chat``: a terminal client for Squall.

* :mod:`squall.chat.state` — rooms, messages by seq, the outbox of unacknowledged
  sends and what to send next. No I/O, no clock, no terminal.
* :mod:`squall.chat.commands` — what a line typed into the input means.
* :mod:`squall.chat.net` — the HTTP calls and the WebSocket connection loop
  (reconnect with back-off), feeding the state.
* :mod:`squall.chat.app` — the prompt_toolkit screen.
"""
