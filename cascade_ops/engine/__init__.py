"""The engine: the scheduler (forks, deadlines), the runner (steps in order, rolling batches), the
rollback, interruptions, playbooks, and the events listeners hear."""
