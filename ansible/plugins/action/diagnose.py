from ansible_collections.cascade.ops.plugins.plugin_utils.action import CascadeAction


class ActionModule(CascadeAction):
    TASK = "diagnose"
