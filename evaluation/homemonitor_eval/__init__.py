"""The clinical evaluation of the alerts: ``make evaluate`` (``python -m homemonitor_eval``).

It lives outside the service package, like the benchmark: it needs a checkout, never the
wheel or the image. A seeded cohort with ground truth
(:mod:`homemonitor_devices.cohort`) is replayed through care plans with the engine's
replay and a simulated clinician, and the alerts are scored against the events. By concern:

* :mod:`~homemonitor_eval.metrics`: detection, chance, specificity, non-actionable alerts,
  PPV and re-opens, as pure functions of times;
* :mod:`~homemonitor_eval.engine`: the one adapter to the rules engine, ``run_plan``;
* :mod:`~homemonitor_eval.rulesets`: the rows: templates and the reference rules;
* :mod:`~homemonitor_eval.runner`: a cohort through every rule set, scored per condition;
* :mod:`~homemonitor_eval.report`: the table and the JSON;
* :mod:`~homemonitor_eval.cli`: the command line.
"""
