#!/usr/bin/python
# cascade.ops.diagnose: the host's side is module_utils.engine; the controller's, the action plugin.

DOCUMENTATION = r"""
module: diagnose
short_description: Diagnose a uvicorn backend
description:
  - >-
    Probe the backend and list every process holding its port, with its owner, the hang kind and the
    accept latency. Changes nothing.
  - "Returns the diagnosis as C(diagnosis); never changed."
  - "The controller needs cascade-ops installed; the host needs only its Python."
extends_documentation_fragment:
  - cascade.ops.backend
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
author:
  - cascade-ops developers
"""

EXAMPLES = r"""
- name: diagnose a uvicorn backend
  cascade.ops.diagnose:
    port: 8000
    app_dir: /srv/backend
    auth_module: files/auth.py
  become: true
  register: diagnosis
"""

RETURN = r"""
diagnosis:
  description: Holders of the port, their owners, the hang kind and the accept latency.
  returned: success
  type: dict
"""

from ansible_collections.cascade.ops.plugins.module_utils.engine import main  # noqa: E402

if __name__ == "__main__":
    main("diagnose")
