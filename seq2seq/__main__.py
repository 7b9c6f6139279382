"""`python -m seq2seq ...` is the `seq2seq` command."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
