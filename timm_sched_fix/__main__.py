"""``python -m timm_sched_fix``: the same as the ``timm-sched-fix`` console script."""

from .cli import main

raise SystemExit(main())
