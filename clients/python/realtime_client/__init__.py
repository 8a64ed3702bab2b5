"""Server-side client for the realtime gateway's REST API. Standard library only.

    from realtime_client import realtime          # configured by REALTIME_URL, REALTIME_API_KEY
    t = realtime.token.issue(user_id="u1", channels=["chat:*"], ttl_seconds=600)
    realtime.channel.create("chat:lobby", type="presence")
    realtime.publish("chat:lobby", "message", {"text": "hi"}, idempotency_key="m-1")
    realtime.presence.get("chat:lobby")

or an explicit client: `Realtime(url="http://127.0.0.1:8080", api_key="...")`.
"""
from .client import Realtime, RealtimeError, realtime

__all__ = ["Realtime", "RealtimeError", "realtime"]
