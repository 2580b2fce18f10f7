#!/usr/bin/python
# cascade.ops.verify: the host's side is module_utils.engine; the controller's, the action plugin.

DOCUMENTATION = r"""
module: verify
short_description: Verify a uvicorn backend
description:
  - "Check the backend: health, a JWT round trip through /auth, Redis PING. Changes nothing."
  - "Fails when a check fails; C(checks) holds each."
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
- name: verify a uvicorn backend
  cascade.ops.verify:
    port: 8000
    app_dir: /srv/backend
    auth_module: files/auth.py
  become: true
  register: checks
"""

RETURN = r"""
checks:
  description: Each check with name, ok, detail and elapsed_s.
  returned: always
  type: list
  elements: dict
"""

from ansible_collections.cascade.ops.plugins.module_utils.engine import main  # noqa: E402

if __name__ == "__main__":
    main("verify")
