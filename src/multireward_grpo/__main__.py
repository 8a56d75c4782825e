"""``python -m multireward_grpo`` (e.g. under ``accelerate launch -m``) runs the CLI."""

import sys

from multireward_grpo.cli import main

sys.exit(main())
