"""Test support: the gateway's real processes and a callback receiver, for tests and benchmarks.

Like ``flask.testing``, this is for the gateway's own tests (tests/, tests/faults/), its
benchmarks (bench/) and a task author who wants to run a handler through a real gateway:

* ``redis_server.RedisServer``: a private Redis on 127.0.0.1, a free port, its own data folder;
* ``stack.GatewayStack``: gunicorn (the shipped gunicorn.conf.py) and ``flask --app wsgi
  worker`` processes against a given Redis, each in a process group of its own;
* ``receiver.Receiver``: a loopback HTTP server that records callbacks and answers from a script;
* ``waiting.wait_until``: the one polling loop.

Nothing else in the package imports this one, and it imports no test framework: pytest
fixtures are thin wrappers in tests/conftest.py.
"""
