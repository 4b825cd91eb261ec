"""`python -m pipelines.corpus ...`: the corpus pipeline's `main()`, through the console script's entry point.

Nothing else lives here: this module runs as `__main__`, whose objects cloudpickle would copy by value; the DoFns
live in pipelines.corpus.read and pipelines.corpus.transforms and pickle by reference.
"""

import sys

from pipelines import entry

# Guarded: a --local_workers run starts worker processes that re-import this module under another name.
if __name__ == "__main__":
    sys.exit(entry.corpus())
