"""`python -m infrastructure.bench`: see `infrastructure.bench.run`."""

from __future__ import annotations

from infrastructure.bench.run import main

raise SystemExit(main())
