"""Data: reference frames in, feature stores out.

* `frames`: reading trajectories (anything ase.io reads) as frames with forces and energies.
* `formats`: DeePMD-kit systems (through dpdata), n2p2 input.data (ase.io's RuNNer
  reader), the other dpdata formats, and the guessing of which is which.
* `sampling`: which frames and which atoms become training or test snapshots.
* `store`: the per-element HDF5 feature store (G, A, F, frame and atom ids, the spec).
* `pipeline`: featurizing frames into a store, resumable and MPI-parallel.
* `generate`: making reference data with ASE's EMT or GFN1-xTB.
* `structures`: built-in structures (the paper's system B packing); the embedded data sets
  (``*.extxyz``) lie beside these modules.

Imports `dcf.descriptors` and the leaf modules; never the models or TensorFlow.
"""
