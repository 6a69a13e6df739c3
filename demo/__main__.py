"""`make demo` / `python -m demo`: the credit-risk model from training to Predict over gRPC."""

from __future__ import annotations

import argparse
import logging
import sys

from demo.run import Options, StepError, run, table
from featurestore.logs import setup_logging
from featurestore.settings import load_settings


def main(argv: list[str] | None = None) -> int:
    """Run the demo; 0 when the served scores equal the in-process ones."""
    parser = argparse.ArgumentParser(prog="python -m demo", description=__doc__)
    parser.add_argument("--entities", type=int, default=Options.entities)
    parser.add_argument("--shown", type=int, default=Options.shown, help="entities to predict")
    parser.add_argument("--model-id", default=Options.model_id)
    parser.add_argument("--version", default=Options.version)
    args = parser.parse_args(argv)
    if args.entities < 20:
        parser.error("--entities must be at least 20")
    if not 1 <= args.shown <= args.entities:
        parser.error("--shown must be between 1 and --entities")
    setup_logging("WARNING")
    logging.getLogger("featurestore.progress").setLevel(logging.INFO)
    options = Options(
        entities=args.entities, shown=args.shown, model_id=args.model_id, version=args.version
    )
    try:
        outcome = run(load_settings(), options)
    except StepError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("demo: interrupted", file=sys.stderr)
        return 130
    print()
    print(table(outcome))
    if not outcome.ok:
        print("demo: the served scores differ from the in-process ones", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
