"""The agent: one loop that runs a labeling project by itself, and explains its decisions.

A second composition-level package (like ``cli``): it may import ``backends``, the durable
state (``state``, its decision log included) and the pure ``assistant`` policy, and nothing
imports it but ``cli``. It never loads the model: every GPU job goes to the workers by task name. See ``docs/agent.md``.

- :mod:`agent.settings`: ``AgentSettings`` (``ASSISTANT_AGENT_*``) and the policy built from them;
- :mod:`agent.studio`: what it reads from Label Studio (project counters, tasks, predictions);
- :mod:`agent.observe`: a project's :class:`~assistant.agent_policy.Observation`;
- :mod:`agent.execute`: each decision through the existing components;
- :mod:`agent.services`: the services from settings, the per-project agent lock, the event inbox;
- :mod:`agent.loop`: observe, decide, execute, record; resume after a restart;
- :mod:`agent.report`: the decisions in the round reports.

Its append-only decision log's store is :mod:`state.decision_log` (on the project's one SQL store, read by
the dashboard too); :mod:`agent.decision_log` types its rows as the policy's decisions.
Empty on purpose: importing one module must not import the rest.
"""
