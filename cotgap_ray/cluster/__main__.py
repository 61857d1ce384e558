"""python -m cotgap_ray.cluster: `cotgap cluster`, what the fail-fast checks see (cotgap_ray.cluster.show)."""

import sys

from cotgap_ray.cluster.show import main

if __name__ == "__main__":
    sys.exit(main())
