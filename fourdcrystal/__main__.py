"""``python -m fourdcrystal`` (used by torchrun: ``torchrun --nproc_per_node N -m fourdcrystal train ...``)."""

from .cli import main

main()
