"""Analysis: how good a model is.

* `evaluation`: force and energy metrics (Table 1), the reaction test set (Table 2), the
  covariance error.
* `reactions`: chemical reactions in a trajectory (bond graph + HMM/Viterbi) and the reacting
  snapshots.
* `plots`: parity plots and error-by-|F| histograms (matplotlib, imported on demand).

Imports `dcf.models`, `dcf.data`, `dcf.descriptors` and the leaf modules.
"""
