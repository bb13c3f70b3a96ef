"""`make bench`: run the benchmarks in bench/ (timings are measured here, never asserted in tests)."""

import sys

from bench import serve_latency

if __name__ == "__main__":
    sys.exit(serve_latency.main())
