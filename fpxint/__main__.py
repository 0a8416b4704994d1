"""`python -m fpxint ...`: see fpxint.cli."""
from .cli import main

raise SystemExit(main())
