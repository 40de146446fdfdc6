"""PyTorch reference heads of every MTP family served with maps, for ``eval`` and ``train``.

:mod:`.registry` maps each family to its wiring (:mod:`.spec`, one module per family);
:mod:`.module` builds the head over the family's transformers decoder layer.
"""
