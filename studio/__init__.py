"""Everything the project knows about Label Studio, importable without torch.

- :mod:`studio.config`: the one labeling-config parser (on the SDK's ``LabelInterface``), used
  by prediction, rounds and the agent;
- :mod:`studio.controls`: the control types (``Choices``, ``Taxonomy``) and the vocabulary;
- :mod:`studio.client`: the one HTTP client (projects, tasks, predictions, exports, views);
- :mod:`studio.protocol`: the wire format (tasks, result items, predictions, annotations);
- :mod:`studio.results`: Label Studio results to label sets (corrections) and back;
- :mod:`studio.export`: reading a project export (the latest annotation of each task);
- :mod:`studio.tokens`: the two kinds of API key (legacy token, personal access token);
- :mod:`studio.errors`: what fails, as what/why/fix errors with the HTTP status to answer.
"""
