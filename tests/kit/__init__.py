"""The test kit every test folder shares: one place for what the tests need besides guardrail.

* ``wire``: requests, whole replies and streams of the four APIs, framing, and readers.
* ``servers``: real uvicorn on loopback (in the test's loop or a background thread).
* ``upstreams``: mock upstreams (the four APIs steered by headers, a misbehaving raw server, the
  app under the middleware, a recording upstream).
* ``serve``: ``guardrail serve`` (and any ``python -m guardrail`` command) as a real process.
* ``redis``: a real ``redis-server``.
* ``clients``: the ASGI caller, raw HTTP/1.1 over sockets, the SDKs over a canned body.
* ``proxyapp``: the proxy app in-process behind a scripted upstream, and its fixtures.
* ``metrics``: reading the registry and the exposition text.
* ``paths`` and ``policysets``: the repository, the fixture folders, the shared policy sets.
"""
