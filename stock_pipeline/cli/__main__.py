"""`python -m stock_pipeline.cli`: the same CLI as the `stock-pipeline` script."""

import sys

from stock_pipeline.cli.main import main

sys.exit(main())
