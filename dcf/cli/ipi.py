"""`dcf ipi`: serve a model's forces to an i-PI server over a UNIX or TCP socket.

Start i-PI first (its input names the socket), then `dcf ipi MODEL --structure S --unix NAME`.
Under `mpiexec -n K`, rank 0 talks to i-PI and all ranks share the force evaluation.
"""
from __future__ import annotations

import sys

from dcf.cli._frames import add_format_arguments, read_input
from dcf.cli._model import add_precision_argument, set_precision

HELP = "i-PI socket driver: serve a model's forces (and B–P energy, virial) to i-PI"


def add_arguments(p) -> None:
    p.add_argument("model", help="model file (.dcf) from dcf train")
    p.add_argument("--structure", required=True,
                   help="structure with i-PI's atoms in i-PI's order (e.g. its init file)")
    add_format_arguments(p)
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--unix", metavar="NAME", help="UNIX socket name (i-PI: mode='unix')")
    where.add_argument("--port", type=int, help="TCP port (i-PI: mode='inet')")
    p.add_argument("--host", default="localhost", help="TCP host (default localhost)")
    p.add_argument("--wait", type=float, default=60.0,
                   help="seconds to wait for the server to answer (default 60)")
    p.add_argument("--threads", type=int, default=None, help="OpenMP threads for fingerprints")
    add_precision_argument(p)


def run(args) -> int:
    from dcf.dynamics.ipi import ServerError, connect, serve
    from dcf.models import ModelFileError, load_model
    from dcf.parallel import world

    comm = world()
    rank = comm.rank
    if args.port is not None and not 0 < args.port < 65536:
        raise SystemExit(f"dcf ipi: --port {args.port}: a TCP port is 1..65535")
    try:
        model = load_model(args.model)
    except ModelFileError as err:
        raise SystemExit(f"dcf ipi: {err}") from None
    model.set_communicator(comm)
    if args.threads is not None:
        model.set_threads(args.threads)
    set_precision(model, args.precision, "ipi")
    atoms = read_input("ipi", args.structure, -1, args)[0]
    try:
        model.spec.check_symbols(atoms.get_chemical_symbols(), args.structure)
    except ValueError as err:
        raise SystemExit(f"dcf ipi: {err}") from None
    if "energy" not in model.implemented_properties and rank == 0:
        print("note: a DCF model has no energy; i-PI receives 0 eV and a zero virial, so use "
              "it under a thermostat (NVT), not for NVE or NPT", file=sys.stderr)

    sock, failure = None, None
    if rank == 0:
        try:
            sock = connect(args.unix, args.host, args.port, args.wait)
        except ServerError as err:
            failure = err
    if comm.bcast(failure is not None):
        if rank == 0:
            print(f"dcf ipi: {failure}", file=sys.stderr)
        return 1
    try:
        calls = serve(model, atoms, sock, comm if comm.size > 1 else None)
    except ServerError as err:
        if rank == 0:
            print(f"dcf ipi: {err}", file=sys.stderr)
        return 1
    finally:
        if sock is not None:
            sock.close()
    if rank == 0:
        print(f"i-PI sent EXIT after {calls} force evaluation(s)")
    return 0
