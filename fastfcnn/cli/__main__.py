"""`python -m fastfcnn.cli` runs the command line."""
from . import main

main()
