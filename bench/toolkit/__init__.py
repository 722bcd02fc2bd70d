"""The benchmarks' toolkit: what every measurement of bench/ shares.

* ``options``: the command-line knobs of ``bench/run.py`` (and of a driver run alone);
* ``servers``: ``Bench``, one run's servers (a private Redis, gunicorn for the gateway and
  the floor app, workers) on ``gateway.testing``, wrk runs with their CPU, and the table;
* ``tasks``: creating tasks through the API and reading their stages from Redis;
* ``wrk``: the wrk command, its output parsed, and whether a run was fair;
* ``cpu``: CPU time and connections of processes, from /proc;
* ``report``: the summary table, the commit measured and the machine.

Drivers (``bench/memory.py``, ``hit.py``, ...) import from here; nothing here imports a
driver.
"""
