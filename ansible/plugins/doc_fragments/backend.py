# The options every cascade.ops module takes: cascade-ops' inventory variables by the same names
# (tests/test_collection.py holds this list to cascade_ops.api.collection.option_names()).


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  port:
    description: The port the backend listens on.
    type: int
    required: true
  app_dir:
    description: The backend's folder on the host (relative paths are relative to the user's home).
    type: path
    required: true
  bind_host:
    description: The address the backend binds.
    type: str
    default: 127.0.0.1
  app:
    description: The ASGI application uvicorn serves.
    type: str
    default: main:app
  start_command:
    description: A command to start the backend instead of uvicorn, split like a shell's.
    type: str
  python:
    description: The interpreter that runs uvicorn (default, the one Ansible runs the module with).
    type: str
  process_match:
    description: A regular expression a holder's command line must match to be taken for the backend.
    type: str
    default: uvicorn
  manager:
    description: Who manages the backend (auto finds out; systemd, supervisord, docker, gunicorn, detached).
    type: str
    default: auto
  unit:
    description: The backend's systemd service.
    type: str
  program:
    description: The backend's supervisord program.
    type: str
  supervisor_conf:
    description: supervisord's configuration file, when its command line does not say.
    type: path
  container:
    description: The backend's docker container, by name or id.
    type: str
  force:
    description: Stop a holder run by another user than the backend's.
    type: bool
    default: false
  keep_socket:
    description: Keep the listening socket across a restart, so no queued connection is reset.
    type: bool
    default: true
  systemd_socket:
    description: For a transient systemd unit, let a socket unit hold the listener.
    type: bool
    default: false
  backend_user:
    description: Whose detached processes may be the backend.
    type: str
  auth_module:
    description: The auth router to put in place, a file on the controller (found like copy's src).
    type: path
  app_seed:
    description: A folder on the controller copied to app_dir when app_dir does not exist (the demo).
    type: path
  auth_dest:
    description: Where the auth module goes, under app_dir.
    type: str
    default: api/auth.py
  jwt_secret_file:
    description: The JWT secret's file on the host (created when missing).
    type: str
    default: "{state_dir}/jwt-secret"
  redis_url:
    description: The Redis the backend uses, checked by verify (may hold a password).
    type: str
  health_path:
    description: The backend's health endpoint.
    type: str
    default: /health
  probe_timeout:
    description: How long a health answer may take, in seconds.
    type: float
    default: 1.0
  accept_timeout:
    description: How long the backend may take to accept the probe's connection before it is hung (a duration).
    type: str
    default: 0.2s
  restart_slow:
    description: Restart a backend that is slow rather than hung.
    type: bool
    default: false
  grace:
    description: SIGTERM to SIGKILL for a healthy backend being replaced (a duration).
    type: str
    default: 5s
  hung_grace:
    description: SIGTERM to SIGKILL for a hung backend (a duration).
    type: str
    default: 1s
  start_timeout:
    description: How long the new backend may take to be healthy (a duration).
    type: str
    default: 30s
  state_dir:
    description: Where cascade-ops keeps its state, backups and incident reports on the host.
    type: str
    default: "{app_dir}/.cascade-ops"
  keep_backups:
    description: Backups kept of each file replaced.
    type: int
    default: 5
  evidence_timeout:
    description: How long gathering evidence from a hung backend may take (a duration).
    type: str
    default: 3s
  keep_incidents:
    description: Incident reports kept.
    type: int
    default: 20
  history_max_bytes:
    description: The run history's size before it rotates.
    type: int
    default: 1048576
  keep_history:
    description: Rotated history files kept.
    type: int
    default: 3
  ws_path:
    description: A WebSocket path verify opens.
    type: str
  citizen_api:
    description: The citizen API verify checks.
    type: str
  cascade_engine:
    description: Set by the action plugin (the engine on the host); not for playbooks.
    type: dict
"""
