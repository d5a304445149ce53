"""``nncert tables build|verify|list``: the pre-optimised branching-point tables.

``build`` optimises the split point of every grid cell of the chosen ops (all by default) and
writes ``<op>.npz`` plus ``manifest.json`` into ``--out`` (the package's ``bounds/lookup/data``
by default); stdout gets one line per table: ``KEY cells=N bytes=B seconds=S``.
``verify`` checks every table of a folder against its manifest (exit 1 if any fails);
``list`` prints the folder's manifest entries.
"""

from __future__ import annotations

from verifier.cli.common import EXIT_INCORRECT, EXIT_OK, UsageError


def add_parser(sub, common) -> None:
    p = sub.add_parser("tables", parents=[common], help="build or verify branching-point tables",
                       description="Pre-optimised branching points for BaB over general "
                                   "nonlinearities: build, verify (sha256) or list the tables.")
    tsub = p.add_subparsers(dest="tables_command", metavar="ACTION", required=True)
    b = tsub.add_parser("build", parents=[common], help="optimise and write tables")
    b.add_argument("--ops", nargs="+", metavar="KEY",
                   help="table keys to build (default: all; e.g. Sigmoid Tanh Gelu Gelu:tanh)")
    b.add_argument("--out", metavar="DIR", help="output folder (default: the package data)")
    b.add_argument("--threads", type=int, default=0, metavar="N",
                   help="torch threads (default: torch's choice)")
    b.set_defaults(run=run_build)
    v = tsub.add_parser("verify", parents=[common], help="check the tables' hashes")
    v.add_argument("--dir", metavar="DIR", help="table folder (default: the package data)")
    v.set_defaults(run=run_verify)
    ls = tsub.add_parser("list", parents=[common], help="print the manifest entries")
    ls.add_argument("--dir", metavar="DIR", help="table folder (default: the package data)")
    ls.set_defaults(run=run_list)


def run_build(args) -> int:
    import torch

    from bounds.lookup.build import build
    from bounds.lookup.objective import SPECS

    unknown = [k for k in args.ops or [] if k not in SPECS]
    if unknown:
        raise UsageError(f"unknown table key(s) {', '.join(unknown)}; known: "
                         f"{', '.join(sorted(SPECS))}")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    for key in args.ops or list(SPECS):  # one at a time so that each line appears when done
        entry = build([key], args.out)[key]
        n = entry["grid"]["n"]
        print(f"{key} cells={n * (n - 1) // 2} bytes={entry['bytes']} "
              f"seconds={entry['build_seconds']:.1f}", flush=True)
    return EXIT_OK


def run_verify(args) -> int:
    from bounds.lookup.build import verify

    results = verify(args.dir)
    if not results:
        raise UsageError(f"no tables listed in the manifest of {args.dir or 'the package data'}")
    for key, status in results.items():
        print(f"{key} {status}")
    return EXIT_OK if all(s == "ok" for s in results.values()) else EXIT_INCORRECT


def run_list(args) -> int:
    from bounds.lookup.build import DEFAULT_DIR, read_manifest

    manifest = read_manifest(args.dir or DEFAULT_DIR)
    for key, e in sorted(manifest["tables"].items()):
        g = e["grid"]
        print(f"{key} file={e['file']} version={e['table_version']} grid=[{g['lo']}, {g['hi']}] "
              f"step={g['step']} bytes={e['bytes']} sha256={e['sha256']}")
    return EXIT_OK
