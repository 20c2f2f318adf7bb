"""`python -m teachclip_lite ...` is the `teachclip-lite` console script."""
import sys

from .cli import main

sys.exit(main())
