"""What each policy kind's training adds to the shared run: the layer and token policies' warm
starts and token actions, the span head's supervision and PPO stage, the budget head's outcome
table and PPO. Each kind's trainer is named in :data:`rlprune.policies.kinds.TRAINERS`."""
