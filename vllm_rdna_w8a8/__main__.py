"""Command line: `python -m vllm_rdna_w8a8 doctor` (also the `vllm-rdna-w8a8` script)."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vllm-rdna-w8a8", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("doctor", help="is the plugin active here, which kernels vLLM would pick, and why")
    args = parser.parse_args(argv)
    if args.command == "doctor":
        from vllm_rdna_w8a8.tools.doctor import main as doctor

        return doctor()
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
