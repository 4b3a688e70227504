"""Data: reference frames in, feature stores out.

* `frames`: reading trajectories (anything ase.io reads) as frames with forces and energies.
* `formats`: the inputs ase.io does not read: DeePMD-kit systems (through dpdata) and n2p2
  input.data.
* `sampling`: which frames and which atoms become training or test snapshots.
* `store`: the per-element HDF5 feature store (G, A, F, frame and atom ids, the spec).
* `pipeline`: featurizing frames into a store, resumable and MPI-parallel.
* `generate`: making reference data with ASE's EMT or GFN1-xTB.
* `structures`: built-in structures (the paper's system B packing); the embedded data sets
  (``*.extxyz``) lie beside these modules.

Imports `dcf.descriptors` and the leaf modules; never the models or TensorFlow.
"""
