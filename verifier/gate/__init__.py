"""CI robustness gates: local-robustness specs, ``nncert gate``, ``nncert radius``, reports.

* :mod:`verifier.gate.data`: sample sets (``.npz`` with ``x``/``y``, or a folder with
  ``labels.csv``) checked against the model's input shape.
* :mod:`verifier.gate.specs`: VNN-LIB 1.0 local-robustness properties (L-inf box, clipped).
* :mod:`verifier.gate.gate`: verify every sample with :func:`verifier.verify`, count outcomes,
  apply the thresholds.
* :mod:`verifier.gate.reports`: JSON summary, JUnit XML, SARIF 2.1.0.
* :mod:`verifier.gate.equivalence`: the equivalence properties (``--reference``): the merged
  model of reference and new model, its VNN-LIB unsafe set, the violation test.
* :mod:`verifier.gate.equiv_run`: the equivalence gate run in-process; counterexamples
  re-checked on both models.
* :mod:`verifier.gate.radius`: certified / falsified radius per sample by bisection.
* :mod:`verifier.gate.remote`: the gate's verifications run by an nncert service.
* :mod:`verifier.gate.plots`: ``--report DIR`` (HTML page, matplotlib PNGs).
* :mod:`verifier.gate.cli`: the ``spec robustness``, ``gate`` and ``radius`` subcommands.
"""
