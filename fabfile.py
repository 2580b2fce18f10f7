"""`fab -H host TASK` finds cascade-ops's tasks here; they are the same as `invoke`'s."""

from tasks import *  # noqa: F403
