"""Trainers: trajectories → training sequences → advantages → policy updates, and the loop around them.

Modules: `objectives` (every RL formula, once), `batches` (token ids and loss masks),
`policy_model` (the trained model), `update` (one optimisation step), `checkpoint`,
`weight_sync` (pushing weights to the rollout server), `run_log` (metrics.jsonl and
TensorBoard), `loop` (`agentgym train`) and `sft` (`agentgym sft`).
"""
