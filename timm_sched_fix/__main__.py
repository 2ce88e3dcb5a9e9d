"""``python -m timm_sched_fix``: the same as the ``timm-sched-fix`` console script."""

from timm_sched_fix.cli import main

raise SystemExit(main())
