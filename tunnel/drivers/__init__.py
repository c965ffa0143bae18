"""The tunnel's trio drivers: the only tunnel modules that do I/O (sockets, TLS, clocks).

``tests/test_quality.py`` lets modules under ``<package>/drivers/`` import trio, ssl
and socket; everything else in ``tunnel/`` is sans-IO.
"""
