"""The RL libraries a run trains with, each behind :class:`~rlprune.train.common.Backend`:
Stable-Baselines3 on one machine (:mod:`.sb3`) and RLlib on Ray env runners (:mod:`.rllib`); a span head's
RL stage plays its prompts on Ray actors (:mod:`.ray_span`)."""
