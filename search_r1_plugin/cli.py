"""``search-r1``: ``doctor`` (is the plugin wired into verl?) and ``ask`` (one traced question)."""

from __future__ import annotations

import argparse
import sys

from search_r1_plugin.settings import DEFAULT_RETRIEVER_URL


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="search-r1", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("doctor", help="check that verl loads the plugin and the retriever answers")
    d.add_argument("--retriever-url", default=DEFAULT_RETRIEVER_URL, help="'' to skip the retriever check")
    args = parser.parse_args(argv)
    if args.command == "doctor":
        from search_r1_plugin.doctor import doctor

        sys.exit(doctor(args.retriever_url or None))


if __name__ == "__main__":
    main()
