"""The RL libraries a run trains with, each behind :class:`~rlprune.train.common.Backend`:
Stable-Baselines3 on one machine (:mod:`.sb3`) and RLlib on Ray env runners (:mod:`.rllib`)."""
