"""Adapters: the only code that talks to the outside world (Prometheus, the Kubernetes API).

Each adapter sits behind a small Protocol so the pure core and the tests can swap it for a fake. Submodules
are imported explicitly (``from modelmonitor.adapters.prometheus import ...``); importing this package pulls in
no client library.
"""
