"""The web node: HTTP, WebSocket and SSE on Tornado. No slow work happens here."""
