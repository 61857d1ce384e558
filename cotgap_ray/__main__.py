"""python -m cotgap_ray VERB ...: the `cotgap` console command without the script (cotgap_ray.cli)."""

import sys

from cotgap_ray.cli import main

if __name__ == "__main__":
    sys.exit(main())
