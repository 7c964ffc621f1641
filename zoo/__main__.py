"""`python -m zoo` (what torchrun launches) runs the same CLI as `zoo`."""

from .cli import main

if __name__ == "__main__":
    main()
