"""Command line: `python -m vllm_rdna_w8a8 doctor | selftest` (also the `vllm-rdna-w8a8` script)."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vllm-rdna-w8a8", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("doctor", help="is the plugin active here, which kernels vLLM would pick, and why")
    from vllm_rdna_w8a8.tools import selftest

    selftest.add_arguments(commands.add_parser(
        "selftest", help="every shipped kernel against the reference on each gfx11 device, a HIP graph, "
                         "timings against upstream; exit 1 on any mismatch",
        description=selftest.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter))
    args = parser.parse_args(argv)
    if args.command == "doctor":
        from vllm_rdna_w8a8.tools.doctor import main as doctor

        return doctor()
    if args.command == "selftest":
        return selftest.run(args)
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
