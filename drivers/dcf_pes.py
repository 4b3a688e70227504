"""A dcf model as an i-PI PES (see dcf/dynamics/ipi_pes.py and drivers/README.md).

    i-pi-py_driver -m custom -P dcf_pes.py -u -a NAME -o model=model.dcf,template=init.extxyz

or, inside i-PI with no socket: ``<ffdirect>`` with ``<pes>custom</pes>`` and
``<pes_path>dcf_pes.py</pes_path>`` (drivers/ipi-ffdirect.xml).
"""
from dcf.dynamics.ipi_pes import DCFDriver  # noqa: F401

__DRIVER_NAME__ = "dcf"
__DRIVER_CLASS__ = "DCFDriver"
