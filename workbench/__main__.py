"""`python -m workbench ...` is `wb ...` (also what `torchrun -m workbench` runs)."""

from workbench.cli import main

main()
