"""Load tests: a seeding command, locust users (``locustfile.py``) and a benchmark
(``bench.py``, ``make bench``). Nothing here is imported by the server."""
