"""`bench.point` as it was before bench/ was regrouped: the sweep's point is bench.sweep.point
(and a device's readable name bench.measure.device). This module keeps `python -m bench.point`
and the imports of scripts written against the old layout working (`from bench.point import run,
device_name`, as the outside cases do)."""
import sys

from bench.measure.device import device_name  # noqa: F401
from bench.sweep.point import base_row, main, measure, predict, run  # noqa: F401

if __name__ == "__main__":
    sys.exit(main())
