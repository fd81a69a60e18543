"""Learning per integration: the classifier's stored state, user-typed examples, corrections.

``models`` holds the tables (numbers and configuration only; see its docstring), ``service``
loads, trains, saves and corrects an integration's :class:`postroom.classify.Classifier`, and
adapts it to :func:`postroom.processing.decide.decide`. ``views`` is the Model page.
"""
