"""The reverse proxy: the ASGI app, its pipeline, the upstream client and the admin listener.

The top layer beside ``guardrail.middleware`` and ``guardrail.cli``: it moves bytes between
clients, the upstream and the request flow of ``guardrail.guard``; every decision about a chat
request is taken there, not here.
"""
