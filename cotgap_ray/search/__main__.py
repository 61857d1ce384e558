"""python -m cotgap_ray.search (= cotgap search): the whole search (cotgap_ray.search.run has the stages and the
command line)."""

import sys

from cotgap_ray.search.run import main

if __name__ == "__main__":
    sys.exit(main())
