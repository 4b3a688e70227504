"""`dcf bench`: the cost benchmarks and their report.

Runs the pytest-benchmark suites in benchmarks/ (neighbor list, G, G+A, G+dG/dr, DCF and B-P
force calls, one MD step through ASE for DCF, B-P and the classical Li-P-O force field, the
m sweep, and featurization into a feature store) on one thread, saves their JSON, and writes
the markdown report with tables, machine information and two PNG figures (the paper's
Figure 4 in our numbers; cost ratios against the mean neighbor count m).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

HELP = "measure DCF, B-P and classical force-field costs; write docs/benchmarks.md"

#: MPI scaling scripts in benchmarks/: (file, title, its --ranks value for K, other arguments)
MPI_SCRIPTS = (("featurize_mpi.py", "`dcf featurize`, end to end (reading included)", "{k}",
                ["--runs", "3"]),
               ("md_mpi.py", "`dcf md`, 13,312 atoms (system B 4 x 4 x 4), Langevin", "{k}",
                ["--runs", "2", "--steps", "10"]),
               ("train_mpi.py", "`dcf train`, snapshots/s per stage", "1,{k}", []))
SUITES = ("test_bench_fingerprints.py", "test_bench_bp.py", "test_bench_dcf.py",
          "test_bench_md.py", "test_bench_scaling.py", "test_bench_featurize.py")
MODES = {
    "full": {"replicates": "1,2,4", "m_sweep": "30,50,75,100,130,160", "min_rounds": 5,
             "max_time": 2.0},
    "quick": {"replicates": "1", "m_sweep": "30,100,160", "min_rounds": 3, "max_time": 0.15},
}
ONE_THREAD = {"OMP_NUM_THREADS": "1", "DCF_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
              "MKL_NUM_THREADS": "1"}


def add_arguments(p) -> None:
    p.add_argument("--quick", action="store_true",
                   help="system B (208 atoms) only, few rounds, 3 points of the m sweep "
                        "(about a minute); default: 208, 1664 and 13,312 atoms")
    p.add_argument("--out", default="out/bench",
                   help="folder of the benchmark JSON and the pytest log (default out/bench)")
    p.add_argument("--report", default="docs/benchmarks.md",
                   help="markdown report to write (default docs/benchmarks.md)")
    p.add_argument("--figures", default=None,
                   help="folder of the two PNG figures (default: <report folder>/figures)")
    p.add_argument("--from-json", metavar="FILE", default=None,
                   help="do not measure: write the report from this pytest-benchmark JSON")
    p.add_argument("--benchmarks", metavar="DIR", default=None,
                   help="the benchmark suites (default: benchmarks/ of the dcf source tree)")
    p.add_argument("--replicates", default=None,
                   help="system B replicas n (n^3 x 208 atoms), e.g. 1,2,4 (overrides the mode)")
    p.add_argument("--m-sweep", default=None,
                   help="mean neighbor counts of the sweep, e.g. 30,100,160 (overrides the mode)")
    p.add_argument("--min-rounds", type=int, default=None,
                   help="pytest-benchmark minimum rounds (full 5, quick 3)")
    p.add_argument("--max-time", type=float, default=None,
                   help="pytest-benchmark seconds per benchmark (full 2.0, quick 0.15)")
    p.add_argument("-k", dest="select", default=None, help="pytest -k expression (a subset)")
    p.add_argument("--mpi", type=int, default=None, metavar="K",
                   help="also measure the MPI scaling, 1 against K ranks (mpiexec): "
                        "`dcf featurize` end to end on 200 system-B frames and one 20,800-atom "
                        "frame, `dcf md` at 13,312 atoms, and `dcf train` snapshots/s per "
                        "stage (the benchmarks/*_mpi.py scripts); a section of the report")


def _suite_dir(given) -> Path:
    if given:
        return Path(given)
    import dcf
    source = Path(dcf.__file__).resolve().parents[1] / "benchmarks"
    return source if source.is_dir() else Path.cwd() / "benchmarks"


def _command_line(args, mode: str) -> str:
    parts = ["dcf bench"] + (["--quick"] if mode == "quick" else [])
    for flag, value in (("--replicates", args.replicates), ("--m-sweep", args.m_sweep),
                        ("--min-rounds", args.min_rounds), ("--max-time", args.max_time),
                        ("-k", args.select)):
        if value is not None:
            parts.append(f"{flag} {value}")
    return " ".join(parts)


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def mpi_scaling(suites: Path, ranks: int, out: Path) -> list[tuple[str, str, str]]:
    """Run the MPI scaling scripts (1 against `ranks` ranks, one thread per rank); returns
    (title, command, its printed summary) per script that is present."""
    results = []
    for script, title, rank_arg, extra in MPI_SCRIPTS:
        path = suites / script
        if not path.is_file():
            continue
        cmd = [sys.executable, str(path), "--ranks", rank_arg.format(k=ranks), *extra,
               "--out", str(out.resolve() / script.replace(".py", ".json"))]
        print(f"dcf bench --mpi: {script}", flush=True)
        res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **ONE_THREAD},
                             cwd=suites.parent)
        text = res.stdout.rstrip() if res.returncode == 0 else \
            f"failed (exit {res.returncode}): {res.stderr.strip()[-1500:]}"
        print(text, flush=True)
        shown = " ".join(["python", f"benchmarks/{script}", *cmd[2:-2]])
        results.append((title, shown, text))
    return results


def append_mpi_section(report: Path, results, ranks: int) -> None:
    """Add the MPI scaling section to the markdown report (atomically)."""
    from dcf.files import write_atomic

    lines = ["", f"## MPI scaling: 1 and {ranks} ranks", "",
             f"One thread per rank, on this machine ({os.cpu_count()} cores); each block is the "
             f"script's own summary (the figures of the medians and of the minima).", ""]
    for title, command, text in results:
        lines += [f"### {title}", "", f"`{command}`", "", "```", text, "```", ""]
    body = report.read_text().rstrip("\n") + "\n" + "\n".join(lines)
    write_atomic(report, lambda tmp: Path(tmp).write_text(body))


def run(args) -> int:
    from dcf.bench.report import Costs, findings, summary_lines, write_report

    start = time.perf_counter()
    mode = "quick" if args.quick else "full"
    settings = dict(MODES[mode])
    for key in settings:
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)

    if args.from_json:
        json_path = Path(args.from_json)
        if not json_path.is_file():
            raise SystemExit(f"dcf bench: {json_path} does not exist")
        command = f"dcf bench --from-json {json_path}"
    else:
        suites = _suite_dir(args.benchmarks).resolve()
        missing = [s for s in SUITES if not (suites / s).is_file()]
        if missing:
            raise SystemExit(f"dcf bench: the benchmark suites are not in {suites} "
                             f"(missing {', '.join(missing)}); run from the dcf source tree "
                             f"or pass --benchmarks DIR")
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        json_path = out.resolve() / "bench.json"
        cmd = [sys.executable, "-m", "pytest", *(str(suites / s) for s in SUITES),
               "--benchmark-only", f"--benchmark-json={json_path}",
               "--benchmark-group-by=group", "--benchmark-columns=median,iqr,min,rounds",
               "--benchmark-sort=name",
               f"--benchmark-min-rounds={settings['min_rounds']}",
               f"--benchmark-max-time={settings['max_time']}",
               f"--replicates={settings['replicates']}", f"--m-sweep={settings['m_sweep']}",
               "-p", "no:cacheprovider", "-q", f"--rootdir={suites.parent}"]
        if args.select:
            cmd += ["-k", args.select]
        print(f"dcf bench ({mode}): one thread; JSON -> {json_path}", flush=True)
        rc = subprocess.run(cmd, env={**os.environ, **ONE_THREAD}, cwd=suites.parent).returncode
        if rc != 0 or not json_path.is_file():
            print(f"dcf bench: the benchmarks failed (pytest exit {rc}); no report written",
                  file=sys.stderr)
            return rc or 1
        command = _command_line(args, mode)

    data = json.loads(json_path.read_text())
    if args.from_json:      # keep how the measurement was made, if `dcf bench` made it
        run_info = {**data.get("dcf_run", {"command": command}), "json": _shown(json_path)}
    else:
        run_info = {"command": command, "mode": mode, "json": _shown(json_path),
                    "seconds": time.perf_counter() - start}
        data["dcf_run"] = run_info
        json_path.write_text(json.dumps(data, indent=1))
    report = write_report(data, args.report, args.figures, run_info)
    if args.mpi:
        if args.from_json:
            raise SystemExit("dcf bench: --mpi measures; it does not combine with --from-json")
        append_mpi_section(report, mpi_scaling(_suite_dir(args.benchmarks).resolve(), args.mpi,
                                               Path(args.out)), args.mpi)
    for line in summary_lines(findings(Costs(data))):
        print(line)
    print(f"wrote {report} and its figures in {Path(args.figures or report.parent / 'figures')}"
          f" ({(time.perf_counter() - start) / 60:.1f} min)")
    return 0
