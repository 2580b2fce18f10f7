#!/usr/bin/python
# cascade.ops.deploy: the host's side is module_utils.engine; the controller's, the action plugin.

DOCUMENTATION = r"""
module: deploy
short_description: Deploy the auth module to a uvicorn backend
description:
  - >-
    Put the auth module in place and mount its router in main.py, restart the backend only when a file
    changed, and verify.
  - >-
    With --diff the router mount and the module's change are shown. A release that fails verification is
    rolled back and the task fails with the cause.
  - "The controller needs cascade-ops installed; the host needs only its Python."
extends_documentation_fragment:
  - cascade.ops.backend
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
author:
  - cascade-ops developers
"""

EXAMPLES = r"""
- name: deploy the auth module to a uvicorn backend
  cascade.ops.deploy:
    port: 8000
    app_dir: /srv/backend
    auth_module: files/auth.py
  become: true
  register: release
"""

RETURN = r"""
status:
  description: How the run on this host ended (ok, changed, failed, rolled_back, locked, ...).
  returned: always
  type: str
steps:
  description: Each step with its status, message and duration_s.
  returned: always
  type: list
  elements: dict
duration_s:
  description: How long the run took on the host.
  returned: always
  type: float
incident_report:
  description: The incident report's path on the host, when the run changed or failed something.
  returned: always
  type: str
evidence:
  description: What was gathered from a hung backend before it was stopped (stacks, the accept queue).
  returned: always
  type: dict
"""

from ansible_collections.cascade.ops.plugins.module_utils.engine import main  # noqa: E402

if __name__ == "__main__":
    main("deploy")
