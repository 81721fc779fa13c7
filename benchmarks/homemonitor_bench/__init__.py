"""The homemonitor benchmark: ``make bench``, or ``python -m homemonitor_bench --help``.

It lives outside the service package: it needs a checkout (a private Mosquitto and
PostgreSQL, py-spy, psutil), never the wheel or the container image. By concern:

* :mod:`~homemonitor_bench.clinic`: the registry of patients and their numbered readings;
* :mod:`~homemonitor_bench.publisher`: the load generator, a raw MQTT publisher process;
* :mod:`~homemonitor_bench.meter`: CPU time and memory of every process, the machine;
* :mod:`~homemonitor_bench.consumers`: the worker processes and the baseline consumers,
  and the check of what they stored;
* :mod:`~homemonitor_bench.search`: one step at a rate, and the step search;
* :mod:`~homemonitor_bench.phases`: latency and the PostgreSQL outage;
* :mod:`~homemonitor_bench.stages`: the worker's CPU split by stage from py-spy samples;
* :mod:`~homemonitor_bench.run`: every phase against one broker, database and load
  generator, and the brief smoke run the test suite keeps;
* :mod:`~homemonitor_bench.report`: the targets, the table, the JSON result;
* :mod:`~homemonitor_bench.cli`: the command line.

Nothing is imported here, so the processes the bench spawns (load generator, baseline
consumers) import only the modules they run.
"""
