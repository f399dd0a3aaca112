"""The ground floor: contracts every other package builds on, and nothing above them.

=======================  ==========================================================================
:mod:`.spec`             the checklist of a prompt: entities, relations, exclusions, background, style,
                         open attributes; GenEval's metadata format
:mod:`.text`             stable hashing, plurals, noun phrases (never Python's salted ``hash()``)
:mod:`.commands`         commands and their operations (:data:`~.commands.OPS`)
:mod:`.parser`           English prompt -> :class:`~.spec.Spec` (rules; word lists in ``data/lexicon.toml``)
:mod:`.grammar`          command text -> :class:`~.commands.ParsedCommand`
:mod:`.feedback`         :class:`~.feedback.Feedback`, :class:`~.feedback.Verdict`, :class:`~.feedback.Detection`
                         and the :class:`~.feedback.Critic` protocol
:mod:`.expert`           the :class:`~.expert.Expert` protocol and :class:`~.expert.ExpertOutput`
:mod:`.image`            image checks (HxWx3 uint8)
:mod:`.geometry`         boxes: GenEval's position rule, size classes
:mod:`.rules`            GenEval's scoring rules on detections (critics and judges share them)
:mod:`.color`            sRGB -> CIELAB
:mod:`.registry`         name -> component registries from TOML files and entry points
:mod:`.lru`              one small LRU cache (text encoders, the LLM decomposer)
:mod:`.optional`         optional dependencies with the ``pip install`` that brings them
:mod:`.device`           device and dtype rules
:mod:`.hf`               loading transformers models (critics, the LLM decomposer, detectors)
:mod:`.appearance`       SceneSim's visual vocabulary (glyphs, palette), shared by its renderer and its critic
=======================  ==========================================================================

Layers, bottom to top: ``poser_env.core`` <- ``critic``, ``experts`` <- ``poser_env`` <- ``agents``
(``tests/test_architecture.py`` checks it).
"""
